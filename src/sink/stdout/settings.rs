//! The stdout sink's settings: only the message format.

use super::StdoutSink;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::settings::{ConfigError, SinkSettings};
use crate::sink::{Publisher, SinkConfig};

/// Nothing secret: the derived `Debug` shows it all.
#[derive(Debug)]
pub(super) struct StdoutConfig {
    format: Format,
}

impl StdoutConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<StdoutConfig, ConfigError> {
        Ok(StdoutConfig {
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for StdoutConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(StdoutSink::with_format(self.format.clone()))
    }
}
