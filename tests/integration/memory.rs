//! The memory bound by bytes (docs/guarantees.md#memory): hundreds of multi-MiB events drained
//! to the stdout sink, and the relay's peak resident memory (VmHWM) stays within what it had
//! before any event, plus `OUTBOX_BATCH_MAX_BYTES`, plus a few of the largest events.

use std::time::Duration;

use crate::harness::*;

const MIB: u64 = 1024 * 1024;
const EVENTS: u64 = 150;
const PAYLOAD: u64 = 4 * MIB;
/// `OUTBOX_BATCH_MAX_BYTES`: four events per batch.
const BUDGET: u64 = 16 * MIB;
/// Beyond the budget: one event as PostgreSQL's protocol reads it, one as the sink writes it
/// (docs/performance.md measured "about two"; this test about three), and two more for the
/// allocator's slack. A second batch in memory (the budget again) does not fit.
const EVENTS_BEYOND_BUDGET: u64 = 5;

#[tokio::test]
async fn peak_rss_stays_within_the_batch_bytes_budget_plus_a_few_events() {
    let db = TestDb::create().await;
    let mut settings = stdout_sink_settings();
    settings.push(("OUTBOX_BATCH_MAX_BYTES", BUDGET.to_string()));
    settings.push(("OUTBOX_MAX_PAYLOAD_BYTES", (2 * PAYLOAD).to_string()));
    // Delivered rows go as their delivery is recorded: the test database stays small.
    settings.push(("OUTBOX_RETENTION_SECS", "0".into()));
    let (mut relay, _) =
        Relay::spawn(&db.url, &settings, RelayStdout::Null).unwrap_or_else(|e| panic!("{e:#}"));
    relay
        .wait_leading(Duration::from_secs(60))
        .await
        .expect("the relay leads");
    let before = relay.peak_rss_mib();

    // Compressible payloads, made by PostgreSQL: cheap to write, full size on the wire (lz4,
    // where PostgreSQL has it, compresses and expands them several times faster than pglz).
    let _ = db
        .client
        .batch_execute("SET default_toast_compression = 'lz4'")
        .await;
    for _ in 0..EVENTS / 15 {
        db.client
            .execute(
                "INSERT INTO outbox.events (topic, key, payload) \
                 SELECT 'big', 'k' || n % 10, convert_to(lpad(n::text, 8) || repeat('x', $1), 'UTF8') \
                 FROM generate_series(1, 15) n",
                &[&(PAYLOAD as i32 - 8)],
            )
            .await
            .expect("insert big events");
    }
    relay
        .wait_delivered(EVENTS, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let peak = relay.peak_rss_mib();
    println!(
        "memory: drained in {:.1} s, relay CPU {:.1} s",
        relay.started.elapsed().as_secs_f64(),
        relay.cpu_secs()
    );
    let bound = before + ((BUDGET + EVENTS_BEYOND_BUDGET * PAYLOAD) / MIB) as f64;
    println!(
        "memory: {EVENTS} events of {} MiB, OUTBOX_BATCH_MAX_BYTES {} MiB: peak RSS {peak:.1} MiB \
         (before any event {before:.1} MiB, bound {bound:.1} MiB)",
        PAYLOAD / MIB,
        BUDGET / MIB
    );
    assert!(
        peak < bound,
        "peak RSS {peak:.1} MiB over the bound {bound:.1} MiB: {before:.1} MiB before any event + \
         OUTBOX_BATCH_MAX_BYTES {} MiB + {EVENTS_BEYOND_BUDGET} events of {} MiB",
        BUDGET / MIB,
        PAYLOAD / MIB
    );
}
