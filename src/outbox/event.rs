//! An outbox row turned into an event a sink can publish, or the reason it cannot be published.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    /// Kafka topic or AMQP routing key; never empty.
    pub topic: String,
    /// Ordering and partition key; `None` has no order with other events.
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// The row's `headers` object, whose values are all strings.
    pub headers: Vec<(String, String)>,
    /// Stable across redeliveries, so consumers can de-duplicate.
    pub message_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Attempts already used by errors about this event.
    pub attempts: i32,
}

/// A row that can never be published as it is; it is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidEvent {
    pub id: i64,
    pub key: Option<String>,
    pub reason: String,
}

/// A claimed row's columns as read, before the checks every sink needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRow {
    pub id: i64,
    pub topic: String,
    pub key: Option<String>,
    /// NULL when larger than `max_payload_bytes`: the claim does not read such a payload.
    pub payload: Option<Vec<u8>>,
    pub payload_bytes: i32,
    pub headers: serde_json::Value,
    pub message_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

impl Event {
    /// Reads a row of `sql/queries/claim.sql` and checks what every sink needs. The outer error
    /// is a row not shaped as expected (a drifted schema); the inner one an event that can never
    /// be published.
    pub fn from_row(
        row: &Row,
        max_payload_bytes: usize,
    ) -> Result<Result<Event, InvalidEvent>, StoreError> {
        let read = |e: tokio_postgres::Error| StoreError::new("reading a claimed event", e);
        let row = ClaimedRow {
            id: row.try_get("id").map_err(read)?,
            key: row.try_get("key").map_err(read)?,
            topic: row.try_get("topic").map_err(read)?,
            payload: row.try_get("payload").map_err(read)?,
            payload_bytes: row.try_get("payload_bytes").map_err(read)?,
            headers: row.try_get("headers").map_err(read)?,
            message_id: row.try_get("message_id").map_err(read)?,
            created_at: row.try_get("created_at").map_err(read)?,
            attempts: row.try_get("attempts").map_err(read)?,
        };
        Ok(row.check(max_payload_bytes))
    }
}

impl ClaimedRow {
    /// The event, or why it can never be published: an empty topic, a payload over
    /// `max_payload_bytes` (not read), headers that are not an object of strings.
    pub fn check(self, max_payload_bytes: usize) -> Result<Event, InvalidEvent> {
        let ClaimedRow {
            id,
            topic,
            key,
            payload,
            payload_bytes,
            headers,
            message_id,
            created_at,
            attempts,
        } = self;
        let invalid = |reason: String| InvalidEvent {
            id,
            key: key.clone(),
            reason,
        };
        validate_topic(&topic).map_err(invalid)?;
        let payload = match payload {
            Some(payload) if payload.len() <= max_payload_bytes => payload,
            _ => {
                return Err(invalid(format!(
                    "payload is {payload_bytes} bytes, larger than OUTBOX_MAX_PAYLOAD_BYTES \
                     ({max_payload_bytes}); it was not read"
                )));
            }
        };
        let headers = string_headers(headers).map_err(invalid)?;
        Ok(Event {
            id,
            topic,
            key,
            payload,
            headers,
            message_id,
            created_at,
            attempts,
        })
    }
}

fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.trim().is_empty() {
        return Err(
            "topic is empty; set outbox.events.topic to the Kafka topic or AMQP routing key".into(),
        );
    }
    Ok(())
}

/// The contract's headers: a JSON object whose values are strings.
pub fn string_headers(headers: serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let serde_json::Value::Object(map) = headers else {
        return Err(format!(
            "headers must be a JSON object of string values, got {}",
            json_kind(&headers)
        ));
    };
    map.into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok((name, text)),
            other => Err(format!(
                "headers must be a JSON object of string values, but header {name:?} is {}",
                json_kind(&other)
            )),
        })
        .collect()
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An event of topic "t" with an empty payload, for unit tests of batch logic.
#[cfg(test)]
pub fn test_event(id: i64, key: Option<&str>) -> Event {
    Event {
        id,
        topic: "t".into(),
        key: key.map(str::to_string),
        payload: vec![],
        headers: vec![],
        message_id: uuid::Uuid::nil(),
        created_at: chrono::Utc::now(),
        attempts: 0,
    }
}

/// A test event (id 1) with these headers and payload.
#[cfg(test)]
pub fn test_event_with(key: Option<&str>, headers: &[(&str, &str)], payload: &[u8]) -> Event {
    Event {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        payload: payload.to_vec(),
        ..test_event(1, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_must_be_an_object_of_strings() {
        assert_eq!(
            string_headers(json!({"trace": "abc"})),
            Ok(vec![("trace".to_string(), "abc".to_string())])
        );
        let err = string_headers(json!({"retries": 3})).unwrap_err();
        assert!(err.contains("\"retries\" is a number"), "{err}");
        let err = string_headers(json!(["a"])).unwrap_err();
        assert!(err.contains("got an array"), "{err}");
    }

    #[test]
    fn empty_topic_is_rejected() {
        assert!(validate_topic(" ").unwrap_err().contains("topic is empty"));
        assert!(validate_topic("orders").is_ok());
    }

    proptest::proptest! {
        #![proptest_config(crate::outbox::arbitrary::config(1024))]

        /// Any row (any topic, key and headers JSON, a payload at, just under or just over the
        /// limit) is an event carrying exactly what the row held, or refused with its reason.
        #[test]
        fn any_row_is_an_event_or_refused_with_its_reason(
            row in crate::outbox::arbitrary::row(),
            offset in -2i64..=2,
        ) {
            let len = row.payload.as_ref().map_or(0, Vec::len);
            let max = usize::try_from(len as i64 + offset).unwrap_or(0);
            let mut row = row;
            if len > max {
                row.payload = None;
            }
            let given = row.clone();
            let headers = match &given.headers {
                serde_json::Value::Object(map) if map.values().all(|v| v.is_string()) => Some(map),
                _ => None,
            };
            match row.check(max) {
                Ok(event) => {
                    proptest::prop_assert!(!given.topic.trim().is_empty());
                    proptest::prop_assert_eq!(Some(&event.payload), given.payload.as_ref());
                    proptest::prop_assert!(event.payload.len() <= max);
                    let headers = headers.expect("an object of strings");
                    proptest::prop_assert_eq!(event.headers.len(), headers.len());
                    for (name, value) in &event.headers {
                        proptest::prop_assert_eq!(headers.get(name).and_then(|v| v.as_str()), Some(value.as_str()));
                    }
                    proptest::prop_assert_eq!(
                        (event.id, &event.topic, &event.key, event.message_id, event.created_at, event.attempts),
                        (given.id, &given.topic, &given.key, given.message_id, given.created_at, given.attempts)
                    );
                }
                Err(bad) => {
                    proptest::prop_assert_eq!((bad.id, &bad.key), (given.id, &given.key));
                    let expected = if given.topic.trim().is_empty() {
                        "topic is empty"
                    } else if given.payload.is_none() {
                        "larger than OUTBOX_MAX_PAYLOAD_BYTES"
                    } else {
                        proptest::prop_assert!(headers.is_none(), "{}", bad.reason);
                        "headers must be a JSON object of string values"
                    };
                    proptest::prop_assert!(bad.reason.contains(expected), "{}", bad.reason);
                }
            }
        }
    }
}
