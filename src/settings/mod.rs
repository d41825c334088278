//! The settings reader: command-line flags and environment variables (clap), then an optional
//! TOML file. Flags and environment win over the file. It knows no sink, format or database: the
//! assembler (`config`) asks it for values by name, and every error names the setting it is about.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::Args;

/// A configuration problem, always naming the environment variable that holds the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &str, problem: impl Into<String>) -> Self {
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

/// The settings of one sink: `OUTBOX_<SETTING>` for the default sink (`OUTBOX_SINK`),
/// `OUTBOX_SINK_<NAME>_<SETTING>` for a named one (`OUTBOX_SINKS`). Errors name the variable.
pub struct SinkSettings<'a> {
    settings: &'a Settings,
    prefix: String,
    /// The settings the sink asked for, so the assembler can tell a setting that was set but
    /// never read (e.g. a message format on a sink that publishes only raw).
    read: RefCell<BTreeSet<String>>,
}

impl SinkSettings<'_> {
    /// The environment variable of `setting` (e.g. `AMQP_URL`) for this sink.
    pub fn var(&self, setting: &str) -> String {
        format!("{}{setting}", self.prefix)
    }

    /// Whether the sink asked for `setting`.
    pub fn was_read(&self, setting: &str) -> bool {
        self.read.borrow().contains(setting)
    }

    /// The value, trimmed; `None` when unset or empty.
    pub fn get(&self, setting: &str) -> Option<&str> {
        self.read.borrow_mut().insert(setting.to_string());
        self.settings.get(&self.var(setting))
    }

    /// The value, trimmed, also when set but empty (`Some("")`).
    pub fn raw(&self, setting: &str) -> Option<&str> {
        self.read.borrow_mut().insert(setting.to_string());
        self.settings
            .values
            .get(&self.var(setting))
            .map(|v| v.trim())
    }

    pub fn required(&self, setting: &str, what: &str) -> Result<&str, ConfigError> {
        self.read.borrow_mut().insert(setting.to_string());
        self.settings.required(&self.var(setting), what)
    }

    pub fn parsed<T: std::str::FromStr>(
        &self,
        setting: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.read.borrow_mut().insert(setting.to_string());
        self.settings.parsed(&self.var(setting), default, expected)
    }

    /// An error about `setting`, named as the user set it.
    pub fn error(&self, setting: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.var(setting), problem)
    }
}

impl Settings {
    /// Merges flags/environment with the TOML file named by `config` (if any). `sink_keys` are
    /// the settings any sink may read, without `OUTBOX_` (e.g. `AMQP_URL`): they have no flags,
    /// and are read from the environment and from the file's top level and sink tables.
    pub fn resolve(args: &SettingArgs, sink_keys: &[&str]) -> Result<Settings, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = &args.config {
            values = read_file(Path::new(path), sink_keys)?;
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
            if is_sink_setting(&name, sink_keys) {
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

    /// The value of variable `name`, trimmed; `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str, what: &str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, format!("is required: set it to {what}")))
    }

    pub fn parsed<T: std::str::FromStr>(
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

    /// Like [`Settings::parsed`], and refuses 0 (or less).
    pub fn positive<T>(&self, name: &str, default: T, expected: &str) -> Result<T, ConfigError>
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

    /// The settings of one sink, whose variables start with `prefix`.
    pub fn sink_settings(&self, prefix: String) -> SinkSettings<'_> {
        SinkSettings {
            settings: self,
            prefix,
            read: RefCell::default(),
        }
    }
}

/// Items of a list setting, separated by commas or new lines.
pub fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether an environment variable is a sink's setting, a named sink's, or the sinks and routes.
fn is_sink_setting(name: &str, sink_keys: &[&str]) -> bool {
    let Some(setting) = name.strip_prefix("OUTBOX_") else {
        return false;
    };
    matches!(setting, "SINKS" | "ROUTES")
        || setting.starts_with("SINK_")
        || sink_keys.contains(&setting)
}

/// Reads the TOML file: the core settings and the default sink's settings as top-level keys,
/// `routes`, and named sinks as tables (`[sinks.audit]` with `kind` and its settings).
fn read_file(path: &Path, sink_keys: &[&str]) -> Result<BTreeMap<String, String>, ConfigError> {
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
    let sink_keys = || sink_keys.iter().map(|k| k.to_lowercase());
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
        self.sink_settings("OUTBOX_".into())
    }
}
