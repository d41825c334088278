//! The bench's own OTLP/HTTP trace receiver: answers 200 to every `POST /v1/traces` and counts
//! requests, bytes and spans (decoded, then dropped: a million spans are not kept).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
    spans: AtomicU64,
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// On a free loopback port.
    pub async fn start() -> Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            // The relay's export batches may exceed axum's default 2 MiB.
            .layer(DefaultBodyLimit::disable())
            .with_state(counts.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench OTLP receiver: {e}");
            }
        });
        Ok(OtlpReceiver { addr, counts, task })
    }

    /// The relay's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests, bytes and spans received so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (
            c.requests.load(Ordering::SeqCst),
            c.bytes.load(Ordering::SeqCst),
            c.spans.load(Ordering::SeqCst),
        )
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(State(counts): State<Arc<Counts>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    counts.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    counts.spans.fetch_add(spans as u64, Ordering::SeqCst);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}
