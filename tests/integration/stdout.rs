//! The stdout sink: the conformance suite reading its JSON lines (arrival, a relay killed
//! mid-stream, structured CloudEvents), and graceful shutdown.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::harness::conformance::*;
use crate::harness::*;

/// The stdout sink in the conformance suite: the lines of every relay of the scenario, with JSON
/// logs.
#[derive(Default)]
pub struct StdoutSink {
    lines: StdoutConsumer,
}

impl SinkUnderTest for StdoutSink {
    const CARRIES_KEY: bool = true;
    type Consumer = StdoutConsumer;

    async fn open(_topics: &[&str], _outage: bool) -> Self {
        StdoutSink::default()
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = stdout_sink_settings();
        settings.push(("OUTBOX_LOG_FORMAT", "json".into()));
        settings
    }

    fn consumer(&self) -> &StdoutConsumer {
        &self.lines
    }

    fn destination(&self, topic: &str) -> String {
        topic.to_string()
    }

    fn attach(&self, relay: &Relay) {
        self.lines.attach(relay);
    }

    /// Stdout has no headers: CloudEvents are structured without being asked.
    fn cloudevents_settings(&self, _mode: &'static str) -> Vec<(&'static str, String)> {
        vec![("OUTBOX_FORMAT", "cloudevents".into())]
    }

    fn to_sdk(&self, message: &Received, _mode: &'static str) -> Delivered {
        Delivered {
            binding: "json",
            mode: "structured",
            headers: Default::default(),
            content_type: None,
            key: None,
            body: message.payload.clone(),
        }
    }

    async fn after_arrival(&self, arrival: &Arrival<'_>) {
        let ids = arrival.db.message_ids().await;
        let line = |id: i64| -> serde_json::Value {
            let lines = self.lines.lines();
            let line = lines
                .iter()
                .find(|l| l.contains(&ids[&id]))
                .expect("the event's line");
            serde_json::from_str(line).expect("each line is JSON")
        };
        let paid = line(arrival.paid);
        assert_eq!(paid["topic"], "orders.paid");
        assert_eq!(paid["key"], "42");
        assert_eq!(
            paid["payload"], "{\"type\":\"OrderPaid\"}",
            "UTF-8 stays text"
        );
        assert_eq!(paid["headers"]["traceparent"], "00-abc-def-01");
        let binary = line(arrival.binary);
        assert_eq!(binary["payload_base64"], BASE64.encode(BINARY));
        assert!(binary["key"].is_null());
        assert_eq!(self.lines.lines().len(), 2 + 3 * 40, "one line per event");
        let log = arrival.relay.stderr();
        let first = log.lines().next().expect("a log line");
        assert!(
            serde_json::from_str::<serde_json::Value>(first).is_ok(),
            "json logs: {first}"
        );
    }
}

conformance_tests!(StdoutSink: arrival, killed_mid_stream, cloudevents_structured);
