//! The settings reader: command-line flags and environment variables (clap), then an optional
//! TOML file. Flags and environment win over the file. It knows no sink, format or database: the
//! assembler (`config`) asks it for values by name, and every error names the setting it is about.
//!
//! - [`table`]: the core settings, each declared once (variable, flag, help, default);
//! - [`args`]: the flags and environment variables that follow from the table;
//! - [`file`]: the TOML file;
//! - [`sink`]: one sink's settings, read by the sink.

mod args;
mod file;
mod sink;
pub mod table;

use std::collections::BTreeMap;
use std::path::Path;

pub use self::args::SettingArgs;
pub use self::sink::SinkSettings;
use self::table::{DATABASE_URL, Setting};

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

/// Raw settings after merging flags, environment and file: name of the variable -> text.
#[derive(Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Merges flags/environment with the TOML file named by `config` (if any). `sink_keys` are
    /// the settings any sink may read, without `OUTBOX_` (e.g. `AMQP_URL`): they have no flags,
    /// and are read from the environment and from the file's top level and sink tables.
    pub fn resolve(args: &SettingArgs, sink_keys: &[&str]) -> Result<Settings, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = &args.config {
            values = file::read_file(Path::new(path), sink_keys)?;
        }
        for (name, value) in &args.values {
            values.insert(name.to_string(), value.clone());
        }
        // The sinks' own settings have no flags: they come from the environment.
        for (name, value) in std::env::vars() {
            if is_sink_setting(&name, sink_keys) {
                values.insert(name, value);
            }
        }
        if !values.contains_key(DATABASE_URL.env)
            && let Ok(url) = std::env::var("DATABASE_URL")
        {
            values.insert(DATABASE_URL.env.to_string(), url);
        }
        Ok(Settings { values })
    }

    /// A core setting's text: its value, else its default.
    pub fn text(&self, setting: &Setting) -> Option<&str> {
        self.get(setting.env).or(setting.default)
    }

    /// A core setting's value, else its default, parsed; `expected` says what it must be.
    pub fn value<T: std::str::FromStr>(
        &self,
        setting: &Setting,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let name = setting.env;
        let text = self
            .text(setting)
            .ok_or_else(|| ConfigError::new(name, format!("is required: set it to {expected}")))?;
        text.parse()
            .map_err(|_| ConfigError::new(name, format!("expected {expected}, got {text:?}")))
    }

    /// A numeric core setting's value, else its default, within its declared range.
    pub fn number(&self, setting: &Setting) -> Result<u64, ConfigError> {
        let Some(range) = setting.range else {
            return Err(ConfigError::new(setting.env, "is not a number setting"));
        };
        let expected = range.describe();
        let value: u64 = self.value(setting, &expected)?;
        if value < range.min || value > range.max {
            return Err(ConfigError::new(
                setting.env,
                format!("expected {expected}, got {value}"),
            ));
        }
        Ok(value)
    }

    /// Like [`Settings::value`], and refuses 0 (or less).
    pub fn positive<T>(&self, setting: &Setting, expected: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default,
    {
        let value = self.value(setting, expected)?;
        if value <= T::default() {
            return Err(ConfigError::new(
                setting.env,
                format!("expected {expected}, got 0"),
            ));
        }
        Ok(value)
    }

    /// The value of variable `name`, trimmed; `None` when unset or empty.
    /// Every value given, by variable: for finding the secrets among them.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

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

    /// The settings of one sink, whose variables start with `prefix`.
    pub fn sink_settings(&self, prefix: String) -> SinkSettings<'_> {
        SinkSettings {
            settings: self,
            prefix,
            read: Default::default(),
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
