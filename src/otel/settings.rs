//! The standard `OTEL_*` environment variables that decide whether traces are on and how they
//! leave the process. The exporter reads the endpoint and headers itself; the sampler and the
//! service name are read by the SDK.

use std::time::Duration;

use super::OtelError;

/// Traces are on only when one of these names a collector.
pub const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The signal-specific variable first, as the specification orders them.
const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const TIMEOUTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
const QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// The only protocol built in: no gRPC stack for a sidecar.
pub const HTTP_PROTOBUF: &str = "http/protobuf";
/// `OTEL_SERVICE_NAME` when it is not set.
pub const SERVICE_NAME: &str = "outbox-relay";

/// How spans are queued and exported, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Spans waiting for the exporter, at most; more are dropped (and counted), never waited for.
    pub queue_size: usize,
    /// Spans per export request, at most.
    pub batch_size: usize,
    /// The longest one export request may take.
    pub timeout: Duration,
}

impl TraceSettings {
    /// `None` when no endpoint is set: traces are off.
    pub fn from_env() -> Result<Option<TraceSettings>, OtelError> {
        Self::read(|name| std::env::var(name).ok())
    }

    fn read(var: impl Fn(&str) -> Option<String>) -> Result<Option<TraceSettings>, OtelError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if !ENDPOINTS.iter().any(|name| set(name).is_some()) {
            return Ok(None);
        }
        if let Some((name, protocol)) = first(&PROTOCOLS, &set)
            && protocol.trim() != HTTP_PROTOBUF
        {
            return Err(OtelError::Setting {
                setting: name,
                problem: format!("{protocol:?} is not supported; use {HTTP_PROTOBUF:?}"),
            });
        }
        let number = |name: &'static str, default: u64| -> Result<u64, OtelError> {
            match set(name) {
                None => Ok(default),
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(OtelError::Setting {
                        setting: name,
                        problem: format!("{text:?} is not a positive whole number"),
                    }),
                },
            }
        };
        let timeout_ms = match first(&TIMEOUTS, &set) {
            Some((name, _)) => number(name, 10_000)?,
            None => 10_000,
        };
        let queue_size = number(QUEUE_SIZE, 2048)? as usize;
        let batch_size = (number(BATCH_SIZE, 512)? as usize).min(queue_size);
        Ok(Some(TraceSettings {
            queue_size,
            batch_size,
            timeout: Duration::from_millis(timeout_ms),
        }))
    }
}

/// The first of `names` that is set, with its value.
fn first(
    names: &[&'static str],
    set: &impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    names.iter().find_map(|&name| set(name).map(|v| (name, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, OtelError> {
        TraceSettings::read(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
        assert_eq!(read(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
    }

    #[test]
    fn either_endpoint_turns_traces_on_with_the_defaults() {
        for name in ENDPOINTS {
            let settings = read(&[(name, "http://collector:4318")]).unwrap().unwrap();
            assert_eq!(
                settings,
                TraceSettings {
                    queue_size: 2048,
                    batch_size: 512,
                    timeout: Duration::from_secs(10)
                }
            );
        }
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(read(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
        let err = read(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        let err = read(&[
            on,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("TRACES_PROTOCOL"), "{err}");
    }

    #[test]
    fn limits_and_timeout_are_read() {
        let settings = read(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(250));
        assert_eq!((settings.queue_size, settings.batch_size), (100, 100));
        let err = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_BSP_MAX_QUEUE_SIZE"), "{err}");
    }
}
