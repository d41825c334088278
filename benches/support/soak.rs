//! The soak (`BENCH_ONLY=soak`): the relay on a busy database that other sessions hold back.
//! A steady producer runs throughout; after a warm-up, one session holds a `REPEATABLE READ`
//! snapshot open (as an analytics query or `pg_dump` does), then, after a pause, another holds a
//! transaction open that wrote an event (a forgotten `BEGIN`). Nothing is vacuumed by hand;
//! autovacuum runs as it would. Every 10 s one line: lag, backlog, mean claim time, dead tuples
//! and table size; at the end, per phase, the figures of the README's soak table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::*;

pub struct SoakSettings {
    pub rate: u64,
    pub warmup: Duration,
    pub hold: Duration,
    pub pause: Duration,
    pub recover: Duration,
    /// `OUTBOX_RETENTION_SECS` for the relay; `None`: the relay's default.
    pub retention_secs: Option<u64>,
}

impl SoakSettings {
    pub fn from_env() -> Result<SoakSettings> {
        let secs = |name: &str, default: u64| -> Result<Duration> {
            Ok(Duration::from_secs(env_u64(name, default)?))
        };
        Ok(SoakSettings {
            rate: env_u64("BENCH_SOAK_RATE", 2_000)?.max(1),
            warmup: secs("BENCH_SOAK_WARMUP_SECS", 60)?,
            hold: secs("BENCH_SOAK_HOLD_SECS", 300)?,
            pause: secs("BENCH_SOAK_PAUSE_SECS", 30)?,
            recover: secs("BENCH_SOAK_RECOVER_SECS", 60)?,
            retention_secs: std::env::var("BENCH_SOAK_RETENTION_SECS")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|_| env_u64("BENCH_SOAK_RETENTION_SECS", 0))
                .transpose()?,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Before,
    SnapshotHeld,
    AfterSnapshot,
    WriterHeld,
    AfterWriter,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before any hold",
            Phase::SnapshotHeld => "REPEATABLE READ snapshot held",
            Phase::AfterSnapshot => "after the snapshot ended",
            Phase::WriterHeld => "writing transaction held open",
            Phase::AfterWriter => "after the writer committed",
        }
    }
}

/// One reading, every second.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: f64,
    pub phase: Phase,
    /// The relay's `outbox_relay_lag_seconds`.
    pub lag: f64,
    /// Committed by the producer minus delivered by the relay.
    pub backlog: i64,
    /// Mean claim time since the previous sample, ms (`None` without a claim in between).
    pub claim_ms: Option<f64>,
}

/// Per phase, what the README's soak table shows.
pub struct PhaseSummary {
    pub phase: Phase,
    pub lag_p99: f64,
    pub lag_max: f64,
    pub backlog_max: i64,
    pub claim_mean_ms: f64,
    pub claim_max_ms: f64,
    pub dead_tuples_end: i64,
    pub table_mib_end: f64,
}

pub struct SoakReport {
    pub rate: u64,
    pub phases: Vec<PhaseSummary>,
    /// Seconds after each hold ended until the backlog was back under one second of production.
    pub recovered_after: Vec<(Phase, Option<f64>)>,
    pub delivered: u64,
    pub produced: u64,
    /// The event the held writer inserted was delivered after its commit.
    pub held_event_delivered: bool,
    pub peak_rss_mib: f64,
    /// Seconds after the producer stopped until every event was delivered (`None`: not within 5 min).
    pub drained_after: Option<f64>,
}

pub async fn soak(s: &Settings, pg: &Pg, soak: &SoakSettings) -> Result<SoakReport> {
    let name = unique("outbox_bench_soak");
    let url = pg.create(&name, None).await?;
    let result = soak_in(s, &url, soak).await;
    pg.drop(&name).await;
    result
}

async fn soak_in(s: &Settings, url: &str, soak: &SoakSettings) -> Result<SoakReport> {
    let mut env = s.relay_env(&SinkTarget::Stdout);
    // The production default (delivered events deleted 5 minutes after delivery) unless
    // `BENCH_SOAK_RETENTION_SECS` says otherwise.
    env.retain(|(k, _)| k != "OUTBOX_RETENTION_SECS");
    if let Some(secs) = soak.retention_secs {
        env.push(("OUTBOX_RETENTION_SECS".into(), secs.to_string()));
    }
    let (mut relay, _) = RelayProc::spawn(&s.relay_bin, url, &env, RelayStdout::Null)?;
    relay.wait_ready(Duration::from_secs(30)).await?;

    let total =
        soak.warmup + soak.hold + soak.pause + soak.hold + soak.recover + Duration::from_secs(1);
    let inserted = Arc::new(AtomicU64::new(0));
    let producer = {
        let client = connect(url).await?;
        let inserted = inserted.clone();
        let rate = soak.rate;
        tokio::spawn(async move { produce_in_ticks(&client, rate, total, 0, &inserted).await })
    };
    let observer = connect(url).await?;
    let holder = connect(url).await?;
    let started = Instant::now();
    let boundaries = [
        (soak.warmup, Phase::SnapshotHeld),
        (soak.warmup + soak.hold, Phase::AfterSnapshot),
        (soak.warmup + soak.hold + soak.pause, Phase::WriterHeld),
        (soak.warmup + 2 * soak.hold + soak.pause, Phase::AfterWriter),
    ];
    let mut phase = Phase::Before;
    let mut samples: Vec<Sample> = Vec::new();
    let mut summaries: Vec<PhaseSummary> = Vec::new();
    let mut last_claim = (0.0, 0.0);
    let mut held_event: Option<i64> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut phase_started = 0.0;
    let end = total - Duration::from_secs(1);
    while started.elapsed() < end {
        tick.tick().await;
        let at = started.elapsed().as_secs_f64();
        if let Some(&(_, next)) = boundaries
            .iter()
            .rev()
            .find(|(t, _)| started.elapsed() >= *t)
            .filter(|(_, p)| *p != phase)
        {
            summaries.push(summarize(phase, &samples, phase_started, &observer).await?);
            phase_started = at;
            match next {
                Phase::SnapshotHeld => {
                    holder
                        .batch_execute(
                            "BEGIN ISOLATION LEVEL REPEATABLE READ; \
                             SELECT count(*) FROM outbox.schema_migrations",
                        )
                        .await?;
                }
                Phase::AfterSnapshot | Phase::AfterWriter => holder.batch_execute("COMMIT").await?,
                Phase::WriterHeld => {
                    holder.batch_execute("BEGIN").await?;
                    let row = holder
                        .query_one(
                            "INSERT INTO outbox.events (topic, key, payload) \
                             VALUES ('bench', 'held-writer', '\\x00') RETURNING id",
                            &[],
                        )
                        .await?;
                    held_event = Some(row.try_get(0)?);
                }
                Phase::Before => {}
            }
            eprintln!("bench: soak: {:>4.0} s: {}", at, next.name());
            phase = next;
        }
        let body = relay.metrics().await.unwrap_or_default();
        let lag = metric_sum(&body, "outbox_relay_lag_seconds", "").unwrap_or(f64::NAN);
        let delivered = metric_sum(&body, "outbox_relay_delivered_total", "").unwrap_or(0.0);
        let sum = metric_sum(
            &body,
            "outbox_relay_db_query_duration_seconds_sum",
            "query=\"claim\"",
        )
        .unwrap_or(0.0);
        let count = metric_sum(
            &body,
            "outbox_relay_db_query_duration_seconds_count",
            "query=\"claim\"",
        )
        .unwrap_or(0.0);
        let claim_ms =
            (count > last_claim.1).then(|| (sum - last_claim.0) / (count - last_claim.1) * 1000.0);
        last_claim = (sum, count);
        let backlog = inserted.load(Ordering::Relaxed) as i64 - delivered as i64;
        samples.push(Sample {
            at,
            phase,
            lag,
            backlog,
            claim_ms,
        });
        if samples.len().is_multiple_of(10) {
            let (dead, mib) = table_state(&observer).await?;
            eprintln!(
                "bench: soak: {at:>4.0} s  lag {lag:>6.2} s  backlog {backlog:>7}  claim {}  dead tuples {dead:>8}  table {mib:>6.1} MiB",
                claim_ms.map_or("   -    ".into(), |c| format!("{c:>6.2} ms")),
            );
        }
    }
    summaries.push(summarize(phase, &samples, phase_started, &observer).await?);
    let produced = producer.await??;
    // Everything committed must arrive, the held writer's event included.
    let expected = produced + u64::from(held_event.is_some());
    let waited = relay
        .wait_delivered(expected, Duration::from_secs(300))
        .await;
    let delivered = relay.delivered().await.unwrap_or(0);
    // Retention deletes only delivered events: a missing row was delivered.
    let held_event_delivered = match held_event {
        Some(id) => observer
            .query_one(
                "SELECT coalesce((SELECT delivered_at IS NOT NULL FROM outbox.events \
                 WHERE id = $1), true)",
                &[&id],
            )
            .await?
            .try_get(0)?,
        None => false,
    };
    let peak_rss_mib = relay.peak_rss_mib();
    relay.stop().await?;
    // A relay that fell behind is a result, not an error: the rows above show it.
    let drained_after = match waited {
        Ok(_) => Some(started.elapsed().as_secs_f64() - end.as_secs_f64()),
        Err(e) => {
            eprintln!("bench: soak: not drained: {e:#}");
            None
        }
    };
    let recovered_after = [
        (Phase::AfterSnapshot, boundaries[1].0),
        (Phase::AfterWriter, boundaries[3].0),
    ]
    .into_iter()
    .map(|(phase, from)| {
        let from = from.as_secs_f64();
        let recovered = samples
            .iter()
            .filter(|x| x.at >= from && x.phase == phase)
            .find(|x| x.backlog <= soak.rate as i64)
            .map(|x| x.at - from);
        (phase, recovered)
    })
    .collect();
    Ok(SoakReport {
        rate: soak.rate,
        phases: summaries,
        recovered_after,
        delivered,
        produced,
        held_event_delivered,
        peak_rss_mib,
        drained_after,
    })
}

/// Dead tuples of `outbox.events` (as the statistics collector last saw them) and its size.
async fn table_state(client: &tokio_postgres::Client) -> Result<(i64, f64)> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables \
               WHERE relid = 'outbox.events'::regclass), 0), \
               pg_total_relation_size('outbox.events')::float8 / 1048576",
            &[],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

async fn summarize(
    phase: Phase,
    samples: &[Sample],
    from: f64,
    observer: &tokio_postgres::Client,
) -> Result<PhaseSummary> {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.phase == phase && x.at >= from)
        .collect();
    let mut lags: Vec<f64> = mine
        .iter()
        .map(|x| x.lag)
        .filter(|l| l.is_finite())
        .collect();
    lags.sort_by(f64::total_cmp);
    let p99 = lags
        .get(((lags.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN);
    let claims: Vec<f64> = mine.iter().filter_map(|x| x.claim_ms).collect();
    let (dead, mib) = table_state(observer).await?;
    Ok(PhaseSummary {
        phase,
        lag_p99: p99,
        lag_max: lags.last().copied().unwrap_or(f64::NAN),
        backlog_max: mine.iter().map(|x| x.backlog).max().unwrap_or(0),
        claim_mean_ms: claims.iter().sum::<f64>() / claims.len().max(1) as f64,
        claim_max_ms: claims.iter().copied().fold(0.0, f64::max),
        dead_tuples_end: dead,
        table_mib_end: mib,
    })
}
