//! Writes a batch's lines to standard output and flushes them before the batch counts as
//! delivered.

use std::io::Write;

use async_trait::async_trait;

use super::encode;
use crate::format::Format;
use crate::outbox::event::Event;
use crate::sink::{Fault, Ordering, Outcome, Publisher, SinkError, Verdicts};

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

    /// Appends the line of `event`. `Err(Fault::Event)`: the format cannot carry it;
    /// `Err(Fault::Outage)`: the raw line did not encode, which is not the event's fault.
    fn push_line(&mut self, event: &Event) -> Result<(), Fault> {
        if self.format.is_raw() {
            encode::raw_line(event, &mut self.buffer)
                .map_err(|e| Fault::Outage(format!("cannot encode event {}: {e}", event.id)))?;
        } else {
            encode::formatted_line(&self.format, event, &mut self.buffer).map_err(Fault::Event)?;
        }
        self.buffer.push(b'\n');
        Ok(())
    }

    fn write(&mut self) -> Result<(), SinkError> {
        self.out
            .lock()
            .write_all(&self.buffer)
            .map_err(write_failed)?;
        self.buffer.clear();
        self.buffer.shrink_to(WRITE_AT);
        Ok(())
    }
}

/// The reader went away or the disk is full: never the event's fault.
fn write_failed(error: std::io::Error) -> SinkError {
    SinkError::Unavailable(format!("cannot write to stdout: {error}"))
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
        // Keys with an event the format could not carry: their later events are not written.
        let mut verdicts = Verdicts::new(events);
        for (index, event) in events.iter().enumerate() {
            if !verdicts.admits(index) {
                continue;
            }
            match self.push_line(event) {
                Ok(()) => verdicts.settle(index, Outcome::Delivered),
                Err(fault) => verdicts.refuse(index, fault)?,
            }
            // Many small lines go out in one write; a large payload does not wait for the others,
            // so the buffer stays near one event's size.
            if self.buffer.len() >= WRITE_AT {
                self.write()?;
            }
        }
        // Written and flushed before the batch is marked delivered.
        self.write()?;
        self.out.lock().flush().map_err(write_failed)?;
        Ok(verdicts.into_outcomes())
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}
