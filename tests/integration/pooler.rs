//! Behind a real PgBouncer: transaction and statement pooling are refused at start, session
//! pooling and a plain TCP proxy are not.

use std::process::Output;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::harness::*;

/// `outbox-relay check` with the stdout sink. Async: the TCP proxy runs on the test's runtime.
async fn check(database_url: &str) -> Output {
    let output = Command::new(BIN)
        .arg("check")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_DATABASE_URL", database_url)
        .env("OUTBOX_SINK", "stdout")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("check finished within 60s")
        .expect("run outbox-relay check")
}

fn stdout_settings() -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings
}

/// The refusal names the setting, the problem and the fix.
fn assert_refusal(stderr: &str) {
    for part in [
        "OUTBOX_DATABASE_URL",
        "pool_mode = transaction",
        "advisory lock",
        "directly to PostgreSQL",
        "pool_mode = session",
    ] {
        assert!(stderr.contains(part), "refusal lacks {part:?}:\n{stderr}");
    }
}

#[tokio::test]
async fn run_and_check_refuse_a_transaction_pool() {
    let db = TestDb::create().await;
    db.insert("orders", Some("1"), b"must stay pending", "{}")
        .await;
    let pgbouncer = PgBouncer::start("transaction").await;
    let url = database_url_via(&db.url, pgbouncer.addr);

    let started = Instant::now();
    let mut relay = Relay::start(&url, &stdout_settings());
    let status = relay.exited(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(2),
        "configuration error:\n{}",
        relay.stderr()
    );
    assert_refusal(&relay.stderr());
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert_eq!(relay.stdout(), "", "published nothing");
    assert_eq!(db.undelivered().await, 1, "the event is still pending");

    let output = check(&url).await;
    assert_eq!(output.status.code(), Some(2), "check exits 2");
    assert_refusal(&String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn check_refuses_a_round_robin_transaction_pool_with_idle_servers() {
    // PgBouncer's other order: the least recently used idle server is handed out next.
    let db = TestDb::create().await;
    let pgbouncer = PgBouncer::start_with("transaction", "server_round_robin = 1").await;
    let url = database_url_via(&db.url, pgbouncer.addr);
    // Two transactions open at once leave two idle server connections in the pool: the case
    // where only the probe's last query lands elsewhere (with more, an earlier one does).
    let clients = [connect(&url).await, connect(&url).await];
    for client in &clients {
        client
            .batch_execute("BEGIN; SELECT 1")
            .await
            .expect("begin");
    }
    for client in &clients {
        client.batch_execute("COMMIT").await.expect("commit");
    }
    let output = check(&url).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "check exits 2:\n{stderr}");
    assert_refusal(&stderr);
}

#[tokio::test]
async fn check_refuses_a_statement_pool() {
    let db = TestDb::create().await;
    let pgbouncer = PgBouncer::start("statement").await;
    let output = check(&database_url_via(&db.url, pgbouncer.addr)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "check exits 2:\n{stderr}");
    assert_refusal(&stderr);
}

#[tokio::test]
async fn a_session_pool_and_a_tcp_proxy_are_accepted() {
    let db = TestDb::create().await;
    let pgbouncer = PgBouncer::start("session").await;
    let url = database_url_via(&db.url, pgbouncer.addr);
    let proxy = Proxy::start(postgres_addr()).await;
    for (what, url) in [
        ("session pool", url.clone()),
        ("TCP proxy", database_url_via(&db.url, proxy.addr)),
    ] {
        let output = check(&url).await;
        assert!(
            output.status.success(),
            "check through the {what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut relay = Relay::start(&url, &stdout_settings());
    for n in 0..3 {
        db.insert("orders", Some("1"), format!("e{n}").as_bytes(), "{}")
            .await;
    }
    eventually("three lines on stdout", Duration::from_secs(30), || async {
        relay.stdout().lines().count() == 3
    })
    .await;
    eventually("marked delivered", Duration::from_secs(30), || async {
        db.undelivered().await == 0
    })
    .await;
    let status = relay.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
}

#[tokio::test]
async fn run_retries_the_probe_while_the_database_is_unreachable() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(postgres_addr()).await;
    proxy.cut();
    let relay = Relay::start(&database_url_via(&db.url, proxy.addr), &stdout_settings());
    eventually(
        "the probe retried while unreachable",
        Duration::from_secs(30),
        || async {
            relay
                .stderr()
                .matches("cannot check the PostgreSQL connection")
                .count()
                >= 2
        },
    )
    .await;
    assert_eq!(relay.get("/healthz").await.map(|r| r.0), Some(200), "alive");
    assert_eq!(
        relay.get("/readyz").await.map(|r| r.0),
        Some(503),
        "not ready"
    );

    proxy.restore();
    db.insert("orders", Some("1"), b"after the outage", "{}")
        .await;
    eventually(
        "delivered once reachable",
        Duration::from_secs(30),
        || async { relay.stdout().lines().count() == 1 },
    )
    .await;
}
