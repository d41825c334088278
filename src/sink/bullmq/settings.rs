//! The bullmq sink's settings, validated once at start.

use bullmq::JobOptions;
use serde_json::{Map, Value};

use crate::redact::redact;
use crate::settings::table::Range;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_PREFIX: &str = "bull";
pub const DEFAULT_QUEUE_TEMPLATE: &str = "{topic}";
pub const DEFAULT_DEDUP_SECS: u64 = 86_400;
/// BullMQ's deduplication holds each message id at least a second, at most ten years (its TTL is
/// in milliseconds: larger values would overflow Redis's and leave the key without a TTL).
const DEDUP_RANGE: Range = Range {
    unit: "seconds",
    min: 1,
    max: 315_360_000,
};

/// Job options the relay sets itself (`jobId`, deduplication) or that make no sense for one job
/// per event (flows, repeatable jobs): refused in `BULLMQ_JOB_OPTIONS`.
const RELAY_OWNED_OPTIONS: &[&str] = &[
    "jobId",
    "deduplication",
    "de",
    "debounce",
    "parent",
    "repeat",
    "repeatJobKey",
    "prevMillis",
    "timestamp",
];

#[derive(Clone)]
pub(super) struct BullmqConfig {
    /// `redis://` or `rediss://`, maybe with user and password.
    pub(super) url: String,
    /// BullMQ's key prefix: a queue's keys are `<prefix>:<queue>:...`.
    pub(super) prefix: String,
    /// The queue name; `{topic}` is replaced by the event's topic.
    pub(super) queue_template: String,
    /// Options of every job, as BullMQ's `Queue.add` takes them.
    pub(super) job_options: JobOptions,
    /// How long BullMQ's deduplication holds a message id.
    pub(super) dedup_secs: u64,
}

/// Without the password.
impl std::fmt::Debug for BullmqConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BullmqConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("queue_template", &self.queue_template)
            .field("job_options", &self.job_options)
            .field("dedup_secs", &self.dedup_secs)
            .finish()
    }
}

impl BullmqConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<BullmqConfig, ConfigError> {
        let url = settings.required(
            "BULLMQ_URL",
            "a redis:// or rediss:// URL such as redis://user:password@127.0.0.1:6379/0",
        )?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(settings.error("BULLMQ_URL", "must start with redis:// or rediss://"));
        }
        redis::Client::open(url).map_err(|e| {
            settings.error(
                "BULLMQ_URL",
                format!("is not a valid Redis URL ({e}); expected redis[s]://[user:password@]host[:port][/db]"),
            )
        })?;
        let prefix = settings.get("BULLMQ_PREFIX").unwrap_or(DEFAULT_PREFIX);
        if prefix.contains(':') {
            return Err(settings.error(
                "BULLMQ_PREFIX",
                "cannot contain ':' (BullMQ's clients refuse it: it separates prefix, queue and job id)",
            ));
        }
        let queue_template = settings
            .get("BULLMQ_QUEUE_TEMPLATE")
            .unwrap_or(DEFAULT_QUEUE_TEMPLATE);
        if let Err(problem) = check_queue_name(&queue_template.replace("{topic}", "t")) {
            return Err(settings.error("BULLMQ_QUEUE_TEMPLATE", problem));
        }
        let job_options = settings
            .get("BULLMQ_JOB_OPTIONS")
            .map_or(Ok(JobOptions::default()), job_options)
            .map_err(|problem| settings.error("BULLMQ_JOB_OPTIONS", problem))?;
        let dedup_secs = settings.number("BULLMQ_DEDUP_SECS", DEFAULT_DEDUP_SECS, DEDUP_RANGE)?;
        Ok(BullmqConfig {
            url: url.to_string(),
            prefix: prefix.to_string(),
            queue_template: queue_template.to_string(),
            job_options,
            dedup_secs,
        })
    }

    /// The queue of `topic`.
    pub(super) fn queue_for(&self, topic: &str) -> String {
        self.queue_template.replace("{topic}", topic)
    }
}

/// `BULLMQ_JOB_OPTIONS`: a JSON object of BullMQ job options, each one the client knows.
fn job_options(text: &str) -> Result<JobOptions, String> {
    let given: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| format!("must be a JSON object of BullMQ job options ({e})"))?;
    if let Some(owned) = given
        .keys()
        .find(|k| RELAY_OWNED_OPTIONS.contains(&k.as_str()))
    {
        return Err(format!(
            "cannot set {owned:?}: the relay sets the job id and deduplication itself (the message id), and adds single jobs"
        ));
    }
    let options: JobOptions = serde_json::from_value(Value::Object(given.clone()))
        .map_err(|e| format!("is not a valid set of BullMQ job options ({e})"))?;
    // Options the client does not know would be dropped without a word: name them instead.
    let understood = match serde_json::to_value(&options) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let unknown: Vec<&str> = given
        .keys()
        .filter(|k| !understood.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "has options BullMQ's Rust client does not apply: {}",
            unknown.join(", ")
        ));
    }
    Ok(options)
}

/// BullMQ's rule for queue names: not empty, no ':' (it separates prefix, queue and job id).
pub(super) fn check_queue_name(queue: &str) -> Result<(), String> {
    if queue.is_empty() {
        return Err("is empty, which BullMQ refuses".into());
    }
    if queue.contains(':') {
        return Err("contains ':', which BullMQ refuses in queue names".into());
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::settings::Settings;

    pub(in crate::sink::bullmq) fn read(
        pairs: &[(&str, &str)],
    ) -> Result<BullmqConfig, ConfigError> {
        let settings = Settings::from_pairs(pairs);
        BullmqConfig::read(&settings.default_sink())
    }

    fn with_url(pairs: &[(&'static str, &'static str)]) -> Result<BullmqConfig, ConfigError> {
        let mut all = vec![("OUTBOX_BULLMQ_URL", "redis://127.0.0.1:6379")];
        all.extend_from_slice(pairs);
        read(&all)
    }

    #[test]
    fn settings_have_the_contracts_defaults() {
        let config = with_url(&[]).expect("valid");
        assert_eq!(config.prefix, "bull");
        assert_eq!(config.queue_template, "{topic}");
        assert_eq!(config.dedup_secs, 86_400);
        assert_eq!(config.queue_for("orders"), "orders");
        assert!(config.job_options.attempts.is_none());
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (pairs, variable) in [
            (vec![("OUTBOX_BULLMQ_URL", "http://x")], "OUTBOX_BULLMQ_URL"),
            (
                vec![("OUTBOX_BULLMQ_PREFIX", "a:b")],
                "OUTBOX_BULLMQ_PREFIX",
            ),
            (
                vec![("OUTBOX_BULLMQ_QUEUE_TEMPLATE", "jobs:{topic}")],
                "OUTBOX_BULLMQ_QUEUE_TEMPLATE",
            ),
            (
                vec![("OUTBOX_BULLMQ_JOB_OPTIONS", "[1]")],
                "OUTBOX_BULLMQ_JOB_OPTIONS",
            ),
            (
                vec![("OUTBOX_BULLMQ_JOB_OPTIONS", r#"{"jobId":"x"}"#)],
                "OUTBOX_BULLMQ_JOB_OPTIONS",
            ),
            (
                vec![("OUTBOX_BULLMQ_JOB_OPTIONS", r#"{"atempts":3}"#)],
                "OUTBOX_BULLMQ_JOB_OPTIONS",
            ),
            (
                vec![("OUTBOX_BULLMQ_DEDUP_SECS", "0")],
                "OUTBOX_BULLMQ_DEDUP_SECS",
            ),
            // Accepted before it had a range: the job then had no dedup TTL at all.
            (
                vec![("OUTBOX_BULLMQ_DEDUP_SECS", "18446744073709551615")],
                "from 1 to 315360000",
            ),
            (
                vec![("OUTBOX_BULLMQ_DEDUP_SECS", "315360001")],
                "from 1 to 315360000",
            ),
        ] {
            let mut all = vec![("OUTBOX_BULLMQ_URL", "redis://127.0.0.1")];
            all.extend(pairs);
            let error = read(&all).expect_err(variable).to_string();
            assert!(error.contains(variable), "{error}");
        }
        let error = with_url(&[("OUTBOX_BULLMQ_JOB_OPTIONS", r#"{"atempts":3}"#)])
            .expect_err("unknown option")
            .to_string();
        assert!(error.contains("atempts"), "{error}");
    }

    #[test]
    fn job_options_are_bullmqs() {
        let config = with_url(&[(
            "OUTBOX_BULLMQ_JOB_OPTIONS",
            r#"{"attempts":5,"backoff":{"type":"exponential","delay":1000},"removeOnComplete":true,"removeOnFail":{"age":3600},"priority":2}"#,
        )])
        .expect("valid");
        let options = &config.job_options;
        assert_eq!(options.attempts, Some(5));
        assert_eq!(options.priority, Some(2));
        assert!(options.backoff.is_some() && options.remove_on_complete.is_some());
        assert!(options.remove_on_fail.is_some());
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config =
            read(&[("OUTBOX_BULLMQ_URL", "rediss://relay:s3cret@redis:6380/0")]).expect("valid");
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
