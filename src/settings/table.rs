//! The core settings, each declared once: its environment variable, its flag, its help and its
//! default. The flags ([`super::SettingArgs`]), the TOML keys and the typed lookups
//! ([`super::Settings::value`]) all follow from this table.

/// One core setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable (`OUTBOX_BATCH_SIZE`): the name every error uses.
    pub env: &'static str,
    /// The flag without its dashes (`batch-size`).
    pub flag: &'static str,
    /// One line for `--help`, without the default.
    pub help: &'static str,
    /// The value when unset, as it would be written in the environment; shown in `--help`.
    pub default: Option<&'static str>,
    /// `--help` must not print the value the environment holds (it may hold a password).
    pub secret: bool,
    /// A number's unit and the least and greatest value that can work (docs/configuration.md
    /// lists them); `None` for a setting that is not a number.
    pub range: Option<Range>,
}

/// What a numeric setting accepts: whole numbers of `unit` from `min` to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// "milliseconds", "seconds", "bytes", or "" for a count.
    pub unit: &'static str,
    pub min: u64,
    pub max: u64,
}

impl Range {
    /// "a whole number of milliseconds from 1 to 86400000", for errors.
    pub fn describe(&self) -> String {
        let of = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" of {}", self.unit)
        };
        format!("a whole number{of} from {} to {}", self.min, self.max)
    }
}

impl Setting {
    const fn new(env: &'static str, flag: &'static str, help: &'static str) -> Setting {
        Setting {
            env,
            flag,
            help,
            default: None,
            secret: false,
            range: None,
        }
    }

    /// A whole number of `unit` from `min` to `max`.
    const fn within(self, unit: &'static str, min: u64, max: u64) -> Setting {
        Setting {
            range: Some(Range { unit, min, max }),
            ..self
        }
    }

    const fn defaults_to(self, default: &'static str) -> Setting {
        Setting {
            default: Some(default),
            ..self
        }
    }

    const fn secret(self) -> Setting {
        Setting {
            secret: true,
            ..self
        }
    }

    /// The TOML key: the variable's name without `OUTBOX_`, lower-case (`batch_size`).
    pub fn key(&self) -> String {
        self.name().to_lowercase()
    }

    /// The variable's name without `OUTBOX_` (`BATCH_SIZE`): the flag's value name in `--help`.
    pub fn name(&self) -> &'static str {
        self.env.strip_prefix("OUTBOX_").unwrap_or(self.env)
    }

    /// The help line as `--help` prints it, with the default.
    pub fn help_line(&self) -> String {
        match self.default {
            Some(default) => format!("{} [default: {default}]", self.help),
            None => self.help.to_string(),
        }
    }
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const DAY_SECS: u64 = 86_400;
const YEAR_SECS: u64 = 365 * DAY_SECS;
/// PostgreSQL's largest field: a larger payload cannot be stored, and its size plus one must fit
/// a bigint in the claim.
const GIB: u64 = 1 << 30;

/// Declares each setting as a constant and lists them all in [`CORE`], in `--help` order.
macro_rules! core_settings {
    ($($name:ident = $setting:expr;)*) => {
        $(pub const $name: Setting = $setting;)*
        /// Every core setting, in the order of `--help`; each is also a TOML key.
        pub const CORE: &[Setting] = &[$($name),*];
    };
}

/// The TOML file itself: a flag and an environment variable, but not a key of the file.
pub const CONFIG: Setting = Setting::new(
    "OUTBOX_CONFIG",
    "config",
    "TOML file holding any of these settings (keys are the variable names without `OUTBOX_`, \
     lower-case, e.g. `amqp_exchange = \"events\"`)",
);

core_settings! {
    DATABASE_URL = Setting::new(
        "OUTBOX_DATABASE_URL",
        "database-url",
        "PostgreSQL URL (`DATABASE_URL` is read too)",
    )
    .secret();
    SINK = Setting::new(
        "OUTBOX_SINK",
        "sink",
        "Where events go: the default sink's kind (kafka, rabbitmq, stdout, ...). Each kind's own \
         settings (e.g. OUTBOX_AMQP_URL), named sinks (OUTBOX_SINKS) and routes (OUTBOX_ROUTES) \
         are read from the environment or the file; see README, \"Sinks and routes\"",
    );
    HTTP_ADDR = Setting::new(
        "OUTBOX_HTTP_ADDR",
        "http-addr",
        "Address of /metrics, /healthz, /readyz",
    )
    .defaults_to("0.0.0.0:9898");
    LOG_FORMAT = Setting::new("OUTBOX_LOG_FORMAT", "log-format", "Log format: text or json")
        .defaults_to("text");
    MAX_ATTEMPTS = Setting::new(
        "OUTBOX_MAX_ATTEMPTS",
        "max-attempts",
        "Attempts for errors about the event itself before it is dead-lettered",
    )
    .defaults_to("10")
    .within("", 1, 1_000_000);
    RETRY_BASE_DELAY_MS = Setting::new(
        "OUTBOX_RETRY_BASE_DELAY_MS",
        "retry-base-delay-ms",
        "First retry delay, doubled on each retry",
    )
    .defaults_to("500")
    .within("milliseconds", 1, DAY_MS);
    RETRY_MAX_DELAY_MS = Setting::new(
        "OUTBOX_RETRY_MAX_DELAY_MS",
        "retry-max-delay-ms",
        "Cap of the exponential backoff between retries",
    )
    .defaults_to("60000")
    .within("milliseconds", 1, DAY_MS);
    BATCH_SIZE = Setting::new(
        "OUTBOX_BATCH_SIZE",
        "batch-size",
        "Events claimed and published per batch",
    )
    .defaults_to("500")
    .within("", 1, 100_000);
    POLL_INTERVAL_MS = Setting::new(
        "OUTBOX_POLL_INTERVAL_MS",
        "poll-interval-ms",
        "How often to look for events without a notification",
    )
    .defaults_to("1000")
    .within("milliseconds", 1, HOUR_MS);
    // 1 ms by default: at 1,000 events/s it cut the claims by ~45% and PostgreSQL's CPU for the
    // relay by 31-44%, for ~1 ms of latency, every sink's p50 within 3 ms (docs/performance.md).
    BATCH_LINGER_MS = Setting::new(
        "OUTBOX_BATCH_LINGER_MS",
        "batch-linger-ms",
        "How long after a claim that was not full the next claim waits, so that a steady trickle \
         of events goes out in fewer, larger batches; 0: at once",
    )
    .defaults_to("1")
    .within("milliseconds", 0, 1_000);
    LEADER_POLL_MS = Setting::new(
        "OUTBOX_LEADER_POLL_MS",
        "leader-poll-ms",
        "How often a standby tries to become the active relay",
    )
    .defaults_to("1000")
    .within("milliseconds", 1, HOUR_MS);
    SHUTDOWN_TIMEOUT_SECS = Setting::new(
        "OUTBOX_SHUTDOWN_TIMEOUT_SECS",
        "shutdown-timeout-secs",
        "How long `run` may take to finish its in-flight batch after SIGTERM",
    )
    .defaults_to("20")
    .within("seconds", 0, DAY_SECS);
    MAX_PAYLOAD_BYTES = Setting::new(
        "OUTBOX_MAX_PAYLOAD_BYTES",
        "max-payload-bytes",
        "Largest payload published; larger events are dead-lettered",
    )
    .defaults_to("16777216")
    .within("bytes", 1, GIB);
    BATCH_MAX_BYTES = Setting::new(
        "OUTBOX_BATCH_MAX_BYTES",
        "batch-max-bytes",
        "Payload bytes per batch; the first event of a batch is always taken",
    )
    .defaults_to("16777216")
    .within("bytes", 1, 16 * GIB);
    RETENTION_SECS = Setting::new(
        "OUTBOX_RETENTION_SECS",
        "retention-secs",
        "How long delivered events stay in the table before they are deleted",
    )
    .defaults_to("300")
    .within("seconds", 0, 10 * YEAR_SECS);
    PUBLISH_TIMEOUT_MS = Setting::new(
        "OUTBOX_PUBLISH_TIMEOUT_MS",
        "publish-timeout-ms",
        "How long a publish (or connect) may wait for the broker before it counts as an outage",
    )
    .defaults_to("30000")
    .within("milliseconds", 1, HOUR_MS);
    REPLICA_MODE = Setting::new(
        "OUTBOX_REPLICA_MODE",
        "replica-mode",
        "`lanes`: every replica relays a fair share of the lanes; `single`: one active replica, \
         the others stand by",
    )
    .defaults_to("lanes");
    STALL_TIMEOUT_SECS = Setting::new(
        "OUTBOX_STALL_TIMEOUT_SECS",
        "stall-timeout-secs",
        "`/healthz` fails when the active relay made no progress for this long; 0 disables",
    )
    .defaults_to("120")
    .within("seconds", 0, 7 * DAY_SECS);
    ADOPT = Setting::new(
        "OUTBOX_ADOPT",
        "adopt",
        "Relay the outbox table a framework already writes: `debezium` or `masstransit`; \
         `migrate` installs its capture (docs/adoption.md). Unset: only outbox.events",
    );
    ADOPT_TABLE = Setting::new(
        "OUTBOX_ADOPT_TABLE",
        "adopt-table",
        "The application's outbox table [default: public.outboxevent (debezium), \
         public.\"OutboxMessage\" (masstransit)]",
    );
    ADOPT_TOPIC_TEMPLATE = Setting::new(
        "OUTBOX_ADOPT_TOPIC_TEMPLATE",
        "adopt-topic-template",
        "debezium: the topic of a row, `{column}` replaced by the row's column",
    )
    .defaults_to("outbox.event.{aggregatetype}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_named_alike_as_variable_flag_and_key() {
        for setting in CORE.iter().chain([&CONFIG]) {
            assert!(setting.env.starts_with("OUTBOX_"), "{}", setting.env);
            assert_eq!(
                setting.flag,
                setting.key().replace('_', "-"),
                "{}",
                setting.env
            );
            let same = CORE.iter().filter(|s| s.env == setting.env).count();
            assert!(same <= 1, "{} is declared twice", setting.env);
        }
    }

    #[test]
    fn the_help_line_shows_the_default() {
        assert_eq!(
            BATCH_SIZE.help_line(),
            "Events claimed and published per batch [default: 500]"
        );
        assert_eq!(
            DATABASE_URL.help_line(),
            "PostgreSQL URL (`DATABASE_URL` is read too)"
        );
    }
}
