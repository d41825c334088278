//! What Redis's errors mean: a script call's error as a [`Fault`], and the `last_error` of an
//! event Redis refused.

use redis::RedisError;

use crate::redact::redact;
use crate::sink::{Classify, Fault, SinkError};

/// The error of a script call, with the URL that names Redis in messages.
pub(super) struct CallError<'a> {
    pub(super) error: &'a RedisError,
    pub(super) url: &'a str,
}

/// NOPERM on a key is an event's fault (which event's, the call does not say); any other error
/// is an outage.
impl Classify for CallError<'_> {
    fn classify(&self) -> Fault {
        let error = self.error;
        // ACL: the user may not access a key the call names (checked before the script runs, so
        // nothing was added). Not a missing command permission: that is the setup's.
        if error.code() == Some("NOPERM") && error.detail().is_some_and(|d| d.contains("key")) {
            let detail = error.detail().unwrap_or_default();
            return Fault::Event(format!("NOPERM {detail}"));
        }
        let unavailable = unavailable_reason("publishing to", self.url, error);
        if matches!(
            error.code(),
            Some("MOVED" | "ASK" | "CROSSSLOT" | "CLUSTERDOWN")
        ) {
            return Fault::Outage(format!(
                "{unavailable}; Redis Cluster is not supported: point the sink's REDIS_URL at a standalone Redis"
            ));
        }
        Fault::Outage(unavailable)
    }
}

impl CallError<'_> {
    /// The connection broke (or had been closed, e.g. by Redis's idle `timeout`): worth one call
    /// on a new connection.
    pub(super) fn is_dropped(&self) -> bool {
        self.error.is_io_error() || self.error.is_connection_dropped()
    }
}

pub(super) fn unavailable(what: &str, url: &str, error: &RedisError) -> SinkError {
    SinkError::Unavailable(unavailable_reason(what, url, error))
}

fn unavailable_reason(what: &str, url: &str, error: &RedisError) -> String {
    format!("{what} Redis at {}: {error}", redact(url))
}

/// `last_error` of an event Redis refused: what happened and what to do.
pub(super) fn refusal(stream: &str, error: &str) -> String {
    let hint = if error.starts_with("WRONGTYPE") {
        "the key holds another type than a stream: delete or rename it, or change the sink's REDIS_STREAM_TEMPLATE"
    } else if error.starts_with("NOPERM") {
        "the Redis user may not access this key: add it to the user's key patterns (ACL SETUSER ... ~pattern) or change the sink's REDIS_STREAM_TEMPLATE"
    } else {
        "see the Redis error"
    };
    format!("Redis refused to add the event to stream {stream:?}: {error}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_to_do() {
        let wrong = refusal(
            "orders",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        assert!(
            wrong.contains("\"orders\"") && wrong.contains("REDIS_STREAM_TEMPLATE"),
            "{wrong}"
        );
        assert!(refusal("orders", "NOPERM no").contains("ACL SETUSER"));
    }

    #[test]
    fn errors_are_classified() {
        use redis::{ErrorKind, ServerErrorKind};
        let server = |kind, detail: &str| {
            RedisError::from((ErrorKind::Server(kind), "", detail.to_string()))
        };
        let url = "redis://relay:s3cret@redis:6379";
        let classify = |error: &RedisError| CallError { error, url }.classify();
        let key = server(
            ServerErrorKind::NoPerm,
            "no permissions to access one of the keys",
        );
        assert!(matches!(classify(&key), Fault::Event(e) if e.starts_with("NOPERM")));
        let command = server(
            ServerErrorKind::NoPerm,
            "no permissions to run the 'xadd' command",
        );
        assert!(classify(&command).is_outage());
        let moved = server(ServerErrorKind::Moved, "3999 127.0.0.1:6381");
        let Fault::Outage(error) = classify(&moved) else {
            panic!("MOVED is an outage");
        };
        assert!(
            error.contains("Redis Cluster") && !error.contains("s3cret"),
            "{error}"
        );
        assert!(!CallError { error: &moved, url }.is_dropped());
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(classify(&dropped).is_outage());
        assert!(
            CallError {
                error: &dropped,
                url
            }
            .is_dropped()
        );
    }
}
