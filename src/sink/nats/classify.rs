//! What JetStream's errors in a publish acknowledgement mean for an event.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};

use crate::sink::{Classify, Fault};

/// The event's fault (an attempt), back-pressure (no attempt) or an outage. "No responders"
/// (`StreamNotFound`) is asked of the JetStream API first (`Batch::no_stream`).
impl Classify for PublishError {
    fn classify(&self) -> Fault {
        match self.kind() {
            PublishErrorKind::MaxPayloadExceeded => Fault::Event(too_large(self)),
            PublishErrorKind::MaxAckPending => {
                Fault::BackPressure(format!("NATS back-pressure: {self}"))
            }
            PublishErrorKind::Other => {
                let api_error = std::error::Error::source(self)
                    .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>());
                match api_error {
                    Some(api) => classify_code(api.error_code(), api.code(), &api.to_string()),
                    None => Fault::Outage(format!("publishing to JetStream failed: {self}")),
                }
            }
            _ => Fault::Outage(format!("publishing to JetStream failed: {self}")),
        }
    }
}

/// A message larger than the server takes, found when sending or in the acknowledgement.
pub(super) fn too_large(error: &PublishError) -> String {
    format!("the message is larger than the NATS server's max_payload: {error}")
}

/// A JetStream API error in a publish acknowledgement, by its error code.
fn classify_code(code: ErrorCode, status: usize, text: &str) -> Fault {
    match code {
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_SEALED => Fault::Event(format!("JetStream rejected the event: {text}")),
        // A stream or account at its limits with discard=new: wait until there is room.
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES => {
            Fault::BackPressure(format!("JetStream is full: {text}"))
        }
        _ if status >= 500 => Fault::Outage(format!("JetStream is unavailable: {text}")),
        _ => Fault::Event(format!("JetStream rejected the event: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_errors_are_classified() {
        assert!(matches!(
            classify_code(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM, 400, "too big"),
            Fault::Event(_)
        ));
        assert!(matches!(
            classify_code(
                ErrorCode::STREAM_STORE_FAILED,
                503,
                "maximum messages exceeded"
            ),
            Fault::BackPressure(_)
        ));
        assert!(classify_code(ErrorCode::CLUSTER_NOT_AVAILABLE, 503, "unavailable").is_outage());
        assert!(
            PublishError::new(PublishErrorKind::TimedOut)
                .classify()
                .is_outage()
        );
        assert!(
            PublishError::new(PublishErrorKind::BrokenPipe)
                .classify()
                .is_outage()
        );
    }
}
