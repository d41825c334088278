//! An OTLP/HTTP trace receiver inside the test: `POST /v1/traces` with protobuf, decoded with
//! `opentelemetry-proto`, every span kept with its service name. It can also take requests and
//! never answer (a collector that hangs); a collector that is down is a free port.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// `SPAN_KIND_PRODUCER` in OTLP.
pub const PRODUCER: i32 = 4;
/// `STATUS_CODE_ERROR` in OTLP.
pub const STATUS_ERROR: i32 = 2;

/// A span as the collector got it.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub span: Span,
    /// The resource's `service.name`.
    pub service: String,
}

impl ExportedSpan {
    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }

    /// The span's own context as W3C `traceparent` (sampled).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex(&self.span.trace_id),
            hex(&self.span.span_id)
        )
    }

    /// The links' contexts as `trace-id-span-id`.
    pub fn links(&self) -> Vec<String> {
        self.span
            .links
            .iter()
            .map(|l| format!("{}-{}", hex(&l.trace_id), hex(&l.span_id)))
            .collect()
    }

    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<ExportedSpan>>,
    requests: AtomicU64,
    /// Take requests and never answer them.
    hang: AtomicBool,
}

pub struct Collector {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// On a free port, answering every export.
    pub async fn start() -> Collector {
        Self::serve(false).await
    }

    /// On `port` (e.g. OTLP's default 4318), answering every export; `None` when it is taken.
    pub async fn start_on(port: u16) -> Option<Collector> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .ok()?;
        Some(Self::serve_on(listener, false))
    }

    /// On a free port, reading every export and never answering it.
    pub async fn hanging() -> Collector {
        Self::serve(true).await
    }

    async fn serve(hang: bool) -> Collector {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the collector");
        Self::serve_on(listener, hang)
    }

    fn serve_on(listener: tokio::net::TcpListener, hang: bool) -> Collector {
        let addr = listener.local_addr().expect("collector address");
        let shared = Arc::new(Shared::default());
        shared.hang.store(hang, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("OTLP collector: {e}");
            }
        });
        Collector { addr, shared, task }
    }

    /// The relay's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Export requests received, answered or not.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.shared.spans.lock().expect("spans").clone()
    }

    /// Waits until `n` spans arrived; panics with what arrived after `timeout`.
    pub async fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans after {timeout:?}: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings that send a relay's traces to `endpoint`, every span sampled.
pub fn otel_settings(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_string()),
    ]
}

async fn export(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = shared.spans.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| text_of(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    span,
                    service: service.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(text(value))
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// W3C `traceparent` of the request that wrote the traced events in the send-span tests.
pub const STORED_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The checks every sink's send spans pass: `received` holds the message of an event written with
/// [`STORED_TRACEPARENT`] (message id `linked`) and of one written without any (`injected`).
/// Each has one send span of kind PRODUCER named `send {topic}` with the messaging attributes;
/// the first links to the stored context, which its message keeps; the second's message carries
/// the span's own context.
pub fn assert_send_spans(
    system: &str,
    received: &[super::consumer::Received],
    spans: &[ExportedSpan],
    (linked, injected): (&str, &str),
) {
    let by_id = spans_by_message_id(spans);
    for (message_id, stored) in [(linked, true), (injected, false)] {
        let [span] = by_id.get(message_id).map(Vec::as_slice).unwrap_or_default() else {
            panic!("one send span for {message_id}: {spans:#?}");
        };
        let message = received
            .iter()
            .find(|m| m.message_id == message_id)
            .unwrap_or_else(|| panic!("message {message_id} arrived: {received:#?}"));
        let topic = span
            .attribute("messaging.destination.name")
            .expect("destination");
        assert_eq!(span.span.name, format!("send {topic}"));
        assert_eq!(span.span.kind, PRODUCER, "{span:#?}");
        assert_eq!(span.service, "outbox-relay");
        assert_eq!(span.attribute("messaging.system").as_deref(), Some(system));
        assert_eq!(
            span.attribute("messaging.operation.type").as_deref(),
            Some("send")
        );
        assert_eq!(
            span.attribute("outbox.outcome").as_deref(),
            Some("delivered")
        );
        assert_ne!(span.status_code(), STATUS_ERROR);
        assert!(
            span.attribute("outbox.wait.duration").is_some(),
            "{span:#?}"
        );
        if stored {
            assert_eq!(
                span.links(),
                vec!["4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".to_string()],
                "linked to the stored context"
            );
            assert_eq!(
                message.header("traceparent"),
                Some(STORED_TRACEPARENT),
                "the stored traceparent is published unchanged"
            );
            assert_ne!(
                hex(&span.span.trace_id),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "the send span starts a trace of its own"
            );
        } else {
            assert!(span.links().is_empty(), "{span:#?}");
            assert_eq!(
                message.header("traceparent"),
                Some(span.traceparent().as_str()),
                "the message carries its send span's context"
            );
        }
    }
}

/// The spans by `messaging.message.id`.
pub fn spans_by_message_id(spans: &[ExportedSpan]) -> BTreeMap<String, Vec<ExportedSpan>> {
    let mut by_id: BTreeMap<String, Vec<ExportedSpan>> = BTreeMap::new();
    for span in spans {
        if let Some(id) = span.attribute("messaging.message.id") {
            by_id.entry(id).or_default().push(span.clone());
        }
    }
    by_id
}
