//! The settings of one sink, read by the sink itself; it records which it read, so the assembler
//! can refuse a setting that was set but that the sink never reads.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::table::Range;
use super::{ConfigError, Settings};

/// The settings of one sink: `OUTBOX_<SETTING>` for the default sink (`OUTBOX_SINK`),
/// `OUTBOX_SINK_<NAME>_<SETTING>` for a named one (`OUTBOX_SINKS`). Errors name the variable.
pub struct SinkSettings<'a> {
    pub(super) settings: &'a Settings,
    pub(super) prefix: String,
    /// The settings the sink asked for, so the assembler can tell a setting that was set but
    /// never read (e.g. a message format on a sink that publishes only raw).
    pub(super) read: RefCell<BTreeSet<String>>,
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

    /// A whole number within `range`, else `default`; an error names the variable and the range.
    pub fn number(&self, setting: &str, default: u64, range: Range) -> Result<u64, ConfigError> {
        let expected = range.describe();
        let value = self.parsed(setting, default, &expected)?;
        if value < range.min || value > range.max {
            return Err(self.error(setting, format!("expected {expected}, got {value}")));
        }
        Ok(value)
    }

    /// An error about `setting`, named as the user set it.
    pub fn error(&self, setting: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.var(setting), problem)
    }
}
