//! An event as its BullMQ job: queue, name, data and options. No I/O.

use bullmq::{DeduplicationOptions, JobOptions};

use super::settings::{BullmqConfig, check_queue_name};
use crate::outbox::event::Event;

/// The header whose value names the job; without it, the topic does.
const NAME_HEADER: &str = "type";

/// One event's job.
#[derive(Debug)]
pub(super) struct Job<'a> {
    /// The queue's name (without the prefix).
    pub(super) queue: String,
    /// The job's name: what a worker's `job.name` reads.
    pub(super) name: &'a str,
    /// The payload as JSON: what a worker's `job.data` reads.
    pub(super) data: serde_json::Value,
    /// The sink's job options with the message id as job id and deduplication id.
    pub(super) options: JobOptions,
}

impl<'a> Job<'a> {
    /// `Err` is the event's fault: a payload that is not JSON, or a queue name BullMQ refuses.
    pub(super) fn new(config: &BullmqConfig, event: &'a Event) -> Result<Job<'a>, String> {
        let queue = config.queue_for(&event.topic);
        check_queue_name(&queue).map_err(|problem| {
            format!("the queue name {queue:?} (from OUTBOX_BULLMQ_QUEUE_TEMPLATE and the topic) {problem}")
        })?;
        let data = serde_json::from_slice(&event.payload)
            .map_err(|e| format!("the payload is not JSON ({e}); BullMQ job data must be JSON"))?;
        let name = event
            .headers
            .iter()
            .find(|(name, _)| name == NAME_HEADER)
            .map_or(event.topic.as_str(), |(_, value)| value.as_str());
        let message_id = event.message_id.to_string();
        let mut options = config.job_options.clone();
        options.deduplication = Some(DeduplicationOptions {
            id: message_id.clone(),
            ttl: Some(config.dedup_secs.saturating_mul(1000)),
            ..DeduplicationOptions::default()
        });
        options.job_id = Some(message_id);
        Ok(Job {
            queue,
            name,
            data,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::event::test_event_with;
    use crate::sink::bullmq::settings::tests::read;

    fn config(template: &str) -> BullmqConfig {
        read(&[
            ("OUTBOX_BULLMQ_URL", "redis://127.0.0.1"),
            ("OUTBOX_BULLMQ_QUEUE_TEMPLATE", template),
            ("OUTBOX_BULLMQ_JOB_OPTIONS", r#"{"attempts":3}"#),
            ("OUTBOX_BULLMQ_DEDUP_SECS", "60"),
        ])
        .expect("valid")
    }

    #[test]
    fn a_job_has_the_message_id_the_type_header_and_the_payload() {
        let mut event = test_event_with(Some("k"), &[("type", "order.paid")], br#"{"n":1}"#);
        event.message_id = uuid::Uuid::from_u128(7);
        let config = config("jobs-{topic}");
        let job = Job::new(&config, &event).expect("a job");
        assert_eq!(job.queue, "jobs-t");
        assert_eq!(job.name, "order.paid");
        assert_eq!(job.data, serde_json::json!({"n": 1}));
        let id = event.message_id.to_string();
        assert_eq!(job.options.job_id.as_deref(), Some(id.as_str()));
        let dedup = job.options.deduplication.as_ref().expect("deduplication");
        assert_eq!((dedup.id.as_str(), dedup.ttl), (id.as_str(), Some(60_000)));
        assert_eq!(job.options.attempts, Some(3), "the sink's options stay");
    }

    #[test]
    fn without_a_type_header_the_topic_names_the_job() {
        let event = test_event_with(None, &[("tenant", "a")], b"[1,2]");
        let config = config("{topic}");
        assert_eq!(Job::new(&config, &event).expect("a job").name, "t");
    }

    #[test]
    fn a_payload_that_is_not_json_or_a_bad_queue_name_is_the_events_fault() {
        let config = config("{topic}");
        let error = Job::new(&config, &test_event_with(None, &[], b"not json")).unwrap_err();
        assert!(error.contains("not JSON"), "{error}");
        let mut event = test_event_with(None, &[], b"{}");
        event.topic = "a:b".into();
        let error = Job::new(&config, &event).unwrap_err();
        assert!(
            error.contains("\"a:b\"") && error.contains("':'"),
            "{error}"
        );
    }
}
