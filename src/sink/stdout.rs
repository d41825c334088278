//! One JSON line per event on standard output, for demos and debugging. Logs go to stderr.
//! With a message format other than raw, each line is the formatted message: a structured-mode
//! CloudEvent (`application/cloudevents+json`) or a MassTransit envelope.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use std::io::Write;

use async_trait::async_trait;

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{Binding, Format};
use crate::health::SinkHealth;
use crate::order::KeyGate;
use crate::outbox::event::Event;

pub const KIND: Kind = Kind {
    name: "stdout",
    settings: &[],
    configure: |settings| {
        Ok(Box::new(StdoutConfig {
            format: Format::read(settings)?,
        }))
    },
};

#[derive(Debug)]
struct StdoutConfig {
    format: Format,
}

impl SinkConfig for StdoutConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(StdoutSink::with_format(self.format.clone()))
    }
}

/// Buffered output is written once it reaches this size.
const WRITE_AT: usize = 256 * 1024;

/// Writes go to standard output from the relay's own thread: writing a batch to a pipe or file
/// takes microseconds, and handing each write and flush to tokio's blocking pool
/// (`tokio::io::Stdout`) cost four thread switches per batch. A reader that stops reading holds
/// the relay back either way.
pub struct StdoutSink {
    out: std::io::Stdout,
    buffer: Vec<u8>,
    format: Format,
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
        Self::with_format(Format::Raw)
    }

    pub fn with_format(format: Format) -> Self {
        Self {
            out: std::io::stdout(),
            buffer: Vec::new(),
            format,
        }
    }

    /// One formatted message as a line: a document that spans lines (a pretty-printed JSON
    /// payload inside it) is written compactly.
    fn push_formatted(&mut self, event: &Event) -> Result<(), String> {
        let message = self.format.message(event, Binding::Stdout)?;
        if message.body.contains(&b'\n') {
            let document: serde_json::Value = serde_json::from_slice(&message.body)
                .map_err(|e| format!("cannot encode event {} as one line: {e}", event.id))?;
            serde_json::to_writer(&mut self.buffer, &document)
                .map_err(|e| format!("cannot encode event {}: {e}", event.id))?;
        } else {
            self.buffer.extend_from_slice(&message.body);
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), SinkError> {
        self.out
            .lock()
            .write_all(&self.buffer)
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
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        // Keys with an event the format could not carry: their later events are not written.
        let mut stopped = KeyGate::default();
        for (index, event) in events.iter().enumerate() {
            if !self.format.is_raw() {
                if !stopped.admits(event.id, event.key.as_deref()) {
                    outcomes[index] = Outcome::NotSent;
                    continue;
                }
                match self.push_formatted(event) {
                    Ok(()) => self.buffer.push(b'\n'),
                    Err(reason) => {
                        outcomes[index] = Outcome::Failed(reason);
                        stopped.close(event.id, event.key.as_deref());
                    }
                }
                if self.buffer.len() >= WRITE_AT {
                    self.write()?;
                }
                continue;
            }
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
                self.write()?;
            }
        }
        // Written and flushed before the batch is marked delivered.
        self.write()?;
        self.out
            .lock()
            .flush()
            .map_err(|e| SinkError::Unavailable(format!("cannot write to stdout: {e}")))?;
        Ok(outcomes)
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}
