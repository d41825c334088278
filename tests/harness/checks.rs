//! Checks after a broker outage, the same for every sink.

use std::time::Duration;

use super::consumer::{Consumer, assert_keys_ordered_and_complete, distinct_payloads};
use super::db::TestDb;
use super::eventually;

/// After an outage ended: every event delivered, none used an attempt or was dead-lettered.
pub async fn assert_delivered_without_attempts(db: &TestDb, timeout: Duration) {
    eventually(
        "every event delivered after the outage",
        timeout,
        || async { db.undelivered().await == 0 },
    )
    .await;
    assert_eq!(
        db.count("attempts > 0").await,
        0,
        "the outage used no attempts"
    );
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);
}

/// After a broker outage or block ended: every event delivered without using an attempt or
/// dead-lettering, and `keys` x `per_key` events consumed complete and in key order.
pub async fn assert_recovered_losslessly(
    db: &TestDb,
    consumer: &impl Consumer,
    keys: usize,
    per_key: u64,
    timeout: Duration,
) {
    assert_delivered_without_attempts(db, timeout).await;
    eventually("every event consumed", timeout, || async {
        distinct_payloads(&consumer.received()) >= keys * per_key as usize
    })
    .await;
    assert_keys_ordered_and_complete(&consumer.received(), keys, per_key);
}
