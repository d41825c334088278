//! One JSON line per event on standard output, for demos and debugging. Logs go to stderr.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use async_trait::async_trait;

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::health::SinkHealth;
use crate::outbox::event::Event;

pub const KIND: Kind = Kind {
    name: "stdout",
    settings: &[],
    configure: |_| Ok(Box::new(StdoutConfig)),
};

#[derive(Debug)]
struct StdoutConfig;

impl SinkConfig for StdoutConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(StdoutSink::new())
    }
}

/// Buffered output is written once it reaches this size.
const WRITE_AT: usize = 256 * 1024;

pub struct StdoutSink {
    out: tokio::io::Stdout,
    buffer: Vec<u8>,
}

#[derive(Serialize)]
struct Line<'a> {
    id: i64,
    message_id: String,
    topic: &'a str,
    key: Option<&'a str>,
    /// The payload as text when it is UTF-8 (JSON payloads stay readable)...
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// ...and as base64 otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    headers: serde_json::Map<String, serde_json::Value>,
    created_at: String,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self {
            out: tokio::io::stdout(),
            buffer: Vec::new(),
        }
    }

    async fn write(&mut self) -> Result<(), SinkError> {
        self.out
            .write_all(&self.buffer)
            .await
            .map_err(|e| SinkError::Unavailable(format!("cannot write to stdout: {e}")))?;
        self.buffer.clear();
        self.buffer.shrink_to(WRITE_AT);
        Ok(())
    }
}

#[async_trait]
impl Publisher for StdoutSink {
    /// Writes never refuse one line and accept the next.
    fn ordering(&self) -> Ordering {
        Ordering::Pipelined
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }

    async fn abandon(&mut self) {}

    async fn close(&mut self) {}

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        self.buffer.clear();
        for event in events {
            let text = std::str::from_utf8(&event.payload).ok();
            let line = Line {
                id: event.id,
                message_id: event.message_id.to_string(),
                topic: &event.topic,
                key: event.key.as_deref(),
                payload: text,
                payload_base64: text.is_none().then(|| BASE64.encode(&event.payload)),
                headers: event
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                created_at: event.created_at.to_rfc3339(),
            };
            serde_json::to_writer(&mut self.buffer, &line).map_err(|e| {
                SinkError::Unavailable(format!("cannot encode event {}: {e}", event.id))
            })?;
            self.buffer.push(b'\n');
            // Many small lines go out in one write; a large payload does not wait for the others,
            // so the buffer stays near one event's size.
            if self.buffer.len() >= WRITE_AT {
                self.write().await?;
            }
        }
        // Written and flushed before the batch is marked delivered.
        self.write().await?;
        self.out
            .flush()
            .await
            .map_err(|e| SinkError::Unavailable(format!("cannot write to stdout: {e}")))?;
        Ok(vec![Outcome::Delivered; events.len()])
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}
