//! OpenTelemetry traces of the relay's publishes (docs/tracing.md). Off unless an OTLP endpoint
//! is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): then nothing
//! of it exists, no exporter and no span. When on, every published event gets a send span
//! ([`send`]), and spans leave through a bounded queue ([`queue`]) over OTLP/HTTP with protobuf.
//! `tracing` stays the logging API; this is only about spans for a collector.

#[cfg(test)]
mod properties;
mod queue;
pub mod send;
pub mod settings;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use send::{SendTracer, Sends};
use settings::TraceSettings;

use crate::telemetry;

/// The longest a graceful stop waits for the last spans to leave.
const LAST_EXPORT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// A setting that cannot work; names the environment variable.
    #[error("{setting}: {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },
}

/// Traces while they are on: the tracer provider and the task that exports.
pub struct Traces {
    provider: SdkTracerProvider,
    /// Tells the export task to send what is queued and stop.
    close: oneshot::Sender<()>,
    exporter: JoinHandle<()>,
}

/// Starts traces when an OTLP endpoint is set; `None` when they are off. Needs the Tokio
/// runtime and the metrics recorder (the dropped-spans counter starts at zero here).
pub fn start() -> Result<Option<Traces>, OtelError> {
    let Some(settings) = TraceSettings::from_env()? else {
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .with_http_client(http_client(settings.timeout)?)
        .build()
        .map_err(|e| OtelError::Setting {
            setting: settings::ENDPOINTS[1],
            problem: format!("cannot set up the OTLP exporter: {e}"),
        })?;
    let resource = resource();
    exporter.set_resource(&resource);
    let (processor, spans) = queue::QueueProcessor::new(settings.queue_size);
    // The sampler comes from OTEL_TRACES_SAMPLER and _ARG (the SDK reads them).
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    metrics::describe_counter!(
        telemetry::TRACE_SPANS_DROPPED,
        "Spans not exported: the queue was full (reason=queue_full) or the collector failed (export_failed)."
    );
    for reason in queue::DROP_REASONS {
        metrics::counter!(telemetry::TRACE_SPANS_DROPPED, "reason" => reason).increment(0);
    }
    let (close, closed) = oneshot::channel();
    let exporter = tokio::spawn(queue::export(
        exporter,
        spans,
        closed,
        settings.batch_size,
        settings.timeout,
    ));
    tracing::info!("exporting traces over OTLP/HTTP");
    Ok(Some(Traces {
        provider,
        close,
        exporter,
    }))
}

impl Traces {
    /// What the relay starts its send spans with.
    pub fn send_tracer(&self) -> SendTracer {
        SendTracer::new(self.provider.tracer(env!("CARGO_PKG_NAME")))
    }

    /// Sends the spans still queued, for at most [`LAST_EXPORT`]: a collector that does not
    /// answer must not hold up the exit.
    pub async fn stop(self) {
        let _ = self.close.send(());
        let mut exporter = self.exporter;
        if tokio::time::timeout(LAST_EXPORT, &mut exporter)
            .await
            .is_err()
        {
            exporter.abort();
            tracing::warn!("the last spans were not exported in time; dropped");
        }
        let _ = self.provider.shutdown();
    }
}

/// `OTEL_SERVICE_NAME` (and `OTEL_RESOURCE_ATTRIBUTES`) as the SDK reads them, with this
/// project's name when neither names the service.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(settings::SERVICE_NAME).build()
    }
}

/// The reqwest client the webhooks use too (rustls with ring, the system's roots): no second
/// HTTP or TLS stack for the exporter.
fn http_client(timeout: Duration) -> Result<reqwest::Client, OtelError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, not fatal.
        let _ = roots.add(cert);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let problem = |what: String| OtelError::Setting {
        setting: settings::ENDPOINTS[1],
        problem: what,
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("outbox-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| problem(format!("cannot create the HTTP client: {e}")))
}
