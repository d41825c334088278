//! Memory under huge payloads (`BENCH_ONLY=memory`): a backlog of `BENCH_BIG_EVENTS` events of
//! `BENCH_BIG_PAYLOAD_MIB` each, drained to stdout (/dev/null) with `OUTBOX_BATCH_MAX_BYTES` =
//! `BENCH_BIG_BUDGET_MIB`; the relay's peak RSS against that budget.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::*;

pub struct MemoryReport {
    pub events: u64,
    pub payload_mib: u64,
    pub budget_mib: u64,
    pub peak_rss_mib: f64,
    pub seconds: f64,
    pub batches: f64,
}

pub async fn memory(s: &Settings, pg: &Pg) -> Result<MemoryReport> {
    let events = env_u64("BENCH_BIG_EVENTS", 1_000)?.max(1);
    let payload_mib = env_u64("BENCH_BIG_PAYLOAD_MIB", 8)?.max(1);
    let budget_mib = env_u64("BENCH_BIG_BUDGET_MIB", 32)?.max(1);
    let name = unique("outbox_bench_memory");
    let url = pg.create(&name, None).await?;
    let result = async {
        let client = connect(&url).await?;
        // Compressible payloads: small on disk (TOAST), full size on the wire and in the relay.
        // Inserted in statements of 10 to keep the producer's own memory small.
        let mut done = 0;
        while done < events {
            let n = (events - done).min(10) as i64;
            client
                .execute(
                    "INSERT INTO outbox.events (topic, key, payload) \
                     SELECT 'bench', (i % 100)::text, \
                            convert_to(repeat(chr(65 + (i % 26)::int), ($2::bigint)::int), 'UTF8') \
                     FROM generate_series(1, $1::bigint) i",
                    &[&n, &((payload_mib * 1024 * 1024) as i64)],
                )
                .await
                .map_err(|e| anyhow!("inserting big events: {}", pg_error(&e)))?;
            done += n as u64;
        }
        let mut env = s.relay_env(&SinkTarget::Stdout);
        env.push((
            "OUTBOX_BATCH_MAX_BYTES".into(),
            (budget_mib * 1024 * 1024).to_string(),
        ));
        let started = Instant::now();
        let (mut relay, _) = RelayProc::spawn(&s.relay_bin, &url, &env, RelayStdout::Null)?;
        relay
            .wait_delivered(events, Duration::from_secs(600))
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_mib = relay.peak_rss_mib();
        let body = relay.metrics().await.unwrap_or_default();
        relay.stop().await?;
        Ok(MemoryReport {
            events,
            payload_mib,
            budget_mib,
            peak_rss_mib,
            seconds,
            batches: metric_sum(&body, "outbox_relay_batch_size_count", "").unwrap_or(f64::NAN),
        })
    }
    .await;
    pg.drop(&name).await;
    result
}
