//! What the settings assemble into: the sinks and routes, and the validated [`RelayConfig`] that
//! `run` and `check` use. The settings themselves, with their defaults, are declared and read by
//! [`crate::settings`]; every error names the setting it is about.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::db::DatabaseUrl;
use crate::format;
use crate::outbox::pooler::Pooled;
use crate::retry::RetryPolicy;
use crate::route::{Pattern, Routes};
use crate::settings::list;
use crate::settings::table::{
    BATCH_LINGER_MS, BATCH_MAX_BYTES, BATCH_SIZE, DATABASE_URL, HTTP_ADDR, LEADER_POLL_MS,
    LOG_FORMAT, MAX_ATTEMPTS, MAX_PAYLOAD_BYTES, POLL_INTERVAL_MS, PUBLISH_TIMEOUT_MS,
    REPLICA_MODE, RETENTION_SECS, RETRY_BASE_DELAY_MS, RETRY_MAX_DELAY_MS, SHUTDOWN_TIMEOUT_SECS,
    SINK, STALL_TIMEOUT_SECS, Setting,
};
pub use crate::settings::{ConfigError, SettingArgs, Settings};
use crate::sink::{Kind, SinkConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How replicas of one outbox share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaMode {
    /// Every replica relays a fair share of the lanes.
    Lanes,
    /// One replica (the leader lock's holder) relays every lane; the others stand by.
    Single,
}

/// A sink as configured: its name (in routes, logs and metrics), kind and validated settings.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    pub kind: &'static str,
    pub config: Arc<dyn SinkConfig>,
}

/// A transaction pool in front of PostgreSQL is a fault of the database URL.
impl From<Pooled> for ConfigError {
    fn from(pooled: Pooled) -> Self {
        ConfigError::new(DATABASE_URL.env, pooled.to_string())
    }
}

/// Every setting a sink may read (without `OUTBOX_`): its kind's and the message format's. The
/// settings reader takes these from the environment and the file.
pub fn sink_keys() -> Vec<&'static str> {
    Kind::settings()
        .chain(format::SETTINGS.iter().copied())
        .collect()
}

/// Everything `run` and `check` need, validated.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub database: DatabaseUrl,
    /// Every sink, the default one (`OUTBOX_SINK`) first.
    pub sinks: Vec<SinkSpec>,
    /// Which sink each topic goes to (indices into `sinks`).
    pub routes: Routes,
    pub http_addr: SocketAddr,
    pub batch_size: u32,
    pub poll_interval: Duration,
    /// The least time from a claim that was not full to the next claim.
    pub batch_linger: Duration,
    pub leader_poll: Duration,
    pub shutdown_timeout: Duration,
    pub max_attempts: u32,
    pub max_payload_bytes: usize,
    /// Payload bytes per batch (the first event always goes).
    pub batch_max_bytes: usize,
    pub retention: Duration,
    pub retry: RetryPolicy,
    /// Longest wait for the broker in one publish or connect; then it is an outage.
    pub publish_timeout: Duration,
    /// `/healthz` fails after the active relay made no progress for this long; `None`: never.
    pub stall_timeout: Option<Duration>,
    pub replica_mode: ReplicaMode,
}

impl Settings {
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.text(&LOG_FORMAT).unwrap_or_default() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::new(
                LOG_FORMAT.env,
                format!("expected text or json, got {other:?}"),
            )),
        }
    }

    pub fn database(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = self.required(
            DATABASE_URL.env,
            "a PostgreSQL URL such as postgres://user@host:5432/db",
        )?;
        DatabaseUrl::parse(url).map_err(|problem| ConfigError::new(DATABASE_URL.env, problem))
    }

    /// The sinks and the routes to them: the default sink (`OUTBOX_SINK`, named after its kind)
    /// and the named ones (`OUTBOX_SINKS`), each with its settings validated.
    pub fn sinks(&self) -> Result<(Vec<SinkSpec>, Routes), ConfigError> {
        let mut sinks = Vec::new();
        if let Some(kind) = self.get(SINK.env) {
            let kind = Kind::find(kind).ok_or_else(|| {
                ConfigError::new(
                    SINK.env,
                    format!("expected {}, got {kind:?}", Kind::names()),
                )
            })?;
            sinks.push(self.sink(kind.name, kind, "OUTBOX_".to_string())?);
        }
        let has_default = !sinks.is_empty();
        for (name, kind) in self.named_sinks()? {
            if sinks.iter().any(|s| s.name == name) {
                return Err(ConfigError::new(
                    "OUTBOX_SINKS",
                    format!(
                        "sink name {name:?} is used twice (the sink of OUTBOX_SINK is named after its kind)"
                    ),
                ));
            }
            let prefix = format!("OUTBOX_SINK_{}_", name.to_uppercase().replace('-', "_"));
            sinks.push(self.sink(&name, kind, prefix)?);
        }
        if sinks.is_empty() {
            return Err(ConfigError::new(
                SINK.env,
                format!(
                    "is required: set it to {} (or name several sinks in OUTBOX_SINKS)",
                    Kind::names()
                ),
            ));
        }
        let routes = self.routes(&sinks, has_default)?;
        Ok((sinks, routes))
    }

    /// `OUTBOX_ROUTES`: `topic-pattern=sink` pairs; every named sink needs one, and the default
    /// sink (if any, always first) takes the topics no route matches.
    fn routes(&self, sinks: &[SinkSpec], has_default: bool) -> Result<Routes, ConfigError> {
        let mut routes = Vec::new();
        for item in list(self.get("OUTBOX_ROUTES").unwrap_or("")) {
            let problem = |p: String| ConfigError::new("OUTBOX_ROUTES", p);
            let Some((pattern, sink)) = item.split_once('=') else {
                return Err(problem(format!(
                    "expected topic-pattern=sink, e.g. \"audit.*=audit\", got {item:?}"
                )));
            };
            let (pattern, sink) = (pattern.trim(), sink.trim());
            let index = sinks.iter().position(|s| s.name == sink).ok_or_else(|| {
                let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
                problem(format!(
                    "route {item:?} names sink {sink:?}; the sinks are {}",
                    names.join(", ")
                ))
            })?;
            routes.push((Pattern::parse(pattern).map_err(problem)?, index));
        }
        for (index, sink) in sinks.iter().enumerate().skip(usize::from(has_default)) {
            if !routes.iter().any(|(_, i)| *i == index) {
                return Err(ConfigError::new(
                    "OUTBOX_ROUTES",
                    format!(
                        "no route leads to sink {:?}; add e.g. \"orders.*={}\"",
                        sink.name, sink.name
                    ),
                ));
            }
        }
        Ok(Routes::new(routes, has_default.then_some(0)))
    }

    fn sink(
        &self,
        name: &str,
        kind: &'static Kind,
        prefix: String,
    ) -> Result<SinkSpec, ConfigError> {
        let settings = self.sink_settings(prefix);
        let config = (kind.configure)(&settings)?;
        // A sink that does not read its message format, yet has one other than raw set, is a
        // configuration error rather than silently raw.
        if !settings.was_read("FORMAT")
            && let Some(format) = settings.get("FORMAT").filter(|f| *f != "raw")
        {
            return Err(settings.error(
                "FORMAT",
                format!(
                    "sink {name} ({}) publishes only the raw format, got {format:?}",
                    kind.name
                ),
            ));
        }
        Ok(SinkSpec {
            name: name.to_string(),
            kind: kind.name,
            config: Arc::from(config),
        })
    }

    /// `OUTBOX_SINKS`: `name=kind` pairs.
    fn named_sinks(&self) -> Result<Vec<(String, &'static Kind)>, ConfigError> {
        let mut named = Vec::new();
        for item in list(self.get("OUTBOX_SINKS").unwrap_or("")) {
            let problem = |p: String| ConfigError::new("OUTBOX_SINKS", p);
            let Some((name, kind)) = item.split_once('=') else {
                return Err(problem(format!(
                    "expected name=kind, e.g. \"audit=http\", got {item:?}"
                )));
            };
            let (name, kind) = (name.trim(), kind.trim());
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid {
                return Err(problem(format!(
                    "sink name {name:?} must be lower-case letters, digits, '_' or '-'"
                )));
            }
            let kind = Kind::find(kind).ok_or_else(|| {
                problem(format!(
                    "sink {name:?}: expected a kind among {}, got {kind:?}",
                    Kind::names()
                ))
            })?;
            named.push((name.to_string(), kind));
        }
        Ok(named)
    }

    /// Everything `run` and `check` need, each setting checked in turn (the first wrong one is
    /// reported).
    pub fn relay(&self) -> Result<RelayConfig, ConfigError> {
        let http_addr = self.http_addr()?;
        let retry = self.retry()?;
        let publish_timeout = self.millis(&PUBLISH_TIMEOUT_MS)?;
        let poll_interval = self.millis(&POLL_INTERVAL_MS)?;
        let stall_timeout = self.stall_timeout(&[
            (&PUBLISH_TIMEOUT_MS, publish_timeout),
            (&POLL_INTERVAL_MS, poll_interval),
            (&RETRY_MAX_DELAY_MS, retry.max_delay),
        ])?;
        let (sinks, routes) = self.sinks()?;
        Ok(RelayConfig {
            database: self.database()?,
            sinks,
            routes,
            http_addr,
            batch_size: self.count(&BATCH_SIZE)?,
            poll_interval,
            batch_linger: self.millis(&BATCH_LINGER_MS)?,
            leader_poll: self.millis(&LEADER_POLL_MS)?,
            shutdown_timeout: self.seconds(&SHUTDOWN_TIMEOUT_SECS)?,
            max_attempts: self.count(&MAX_ATTEMPTS)?,
            max_payload_bytes: self.count(&MAX_PAYLOAD_BYTES)?,
            batch_max_bytes: self.count(&BATCH_MAX_BYTES)?,
            retention: self.seconds(&RETENTION_SECS)?,
            retry,
            publish_timeout,
            stall_timeout,
            replica_mode: self.replica_mode()?,
        })
    }

    /// A number of milliseconds within the setting's range.
    fn millis(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.number(setting)?))
    }

    /// A number of seconds within the setting's range.
    fn seconds(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.number(setting)?))
    }

    /// A count (or bytes) within the setting's range, as the type the relay keeps it in.
    fn count<T: TryFrom<u64>>(&self, setting: &Setting) -> Result<T, ConfigError> {
        let value = self.number(setting)?;
        T::try_from(value)
            .map_err(|_| ConfigError::new(setting.env, format!("{value} is too large here")))
    }

    fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        let http = self.text(&HTTP_ADDR).unwrap_or_default();
        http.parse().map_err(|_| {
            ConfigError::new(
                HTTP_ADDR.env,
                format!("expected host:port such as 0.0.0.0:9898, got {http:?}"),
            )
        })
    }

    /// The backoff between retries: its first delay, and a cap no lower than that.
    fn retry(&self) -> Result<RetryPolicy, ConfigError> {
        let base = self.number(&RETRY_BASE_DELAY_MS)?;
        let cap = self.number(&RETRY_MAX_DELAY_MS)?;
        if cap < base {
            return Err(ConfigError::new(
                RETRY_MAX_DELAY_MS.env,
                format!(
                    "must be at least {} ({base}), got {cap}",
                    RETRY_BASE_DELAY_MS.env
                ),
            ));
        }
        Ok(RetryPolicy {
            base_delay: Duration::from_millis(base),
            max_delay: Duration::from_millis(cap),
        })
    }

    fn replica_mode(&self) -> Result<ReplicaMode, ConfigError> {
        match self.text(&REPLICA_MODE).unwrap_or_default() {
            "lanes" => Ok(ReplicaMode::Lanes),
            "single" => Ok(ReplicaMode::Single),
            other => Err(ConfigError::new(
                REPLICA_MODE.env,
                format!("expected lanes or single, got {other:?}"),
            )),
        }
    }

    /// `None` when disabled (0). Must be longer than each wait of a healthy loop iteration
    /// (`waits`: a publish up to its timeout, an idle poll, a back-pressure pause), or `/healthz`
    /// would fail a relay that works.
    fn stall_timeout(
        &self,
        waits: &[(&Setting, Duration)],
    ) -> Result<Option<Duration>, ConfigError> {
        let secs = self.number(&STALL_TIMEOUT_SECS)?;
        if secs == 0 {
            return Ok(None);
        }
        let stall = Duration::from_secs(secs);
        for &(other, value) in waits {
            if stall <= value {
                return Err(ConfigError::new(
                    STALL_TIMEOUT_SECS.env,
                    format!(
                        "must be longer than {} ({} ms), got {secs} s; raise it or set 0 to disable the stall check",
                        other.env,
                        value.as_millis()
                    ),
                ));
            }
        }
        Ok(Some(stall))
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::table::CONFIG;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs)
    }

    #[test]
    fn unknown_sink_names_the_setting() {
        let err = settings(&[("OUTBOX_SINK", "mqtt")]).sinks().unwrap_err();
        assert_eq!(err.setting, "OUTBOX_SINK");
        assert!(err.problem.contains("mqtt"), "{err}");
    }

    #[test]
    fn rabbitmq_requires_an_amqp_url() {
        let err = settings(&[("OUTBOX_SINK", "rabbitmq")])
            .sinks()
            .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_AMQP_URL");
        let err = settings(&[("OUTBOX_SINK", "rabbitmq"), ("OUTBOX_AMQP_URL", "http://x")])
            .sinks()
            .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_AMQP_URL");
    }

    #[test]
    fn named_sinks_read_their_own_settings_and_need_a_route() {
        let base = [
            ("OUTBOX_SINK", "stdout"),
            ("OUTBOX_SINKS", "audit=rabbitmq"),
            ("OUTBOX_ROUTES", "audit.*=audit"),
        ];
        let err = settings(&base).sinks().unwrap_err();
        assert_eq!(err.setting, "OUTBOX_SINK_AUDIT_AMQP_URL");

        let mut complete = base.to_vec();
        complete.push((
            "OUTBOX_SINK_AUDIT_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ));
        let (sinks, routes) = settings(&complete).sinks().expect("valid");
        let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["stdout", "audit"]);
        assert_eq!(routes.sink_for("audit.login"), Some(1));
        assert_eq!(routes.sink_for("orders"), Some(0));

        let unrouted = [("OUTBOX_SINK", "stdout"), ("OUTBOX_SINKS", "audit=stdout")];
        assert_eq!(
            settings(&unrouted).sinks().unwrap_err().setting,
            "OUTBOX_ROUTES"
        );
        let unknown = [
            ("OUTBOX_SINKS", "audit=stdout"),
            ("OUTBOX_ROUTES", "audit.*=audits"),
        ];
        let err = settings(&unknown).sinks().unwrap_err();
        assert!(err.problem.contains("audits"), "{err}");
        // Without a default sink, a topic no route matches has no sink.
        let (_, routes) = settings(&[
            ("OUTBOX_SINKS", "audit=stdout"),
            ("OUTBOX_ROUTES", "audit.*=audit"),
        ])
        .sinks()
        .expect("valid");
        assert_eq!(routes.sink_for("orders"), None);
    }

    #[test]
    fn defaults_apply_and_bad_numbers_are_named() {
        let base = [
            ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
            ("OUTBOX_SINK", "stdout"),
        ];
        let config = settings(&base).relay().expect("valid");
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.batch_size, 500);
        assert_eq!(config.http_addr.port(), 9898);

        let mut bad = base.to_vec();
        bad.push(("OUTBOX_MAX_ATTEMPTS", "many"));
        let err = settings(&bad).relay().unwrap_err();
        assert_eq!(err.setting, "OUTBOX_MAX_ATTEMPTS");

        let mut zero = base.to_vec();
        zero.push(("OUTBOX_BATCH_SIZE", "0"));
        assert_eq!(
            settings(&zero).relay().unwrap_err().setting,
            "OUTBOX_BATCH_SIZE"
        );

        assert_eq!(
            config.batch_linger,
            Duration::from_millis(1),
            "1 ms by default"
        );
        let mut linger = base.to_vec();
        linger.push(("OUTBOX_BATCH_LINGER_MS", "3"));
        let config = settings(&linger).relay().expect("valid");
        assert_eq!(config.batch_linger, Duration::from_millis(3));
        for bad in ["-1", "1001", "18446744073709551615"] {
            linger.push(("OUTBOX_BATCH_LINGER_MS", bad));
            assert_eq!(
                settings(&linger).relay().unwrap_err().setting,
                "OUTBOX_BATCH_LINGER_MS",
                "{bad}"
            );
        }
    }

    #[test]
    fn every_number_outside_its_range_is_refused_with_the_range() {
        let base = [
            ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
            ("OUTBOX_SINK", "stdout"),
            // Long enough for any publish timeout or poll interval tried below.
            ("OUTBOX_STALL_TIMEOUT_SECS", "0"),
        ];
        let numbers = crate::settings::table::CORE
            .iter()
            .filter_map(|s| s.range.map(|r| (s, r)));
        let mut tried = 0;
        for (setting, range) in numbers {
            let below = range.min.checked_sub(1).map(|n| n.to_string());
            let above = (range.max + 1).to_string();
            let wrong = ["-1", "many", "1.5", "18446744073709551616", &above];
            for value in below.iter().map(String::as_str).chain(wrong) {
                let mut pairs = base.to_vec();
                pairs.retain(|(name, _)| *name != setting.env);
                pairs.push((setting.env, value));
                let err = settings(&pairs).relay().unwrap_err();
                assert_eq!(err.setting, setting.env, "{value}: {err}");
                assert!(err.problem.contains(&range.describe()), "{value}: {err}");
                tried += 1;
            }
            for edge in [range.min, range.max] {
                let mut pairs = base.to_vec();
                pairs.retain(|(name, _)| *name != setting.env);
                let edge = edge.to_string();
                pairs.push((setting.env, &edge));
                if setting.env == "OUTBOX_RETRY_BASE_DELAY_MS" {
                    pairs.push(("OUTBOX_RETRY_MAX_DELAY_MS", &edge));
                }
                if let Err(err) = settings(&pairs).relay() {
                    // A valid number may still be refused for another setting's sake.
                    assert!(!err.problem.contains("expected"), "{edge}: {err}");
                }
            }
            // Empty or blank is the same as unset: the default applies (docs/configuration.md).
            let mut unset = base.to_vec();
            unset.retain(|(name, _)| *name != setting.env);
            let default = format!("{:?}", settings(&unset).relay().expect("the defaults"));
            for empty in ["", "  "] {
                let mut pairs = unset.clone();
                pairs.push((setting.env, empty));
                let config = settings(&pairs)
                    .relay()
                    .unwrap_or_else(|e| panic!("{}={empty:?}: {e}", setting.env));
                assert_eq!(format!("{config:?}"), default, "{}={empty:?}", setting.env);
                tried += 1;
            }
        }
        assert!(
            tried >= 13 * 7,
            "every numeric core setting was tried ({tried})"
        );
    }

    #[test]
    fn stall_timeout_is_optional_and_longer_than_a_publish() {
        let base = [
            ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
            ("OUTBOX_SINK", "stdout"),
        ];
        let config = settings(&base).relay().expect("valid");
        assert_eq!(config.publish_timeout, Duration::from_millis(30_000));
        assert_eq!(config.stall_timeout, Some(Duration::from_secs(120)));

        let mut off = base.to_vec();
        off.push(("OUTBOX_STALL_TIMEOUT_SECS", "0"));
        assert_eq!(settings(&off).relay().expect("valid").stall_timeout, None);

        let mut short = base.to_vec();
        short.push(("OUTBOX_STALL_TIMEOUT_SECS", "10"));
        short.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "10000"));
        let err = settings(&short).relay().unwrap_err();
        assert_eq!(err.setting, "OUTBOX_STALL_TIMEOUT_SECS");
        assert!(err.problem.contains("OUTBOX_PUBLISH_TIMEOUT_MS"), "{err}");

        let mut zero = base.to_vec();
        zero.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "0"));
        assert_eq!(
            settings(&zero).relay().unwrap_err().setting,
            "OUTBOX_PUBLISH_TIMEOUT_MS"
        );
    }

    #[test]
    fn retry_cap_must_not_be_below_base() {
        let err = settings(&[
            ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
            ("OUTBOX_SINK", "stdout"),
            ("OUTBOX_RETRY_BASE_DELAY_MS", "1000"),
            ("OUTBOX_RETRY_MAX_DELAY_MS", "10"),
        ])
        .relay()
        .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_RETRY_MAX_DELAY_MS");
    }

    #[test]
    fn toml_file_is_read_and_unknown_keys_rejected() {
        let dir = std::env::temp_dir().join(format!("outbox-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, "sink = \"stdout\"\nbatch_size = 50\n").expect("write");
        let args = SettingArgs::default()
            .with(&CONFIG, good.display().to_string())
            .with(&SINK, "rabbitmq");
        let resolved = Settings::resolve(&args, &sink_keys()).expect("resolves");
        // Flags and environment win over the file.
        assert_eq!(resolved.get("OUTBOX_SINK"), Some("rabbitmq"));
        assert_eq!(resolved.get("OUTBOX_BATCH_SIZE"), Some("50"));

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "sink_kind = \"stdout\"\n").expect("write");
        let args = SettingArgs::default().with(&CONFIG, bad.display().to_string());
        let err = Settings::resolve(&args, &sink_keys()).unwrap_err();
        assert!(err.problem.contains("sink_kind"), "{err}");

        let named = dir.join("named.toml");
        std::fs::write(
            &named,
            "sink = \"stdout\"\nroutes = [\"audit.* = audit\"]\n\n[sinks.audit]\nkind = \"rabbitmq\"\namqp_url = \"amqp://127.0.0.1\"\namqp_exchange = \"audit\"\n",
        )
        .expect("write");
        let args = SettingArgs::default().with(&CONFIG, named.display().to_string());
        let resolved = Settings::resolve(&args, &sink_keys()).expect("resolves");
        assert_eq!(resolved.get("OUTBOX_SINKS"), Some("audit=rabbitmq"));
        assert_eq!(resolved.get("OUTBOX_ROUTES"), Some("audit.* = audit"));
        assert_eq!(
            resolved.get("OUTBOX_SINK_AUDIT_AMQP_EXCHANGE"),
            Some("audit")
        );
        let (sinks, _) = resolved.sinks().expect("valid");
        assert_eq!(sinks.len(), 2);
    }

    #[test]
    fn the_message_format_is_a_setting_of_each_sink() {
        let dir = std::env::temp_dir().join(format!("outbox-relay-fmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("formats.toml");
        std::fs::write(
            &file,
            "sink = \"stdout\"\nformat = \"masstransit\"\nroutes = [\"audit.* = audit\"]\n\n[sinks.audit]\nkind = \"stdout\"\nformat = \"cloudevents\"\ncloudevents_mode = \"structured\"\n",
        )
        .expect("write");
        let args = SettingArgs::default().with(&CONFIG, file.display().to_string());
        let resolved = Settings::resolve(&args, &sink_keys()).expect("resolves");
        assert_eq!(resolved.get("OUTBOX_FORMAT"), Some("masstransit"));
        assert_eq!(
            resolved.get("OUTBOX_SINK_AUDIT_CLOUDEVENTS_MODE"),
            Some("structured")
        );
        resolved.sinks().expect("valid");

        let err = settings(&[
            ("OUTBOX_SINK", "stdout"),
            ("OUTBOX_SINKS", "audit=stdout"),
            ("OUTBOX_ROUTES", "audit.*=audit"),
            ("OUTBOX_SINK_AUDIT_FORMAT", "xml"),
        ])
        .sinks()
        .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_SINK_AUDIT_FORMAT");
        // A sink kind that does not read its format refuses one rather than publish raw. Every
        // kind reads it now: this one is stdout with its format left unread.
        static UNFORMATTED: Kind = Kind {
            name: "unformatted",
            settings: &[],
            configure: |_| {
                (crate::sink::stdout::KIND.configure)(&Settings::default().default_sink())
            },
        };
        let resolved = settings(&[("OUTBOX_FORMAT", "cloudevents")]);
        let err = resolved
            .sink("unformatted", &UNFORMATTED, "OUTBOX_".into())
            .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_FORMAT");
        assert!(err.problem.contains("only the raw format"), "{err}");
        assert!(sink_keys().contains(&"FORMAT"));
        assert!(sink_keys().contains(&"CLOUDEVENTS_SOURCE"));
    }
}
