//! A floor for the relay's CPU at a slow rate: the cheapest NOTIFY-driven claim loop there is.
//! On a thread and single-threaded runtime of its own, it LISTENs and, on each notification
//! (those that arrive while it claims are covered by that claim), claims with a plain
//! `DELETE ... RETURNING` and keeps the payloads' sizes. No broker, no marking, no key order,
//! no TLS, no metrics: every relay does at least this per wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio_postgres::{AsyncMessage, NoTls};

use super::workload::PLAIN_CLAIM;
use crate::harness::{proc_cpu_secs, thread_cpu_secs};

/// Events per claim at most, as the relay's default batch.
const BATCH: i64 = 500;

/// What the bare loop did while the producer ran.
pub struct PollerRun {
    /// Its thread's CPU seconds.
    pub cpu_secs: f64,
    /// Its PostgreSQL backend's CPU seconds (PostgreSQL runs on this machine).
    pub pg_cpu_secs: f64,
    /// Events claimed.
    pub claimed: u64,
    /// Claims that returned at least one event.
    pub claims: u64,
}

/// Starts the loop on `url` (schema migrated, NOTIFY trigger on); it stops once it claimed
/// `count` events, or fails after `idle` without a notification. Returns when it listens.
pub async fn start(url: &str, count: u64, idle: Duration) -> Result<Poller> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let url = url.to_string();
    let thread = std::thread::spawn(move || -> Result<PollerRun> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(&url, count, idle, ready_tx))
    });
    ready_rx
        .await
        .map_err(|_| anyhow!("the bare poller stopped before it listened"))??;
    Ok(Poller { thread })
}

pub struct Poller {
    thread: std::thread::JoinHandle<Result<PollerRun>>,
}

impl Poller {
    /// Waits for the loop to end (it ends by itself, see [`start`]).
    pub async fn finish(self) -> Result<PollerRun> {
        tokio::task::spawn_blocking(move || self.thread.join())
            .await?
            .map_err(|_| anyhow!("the bare poller panicked"))?
    }
}

async fn run(
    url: &str,
    count: u64,
    idle: Duration,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) -> Result<PollerRun> {
    let setup = async {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("the bare poller's connection")?;
        let wakeup = Arc::new(tokio::sync::Notify::new());
        let notified = Arc::new(AtomicU64::new(0));
        let (wake, seen) = (wakeup.clone(), notified.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(_) = message {
                    seen.fetch_add(1, Ordering::Relaxed);
                    wake.notify_one();
                }
            }
        });
        client.batch_execute("LISTEN outbox_events").await?;
        let claim = client.prepare(PLAIN_CLAIM).await?;
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get(0)?;
        let backend = u32::try_from(backend).context("the backend's pid")?;
        Ok::<_, anyhow::Error>((client, claim, wakeup, notified, backend))
    };
    let (client, claim, wakeup, notified, backend) = match setup.await {
        Ok(parts) => {
            let _ = ready.send(Ok(()));
            parts
        }
        Err(e) => {
            let message = format!("{e:#}");
            let _ = ready.send(Err(e));
            bail!("{message}");
        }
    };
    let cpu_start = thread_cpu_secs().context("reading this thread's CPU")?;
    let backend_cpu = || proc_cpu_secs(backend).context("reading the backend's CPU");
    let pg_cpu_start = backend_cpu()?;
    let (mut claimed, mut claims, mut bytes) = (0u64, 0u64, 0usize);
    while claimed < count {
        if tokio::time::timeout(idle, wakeup.notified()).await.is_err() {
            bail!(
                "the bare poller claimed {claimed} of {count} events and then nothing for {idle:?} ({} notifications)",
                notified.load(Ordering::Relaxed)
            );
        }
        loop {
            let rows = client.query(&claim, &[&BATCH]).await?;
            if rows.is_empty() {
                break;
            }
            claims += 1;
            claimed += rows.len() as u64;
            for row in &rows {
                bytes += row.try_get::<_, &[u8]>("payload")?.len();
            }
            if rows.len() < BATCH as usize {
                break;
            }
        }
    }
    let cpu_secs = thread_cpu_secs().context("reading this thread's CPU")? - cpu_start;
    let pg_cpu_secs = backend_cpu()? - pg_cpu_start;
    std::hint::black_box(bytes);
    Ok(PollerRun {
        cpu_secs,
        pg_cpu_secs,
        claimed,
        claims,
    })
}
