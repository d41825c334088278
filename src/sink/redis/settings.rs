//! The Redis sink's settings, validated once at start.

use redis::Client;

use crate::format::Format;
use crate::redact::redact;
use crate::settings::table::Range;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_STREAM_TEMPLATE: &str = "{topic}";
pub const DEFAULT_DEDUP_SECS: u64 = 86_400;
/// Message ids are remembered at least a second, at most ten years.
const DEDUP_RANGE: Range = Range {
    unit: "seconds",
    min: 1,
    max: 315_360_000,
};
/// `MAXLEN ~` of each stream; 0 never trims.
const MAXLEN_RANGE: Range = Range {
    unit: "entries (0: no trim)",
    min: 0,
    max: i64::MAX as u64,
};

#[derive(Clone)]
pub(super) struct RedisConfig {
    /// `redis://` or `rediss://`, maybe with user and password.
    pub(super) url: String,
    /// The stream key; `{topic}` is replaced by the event's topic.
    pub(super) stream_template: String,
    /// How long a delivered message id is remembered.
    pub(super) dedup_secs: u64,
    /// `MAXLEN ~` of each stream; 0 never trims.
    pub(super) maxlen: u64,
    /// Message format, with fields named like the Kafka binding's headers.
    pub(super) format: Format,
}

/// Without the password.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("stream_template", &self.stream_template)
            .field("dedup_secs", &self.dedup_secs)
            .field("maxlen", &self.maxlen)
            .field("format", &self.format)
            .finish()
    }
}

impl RedisConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<RedisConfig, ConfigError> {
        let url = settings.required(
            "REDIS_URL",
            "a redis:// or rediss:// URL such as redis://user:password@127.0.0.1:6379/0",
        )?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(settings.error("REDIS_URL", "must start with redis:// or rediss://"));
        }
        // redis-rs's own message would not say which part is wrong; it never shows the password.
        Client::open(url).map_err(|e| {
            settings.error(
                "REDIS_URL",
                format!("is not a valid Redis URL ({e}); expected redis[s]://[user:password@]host[:port][/db]"),
            )
        })?;
        let stream_template = settings
            .get("REDIS_STREAM_TEMPLATE")
            .unwrap_or(DEFAULT_STREAM_TEMPLATE)
            .to_string();
        // Redis takes an expiry and a MAXLEN up to a signed 64-bit integer; a larger value made
        // every XADD fail as if Redis were down.
        let dedup_secs = settings.number("REDIS_DEDUP_SECS", DEFAULT_DEDUP_SECS, DEDUP_RANGE)?;
        let maxlen = settings.number("REDIS_MAXLEN", 0, MAXLEN_RANGE)?;
        Ok(RedisConfig {
            url: url.to_string(),
            stream_template,
            dedup_secs,
            maxlen,
            format: Format::read(settings)?,
        })
    }

    /// The stream key of `topic`.
    pub(super) fn stream_for(&self, topic: &str) -> String {
        self.stream_template.replace("{topic}", topic)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::settings::Settings;

    pub(in crate::sink::redis) fn read(pairs: &[(&str, &str)]) -> Result<RedisConfig, ConfigError> {
        let settings = Settings::from_pairs(pairs);
        RedisConfig::read(&settings.default_sink())
    }

    #[test]
    fn settings_have_the_contracts_defaults_and_are_checked() {
        let config = read(&[("OUTBOX_REDIS_URL", "redis://127.0.0.1:6379")]).expect("valid");
        assert_eq!(config.stream_template, "{topic}");
        assert_eq!(config.dedup_secs, 86_400);
        assert_eq!(config.maxlen, 0);
        let error = read(&[("OUTBOX_REDIS_URL", "http://127.0.0.1")]).unwrap_err();
        assert!(error.to_string().contains("OUTBOX_REDIS_URL"), "{error}");
        let error = read(&[
            ("OUTBOX_REDIS_URL", "redis://127.0.0.1"),
            ("OUTBOX_REDIS_DEDUP_SECS", "0"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("OUTBOX_REDIS_DEDUP_SECS"),
            "{error}"
        );
        for (setting, value) in [
            ("OUTBOX_REDIS_MAXLEN", "-1"),
            ("OUTBOX_REDIS_MAXLEN", "18446744073709551615"),
            ("OUTBOX_REDIS_DEDUP_SECS", "18446744073709551615"),
        ] {
            let error =
                read(&[("OUTBOX_REDIS_URL", "redis://127.0.0.1"), (setting, value)]).unwrap_err();
            assert!(
                error.to_string().contains(setting) && error.to_string().contains(" to "),
                "{error}"
            );
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config =
            read(&[("OUTBOX_REDIS_URL", "rediss://relay:s3cret@redis:6380/0")]).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
