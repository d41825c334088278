//! Generators of what comes from outside, for the property tests (`cargo test`): outbox rows as
//! any writer may leave them (any topic and key, headers JSON of any shape, any payload bytes),
//! the events that pass [`ClaimedRow::check`], and the seed and case count every property runs
//! with, so that a run is deterministic. `PROPTEST_RNG_SEED` and `PROPTEST_CASES` explore further.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::Value;
use uuid::Uuid;

use super::event::{ClaimedRow, Event};

/// The seed of every property unless `PROPTEST_RNG_SEED` is set.
pub const SEED: u64 = 0x0b0c_5eed;

/// `cases` cases from [`SEED`] (either overridden by `PROPTEST_CASES`, `PROPTEST_RNG_SEED`), no
/// regression files: a failing case found once is kept as a named unit test instead.
pub fn config(cases: u32) -> Config {
    let env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            env.cases
        } else {
            cases
        },
        rng_seed: match env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            fixed => fixed,
        },
        failure_persistence: None,
        ..env
    }
}

/// Any text, biased to what breaks encoders: empty, white space, control characters, the
/// separators of headers, subjects and templates, non-ASCII, and names around AMQP's 255 bytes.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,24}",
        2 => any::<String>(),
        1 => "[\\x00-\\x1f\\x7f \u{a0}\u{2028}]{0,6}",
        1 => "[:;,.%\"{}\\\\/*>$=\\r\\n]{0,8}",
        1 => Just(String::new()),
        1 => ("[a-zé]", 250usize..300).prop_map(|(c, n)| c.repeat(n)),
    ]
}

/// Header names: those with a meaning for a format or a sink (any case), and any text.
pub fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "type", "content-type", "Content-Type", "CONTENT-TYPE", "traceparent", "TraceParent",
            "tracestate", "ce-id", "ce_id", "CE-Source", "Ce_Type", "ce-subject", "ce_time",
            "Nats-Msg-Id", "nats-rollup", "message-id", "outbox-key", "webhook-id",
            "webhook-signature", "host", "content-length", "Transfer-Encoding", "correlation-id",
            "conversation-id", "a:b", "a b", "é", "",
        ])
        .prop_map(str::to_string),
        3 => text(),
    ]
}

/// Header values: content types, W3C `traceparent`s valid and not, GUIDs, and any text.
pub fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec![
            "application/json", "application/cloudevents+json; charset=utf-8", "text/plain",
            "TEXT/XML", "application/octet-stream", "text/plain\nx", "application/x+json",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "00-abc",
            "0b3a47c5-5a3c-4c8e-8f7e-9d1a2b3c4d5e",
        ])
        .prop_map(str::to_string),
        1 => "[0-9a-f]{2}-[0-9a-fA-F]{30,33}-[0-9a-f]{15,17}-[0-9a-f]{2}",
        4 => text(),
    ]
}

/// Any JSON value, nested a few levels.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A row's `headers`: mostly an object of strings (what the contract asks), else any object
/// (values of every type, nested) or any JSON at the top level.
pub fn headers_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => string_headers().prop_map(|h| Value::Object(
            h.into_iter().map(|(n, v)| (n, Value::String(v))).collect()
        )),
        1 => prop::collection::btree_map(header_name(), json(), 0..4)
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        1 => json(),
    ]
}

/// Headers as an object of strings holds them: distinct names.
pub fn string_headers() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(header_name(), header_value(), 0..6)
}

/// Payload bytes: empty, any bytes (mostly invalid UTF-8), JSON (compact or spread over lines),
/// UTF-8 text, JSON followed by a byte that is not UTF-8, and now and then 64 KiB-1 MiB.
pub fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        3 => prop::collection::vec(any::<u8>(), 0..256),
        3 => json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => json().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap_or_default()),
        2 => any::<String>().prop_map(String::into_bytes),
        1 => json().prop_map(|v| {
            let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
            bytes.push(0xff);
            bytes
        }),
        // JSON that parses on its own terms but not back into a value everywhere.
        1 => prop::sample::select(vec![
            "1e400", "[-1e999]", "{\"a\":1,\"a\":2}", "\"\\ud800\"", "18446744073709551616",
            " {} ", "\u{feff}{}", "{\"a\":\"\\u0000\"}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => (any::<u8>(), 65_536usize..1_048_576).prop_map(|(b, n)| vec![b; n]),
    ]
}

/// A topic as a writer may set it: any text, which [`ClaimedRow::check`] refuses when blank.
pub fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,8}([.:/-][a-z0-9]{1,8}){0,3}",
        2 => text(),
    ]
}

/// A key: none, or any text.
pub fn key() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.7, text())
}

/// Any time `chrono` and PostgreSQL both hold (years 1 to 9999).
pub fn created_at() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(DateTime::UNIX_EPOCH),
        (-62_135_596_800_000_000i64..253_402_300_799_999_999)
            .prop_map(|micros| DateTime::from_timestamp_micros(micros).unwrap_or_default()),
    ]
}

/// A row as the claim reads it (with its payload: a test sets it NULL to be over the limit, as
/// the claim leaves such a payload).
pub fn row() -> impl Strategy<Value = ClaimedRow> {
    (
        (any::<i64>(), topic(), key(), payload(), headers_json()),
        (any::<u128>(), created_at(), any::<i32>()),
    )
        .prop_map(|(columns, (id128, created_at, attempts))| {
            claimed_row(columns, id128, created_at, attempts)
        })
}

/// A claimed row of these columns, its payload's size as the claim computes it.
fn claimed_row(
    (id, topic, key, payload, headers): (i64, String, Option<String>, Vec<u8>, Value),
    id128: u128,
    created_at: DateTime<Utc>,
    attempts: i32,
) -> ClaimedRow {
    let payload_bytes = i32::try_from(payload.len()).unwrap_or(i32::MAX);
    ClaimedRow {
        id,
        topic,
        key,
        payload: Some(payload),
        payload_bytes,
        headers,
        message_id: Uuid::from_u128(id128),
        created_at,
        attempts,
    }
}

/// An event as it reaches the encoders: a row that passed [`ClaimedRow::check`].
pub fn event() -> impl Strategy<Value = Event> {
    (
        (any::<i64>(), topic(), key(), payload(), string_headers()),
        (any::<u128>(), created_at(), 0i32..1000),
    )
        .prop_filter_map(
            "a row every sink can be given",
            |((id, topic, key, payload, headers), (id128, created_at, attempts))| {
                let headers = Value::Object(
                    headers
                        .into_iter()
                        .map(|(n, v)| (n, Value::String(v)))
                        .collect(),
                );
                claimed_row(
                    (id, topic, key, payload, headers),
                    id128,
                    created_at,
                    attempts,
                )
                .check(usize::MAX)
                .ok()
            },
        )
}
