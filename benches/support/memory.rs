//! Memory under huge payloads (`BENCH_ONLY=memory`): a backlog of `BENCH_BIG_EVENTS` events of
//! `BENCH_BIG_PAYLOAD_MIB` each, drained to stdout (/dev/null) with `OUTBOX_BATCH_MAX_BYTES` =
//! `BENCH_BIG_BUDGET_MIB`; the relay's peak RSS against that budget.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::settings::{Settings, env_u64};
use super::table::{Table, progress};
use crate::harness::{Postgres, Relay, RelayStdout, metric_sum, pg_error, try_connect, unique};

struct MemoryReport {
    pub events: u64,
    pub payload_mib: u64,
    pub budget_mib: u64,
    pub peak_rss_mib: f64,
    pub seconds: f64,
    pub batches: f64,
}

async fn memory(s: &Settings, pg: &Postgres) -> Result<MemoryReport> {
    let events = env_u64("BENCH_BIG_EVENTS", 1_000)?.max(1);
    let payload_mib = env_u64("BENCH_BIG_PAYLOAD_MIB", 8)?.max(1);
    let budget_mib = env_u64("BENCH_BIG_BUDGET_MIB", 32)?.max(1);
    let name = unique("outbox_bench_memory");
    let url = pg.create(&name, None, true).await?;
    let result = async {
        let client = try_connect(&url).await?;
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
        let mut env = s.relay_env();
        env.push(("OUTBOX_SINK", "stdout".into()));
        env.push((
            "OUTBOX_BATCH_MAX_BYTES",
            (budget_mib * 1024 * 1024).to_string(),
        ));
        let started = Instant::now();
        let (mut relay, _) = Relay::spawn(&url, &env, RelayStdout::Null)?;
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

/// The memory row: the relay's peak RSS against its bound.
pub async fn memory_rows(s: &Settings, pg: &Postgres, table: &mut Table) {
    progress("memory: a backlog of huge payloads to stdout");
    match memory(s, pg).await {
        Ok(m) => {
            // One batch (no early claim with large payloads), plus one event as the database
            // protocol reads it and one as the sink writes it, plus the process itself.
            let bound = m.budget_mib as f64 + 2.0 * m.payload_mib as f64 + 32.0;
            table.target(
                &format!(
                    "memory: {} events of {} MiB, OUTBOX_BATCH_MAX_BYTES {} MiB: peak RSS",
                    m.events, m.payload_mib, m.budget_mib
                ),
                format!(
                    "{:.1} MiB ({:.0} s, {} batches)",
                    m.peak_rss_mib, m.seconds, m.batches
                ),
                &format!("<= budget + 2 x payload + 32 MiB = {bound:.0} MiB"),
                m.peak_rss_mib <= bound,
            );
        }
        Err(e) => table.error("memory", &e),
    }
}
