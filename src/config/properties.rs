//! Property tests of the settings parser: any text for every numeric and enumerated setting (core
//! and the sinks' own), and any TOML document, is read or refused, never a panic; every refusal
//! names the setting (its variable, or `OUTBOX_CONFIG` with the file) and why. An empty value is
//! the same as unset: the default applies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::{ConfigError, SettingArgs, Settings, sink_keys};
use crate::adopt::Adoption;
use crate::outbox::arbitrary;
use crate::settings::table::{
    ADOPT, CONFIG, CORE, HTTP_ADDR, LOG_FORMAT, REPLICA_MODE, RETRY_BASE_DELAY_MS,
    RETRY_MAX_DELAY_MS, SINK, Setting,
};

/// Valid apart from what a case sets; no stall check, so that no number is refused for another's
/// sake, and a retry cap that any base fits under.
const BASE: [(&str, &str); 3] = [
    ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
    ("OUTBOX_SINK", "stdout"),
    ("OUTBOX_STALL_TIMEOUT_SECS", "0"),
];

/// Text as a number setting may be given: 0, negative, huge, fractions, exponents, hex, padded,
/// signed, non-ASCII digits, empty, white space, and any text.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "",
            " ",
            "\t",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-0",
            "+1",
            "1_000",
            "1e3",
            "0x10",
            "1.5",
            "١٢",
            "５",
        ])
        .prop_map(str::to_string),
        "-?[0-9]{1,22}",
        " {0,2}[0-9]{1,7} {0,2}",
        arbitrary::text(),
    ]
}

/// The problem names the setting (Display) and the variable is a real one.
fn named(err: &ConfigError, setting: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&err.setting, setting, "{}", err);
    prop_assert!(err.to_string().contains(setting), "{}", err);
    prop_assert!(!err.problem.trim().is_empty(), "{}", err);
    Ok(())
}

fn relay_with(setting: &Setting, text: &str) -> Result<super::RelayConfig, ConfigError> {
    let mut pairs: Vec<(&str, &str)> = BASE.to_vec();
    if setting.env == RETRY_BASE_DELAY_MS.env {
        pairs.push((RETRY_MAX_DELAY_MS.env, "86400000"));
    }
    pairs.push((setting.env, text));
    Settings::from_pairs(&pairs).relay()
}

fn numbers() -> Vec<&'static Setting> {
    CORE.iter().filter(|s| s.range.is_some()).collect()
}

/// Each enumerated setting, what it accepts, and how it is read.
type Read = fn(&Settings) -> Result<(), ConfigError>;
fn enums() -> Vec<(&'static str, &'static [&'static str], Read)> {
    vec![
        (LOG_FORMAT.env, &["text", "json"], |s| {
            s.log_format().map(drop)
        }),
        (REPLICA_MODE.env, &["lanes", "single"], |s| {
            s.relay().map(drop)
        }),
        (
            SINK.env,
            &[
                "stdout", "rabbitmq", "kafka", "redis", "nats", "http", "bullmq",
            ],
            |s| s.sinks().map(drop),
        ),
        (
            "OUTBOX_FORMAT",
            &["raw", "cloudevents", "masstransit"],
            |s| s.sinks().map(drop),
        ),
        ("OUTBOX_CLOUDEVENTS_MODE", &["binary", "structured"], |s| {
            s.sinks().map(drop)
        }),
        (ADOPT.env, &["debezium", "masstransit"], |s| {
            Adoption::read(s).map(drop)
        }),
        (HTTP_ADDR.env, &["127.0.0.1:9898", "[::1]:0"], |s| {
            s.relay().map(drop)
        }),
    ]
}

/// The sinks' own numbers: the variable, the settings that make the sink valid besides.
const SINK_NUMBERS: &[(&str, &[(&str, &str)])] = &[
    (
        "OUTBOX_REDIS_DEDUP_SECS",
        &[
            ("OUTBOX_SINK", "redis"),
            ("OUTBOX_REDIS_URL", "redis://127.0.0.1"),
        ],
    ),
    (
        "OUTBOX_REDIS_MAXLEN",
        &[
            ("OUTBOX_SINK", "redis"),
            ("OUTBOX_REDIS_URL", "redis://127.0.0.1"),
        ],
    ),
    (
        "OUTBOX_WEBHOOK_TIMEOUT_MS",
        &[
            ("OUTBOX_SINK", "http"),
            ("OUTBOX_WEBHOOK_URL", "http://127.0.0.1/x"),
        ],
    ),
    (
        "OUTBOX_WEBHOOK_CONCURRENCY",
        &[
            ("OUTBOX_SINK", "http"),
            ("OUTBOX_WEBHOOK_URL", "http://127.0.0.1/x"),
        ],
    ),
    (
        "OUTBOX_BULLMQ_DEDUP_SECS",
        &[
            ("OUTBOX_SINK", "bullmq"),
            ("OUTBOX_BULLMQ_URL", "redis://127.0.0.1"),
        ],
    ),
];

/// A TOML value of any type, nested a little.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        3 => arbitrary::text().prop_map(toml::Value::String),
        2 => number_text().prop_map(toml::Value::String),
        2 => any::<i64>().prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => Just(toml::Value::Datetime(
            "1979-05-27T07:32:00Z".parse().expect("a TOML datetime")
        )),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
            prop::collection::btree_map(arbitrary::text(), inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A key of the file: a core setting's, a sink's, `routes`, `sinks`, `kind`, or any text.
fn toml_key() -> impl Strategy<Value = String> {
    let mut known: Vec<String> = CORE.iter().map(Setting::key).collect();
    known.extend(sink_keys().iter().map(|k| k.to_lowercase()));
    known.extend(["routes".into(), "sinks".into(), "kind".into(), CONFIG.key()]);
    prop_oneof![3 => prop::sample::select(known), 1 => arbitrary::text()]
}

/// A named sink's table: a kind (a real one or not) and some of the settings.
fn sink_table() -> impl Strategy<Value = toml::Value> {
    let kind = prop_oneof![
        prop::sample::select(vec![
            "stdout", "rabbitmq", "kafka", "redis", "nats", "http", "bullmq"
        ])
        .prop_map(|k| toml::Value::String(k.into())),
        toml_value(),
    ];
    (
        prop::option::weighted(0.8, kind),
        prop::collection::btree_map(toml_key(), toml_value(), 0..3),
    )
        .prop_map(|(kind, rest)| {
            let mut table: toml::Table = rest.into_iter().collect();
            if let Some(kind) = kind {
                table.insert("kind".into(), kind);
            }
            toml::Value::Table(table)
        })
}

/// A TOML document: settings of any type, routes, named sinks; as written, or broken (cut short,
/// or with junk inserted), or any text at all.
fn toml_document() -> impl Strategy<Value = String> {
    let sinks = prop::collection::btree_map(
        prop_oneof!["[a-z][a-z0-9_-]{0,6}", arbitrary::text()],
        prop_oneof![4 => sink_table(), 1 => toml_value()],
        0..3,
    )
    .prop_map(|m| toml::Value::Table(m.into_iter().collect()));
    let table = (
        prop::collection::btree_map(toml_key(), toml_value(), 0..6),
        prop::option::of(sinks),
    )
        .prop_map(|(values, sinks)| {
            let mut table: toml::Table = values.into_iter().collect();
            if let Some(sinks) = sinks {
                table.insert("sinks".into(), sinks);
            }
            toml::to_string(&table).unwrap_or_default()
        })
        .boxed();
    let broken = (
        table.clone(),
        any::<prop::sample::Index>(),
        "[\\[\\]{}=\"'#\\n.,]{1,3}",
    )
        .prop_map(|(text, at, junk)| {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if junk.len() == 1 {
                text[..at].to_string()
            } else {
                format!("{}{junk}{}", &text[..at], &text[at..])
            }
        });
    prop_oneof![4 => table, 2 => broken, 1 => arbitrary::text()]
}

/// A fresh file for one case.
fn file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("outbox-relay-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!(
        "case-{}.toml",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write");
    path
}

proptest! {
    #![proptest_config(arbitrary::config(512))]

    /// Any text for a numeric core setting: within its range it is taken, empty it is unset,
    /// otherwise the refusal names the variable and the range.
    #[test]
    fn any_text_for_a_core_number_is_taken_or_refused_with_its_range(
        setting in prop::sample::select(numbers()),
        text in number_text(),
    ) {
        let range = setting.range.expect("a number");
        let trimmed = text.trim();
        let unset = relay_with(setting, "").map(|c| format!("{c:?}"));
        match (relay_with(setting, &text), trimmed.parse::<u64>()) {
            (Ok(config), _) if trimmed.is_empty() => {
                prop_assert_eq!(Ok(format!("{config:?}")), unset.map_err(|e| e.to_string()), "the default");
            }
            (Ok(_), Ok(n)) => prop_assert!((range.min..=range.max).contains(&n)),
            (Ok(_), Err(_)) => prop_assert!(false, "{:?} taken", text),
            (Err(err), Ok(n)) if (range.min..=range.max).contains(&n) => {
                // A valid number refused for another setting's sake (the retry cap below its
                // base, a stall timeout not longer than a publish): the problem names the other.
                named(&err, setting.env)?;
                prop_assert!(!err.problem.contains(&range.describe()), "{}", err);
                let other = [
                    RETRY_BASE_DELAY_MS.env,
                    RETRY_MAX_DELAY_MS.env,
                    "OUTBOX_PUBLISH_TIMEOUT_MS",
                    "OUTBOX_POLL_INTERVAL_MS",
                ];
                prop_assert!(other.iter().any(|o| err.problem.contains(o)), "{}", err);
            }
            (Err(err), _) => {
                prop_assert!(!trimmed.is_empty(), "empty refused: {}", err);
                named(&err, setting.env)?;
                prop_assert!(err.problem.contains(&range.describe()), "{}", err);
            }
        }
    }

    /// Any text for an enumerated setting (and the HTTP address): one of its values is taken,
    /// empty is unset, anything else is refused naming the variable and what it got.
    #[test]
    fn any_text_for_an_enumerated_setting_is_taken_or_refused_by_name(
        ((env, accepted, read), text) in prop::sample::select(enums()).prop_flat_map(|e| {
            let own = prop::sample::select(e.1.to_vec());
            let text = prop_oneof![
                own.clone().prop_map(str::to_string),
                own.clone().prop_map(str::to_uppercase),
                own.prop_map(|a| format!(" {a}\t")),
                prop::sample::select(vec!["", " ", "text", "lanes", "stdout", "raw", "binary",
                    "debezium", "0.0.0.0:9898", "localhost:9898", ":9898"])
                    .prop_map(str::to_string),
                arbitrary::text(),
            ];
            (Just(e), text)
        }),
    ) {
        let mut pairs: Vec<(&str, &str)> = BASE.to_vec();
        if env == "OUTBOX_CLOUDEVENTS_MODE" {
            pairs.push(("OUTBOX_FORMAT", "cloudevents"));
        }
        pairs.push((env, &text));
        let trimmed = text.trim();
        match read(&Settings::from_pairs(&pairs)) {
            Ok(()) => prop_assert!(
                trimmed.is_empty() || accepted.contains(&trimmed) || env == HTTP_ADDR.env,
                "{:?} taken", text
            ),
            Err(err) if trimmed.is_empty() => {
                // Unset: only the default sink is required.
                named(&err, SINK.env)?;
                prop_assert_eq!(env, SINK.env);
            }
            Err(err) if accepted.contains(&trimmed) => {
                // Taken, and a setting it needs is missing (a sink kind's URL).
                prop_assert_ne!(&err.setting, env, "{:?} refused: {}", text, err);
                named(&err, &err.setting.clone())?;
            }
            Err(err) => {
                named(&err, env)?;
                prop_assert!(err.problem.contains(&format!("{trimmed:?}")), "{}", err);
            }
        }
    }

    /// Any text for a sink's own number: taken, unset when empty, or refused naming the variable.
    #[test]
    fn any_text_for_a_sinks_number_is_taken_or_refused_by_name(
        (env, base) in prop::sample::select(SINK_NUMBERS),
        text in number_text(),
    ) {
        let mut pairs = base.to_vec();
        pairs.push((env, &text));
        let trimmed = text.trim();
        match Settings::from_pairs(&pairs).sinks() {
            Ok(_) => prop_assert!(trimmed.is_empty() || trimmed.parse::<u64>().is_ok(), "{:?} taken", text),
            Err(err) => {
                prop_assert!(!trimmed.is_empty(), "empty refused: {}", err);
                named(&err, env)?;
            }
        }
    }

    /// Any TOML document: read, or refused by `OUTBOX_CONFIG` naming the file; what it holds is
    /// then read or refused by the setting's name.
    #[test]
    fn any_toml_document_is_read_or_refused_naming_the_file(text in toml_document()) {
        let path = file(&text);
        let args = SettingArgs::default().with(&CONFIG, path.display().to_string());
        let resolved = Settings::resolve(&args, &sink_keys());
        let _ = std::fs::remove_file(&path);
        match resolved {
            Err(err) => {
                prop_assert!(err.setting == CONFIG.env || err.setting == "OUTBOX_SINKS", "{}", err);
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                prop_assert!(err.problem.contains(name), "the file is named: {}", err);
            }
            Ok(settings) => {
                let checks = [
                    settings.relay().map(drop),
                    settings.sinks().map(drop),
                    settings.log_format().map(drop),
                    Adoption::read(&settings).map(drop),
                ];
                for err in checks.into_iter().filter_map(Result::err) {
                    prop_assert!(err.setting.starts_with("OUTBOX_"), "{}", err);
                    prop_assert!(err.to_string().contains(&err.setting), "{}", err);
                    prop_assert!(!err.problem.trim().is_empty(), "{}", err);
                }
            }
        }
    }
}
