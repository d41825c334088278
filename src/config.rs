//! Settings: command-line flags and environment variables (clap), then an optional TOML file, then
//! defaults. Flags and environment win over the file. Every error names the setting it is about.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::db::DatabaseUrl;
use crate::format::{self, Format};
use crate::retry::RetryPolicy;
use crate::route::{Pattern, Routes};
use crate::sink::{Kind, SinkConfig};

pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9898";
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_RETRY_BASE_DELAY_MS: u64 = 500;
pub const DEFAULT_RETRY_MAX_DELAY_MS: u64 = 60_000;
pub const DEFAULT_BATCH_SIZE: u32 = 500;
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_LEADER_POLL_MS: u64 = 1_000;
/// Lowest latency by default; a linger trades latency for fewer claims (README, "Performance").
pub const DEFAULT_BATCH_LINGER_MS: u64 = 0;
pub const MAX_BATCH_LINGER_MS: u64 = 1_000;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 20;
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_RETENTION_SECS: u64 = 300;
pub const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 120;

/// A configuration problem, always naming the environment variable that holds the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &str, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.to_string(),
            problem: problem.into(),
        }
    }
}

/// Every setting as a flag with an environment variable. Kept as text so that a bad value is
/// reported by [`Settings::resolve`] under its environment name, whatever its source.
#[derive(Args, Debug, Default, Clone)]
pub struct SettingArgs {
    /// TOML file holding any of these settings (keys are the variable names without `OUTBOX_`,
    /// lower-case, e.g. `amqp_exchange = "events"`).
    #[arg(long, env = "OUTBOX_CONFIG", global = true)]
    pub config: Option<String>,
    /// PostgreSQL URL (`DATABASE_URL` is read too).
    #[arg(
        long,
        env = "OUTBOX_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where events go: the default sink's kind (kafka, rabbitmq, stdout, ...). Each kind's own
    /// settings (e.g. OUTBOX_AMQP_URL), named sinks (OUTBOX_SINKS) and routes (OUTBOX_ROUTES) are
    /// read from the environment or the file; see README, "Sinks and routes".
    #[arg(long, env = "OUTBOX_SINK", global = true)]
    pub sink: Option<String>,
    /// Address of /metrics, /healthz, /readyz [default: 0.0.0.0:9898].
    #[arg(long, env = "OUTBOX_HTTP_ADDR", global = true)]
    pub http_addr: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "OUTBOX_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Attempts for errors about the event itself before it is dead-lettered [default: 10].
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", global = true)]
    pub max_attempts: Option<String>,
    /// First retry delay, doubled on each retry [default: 500].
    #[arg(long, env = "OUTBOX_RETRY_BASE_DELAY_MS", global = true)]
    pub retry_base_delay_ms: Option<String>,
    /// Cap of the exponential backoff between retries [default: 60000].
    #[arg(long, env = "OUTBOX_RETRY_MAX_DELAY_MS", global = true)]
    pub retry_max_delay_ms: Option<String>,
    /// Events claimed and published per batch [default: 500].
    #[arg(long, env = "OUTBOX_BATCH_SIZE", global = true)]
    pub batch_size: Option<String>,
    /// How often to look for events without a notification [default: 1000].
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", global = true)]
    pub poll_interval_ms: Option<String>,
    /// How long after a claim that was not full the next claim waits, so that a steady trickle
    /// of events goes out in fewer, larger batches; 0: at once [default: 0].
    #[arg(long, env = "OUTBOX_BATCH_LINGER_MS", global = true)]
    pub batch_linger_ms: Option<String>,
    /// How often a standby tries to become the active relay [default: 1000].
    #[arg(long, env = "OUTBOX_LEADER_POLL_MS", global = true)]
    pub leader_poll_ms: Option<String>,
    /// How long `run` may take to finish its in-flight batch after SIGTERM [default: 20].
    #[arg(long, env = "OUTBOX_SHUTDOWN_TIMEOUT_SECS", global = true)]
    pub shutdown_timeout_secs: Option<String>,
    /// Largest payload published; larger events are dead-lettered [default: 16777216].
    #[arg(long, env = "OUTBOX_MAX_PAYLOAD_BYTES", global = true)]
    pub max_payload_bytes: Option<String>,
    /// Payload bytes per batch; the first event of a batch is always taken [default: 16777216].
    #[arg(long, env = "OUTBOX_BATCH_MAX_BYTES", global = true)]
    pub batch_max_bytes: Option<String>,
    /// How long delivered events stay in the table before they are deleted [default: 300].
    #[arg(long, env = "OUTBOX_RETENTION_SECS", global = true)]
    pub retention_secs: Option<String>,
    /// How long a publish (or connect) may wait for the broker before it counts as an outage
    /// [default: 30000].
    #[arg(long, env = "OUTBOX_PUBLISH_TIMEOUT_MS", global = true)]
    pub publish_timeout_ms: Option<String>,
    /// `lanes`: every replica relays a fair share of the lanes; `single`: one active replica,
    /// the others stand by [default: lanes].
    #[arg(long, env = "OUTBOX_REPLICA_MODE", global = true)]
    pub replica_mode: Option<String>,
    /// `/healthz` fails when the active relay made no progress for this long; 0 disables
    /// [default: 120].
    #[arg(long, env = "OUTBOX_STALL_TIMEOUT_SECS", global = true)]
    pub stall_timeout_secs: Option<String>,
}

/// The TOML keys, each with the environment variable it mirrors.
const FILE_KEYS: &[(&str, &str)] = &[
    ("database_url", "OUTBOX_DATABASE_URL"),
    ("sink", "OUTBOX_SINK"),
    ("http_addr", "OUTBOX_HTTP_ADDR"),
    ("log_format", "OUTBOX_LOG_FORMAT"),
    ("max_attempts", "OUTBOX_MAX_ATTEMPTS"),
    ("retry_base_delay_ms", "OUTBOX_RETRY_BASE_DELAY_MS"),
    ("retry_max_delay_ms", "OUTBOX_RETRY_MAX_DELAY_MS"),
    ("batch_size", "OUTBOX_BATCH_SIZE"),
    ("poll_interval_ms", "OUTBOX_POLL_INTERVAL_MS"),
    ("batch_linger_ms", "OUTBOX_BATCH_LINGER_MS"),
    ("leader_poll_ms", "OUTBOX_LEADER_POLL_MS"),
    ("shutdown_timeout_secs", "OUTBOX_SHUTDOWN_TIMEOUT_SECS"),
    ("max_payload_bytes", "OUTBOX_MAX_PAYLOAD_BYTES"),
    ("batch_max_bytes", "OUTBOX_BATCH_MAX_BYTES"),
    ("retention_secs", "OUTBOX_RETENTION_SECS"),
    ("publish_timeout_ms", "OUTBOX_PUBLISH_TIMEOUT_MS"),
    ("stall_timeout_secs", "OUTBOX_STALL_TIMEOUT_SECS"),
    ("replica_mode", "OUTBOX_REPLICA_MODE"),
];

/// Raw settings after merging flags, environment and file: name of the variable -> text.
#[derive(Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

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

/// The settings of one sink: `OUTBOX_<SETTING>` for the default sink (`OUTBOX_SINK`),
/// `OUTBOX_SINK_<NAME>_<SETTING>` for a named one (`OUTBOX_SINKS`). Errors name the variable.
pub struct SinkSettings<'a> {
    settings: &'a Settings,
    prefix: String,
    /// Set when the sink read its message format: a sink that does not, yet has `FORMAT` set to
    /// something else than `raw`, is a configuration error rather than silently raw.
    format_read: Cell<bool>,
}

impl SinkSettings<'_> {
    /// The environment variable of `setting` (e.g. `AMQP_URL`) for this sink.
    pub fn var(&self, setting: &str) -> String {
        format!("{}{setting}", self.prefix)
    }

    /// The value, trimmed; `None` when unset or empty.
    pub fn get(&self, setting: &str) -> Option<&str> {
        self.settings.get(&self.var(setting))
    }

    /// The value, trimmed, also when set but empty (`Some("")`).
    pub fn raw(&self, setting: &str) -> Option<&str> {
        self.settings
            .values
            .get(&self.var(setting))
            .map(|v| v.trim())
    }

    pub fn required(&self, setting: &str, what: &str) -> Result<&str, ConfigError> {
        self.settings.required(&self.var(setting), what)
    }

    pub fn parsed<T: std::str::FromStr>(
        &self,
        setting: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.settings.parsed(&self.var(setting), default, expected)
    }

    /// The sink's message format: `FORMAT` (`raw`, `cloudevents`, `masstransit`),
    /// `CLOUDEVENTS_SOURCE`, `CLOUDEVENTS_MODE`. A sink that supports formats calls this in its
    /// `configure` and passes each event through [`Format::message`].
    pub fn format(&self) -> Result<Format, ConfigError> {
        self.format_read.set(true);
        Format::read(self)
    }

    /// An error about `setting`, named as the user set it.
    pub fn error(&self, setting: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.var(setting), problem)
    }
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
    /// Merges flags/environment with the TOML file named by `config` (if any).
    pub fn resolve(args: &SettingArgs) -> Result<Settings, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = &args.config {
            values = read_file(Path::new(path))?;
        }
        let from_args = [
            ("OUTBOX_DATABASE_URL", &args.database_url),
            ("OUTBOX_SINK", &args.sink),
            ("OUTBOX_HTTP_ADDR", &args.http_addr),
            ("OUTBOX_LOG_FORMAT", &args.log_format),
            ("OUTBOX_MAX_ATTEMPTS", &args.max_attempts),
            ("OUTBOX_RETRY_BASE_DELAY_MS", &args.retry_base_delay_ms),
            ("OUTBOX_RETRY_MAX_DELAY_MS", &args.retry_max_delay_ms),
            ("OUTBOX_BATCH_SIZE", &args.batch_size),
            ("OUTBOX_POLL_INTERVAL_MS", &args.poll_interval_ms),
            ("OUTBOX_BATCH_LINGER_MS", &args.batch_linger_ms),
            ("OUTBOX_LEADER_POLL_MS", &args.leader_poll_ms),
            ("OUTBOX_SHUTDOWN_TIMEOUT_SECS", &args.shutdown_timeout_secs),
            ("OUTBOX_MAX_PAYLOAD_BYTES", &args.max_payload_bytes),
            ("OUTBOX_BATCH_MAX_BYTES", &args.batch_max_bytes),
            ("OUTBOX_RETENTION_SECS", &args.retention_secs),
            ("OUTBOX_PUBLISH_TIMEOUT_MS", &args.publish_timeout_ms),
            ("OUTBOX_STALL_TIMEOUT_SECS", &args.stall_timeout_secs),
            ("OUTBOX_REPLICA_MODE", &args.replica_mode),
        ];
        for (name, value) in from_args {
            if let Some(value) = value {
                values.insert(name.to_string(), value.clone());
            }
        }
        // The sinks' own settings have no flags: they come from the environment.
        for (name, value) in std::env::vars() {
            if is_sink_setting(&name) {
                values.insert(name, value);
            }
        }
        if !values.contains_key("OUTBOX_DATABASE_URL")
            && let Ok(url) = std::env::var("DATABASE_URL")
        {
            values.insert("OUTBOX_DATABASE_URL".to_string(), url);
        }
        Ok(Settings { values })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str, what: &str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, format!("is required: set it to {what}")))
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| ConfigError::new(name, format!("expected {expected}, got {text:?}"))),
        }
    }

    fn positive<T>(&self, name: &str, default: T, expected: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default,
    {
        let value = self.parsed(name, default, expected)?;
        if value <= T::default() {
            return Err(ConfigError::new(
                name,
                format!("expected {expected}, got 0"),
            ));
        }
        Ok(value)
    }

    /// `OUTBOX_BATCH_LINGER_MS`, at most [`MAX_BATCH_LINGER_MS`]: a longer wait would only add
    /// latency (the relay polls every second anyway), and a huge one would overflow a deadline.
    fn batch_linger(&self) -> Result<Duration, ConfigError> {
        let expected = format!("a whole number of milliseconds from 0 to {MAX_BATCH_LINGER_MS}");
        let ms = self.parsed("OUTBOX_BATCH_LINGER_MS", DEFAULT_BATCH_LINGER_MS, &expected)?;
        if ms > MAX_BATCH_LINGER_MS {
            return Err(ConfigError::new(
                "OUTBOX_BATCH_LINGER_MS",
                format!("expected {expected}, got {ms}"),
            ));
        }
        Ok(Duration::from_millis(ms))
    }

    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.get("OUTBOX_LOG_FORMAT") {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(ConfigError::new(
                "OUTBOX_LOG_FORMAT",
                format!("expected text or json, got {other:?}"),
            )),
        }
    }

    pub fn database(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = self.required(
            "OUTBOX_DATABASE_URL",
            "a PostgreSQL URL such as postgres://user@host:5432/db",
        )?;
        DatabaseUrl::parse(url).map_err(|problem| ConfigError::new("OUTBOX_DATABASE_URL", problem))
    }

    /// The sinks and the routes to them: the default sink (`OUTBOX_SINK`, named after its kind)
    /// and the named ones (`OUTBOX_SINKS`), each with its settings validated.
    pub fn sinks(&self) -> Result<(Vec<SinkSpec>, Routes), ConfigError> {
        let mut sinks = Vec::new();
        if let Some(kind) = self.get("OUTBOX_SINK") {
            let kind = Kind::find(kind).ok_or_else(|| {
                ConfigError::new(
                    "OUTBOX_SINK",
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
                "OUTBOX_SINK",
                format!(
                    "is required: set it to {} (or name several sinks in OUTBOX_SINKS)",
                    Kind::names()
                ),
            ));
        }
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
        let routes = Routes::new(routes, has_default.then_some(0));
        Ok((sinks, routes))
    }

    fn sink(
        &self,
        name: &str,
        kind: &'static Kind,
        prefix: String,
    ) -> Result<SinkSpec, ConfigError> {
        let settings = SinkSettings {
            settings: self,
            prefix,
            format_read: Cell::new(false),
        };
        let config = (kind.configure)(&settings)?;
        if !settings.format_read.get()
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

    pub fn relay(&self) -> Result<RelayConfig, ConfigError> {
        let http = self.get("OUTBOX_HTTP_ADDR").unwrap_or(DEFAULT_HTTP_ADDR);
        let http_addr = http.parse().map_err(|_| {
            ConfigError::new(
                "OUTBOX_HTTP_ADDR",
                format!("expected host:port such as 0.0.0.0:9898, got {http:?}"),
            )
        })?;
        let ms = "a whole number of milliseconds greater than 0";
        let base = self.positive(
            "OUTBOX_RETRY_BASE_DELAY_MS",
            DEFAULT_RETRY_BASE_DELAY_MS,
            ms,
        )?;
        let cap = self.positive("OUTBOX_RETRY_MAX_DELAY_MS", DEFAULT_RETRY_MAX_DELAY_MS, ms)?;
        if cap < base {
            return Err(ConfigError::new(
                "OUTBOX_RETRY_MAX_DELAY_MS",
                format!("must be at least OUTBOX_RETRY_BASE_DELAY_MS ({base}), got {cap}"),
            ));
        }
        let publish_timeout = Duration::from_millis(self.positive(
            "OUTBOX_PUBLISH_TIMEOUT_MS",
            DEFAULT_PUBLISH_TIMEOUT_MS,
            ms,
        )?);
        let poll_interval = Duration::from_millis(self.positive(
            "OUTBOX_POLL_INTERVAL_MS",
            DEFAULT_POLL_INTERVAL_MS,
            ms,
        )?);
        let stall_timeout = self.stall_timeout(&[
            ("OUTBOX_PUBLISH_TIMEOUT_MS", publish_timeout),
            ("OUTBOX_POLL_INTERVAL_MS", poll_interval),
            ("OUTBOX_RETRY_MAX_DELAY_MS", Duration::from_millis(cap)),
        ])?;
        let (sinks, routes) = self.sinks()?;
        Ok(RelayConfig {
            database: self.database()?,
            sinks,
            routes,
            http_addr,
            batch_size: self.positive(
                "OUTBOX_BATCH_SIZE",
                DEFAULT_BATCH_SIZE,
                "a whole number greater than 0",
            )?,
            poll_interval,
            batch_linger: self.batch_linger()?,
            leader_poll: Duration::from_millis(self.positive(
                "OUTBOX_LEADER_POLL_MS",
                DEFAULT_LEADER_POLL_MS,
                ms,
            )?),
            shutdown_timeout: Duration::from_secs(self.parsed(
                "OUTBOX_SHUTDOWN_TIMEOUT_SECS",
                DEFAULT_SHUTDOWN_TIMEOUT_SECS,
                "a whole number of seconds",
            )?),
            max_attempts: self.positive(
                "OUTBOX_MAX_ATTEMPTS",
                DEFAULT_MAX_ATTEMPTS,
                "a whole number greater than 0",
            )?,
            max_payload_bytes: self.positive(
                "OUTBOX_MAX_PAYLOAD_BYTES",
                DEFAULT_MAX_PAYLOAD_BYTES,
                "a whole number of bytes greater than 0",
            )?,
            batch_max_bytes: self.positive(
                "OUTBOX_BATCH_MAX_BYTES",
                DEFAULT_BATCH_MAX_BYTES,
                "a whole number of bytes greater than 0",
            )?,
            retention: Duration::from_secs(self.parsed(
                "OUTBOX_RETENTION_SECS",
                DEFAULT_RETENTION_SECS,
                "a whole number of seconds",
            )?),
            retry: RetryPolicy {
                base_delay: Duration::from_millis(base),
                max_delay: Duration::from_millis(cap),
            },
            publish_timeout,
            stall_timeout,
            replica_mode: self.replica_mode()?,
        })
    }

    fn replica_mode(&self) -> Result<ReplicaMode, ConfigError> {
        match self.get("OUTBOX_REPLICA_MODE") {
            None | Some("lanes") => Ok(ReplicaMode::Lanes),
            Some("single") => Ok(ReplicaMode::Single),
            Some(other) => Err(ConfigError::new(
                "OUTBOX_REPLICA_MODE",
                format!("expected lanes or single, got {other:?}"),
            )),
        }
    }

    /// `None` when disabled (0). Must be longer than each wait of a healthy loop iteration
    /// (`waits`: a publish up to its timeout, an idle poll, a back-pressure pause), or `/healthz`
    /// would fail a relay that works.
    fn stall_timeout(&self, waits: &[(&str, Duration)]) -> Result<Option<Duration>, ConfigError> {
        let name = "OUTBOX_STALL_TIMEOUT_SECS";
        let secs = self.parsed(
            name,
            DEFAULT_STALL_TIMEOUT_SECS,
            "a whole number of seconds (0 disables)",
        )?;
        if secs == 0 {
            return Ok(None);
        }
        let stall = Duration::from_secs(secs);
        for &(other, value) in waits {
            if stall <= value {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "must be longer than {other} ({} ms), got {secs} s; raise it or set 0 to disable the stall check",
                        value.as_millis()
                    ),
                ));
            }
        }
        Ok(Some(stall))
    }
}

/// Items of a list setting, separated by commas or new lines.
fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether an environment variable is a sink's setting, a named sink's, or the sinks and routes.
fn is_sink_setting(name: &str) -> bool {
    let Some(setting) = name.strip_prefix("OUTBOX_") else {
        return false;
    };
    matches!(setting, "SINKS" | "ROUTES")
        || setting.starts_with("SINK_")
        || sink_settings().any(|s| s == setting)
}

/// Every setting a sink may read (without `OUTBOX_`): its kind's and the message format's.
fn sink_settings() -> impl Iterator<Item = &'static str> {
    Kind::settings().chain(format::SETTINGS.iter().copied())
}

/// Reads the TOML file: the core settings and the default sink's settings as top-level keys,
/// `routes`, and named sinks as tables (`[sinks.audit]` with `kind` and its settings).
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let setting = "OUTBOX_CONFIG";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        ConfigError::new(
            setting,
            format!("{} is not valid TOML: {e}", path.display()),
        )
    })?;
    let unknown = |key: &str, known: Vec<String>| {
        ConfigError::new(
            setting,
            format!(
                "unknown key {key:?} in {}; known keys: {}",
                path.display(),
                known.join(", ")
            ),
        )
    };
    let sink_keys = || sink_settings().map(str::to_lowercase);
    let mut values = BTreeMap::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("sinks", toml::Value::Table(sinks)) => {
                let mut named = Vec::new();
                for (name, sink) in sinks {
                    let toml::Value::Table(sink) = sink else {
                        return Err(ConfigError::new(
                            "OUTBOX_SINKS",
                            format!("sinks.{name} in {} must be a table", path.display()),
                        ));
                    };
                    let prefix = format!("OUTBOX_SINK_{}_", name.to_uppercase().replace('-', "_"));
                    for (key, value) in sink {
                        if key == "kind" {
                            named.push(format!("{name}={}", file_text(&key, value, path)?));
                        } else if sink_keys().any(|k| k == key) {
                            let var = format!("{prefix}{}", key.to_uppercase());
                            values.insert(var, file_text(&key, value, path)?);
                        } else {
                            let mut known: Vec<String> = sink_keys().collect();
                            known.insert(0, "kind".into());
                            return Err(unknown(&format!("sinks.{name}.{key}"), known));
                        }
                    }
                }
                values.insert("OUTBOX_SINKS".into(), named.join(","));
            }
            ("routes", toml::Value::Array(routes)) => {
                let routes: Result<Vec<String>, _> = routes
                    .into_iter()
                    .map(|r| file_text("routes", r, path))
                    .collect();
                values.insert("OUTBOX_ROUTES".into(), routes?.join(","));
            }
            ("routes", value) => {
                values.insert("OUTBOX_ROUTES".into(), file_text("routes", value, path)?);
            }
            (key, value) => {
                let env = match FILE_KEYS.iter().find(|(k, _)| *k == key) {
                    Some((_, env)) => (*env).to_string(),
                    None if sink_keys().any(|k| k == key) => {
                        format!("OUTBOX_{}", key.to_uppercase())
                    }
                    None => {
                        let mut known: Vec<String> =
                            FILE_KEYS.iter().map(|(k, _)| (*k).to_string()).collect();
                        known.extend(sink_keys());
                        known.extend(["routes".into(), "sinks".into()]);
                        return Err(unknown(key, known));
                    }
                };
                values.insert(env, file_text(key, value, path)?);
            }
        }
    }
    Ok(values)
}

/// A file value as the text the environment variable would hold. A table is a list of
/// `name=value` lines (e.g. `kafka_properties`).
fn file_text(key: &str, value: toml::Value, path: &Path) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Table(t) => Ok(t
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("\n")),
        other => Err(ConfigError::new(
            "OUTBOX_CONFIG",
            format!(
                "{key} in {} must be a string or a number, got {}",
                path.display(),
                other.type_str()
            ),
        )),
    }
}

#[cfg(test)]
impl Settings {
    /// Settings as if these variables were set, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Settings {
        Settings {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The default sink's settings (`OUTBOX_<SETTING>`), for tests of a sink's configuration.
    pub fn default_sink(&self) -> SinkSettings<'_> {
        SinkSettings {
            settings: self,
            prefix: "OUTBOX_".into(),
            format_read: Cell::new(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(config.batch_size, DEFAULT_BATCH_SIZE);
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

        assert_eq!(config.batch_linger, Duration::ZERO, "no linger by default");
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
    fn stall_timeout_is_optional_and_longer_than_a_publish() {
        let base = [
            ("OUTBOX_DATABASE_URL", "postgres://u@localhost/db"),
            ("OUTBOX_SINK", "stdout"),
        ];
        let config = settings(&base).relay().expect("valid");
        assert_eq!(
            config.publish_timeout,
            Duration::from_millis(DEFAULT_PUBLISH_TIMEOUT_MS)
        );
        assert_eq!(
            config.stall_timeout,
            Some(Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS))
        );

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
        let args = SettingArgs {
            config: Some(good.display().to_string()),
            sink: Some("rabbitmq".into()),
            ..Default::default()
        };
        let resolved = Settings::resolve(&args).expect("resolves");
        // Flags and environment win over the file.
        assert_eq!(resolved.get("OUTBOX_SINK"), Some("rabbitmq"));
        assert_eq!(resolved.get("OUTBOX_BATCH_SIZE"), Some("50"));

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "sink_kind = \"stdout\"\n").expect("write");
        let args = SettingArgs {
            config: Some(bad.display().to_string()),
            ..Default::default()
        };
        let err = Settings::resolve(&args).unwrap_err();
        assert!(err.problem.contains("sink_kind"), "{err}");

        let named = dir.join("named.toml");
        std::fs::write(
            &named,
            "sink = \"stdout\"\nroutes = [\"audit.* = audit\"]\n\n[sinks.audit]\nkind = \"rabbitmq\"\namqp_url = \"amqp://127.0.0.1\"\namqp_exchange = \"audit\"\n",
        )
        .expect("write");
        let args = SettingArgs {
            config: Some(named.display().to_string()),
            ..Default::default()
        };
        let resolved = Settings::resolve(&args).expect("resolves");
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
        let args = SettingArgs {
            config: Some(file.display().to_string()),
            ..Default::default()
        };
        let resolved = Settings::resolve(&args).expect("resolves");
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
            configure: |settings| {
                let config = (crate::sink::stdout::KIND.configure)(settings);
                settings.format_read.set(false);
                config
            },
        };
        let resolved = settings(&[("OUTBOX_FORMAT", "cloudevents")]);
        let err = resolved
            .sink("unformatted", &UNFORMATTED, "OUTBOX_".into())
            .unwrap_err();
        assert_eq!(err.setting, "OUTBOX_FORMAT");
        assert!(err.problem.contains("only the raw format"), "{err}");
        assert!(is_sink_setting("OUTBOX_FORMAT"));
        assert!(is_sink_setting("OUTBOX_CLOUDEVENTS_SOURCE"));
    }
}
