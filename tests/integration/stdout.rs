//! The stdout sink and graceful shutdown.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn stdout_sink_prints_one_json_line_per_event_and_stops_on_sigterm() {
    let db = TestDb::create().await;
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    settings.push(("OUTBOX_LOG_FORMAT", "json".into()));
    let mut relay = Relay::start(&db.url, &settings);
    db.insert(
        "orders",
        Some("42"),
        b"{\"type\":\"OrderPaid\"}",
        r#"{"trace":"abc"}"#,
    )
    .await;
    db.insert("blobs", None, &[0xff, 0x00], "{}").await;

    eventually("two lines on stdout", Duration::from_secs(30), || async {
        relay.stdout().lines().count() == 2
    })
    .await;
    let lines: Vec<serde_json::Value> = relay
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines[0]["topic"], "orders");
    assert_eq!(lines[0]["key"], "42");
    assert_eq!(lines[0]["payload"], "{\"type\":\"OrderPaid\"}");
    assert_eq!(lines[0]["headers"]["trace"], "abc");
    assert_eq!(lines[1]["payload_base64"], "/wA=");
    assert!(lines[1]["key"].is_null());

    eventually("marked delivered", Duration::from_secs(30), || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(relay.get("/healthz").await.map(|r| r.0), Some(200));
    let status = relay.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let log = relay.stderr();
    let first = log.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "json logs: {first}"
    );
}
