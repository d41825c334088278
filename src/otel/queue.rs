//! The bounded queue between the relay and the collector. Ending a span only offers it to the
//! queue: when the queue is full (a slow or absent collector) the span is dropped and counted,
//! so that exporting can never slow or stop relaying. One task sends the queue's spans in
//! batches, each request bounded by the export timeout.
//!
//! Not the SDK's `BatchSpanProcessor`: it does not tell how many spans it dropped, and it runs
//! its exports on a thread of its own, which would need a blocking HTTP client (a second one).

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

use crate::telemetry;

/// Why spans were lost, as the `reason` label of the dropped-spans counter.
pub const DROP_REASONS: [&str; 2] = [QUEUE_FULL, EXPORT_FAILED];
const QUEUE_FULL: &str = "queue_full";
const EXPORT_FAILED: &str = "export_failed";

/// Offers every ended, sampled span to the queue.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
}

impl QueueProcessor {
    /// The processor and the receiving end, for [`export`].
    pub fn new(capacity: usize) -> (QueueProcessor, mpsc::Receiver<SpanData>) {
        let (queue, spans) = mpsc::channel(capacity);
        (QueueProcessor { queue }, spans)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // A span that is recorded but not sampled is not for the collector.
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            dropped(QUEUE_FULL, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends the queued spans in batches of at most `batch_size` until `close` fires (then sends
/// what is left) or every sender is gone.
pub async fn export<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut close: oneshot::Receiver<()>,
    batch_size: usize,
    timeout: Duration,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        let closing = tokio::select! {
            received = spans.recv_many(&mut batch, batch_size) => {
                if received == 0 {
                    return;
                }
                false
            }
            _ = &mut close => true,
        };
        if closing {
            spans.close();
            while let Some(span) = spans.recv().await {
                batch.push(span);
                if batch.len() == batch_size {
                    failing = send(&exporter, std::mem::take(&mut batch), timeout, failing).await;
                }
            }
        }
        if !batch.is_empty() {
            failing = send(&exporter, std::mem::take(&mut batch), timeout, failing).await;
        }
        if closing {
            return;
        }
    }
}

/// One export request; its spans are counted as dropped when it fails. Returns whether it
/// failed, so that a failing collector is logged once, not at every batch.
async fn send<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    was_failing: bool,
) -> bool {
    let spans = batch.len();
    let error = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within the export timeout ({} ms)",
            timeout.as_millis()
        )),
    };
    match error {
        None => {
            if was_failing {
                tracing::info!("exporting traces works again");
            }
            false
        }
        Some(error) => {
            dropped(EXPORT_FAILED, spans);
            if !was_failing {
                tracing::warn!(%error, spans, "cannot export traces; spans are dropped until the collector answers (relaying goes on)");
            }
            true
        }
    }
}

fn dropped(reason: &'static str, spans: usize) {
    metrics::counter!(telemetry::TRACE_SPANS_DROPPED, "reason" => reason).increment(spans as u64);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Collects what it is given; stalls forever when `stall` is set.
    #[derive(Debug, Clone, Default)]
    struct Collector {
        got: Arc<Mutex<Vec<usize>>>,
        stall: bool,
    }

    impl SpanExporter for Collector {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.stall {
                std::future::pending::<()>().await;
            }
            self.got.lock().expect("lock").push(batch.len());
            Ok(())
        }
    }

    fn provider(processor: QueueProcessor) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build()
    }

    #[tokio::test]
    async fn a_full_queue_drops_spans_instead_of_waiting() {
        let (processor, spans) = QueueProcessor::new(4);
        let tracer = provider(processor).tracer("test");
        for _ in 0..10 {
            tracer.start("send").end();
        }
        // Nothing receives yet: 4 wait, 6 were dropped without blocking.
        assert_eq!(spans.len(), 4);
    }

    #[tokio::test]
    async fn spans_are_sent_in_batches_and_the_rest_at_close() {
        let (processor, spans) = QueueProcessor::new(100);
        let tracer = provider(processor).tracer("test");
        for _ in 0..7 {
            tracer.start("send").end();
        }
        let collector = Collector::default();
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(export(
            collector.clone(),
            spans,
            closed,
            3,
            Duration::from_secs(1),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tracer.start("late").end();
        close.send(()).expect("task alive");
        task.await.expect("task");
        let got = collector.got.lock().expect("lock").clone();
        assert_eq!(got.iter().sum::<usize>(), 8, "{got:?}");
        assert!(got.iter().all(|&n| n <= 3), "{got:?}");
    }

    #[tokio::test]
    async fn a_stalled_collector_costs_the_export_timeout_only() {
        let (processor, spans) = QueueProcessor::new(100);
        let tracer = provider(processor).tracer("test");
        tracer.start("send").end();
        let collector = Collector {
            stall: true,
            ..Collector::default()
        };
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(export(
            collector,
            spans,
            closed,
            10,
            Duration::from_millis(50),
        ));
        close.send(()).expect("task alive");
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the export gives up after its timeout")
            .expect("task");
    }
}
