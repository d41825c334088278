//! Any event through the Redis encoder: an entry whose fields and `headers` hold every header of
//! the format (nothing left out), whose `headers` parses back as a JSON object of strings, and
//! whose `payload` is the format's body; or the format's refusal.

use proptest::prelude::*;
use serde_json::Value;

use super::encode::{BINDING, Entry};
use crate::outbox::arbitrary;
use crate::sink::properties::formats;

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_an_entry_or_the_formats_refusal(
        event in arbitrary::event(),
        format in formats(),
    ) {
        let formatted = format.message(&event, BINDING);
        match (Entry::new(&format, &event), formatted) {
            (Ok(entry), Ok(formatted)) => {
                prop_assert_eq!(entry.payload.as_ref(), formatted.body.as_ref());
                if format.is_raw() {
                    prop_assert!(entry.fields.is_empty());
                }
                let headers: Value = serde_json::from_str(&entry.headers)
                    .map_err(|e| TestCaseError::fail(format!("headers not JSON: {e}")))?;
                let Value::Object(headers) = headers else {
                    return Err(TestCaseError::fail("headers not an object"));
                };
                prop_assert!(headers.values().all(Value::is_string));
                // Each header of the format is a field or in `headers`, nothing else is.
                prop_assert_eq!(entry.fields.len() + headers.len(), formatted.headers.len());
                for (name, value) in &formatted.headers {
                    let field = entry.fields.iter().any(|(n, v)| n == name && v == value);
                    let header = headers.get(*name).and_then(Value::as_str) == Some(value.as_ref());
                    prop_assert!(field != header, "{:?} once, as a field or a header", name);
                }
                prop_assert!(entry.size(&event) >= entry.payload.len());
            }
            (Err(reason), Err(refused)) => prop_assert_eq!(reason, refused),
            (entry, formatted) => prop_assert!(
                false,
                "the entry {:?} and the format {:?} disagree",
                entry.err(),
                formatted.err()
            ),
        }
    }
}
