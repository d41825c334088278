//! Send spans of events with any headers, `traceparent` valid or not: no panic; an event with a
//! `traceparent` (any case) is published unchanged, linked only to the context it names; one
//! without it gets exactly one, the send span's, in W3C form.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use proptest::prelude::*;

use super::send::{SendTracer, TRACEPARENT};
use crate::outbox::arbitrary;
use crate::outbox::event::Event;
use crate::sink::Outcome;

fn is_w3c(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), [v, t, s, f] if *v == "00" && hex(t, 32) && hex(s, 16) && hex(f, 2))
}

proptest! {
    #![proptest_config(arbitrary::config(128))]

    #[test]
    fn any_headers_get_a_send_span_and_keep_their_traceparent(
        events in prop::collection::vec(arbitrary::event(), 1..4),
        system in prop::sample::select(vec!["kafka", "rabbitmq", "nats", "http", "redis"]),
    ) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = SendTracer::new(provider.tracer("properties"));
        let refs: Vec<&Event> = events.iter().collect();
        let sends = tracer.start(system, &refs);
        let published: Vec<Event> = sends.events(&refs).into_iter().cloned().collect();
        sends.end(Ok(&vec![Outcome::Delivered; refs.len()]));
        let spans = exporter.get_finished_spans().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(spans.len(), events.len());
        for ((event, published), span) in events.iter().zip(&published).zip(&spans) {
            let stored = event
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(TRACEPARENT));
            match stored {
                Some((_, value)) => {
                    prop_assert_eq!(published, event, "kept unchanged");
                    prop_assert!(span.links.links.len() <= 1);
                    for link in &span.links.links {
                        let trace_id = link.span_context.trace_id().to_string();
                        prop_assert!(value.to_ascii_lowercase().contains(&trace_id), "{} links {}", value, trace_id);
                    }
                }
                None => {
                    prop_assert!(span.links.links.is_empty());
                    let mut expected = event.headers.clone();
                    let added = published.headers.last().cloned().unwrap_or_default();
                    prop_assert_eq!(&added.0, TRACEPARENT);
                    prop_assert!(is_w3c(&added.1), "{}", added.1);
                    prop_assert!(added.1.contains(&span.span_context.trace_id().to_string()));
                    expected.push(added);
                    prop_assert_eq!(&published.headers, &expected);
                }
            }
        }
    }
}
