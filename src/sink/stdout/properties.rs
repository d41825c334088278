//! Any event through the stdout encoder: one line of JSON that reads back as the event (raw: id,
//! topic, key, headers, and the payload as text or base64, byte for byte), or the format's
//! refusal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use serde_json::Value;

use super::encode::{BINDING, formatted_line, raw_line};
use crate::outbox::arbitrary;
use crate::sink::properties::{document, formats, squeezed};

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_one_json_line_or_the_formats_refusal(
        event in arbitrary::event(),
        format in formats(),
    ) {
        let mut out = Vec::new();
        if format.is_raw() {
            raw_line(&event, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!out.contains(&b'\n'));
            let line: Value = serde_json::from_slice(&out)
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(&line["id"], &Value::from(event.id));
            prop_assert_eq!(&line["message_id"], &event.message_id.to_string());
            prop_assert_eq!(&line["topic"], &event.topic);
            prop_assert_eq!(line["key"].as_str(), event.key.as_deref());
            let payload = match (line.get("payload"), line.get("payload_base64")) {
                (Some(Value::String(text)), None) => text.as_bytes().to_vec(),
                (None, Some(Value::String(base64))) => BASE64
                    .decode(base64)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
                other => return Err(TestCaseError::fail(format!("payload: {other:?}"))),
            };
            prop_assert_eq!(payload, event.payload.clone());
            let headers: serde_json::Map<String, Value> = event
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            prop_assert_eq!(&line["headers"], &Value::Object(headers));
        } else {
            match (formatted_line(&format, &event, &mut out), format.message(&event, BINDING)) {
                (Ok(()), Ok(message)) => {
                    // One line, the format's document with the payload as written in it.
                    prop_assert!(!out.contains(&b'\n'), "one line");
                    let line = document(&out)?;
                    let body = document(&message.body)?;
                    prop_assert_eq!(
                        line.keys().collect::<Vec<_>>(),
                        body.keys().collect::<Vec<_>>()
                    );
                    for (name, value) in &line {
                        prop_assert_eq!(squeezed(value.get()), squeezed(body[name].get()), "{}", name);
                    }
                }
                (Err(reason), Err(refused)) => prop_assert_eq!(reason, refused),
                (line, message) => prop_assert!(
                    false,
                    "the line {:?} and the format {:?} disagree",
                    line.err(),
                    message.err()
                ),
            }
        }
    }
}
