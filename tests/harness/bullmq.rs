//! BullMQ: a real BullMQ worker (the pinned `bullmq` npm package, run by Node.js from
//! `bullmq/worker.mjs`) processes the jobs of some queues and prints each job it processed; a
//! [`BullmqWorker`] puts each one in its inbox: job id as message id, queue as destination, name
//! as the header `name`, data as payload (a JSON string's text, else the JSON).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::consumer::{Inbox, Received, consumer_with_inbox};
use super::relay::fast_settings;

/// The relay's settings for the bullmq sink at `url` with `prefix`, queues named by `template`.
pub fn bullmq_settings(url: &str, prefix: &str, template: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "bullmq".into()));
    settings.push(("OUTBOX_BULLMQ_URL", url.into()));
    settings.push(("OUTBOX_BULLMQ_PREFIX", prefix.into()));
    settings.push(("OUTBOX_BULLMQ_QUEUE_TEMPLATE", template.into()));
    settings
}

/// Where `scripts/services.sh bullmq` installed the npm package.
fn node_modules() -> PathBuf {
    std::env::var("OUTBOX_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/outbox-relay")
        })
        .join("bullmq/node_modules")
}

/// A BullMQ worker on `queues` under `prefix`, killed on drop.
pub struct BullmqWorker {
    inbox: Inbox,
    child: Child,
    task: tokio::task::JoinHandle<()>,
}

consumer_with_inbox!(BullmqWorker);

impl BullmqWorker {
    /// Starts the worker and waits until it listens on every queue.
    pub async fn start(url: &str, prefix: &str, queues: &[&str]) -> Result<BullmqWorker> {
        let modules = node_modules();
        if !modules.join("bullmq").is_dir() {
            bail!("no bullmq npm package in {modules:?}: run scripts/services.sh bullmq");
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/harness/bullmq/worker.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .args(queues)
            .env("BULLMQ_URL", url)
            .env("BULLMQ_PREFIX", prefix)
            .env("BULLMQ_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (Node.js runs the BullMQ worker)")?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the BullMQ worker did not get ready within 30 s")??;
        if ready.as_deref() != Some(r#"{"ready":true}"#) {
            bail!("the BullMQ worker said {ready:?} instead of getting ready");
        }
        let inbox = Inbox::keeping();
        let task = tokio::spawn({
            let inbox = inbox.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let at = Instant::now();
                    match serde_json::from_str::<serde_json::Value>(&line) {
                        Ok(job) => {
                            let received = received(&job);
                            inbox.arrived(&received.payload.clone(), at, || received);
                        }
                        Err(e) => eprintln!("bullmq worker printed {line:?}: {e}"),
                    }
                }
            }
        });
        Ok(BullmqWorker { inbox, child, task })
    }
}

/// A processed job as a consumer's message.
fn received(job: &serde_json::Value) -> Received {
    let text = |name: &str| job[name].as_str().unwrap_or_default().to_string();
    let payload = match &job["data"] {
        serde_json::Value::String(text) => text.clone().into_bytes(),
        data => data.to_string().into_bytes(),
    };
    let mut message = Received::new(payload);
    message.destination = text("queue");
    message.message_id = text("id");
    message.headers.insert("name".into(), text("name"));
    message
        .headers
        .insert("opts".into(), job["opts"].to_string());
    message
        .headers
        .insert("attemptsMade".into(), job["attemptsMade"].to_string());
    message.persistent = true;
    message
}

impl Drop for BullmqWorker {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.child.start_kill();
    }
}
