//! The command line: configuration errors, migrate, check, status, dead-letters.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run outbox-relay")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn configuration_errors_exit_2_and_name_the_setting() {
    let db = "postgres://postgres@127.0.0.1:5432/postgres";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("OUTBOX_SINK", "stdout")], "OUTBOX_DATABASE_URL"),
        (&[("OUTBOX_DATABASE_URL", db)], "OUTBOX_SINK"),
        (
            &[("OUTBOX_DATABASE_URL", db), ("OUTBOX_SINK", "mqtt")],
            "OUTBOX_SINK",
        ),
        (
            &[("OUTBOX_DATABASE_URL", db), ("OUTBOX_SINK", "rabbitmq")],
            "OUTBOX_AMQP_URL",
        ),
        (
            &[("OUTBOX_DATABASE_URL", db), ("OUTBOX_SINK", "kafka")],
            "OUTBOX_KAFKA_BROKERS",
        ),
        (
            &[
                ("OUTBOX_DATABASE_URL", db),
                ("OUTBOX_SINK", "stdout"),
                ("OUTBOX_MAX_ATTEMPTS", "lots"),
            ],
            "OUTBOX_MAX_ATTEMPTS",
        ),
        (
            &[
                ("OUTBOX_DATABASE_URL", db),
                ("OUTBOX_SINK", "stdout"),
                ("OUTBOX_LOG_FORMAT", "xml"),
            ],
            "OUTBOX_LOG_FORMAT",
        ),
        (
            &[
                ("OUTBOX_DATABASE_URL", db),
                ("OUTBOX_SINK", "kafka"),
                ("OUTBOX_KAFKA_BROKERS", "127.0.0.1:9092"),
                ("OUTBOX_KAFKA_PROPERTIES", "enable.idempotence=false"),
            ],
            "OUTBOX_KAFKA_PROPERTIES",
        ),
    ];
    for (env, setting) in cases {
        for command in ["run", "check"] {
            let output = run(&[command], env);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} {env:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(setting),
                "{command} {env:?} should name {setting}: {}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn passwords_never_reach_the_output() {
    let output = run(
        &["check"],
        &[
            (
                "OUTBOX_DATABASE_URL",
                "postgres://app:hunter2secret@127.0.0.1:1/db",
            ),
            ("OUTBOX_SINK", "stdout"),
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "unreachable database fails the check"
    );
    let all = stdout(&output) + &stderr(&output);
    assert!(all.contains("127.0.0.1"), "the error says where: {all}");
    assert!(!all.contains("hunter2secret"), "password leaked: {all}");
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_from_many_processes_at_once() {
    let db = TestDb::create_empty().await;
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(BIN)
                .arg("migrate")
                .env("OUTBOX_DATABASE_URL", &db.url)
                .output()
        })
        .collect();
    for output in children {
        let output = output.expect("run migrate");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // Run once more, in parallel threads this time, to race for real.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || run(&["migrate"], &[("OUTBOX_DATABASE_URL", &url)]))
        })
        .collect();
    for handle in handles {
        let output = handle.join().expect("thread");
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stdout(&output).contains("version 6"), "{}", stdout(&output));
    }
    let version: i32 = db
        .client
        .query_one("SELECT max(version) FROM outbox.schema_migrations", &[])
        .await
        .expect("versions")
        .get(0);
    assert_eq!(version, 6);
    // The writer's side of the contract works: enqueue for jsonb and bytea, the views.
    db.client
        .batch_execute(
            "SELECT outbox.enqueue('orders', '42', '{\"type\":\"OrderPaid\"}'::jsonb, '{\"trace\":\"abc\"}'::jsonb);
             SELECT outbox.enqueue('orders', NULL, '\\x00ff'::bytea);",
        )
        .await
        .expect("enqueue");
    let pending: i64 = db
        .client
        .query_one("SELECT count(*) FROM outbox.pending", &[])
        .await
        .expect("view")
        .get(0);
    assert_eq!(pending, 2);
    let payload: Vec<u8> = db
        .client
        .query_one("SELECT payload FROM outbox.events WHERE key = '42'", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&payload).expect("json")["type"],
        "OrderPaid"
    );
}

#[tokio::test]
async fn check_connects_to_both_and_reports_a_missing_schema() {
    let db = TestDb::create_empty().await;
    let rabbit = Rabbit::setup("#").await;
    let amqp = amqp_url();
    let env = [
        ("OUTBOX_DATABASE_URL", db.url.as_str()),
        ("OUTBOX_SINK", "rabbitmq"),
        ("OUTBOX_AMQP_URL", amqp.as_str()),
        ("OUTBOX_AMQP_EXCHANGE", rabbit.exchange.as_str()),
    ];
    let output = run(&["check"], &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("outbox-relay migrate"),
        "{}",
        stderr(&output)
    );

    assert!(run(&["migrate"], &env).status.success());
    let output = run(&["check"], &env);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("broker: connected"),
        "{}",
        stdout(&output)
    );

    // Schema drift the version number does not show: a column renamed by hand.
    db.client
        .batch_execute("ALTER TABLE outbox.events RENAME COLUMN headers TO headers_renamed")
        .await
        .expect("rename a column");
    let output = run(&["check"], &env);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("does not match") && stderr(&output).contains("headers"),
        "{}",
        stderr(&output)
    );
    db.client
        .batch_execute("ALTER TABLE outbox.events RENAME COLUMN headers_renamed TO headers")
        .await
        .expect("rename it back");

    let mut missing_exchange = env;
    missing_exchange[3] = ("OUTBOX_AMQP_EXCHANGE", "no_such_exchange_for_check");
    let output = run(&["check"], &missing_exchange);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no_such_exchange_for_check"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_report_command_whose_reader_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let db = TestDb::create().await;
    for n in 0..50 {
        db.insert("orders", Some(&n.to_string()), b"a", "{}").await;
    }
    // `outbox-relay status | head -0`: the reader is gone before the first line.
    let mut child = Command::new(BIN)
        .args(["status"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_DATABASE_URL", &db.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start outbox-relay status");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    // Before: the next print panicked ("failed printing to stdout: Broken pipe"), exit 101.
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

#[tokio::test]
async fn status_and_dead_letter_commands_show_and_repair() {
    let db = TestDb::create().await;
    db.insert("orders", Some("1"), b"a", "{}").await;
    let dead = db.insert("orders", Some("2"), b"b", "{}").await;
    db.client
        .execute(
            "UPDATE outbox.events SET dead_lettered_at = now(), attempts = 3, last_error = 'unroutable: test' WHERE id = $1",
            &[&dead],
        )
        .await
        .expect("dead-letter");
    let env = [("OUTBOX_DATABASE_URL", db.url.as_str())];

    let output = run(&["status", "--json"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status json");
    assert_eq!(status["pending"], 1);
    assert_eq!(status["dead_letters"], 1);
    assert!(status["lag_seconds"].as_f64().expect("lag") >= 0.0);
    assert!(status["active_relay"].is_null());
    let text = stdout(&run(&["status"], &env));
    assert!(
        text.contains("pending events   1") && text.contains("unowned lanes    64"),
        "{text}"
    );
    // With the sinks' configuration, the backlog per sink through the routes.
    db.insert("audit.login", Some("3"), b"c", "{}").await;
    let routed = [
        ("OUTBOX_DATABASE_URL", db.url.as_str()),
        ("OUTBOX_SINK", "stdout"),
        ("OUTBOX_SINKS", "audit=stdout"),
        ("OUTBOX_ROUTES", "audit.*=audit"),
    ];
    let output = run(&["status", "--json"], &routed);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status json");
    assert_eq!(status["sinks"]["stdout"]["pending"], 1);
    assert_eq!(status["sinks"]["audit"]["pending"], 1);
    let text = stdout(&run(&["status"], &routed));
    assert!(text.contains("sink audit"), "{text}");
    db.client
        .execute("DELETE FROM outbox.events WHERE topic = 'audit.login'", &[])
        .await
        .expect("remove the routed event");

    let list = stdout(&run(&["dead-letters", "list"], &env));
    assert!(
        list.contains(&dead.to_string()) && list.contains("unroutable: test"),
        "{list}"
    );

    let output = run(&["dead-letters", "retry", "999999"], &env);
    assert_eq!(output.status.code(), Some(1), "an unknown id is reported");
    assert!(stderr(&output).contains("999999"));

    let output = run(&["dead-letters", "retry", &dead.to_string()], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);
    assert_eq!(db.undelivered().await, 2);
    let attempts: i32 = db
        .client
        .query_one("SELECT attempts FROM outbox.events WHERE id = $1", &[&dead])
        .await
        .expect("row")
        .get(0);
    assert_eq!(attempts, 0, "a retried dead letter gets fresh attempts");

    db.client
        .execute(
            "UPDATE outbox.events SET dead_lettered_at = now() WHERE id = $1",
            &[&dead],
        )
        .await
        .expect("dead again");
    let output = run(&["dead-letters", "discard", "--all"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(db.count("true").await, 1);
}

#[tokio::test]
async fn check_reports_a_kafka_broker_that_refuses_at_once() {
    let db = TestDb::create().await;
    let env = [
        ("OUTBOX_DATABASE_URL", db.url.as_str()),
        ("OUTBOX_SINK", "kafka"),
        // Nothing listens there: every connection is refused.
        ("OUTBOX_KAFKA_BROKERS", "127.0.0.1:1"),
    ];
    let started = Instant::now();
    let output = run(&["check"], &env);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("cannot reach Kafka at 127.0.0.1:1"),
        "{}",
        stderr(&output)
    );
    // It waited the whole metadata timeout (10 s) before, warning at each reconnect (about 200
    // lines).
    assert!(took < Duration::from_secs(5), "check took {took:?}");
    let warnings = stderr(&output).matches("kafka client error").count();
    assert!(warnings <= 10, "{warnings} warnings:\n{}", stderr(&output));
}

#[tokio::test]
async fn sigterm_exits_within_the_shutdown_timeout_while_the_kafka_broker_does_not_answer() {
    let db = TestDb::create().await;
    let mut settings: Vec<(&'static str, String)> = fast_settings()
        .into_iter()
        .filter(|(name, _)| *name != "OUTBOX_SHUTDOWN_TIMEOUT_SECS")
        .collect();
    settings.extend([
        ("OUTBOX_SINK", "kafka".to_string()),
        // Nothing listens there: the Kafka client keeps trying to connect.
        ("OUTBOX_KAFKA_BROKERS", "127.0.0.1:1".to_string()),
        ("OUTBOX_SHUTDOWN_TIMEOUT_SECS", "2".to_string()),
    ]);
    let mut relay = Relay::start(&db.url, &settings);
    eventually(
        "the relay tries to reach Kafka",
        Duration::from_secs(30),
        || async { relay.stderr().contains("127.0.0.1:1") },
    )
    .await;
    let asked = Instant::now();
    relay.terminate(Duration::from_secs(30)).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "SIGTERM with OUTBOX_SHUTDOWN_TIMEOUT_SECS=2 took {took:?} to exit:\n{}",
        relay.stderr_tail()
    );
}
