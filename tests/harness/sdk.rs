//! Reading published messages back with the official CloudEvents SDK for Python (`cloudevents` on
//! PyPI, in the cache's venv: `scripts/services.sh python_packages`). The Rust tests dump what the
//! broker delivered; `read_cloudevents.py` parses it with the SDK's binding functions.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};

/// A message as a consumer received it, and how the SDK is to read it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// `kafka`, `rabbitmq`, `http` or `json` (one structured document).
    pub binding: &'static str,
    /// `binary` or `structured`.
    pub mode: &'static str,
    pub headers: BTreeMap<String, String>,
    /// RabbitMQ's `content_type` property.
    pub content_type: Option<String>,
    /// Kafka's message key.
    pub key: Option<String>,
    pub body: Vec<u8>,
}

/// An event as the SDK parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The SDK function that parsed it, with the SDK's version.
    pub sdk: String,
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub kind: String,
    pub subject: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub datacontenttype: Option<String>,
    /// JSON data as JSON, text as `{"text": ...}`, bytes as `{"base64": ...}`.
    pub data: serde_json::Value,
}

fn venv_python() -> PathBuf {
    let cache = std::env::var("OUTBOX_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".cache/outbox-relay")
        });
    cache.join("venv/bin/python")
}

/// Parses every message with the CloudEvents SDK; panics with the SDK's error if it cannot.
pub fn read_cloudevents(messages: &[Delivered]) -> Vec<Parsed> {
    let input: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "binding": m.binding,
                "mode": m.mode,
                "headers": m.headers,
                "content_type": m.content_type,
                "key": m.key,
                "body_base64": BASE64.encode(&m.body),
            })
        })
        .collect();
    let python = venv_python();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/harness/read_cloudevents.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install the CloudEvents SDK with `bash scripts/services.sh python_packages`",
                python.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(&input).expect("encode"))
        .expect("write to the SDK script");
    let output = child.wait_with_output().expect("SDK script output");
    assert!(
        output.status.success(),
        "the CloudEvents SDK could not read the messages:\n{}\ninput: {input:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("SDK script prints JSON");
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    parsed
        .iter()
        .map(|p| Parsed {
            sdk: text(&p["sdk"]).unwrap_or_default(),
            specversion: text(&p["specversion"]).unwrap_or_default(),
            id: text(&p["id"]).unwrap_or_default(),
            source: text(&p["source"]).unwrap_or_default(),
            kind: text(&p["type"]).unwrap_or_default(),
            subject: text(&p["subject"]),
            time: text(&p["time"]).map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .unwrap_or_else(|e| panic!("SDK time {t:?}: {e}"))
                    .with_timezone(&Utc)
            }),
            datacontenttype: text(&p["datacontenttype"]),
            data: p["data"].clone(),
        })
        .collect()
}

/// What the tests expect of an event read back: its row.
#[derive(Debug, Clone)]
pub struct Row {
    pub message_id: String,
    pub key: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The rows of the test's events, by message id.
pub async fn rows(client: &tokio_postgres::Client) -> BTreeMap<String, Row> {
    client
        .query(
            "SELECT message_id::text, key, created_at FROM outbox.events",
            &[],
        )
        .await
        .expect("read events")
        .iter()
        .map(|r| {
            let row = Row {
                message_id: r.get(0),
                key: r.get(1),
                created_at: r.get(2),
            };
            (row.message_id.clone(), row)
        })
        .collect()
}

/// Checks the attributes every CloudEvent of the relay has: `id` = message id, `source`,
/// `subject` = key, `time` = created_at, specversion 1.0.
pub fn assert_common_attributes(parsed: &Parsed, rows: &BTreeMap<String, Row>, source: &str) {
    let row = rows
        .get(&parsed.id)
        .unwrap_or_else(|| panic!("id {} is an event's message id: {parsed:?}", parsed.id));
    assert_eq!(parsed.specversion, "1.0", "{parsed:?}");
    assert_eq!(parsed.source, source, "{parsed:?}");
    assert_eq!(parsed.subject, row.key, "subject = key: {parsed:?}");
    assert_eq!(
        parsed.time,
        Some(row.created_at),
        "time = created_at: {parsed:?}"
    );
}
