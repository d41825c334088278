//! Send spans, as OpenTelemetry's messaging conventions describe them: one `PRODUCER` span per
//! published event (one per message rather than one per batch, so that no link is ever dropped
//! past the SDK's limit of 128 links per span), linked to the creation context the event's
//! `traceparent` header carries, which the published message keeps unchanged. An event without
//! one gets the send span's own context as its message's `traceparent`, so that a consumer's
//! trace starts at the relay.

use chrono::Utc;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};

use crate::outbox::event::Event;
use crate::sink::{Outcome, SinkError};

/// The W3C Trace Context header.
pub const TRACEPARENT: &str = "traceparent";

/// Starts send spans; cheap to clone. Exists only while traces are on.
#[derive(Clone, Debug)]
pub struct SendTracer {
    tracer: SdkTracer,
}

/// The send spans of one publish to one sink, and the events as they are to be published.
pub struct Sends {
    /// One per event, in the order of the events.
    spans: Vec<Span>,
    /// Per event: a copy with the send span's `traceparent`, when the event had none.
    injected: Vec<Option<Event>>,
}

impl SendTracer {
    pub fn new(tracer: SdkTracer) -> SendTracer {
        SendTracer { tracer }
    }

    /// One send span per event, to the sink of kind `system` (`rabbitmq`, `kafka`, ...).
    pub fn start(&self, system: &'static str, events: &[&Event]) -> Sends {
        let propagator = TraceContextPropagator::new();
        let mut spans = Vec::with_capacity(events.len());
        let mut injected = Vec::with_capacity(events.len());
        for event in events {
            let stored = propagator.extract(&Headers(&event.headers));
            let stored = stored.span().span_context().clone();
            let links = if stored.is_valid() {
                vec![Link::with_context(stored)]
            } else {
                Vec::new()
            };
            // A root: the relay's work is not part of the request that wrote the event; the
            // link leads there.
            let span = self
                .tracer
                .span_builder(format!("send {}", event.topic))
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes(system, event))
                .with_links(links)
                .start_with_context(&self.tracer, &Context::new());
            injected.push((!has_traceparent(event)).then(|| with_traceparent(event, &span)));
            spans.push(span);
        }
        Sends { spans, injected }
    }
}

impl Sends {
    /// `events` as they are published: those without a `traceparent` replaced by their copy
    /// that carries their send span's.
    pub fn events<'a>(&'a self, events: &[&'a Event]) -> Vec<&'a Event> {
        events
            .iter()
            .zip(&self.injected)
            .map(|(&event, injected)| injected.as_ref().unwrap_or(event))
            .collect()
    }

    /// Ends every span with the broker's verdict on its event (`Err`: the sink failed the
    /// whole publish).
    pub fn end(self, result: Result<&[Outcome], &SinkError>) {
        match result {
            Ok(outcomes) => {
                for (mut span, outcome) in self.spans.into_iter().zip(outcomes) {
                    verdict(&mut span, outcome);
                    span.end();
                }
            }
            Err(error) => {
                for mut span in self.spans {
                    failed(&mut span, "unavailable", error.to_string());
                    span.end();
                }
            }
        }
    }
}

/// The conventions' attributes, and the outbox's own (`outbox.*`).
fn attributes(system: &'static str, event: &Event) -> Vec<KeyValue> {
    let waited = (Utc::now() - event.created_at)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    let mut attributes = vec![
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "send"),
        KeyValue::new("messaging.system", system),
        KeyValue::new("messaging.destination.name", event.topic.clone()),
        KeyValue::new("messaging.message.id", event.message_id.to_string()),
        KeyValue::new("outbox.event.id", event.id),
        KeyValue::new("outbox.event.attempts", i64::from(event.attempts)),
        // From the row's created_at to this publish: how long the event waited in the outbox.
        KeyValue::new("outbox.wait.duration", waited.max(0.0)),
    ];
    match (system, &event.key) {
        ("kafka", Some(key)) => {
            attributes.push(KeyValue::new("messaging.kafka.message.key", key.clone()))
        }
        ("rabbitmq", _) => attributes.push(KeyValue::new(
            "messaging.rabbitmq.destination.routing_key",
            event.topic.clone(),
        )),
        _ => {}
    }
    if let Some(key) = &event.key {
        attributes.push(KeyValue::new("outbox.event.key", key.clone()));
    }
    attributes
}

fn verdict(span: &mut Span, outcome: &Outcome) {
    let (name, error) = match outcome {
        Outcome::Delivered => ("delivered", None),
        // Never sent: an earlier event of its key was not delivered.
        Outcome::NotSent => ("not_sent", None),
        Outcome::Failed(reason) => ("failed", Some(("rejected", reason))),
        Outcome::Deferred(reason) => ("deferred", Some(("deferred", reason))),
        Outcome::SinkDown(_) => ("sink_down", None),
    };
    span.set_attribute(KeyValue::new("outbox.outcome", name));
    if let Some((kind, reason)) = error {
        failed(span, kind, reason.clone());
    }
}

fn failed(span: &mut Span, kind: &'static str, description: String) {
    span.set_attribute(KeyValue::new("error.type", kind));
    span.set_status(Status::error(description));
}

fn has_traceparent(event: &Event) -> bool {
    event
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
}

/// A copy of `event` whose headers also carry `span`'s context, as W3C Trace Context
/// (version 00) writes it.
fn with_traceparent(event: &Event, span: &Span) -> Event {
    let context = span.span_context();
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    let mut event = event.clone();
    event.headers.push((TRACEPARENT.to_string(), traceparent));
    event
}

/// An event's headers, as the propagator reads them (names compared without case).
struct Headers<'a>(&'a [(String, String)]);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;
    use crate::outbox::event::{test_event, test_event_with};

    const STORED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn tracer() -> (SendTracer, InMemorySpanExporter, SdkTracerProvider) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (SendTracer::new(provider.tracer("test")), exporter, provider)
    }

    #[test]
    fn a_stored_traceparent_is_linked_and_kept() {
        let (tracer, exporter, _provider) = tracer();
        let event = test_event_with(Some("k"), &[("traceparent", STORED)], b"{}");
        let sends = tracer.start("kafka", &[&event]);
        let published = sends.events(&[&event]);
        assert_eq!(published[0], &event, "published unchanged");
        sends.end(Ok(&[Outcome::Delivered]));
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.span_kind, SpanKind::Producer);
        assert_eq!(span.name, "send t");
        assert_eq!(span.links.links.len(), 1);
        assert_eq!(
            span.links.links[0].span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(
            span.span_context.trace_id(),
            span.links.links[0].span_context.trace_id()
        );
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attribute("messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            attribute("messaging.kafka.message.key").as_deref(),
            Some("k")
        );
        assert_eq!(
            attribute("messaging.operation.type").as_deref(),
            Some("send")
        );
        assert_eq!(attribute("outbox.outcome").as_deref(), Some("delivered"));
        assert_eq!(span.status, Status::Unset);
    }

    #[test]
    fn an_event_without_one_carries_its_send_span() {
        let (tracer, exporter, _provider) = tracer();
        let event = test_event(1, None);
        let sends = tracer.start("rabbitmq", &[&event]);
        let published = sends.events(&[&event])[0].clone();
        sends.end(Ok(&[Outcome::Delivered]));
        let span = &exporter.get_finished_spans().expect("spans")[0];
        let expected = format!(
            "00-{}-{}-01",
            span.span_context.trace_id(),
            span.span_context.span_id()
        );
        assert_eq!(
            published.headers,
            vec![("traceparent".to_string(), expected)]
        );
        assert!(span.links.links.is_empty());
    }

    #[test]
    fn failures_set_the_error_status_and_type() {
        let (tracer, exporter, _provider) = tracer();
        let events = [test_event(1, Some("a")), test_event(2, Some("a"))];
        let events: Vec<&Event> = events.iter().collect();
        tracer
            .start("nats", &events)
            .end(Ok(&[Outcome::Failed("no stream".into()), Outcome::NotSent]));
        tracer
            .start("nats", &events[..1])
            .end(Err(&SinkError::Unavailable("down".into())));
        let spans = exporter.get_finished_spans().expect("spans");
        let error_type = |i: usize| {
            spans[i]
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "error.type")
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(spans[0].status, Status::error("no stream"));
        assert_eq!(error_type(0).as_deref(), Some("rejected"));
        assert_eq!(spans[1].status, Status::Unset, "not sent is no error");
        assert_eq!(spans[2].status, Status::error("down"));
        assert_eq!(error_type(2).as_deref(), Some("unavailable"));
    }

    #[test]
    fn a_malformed_traceparent_is_kept_and_not_linked() {
        let (tracer, exporter, _provider) = tracer();
        let event = test_event_with(None, &[("Traceparent", "garbage")], b"");
        let sends = tracer.start("http", &[&event]);
        assert_eq!(sends.events(&[&event])[0], &event);
        sends.end(Ok(&[Outcome::Delivered]));
        assert!(
            exporter.get_finished_spans().expect("spans")[0]
                .links
                .links
                .is_empty()
        );
    }
}
