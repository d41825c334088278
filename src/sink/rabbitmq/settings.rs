//! The rabbitmq sink's settings: `AMQP_URL` (with the password kept out of `Debug`) and
//! `AMQP_EXCHANGE` (a name, or a template with `{topic}` and `{type}`).

use super::RabbitMqSink;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::redact::redact;
use crate::settings::{ConfigError, SinkSettings};
use crate::sink::{Publisher, SinkConfig};

pub const DEFAULT_EXCHANGE: &str = "amq.topic";

#[derive(Clone)]
pub(super) struct RabbitMqConfig {
    url: String,
    exchange: String,
    format: Format,
}

/// Without the password.
impl std::fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("url", &redact(&self.url))
            .field("exchange", &self.exchange)
            .field("format", &self.format)
            .finish()
    }
}

impl RabbitMqConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<RabbitMqConfig, ConfigError> {
        let url = settings.required(
            "AMQP_URL",
            "an amqp:// or amqps:// URL such as amqp://guest:guest@127.0.0.1:5672/%2f",
        )?;
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(settings.error("AMQP_URL", "must start with amqp:// or amqps://"));
        }
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| settings.error("AMQP_URL", format!("is not a valid AMQP URL: {e}")))?;
        // Set but empty means RabbitMQ's default exchange (""), which routes by queue name.
        let exchange = settings
            .raw("AMQP_EXCHANGE")
            .unwrap_or(DEFAULT_EXCHANGE)
            .to_string();
        let rest = exchange.replace("{topic}", "").replace("{type}", "");
        if rest.contains(['{', '}']) {
            return Err(settings.error(
                "AMQP_EXCHANGE",
                format!(
                    "may contain only the placeholders {{topic}} and {{type}}, got {exchange:?}"
                ),
            ));
        }
        // AMQP names are short strings; a longer name cannot even be sent (a template's name is
        // checked per event, once filled in).
        if rest.len() > 255 {
            return Err(settings.error(
                "AMQP_EXCHANGE",
                format!(
                    "is {} bytes without its placeholders; AMQP allows at most 255",
                    rest.len()
                ),
            ));
        }
        Ok(RabbitMqConfig {
            url: url.to_string(),
            exchange,
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for RabbitMqConfig {
    fn publisher(&self, health: SinkHealth) -> Box<dyn Publisher> {
        Box::new(RabbitMqSink::new(
            self.url.clone(),
            self.exchange.clone(),
            self.format.clone(),
            health,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn exchange_of(pairs: &[(&str, &str)]) -> String {
        let settings = Settings::from_pairs(pairs);
        let config = RabbitMqConfig::read(&settings.default_sink()).expect("valid");
        config.exchange
    }

    #[test]
    fn an_empty_amqp_exchange_means_the_default_exchange() {
        let base = [("OUTBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")];
        assert_eq!(exchange_of(&base), DEFAULT_EXCHANGE);
        let mut empty = base.to_vec();
        empty.push(("OUTBOX_AMQP_EXCHANGE", ""));
        assert_eq!(exchange_of(&empty), "");
    }

    /// Found by the settings properties' review: a 256-byte exchange passed, then the first
    /// connect panicked in lapin's `ShortString::from` (exit 101, every restart).
    #[test]
    fn an_exchange_longer_than_amqp_allows_is_refused_at_start() {
        let read = |exchange: &str| {
            let settings = Settings::from_pairs(&[
                ("OUTBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                ("OUTBOX_AMQP_EXCHANGE", exchange),
            ]);
            RabbitMqConfig::read(&settings.default_sink()).map(|c| c.exchange)
        };
        let longest = "x".repeat(255);
        assert_eq!(read(&longest).expect("255 bytes fit"), longest);
        let err = read(&"x".repeat(256)).expect_err("too long");
        assert_eq!(err.setting, "OUTBOX_AMQP_EXCHANGE");
        assert!(err.problem.contains("at most 255"), "{err}");
        let template = format!("{{type}}.{}", "é".repeat(128));
        assert_eq!(
            read(&template).expect_err("too long").setting,
            "OUTBOX_AMQP_EXCHANGE"
        );
        read(&format!("{{type}}{}", "x".repeat(200))).expect("filled in per event");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let settings =
            Settings::from_pairs(&[("OUTBOX_AMQP_URL", "amqp://user:s3cret@mq:5672/%2f")]);
        let config = RabbitMqConfig::read(&settings.default_sink()).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
