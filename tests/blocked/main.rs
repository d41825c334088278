//! A RabbitMQ that blocks publishers (a memory alarm, `rabbitmqctl set_vm_memory_high_watermark 0`):
//! `/readyz` says so with RabbitMQ's reason, the relay logs it once, the publish timeout makes it an
//! outage that uses no attempts, and everything arrives once the alarm clears.
//!
//! The alarm would block every publisher of the broker, so this runs on a RabbitMQ node of its own,
//! started from the local installation on free ports (`RABBITMQ_BIN_DIR`, default
//! `/usr/lib/rabbitmq/bin`, holds `rabbitmq-server` and `rabbitmqctl`); the shared broker is
//! never touched. A target of its own, as the node takes a few seconds to start.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// A RabbitMQ node of the test's own; stopped and removed on drop.
struct Node {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    server: Option<Child>,
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("RABBITMQ_BIN_DIR").unwrap_or_else(|_| "/usr/lib/rabbitmq/bin".into());
    PathBuf::from(dir).join(name)
}

impl Node {
    async fn start() -> Node {
        let dir = std::env::temp_dir().join(unique("rabbitmq"));
        std::fs::create_dir_all(&dir).expect("node dir");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let mut node = Node {
            name: format!("{}@localhost", unique("outbox_blocked")),
            port: free_port(),
            dist_port: free_port(),
            dir,
            server: None,
        };
        let server = node
            .command("rabbitmq-server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (install rabbitmq-server or set RABBITMQ_BIN_DIR)",
                    bin("rabbitmq-server").display()
                )
            });
        node.server = Some(server);
        let deadline = Instant::now() + WAIT;
        while !node.ctl(&["await_startup"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not start:\n{}",
                node.name,
                std::fs::read_to_string(node.dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        node
    }

    fn command(&self, program: &str) -> Command {
        let dir = &self.dir;
        let mut command = Command::new(bin(program));
        command
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("none"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("none.config"));
        command
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run rabbitmqctl")
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        if let Some(server) = &mut self.server {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sets the memory high watermark to 0 (every publisher blocked) and restores the value it had
/// on drop, also when the test panics.
struct Alarm<'a> {
    node: &'a Node,
    original: Vec<String>,
}

impl<'a> Alarm<'a> {
    fn raise(node: &'a Node) -> Alarm<'a> {
        let original = current_watermark(node);
        let alarm = Alarm { node, original };
        let output = node.ctl(&["set_vm_memory_high_watermark", "0"]);
        assert!(output.status.success(), "set watermark: {output:?}");
        alarm
    }

    fn clear(&self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.original.iter().map(String::as_str));
        let output = self.node.ctl(&args);
        assert!(output.status.success(), "restore watermark: {output:?}");
    }
}

impl Drop for Alarm<'_> {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.original.iter().map(String::as_str));
        let _ = self.node.ctl(&args);
    }
}

/// The watermark as `set_vm_memory_high_watermark` takes it: `0.4` or `absolute 1073741824`.
fn current_watermark(node: &Node) -> Vec<String> {
    let output = node.ctl(&["environment"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let prefix = "{vm_memory_high_watermark,";
    let value = text
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(prefix))
        .map(|rest| rest.trim_end_matches(',').trim_end_matches('}'))
        .unwrap_or_else(|| {
            panic!("no vm_memory_high_watermark in rabbitmqctl environment:\n{text}")
        });
    match value.strip_prefix("{absolute,") {
        Some(bytes) => vec!["absolute".into(), bytes.trim_end_matches('}').into()],
        None => vec![value.to_string()],
    }
}

#[tokio::test]
async fn a_rabbitmq_that_blocks_publishers_is_reported_and_loses_nothing() {
    let node = Node::start().await;
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup_at(&node.url(), "#").await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &node.url());
    settings.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "1500".into()));
    settings.push(("OUTBOX_STALL_TIMEOUT_SECS", "3".into()));
    let relay = Relay::start(&db.url, &settings);
    wait_ready(&relay, 200, WAIT).await;
    insert_keyed_sequence(&db.client, "t", 3, 0, 2, 2).await;
    rabbit.wait_for(6, WAIT).await;

    let alarm = Alarm::raise(&node);
    insert_keyed_sequence(&db.client, "t", 3, 2, 12, 5).await;
    eventually(
        "/readyz says the broker blocks publishing",
        WAIT,
        || async {
            relay.get("/readyz").await.is_some_and(|(status, body)| {
                status == 503
                    && body.contains("blocks publishing")
                    && body.contains("low on memory")
            })
        },
    )
    .await;
    eventually("the block is logged", WAIT, || async {
        relay.stderr().contains("the broker blocks publishing")
    })
    .await;
    eventually("publishes time out as outages", WAIT, || async {
        relay.outages().await >= 2.0
    })
    .await;
    // Longer than the stall timeout: a blocked broker is reported by /readyz, not a wedge.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let (status, body) = relay.get("/healthz").await.expect("healthz");
        assert_eq!(status, 200, "a blocked broker is not a stall: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        db.undelivered().await > 0,
        "nothing is confirmed while blocked"
    );
    assert_eq!(
        db.count("attempts > 0").await,
        0,
        "blocking uses no attempts"
    );

    alarm.clear();
    assert_recovered_losslessly(&db, &rabbit, 3, 12, WAIT).await;
    wait_ready(&relay, 200, WAIT).await;
    eventually("the end of the block is logged", WAIT, || async {
        relay
            .stderr()
            .contains("the broker no longer blocks publishing")
    })
    .await;
    let stderr = relay.stderr();
    assert_eq!(
        stderr.matches("the broker blocks publishing").count(),
        1,
        "one warning for the whole block, however many reconnects:\n{stderr}"
    );
    assert_eq!(
        stderr
            .matches("the broker no longer blocks publishing")
            .count(),
        1,
        "{stderr}"
    );
    println!(
        "blocked: {} outages while blocked, {} messages for 36 events",
        relay.outages().await,
        rabbit.received().len()
    );
}
