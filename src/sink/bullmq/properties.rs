//! Any event through the BullMQ encoder: a job whose data is the payload's JSON, whose id and
//! deduplication id are the message id, named by the header `type` or the topic; or a refusal
//! that names why (a payload that is not JSON, a queue name BullMQ refuses).

use proptest::prelude::*;

use super::encode::Job;
use super::settings::check_queue_name;
use crate::outbox::arbitrary;

proptest! {
    #![proptest_config(arbitrary::config(256))]

    #[test]
    fn any_event_is_a_job_or_refused_with_its_reason(
        event in arbitrary::event(),
        template in prop::sample::select(vec!["{topic}", "jobs-{topic}", "jobs"]),
        dedup_secs in prop_oneof![Just(1u64), Just(u64::MAX), any::<u64>()],
    ) {
        let mut config = super::settings::tests::read(&[
            ("OUTBOX_BULLMQ_URL", "redis://127.0.0.1"),
            ("OUTBOX_BULLMQ_QUEUE_TEMPLATE", template),
        ])
        .expect("valid");
        config.dedup_secs = dedup_secs;
        let queue = template.replace("{topic}", &event.topic);
        let data = serde_json::from_slice::<serde_json::Value>(&event.payload);
        match Job::new(&config, &event) {
            Ok(job) => {
                prop_assert!(check_queue_name(&queue).is_ok());
                prop_assert_eq!(&job.queue, &queue);
                prop_assert_eq!(Some(&job.data), data.as_ref().ok());
                let name = event
                    .headers
                    .iter()
                    .find(|(n, _)| n == "type")
                    .map_or(event.topic.as_str(), |(_, v)| v.as_str());
                prop_assert_eq!(job.name, name);
                let id = event.message_id.to_string();
                prop_assert_eq!(job.options.job_id.as_deref(), Some(id.as_str()));
                let dedup = job.options.deduplication.as_ref().expect("deduplication");
                prop_assert_eq!(&dedup.id, &id);
                prop_assert_eq!(dedup.ttl, Some(dedup_secs.saturating_mul(1000)));
            }
            Err(reason) => {
                prop_assert!(check_queue_name(&queue).is_err() || data.is_err(), "{}", reason);
                prop_assert!(reason.contains("queue name") || reason.contains("not JSON"), "{}", reason);
            }
        }
    }
}
