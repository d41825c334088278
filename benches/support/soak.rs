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
use tokio_postgres::Client;

use super::settings::{Settings, env_u64};
use super::table::{Table, progress, thousands};
use super::workload::{fresh_database, produce_in_ticks};
use crate::harness::{Postgres, Relay, RelayStdout, metric_sum, try_connect};

// Target of the production-database issue: lag p99 under 1 s while another session holds a
// snapshot or a transaction open.
const SOAK_LAG_P99_TARGET_SECS: f64 = 1.0;

struct SoakSettings {
    pub rate: u64,
    pub warmup: Duration,
    pub hold: Duration,
    pub pause: Duration,
    pub recover: Duration,
    /// `OUTBOX_RETENTION_SECS` for the relay; `None`: the relay's default.
    pub retention_secs: Option<u64>,
}

impl SoakSettings {
    fn from_env() -> Result<SoakSettings> {
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
enum Phase {
    Before,
    SnapshotHeld,
    AfterSnapshot,
    WriterHeld,
    AfterWriter,
}

impl Phase {
    fn name(self) -> &'static str {
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
struct Sample {
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
struct PhaseSummary {
    pub phase: Phase,
    pub lag_p99: f64,
    pub lag_max: f64,
    pub backlog_max: i64,
    pub claim_mean_ms: f64,
    pub claim_max_ms: f64,
    pub dead_tuples_end: i64,
    pub table_mib_end: f64,
}

struct SoakReport {
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

async fn soak(s: &Settings, pg: &Postgres, soak: &SoakSettings) -> Result<SoakReport> {
    let (name, url) = fresh_database(pg, "soak").await?;
    let result = soak_in(s, &url, soak).await;
    pg.drop(&name).await;
    result
}

/// A soak under way: the relay, the sessions that watch and hold, what was seen so far.
struct Soak {
    relay: Relay,
    observer: Client,
    holder: Client,
    started: Instant,
    phase: Phase,
    phase_started: f64,
    samples: Vec<Sample>,
    summaries: Vec<PhaseSummary>,
    /// The claim histogram's sum and count at the previous sample.
    last_claim: (f64, f64),
    /// The event the held writer inserted.
    held_event: Option<i64>,
}

async fn soak_in(s: &Settings, url: &str, soak: &SoakSettings) -> Result<SoakReport> {
    let mut env = s.relay_env();
    env.push(("OUTBOX_SINK", "stdout".into()));
    // The production default (delivered events deleted 5 minutes after delivery) unless
    // `BENCH_SOAK_RETENTION_SECS` says otherwise.
    env.retain(|(k, _)| *k != "OUTBOX_RETENTION_SECS");
    if let Some(secs) = soak.retention_secs {
        env.push(("OUTBOX_RETENTION_SECS", secs.to_string()));
    }
    let (mut relay, _) = Relay::spawn(url, &env, RelayStdout::Null)?;
    relay.wait_leading(Duration::from_secs(30)).await?;

    let total =
        soak.warmup + soak.hold + soak.pause + soak.hold + soak.recover + Duration::from_secs(1);
    let inserted = Arc::new(AtomicU64::new(0));
    let producer = {
        let client = try_connect(url).await?;
        let inserted = inserted.clone();
        let rate = soak.rate;
        tokio::spawn(async move { produce_in_ticks(&client, rate, total, 0, &inserted).await })
    };
    let mut run = Soak {
        relay,
        observer: try_connect(url).await?,
        holder: try_connect(url).await?,
        started: Instant::now(),
        phase: Phase::Before,
        phase_started: 0.0,
        samples: Vec::new(),
        summaries: Vec::new(),
        last_claim: (0.0, 0.0),
        held_event: None,
    };
    let boundaries = boundaries(soak);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = total - Duration::from_secs(1);
    while run.started.elapsed() < end {
        tick.tick().await;
        if let Some(&(_, next)) = boundaries
            .iter()
            .rev()
            .find(|(t, _)| run.started.elapsed() >= *t)
            .filter(|(_, p)| *p != run.phase)
        {
            run.switch(next).await?;
        }
        run.sample(&inserted).await?;
    }
    run.summaries
        .push(summarize(run.phase, &run.samples, run.phase_started, &run.observer).await?);
    let produced = producer.await??;
    run.finish(soak, produced, end, &boundaries).await
}

/// When each phase after the first begins.
fn boundaries(soak: &SoakSettings) -> [(Duration, Phase); 4] {
    [
        (soak.warmup, Phase::SnapshotHeld),
        (soak.warmup + soak.hold, Phase::AfterSnapshot),
        (soak.warmup + soak.hold + soak.pause, Phase::WriterHeld),
        (soak.warmup + 2 * soak.hold + soak.pause, Phase::AfterWriter),
    ]
}

impl Soak {
    /// Ends the current phase and begins `next`: holds a snapshot, or a writing transaction, or
    /// ends the hold.
    async fn switch(&mut self, next: Phase) -> Result<()> {
        let at = self.started.elapsed().as_secs_f64();
        let summary = summarize(
            self.phase,
            &self.samples,
            self.phase_started,
            &self.observer,
        );
        self.summaries.push(summary.await?);
        self.phase_started = at;
        match next {
            Phase::SnapshotHeld => {
                self.holder
                    .batch_execute(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ; \
                         SELECT count(*) FROM outbox.schema_migrations",
                    )
                    .await?;
            }
            Phase::AfterSnapshot | Phase::AfterWriter => {
                self.holder.batch_execute("COMMIT").await?
            }
            Phase::WriterHeld => {
                self.holder.batch_execute("BEGIN").await?;
                let row = self
                    .holder
                    .query_one(
                        "INSERT INTO outbox.events (topic, key, payload) \
                         VALUES ('bench', 'held-writer', '\\x00') RETURNING id",
                        &[],
                    )
                    .await?;
                self.held_event = Some(row.try_get(0)?);
            }
            Phase::Before => {}
        }
        eprintln!("bench: soak: {:>4.0} s: {}", at, next.name());
        self.phase = next;
        Ok(())
    }

    /// One reading of the relay's lag, the backlog and the mean claim time; every 10 s a line.
    async fn sample(&mut self, inserted: &AtomicU64) -> Result<()> {
        let at = self.started.elapsed().as_secs_f64();
        let body = self.relay.metrics().await.unwrap_or_default();
        let lag = metric_sum(&body, "outbox_relay_lag_seconds", "").unwrap_or(f64::NAN);
        let delivered = metric_sum(&body, "outbox_relay_delivered_total", "").unwrap_or(0.0);
        let claim = |name: &str| metric_sum(&body, name, "query=\"claim\"").unwrap_or(0.0);
        let sum = claim("outbox_relay_db_query_duration_seconds_sum");
        let count = claim("outbox_relay_db_query_duration_seconds_count");
        let last = self.last_claim;
        let claim_ms = (count > last.1).then(|| (sum - last.0) / (count - last.1) * 1000.0);
        self.last_claim = (sum, count);
        let backlog = inserted.load(Ordering::Relaxed) as i64 - delivered as i64;
        self.samples.push(Sample {
            at,
            phase: self.phase,
            lag,
            backlog,
            claim_ms,
        });
        if self.samples.len().is_multiple_of(10) {
            let (dead, mib) = table_state(&self.observer).await?;
            eprintln!(
                "bench: soak: {at:>4.0} s  lag {lag:>6.2} s  backlog {backlog:>7}  claim {}  dead tuples {dead:>8}  table {mib:>6.1} MiB",
                claim_ms.map_or("   -    ".into(), |c| format!("{c:>6.2} ms")),
            );
        }
        Ok(())
    }

    /// Waits for everything committed to arrive, stops the relay, and reports.
    async fn finish(
        mut self,
        soak: &SoakSettings,
        produced: u64,
        end: Duration,
        boundaries: &[(Duration, Phase); 4],
    ) -> Result<SoakReport> {
        // Everything committed must arrive, the held writer's event included.
        let expected = produced + u64::from(self.held_event.is_some());
        let waited = self
            .relay
            .wait_delivered(expected, Duration::from_secs(300))
            .await;
        let delivered = self.relay.delivered().await.unwrap_or(0);
        let held_event_delivered = self.held_event_delivered().await?;
        let peak_rss_mib = self.relay.peak_rss_mib();
        self.relay.stop().await?;
        // A relay that fell behind is a result, not an error: the rows show it.
        let drained_after = match waited {
            Ok(_) => Some(self.started.elapsed().as_secs_f64() - end.as_secs_f64()),
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
        .map(|(phase, from)| (phase, recovered(&self.samples, phase, from, soak.rate)))
        .collect();
        Ok(SoakReport {
            rate: soak.rate,
            phases: self.summaries,
            recovered_after,
            delivered,
            produced,
            held_event_delivered,
            peak_rss_mib,
            drained_after,
        })
    }

    /// Whether the held writer's event was delivered: retention deletes only delivered events,
    /// so a missing row was delivered.
    async fn held_event_delivered(&self) -> Result<bool> {
        let Some(id) = self.held_event else {
            return Ok(false);
        };
        Ok(self
            .observer
            .query_one(
                "SELECT coalesce((SELECT delivered_at IS NOT NULL FROM outbox.events \
                 WHERE id = $1), true)",
                &[&id],
            )
            .await?
            .try_get(0)?)
    }
}

/// Seconds after `from` (a hold's end) until the backlog was back under one second of
/// production, within `phase`.
fn recovered(samples: &[Sample], phase: Phase, from: Duration, rate: u64) -> Option<f64> {
    let from = from.as_secs_f64();
    samples
        .iter()
        .filter(|x| x.at >= from && x.phase == phase)
        .find(|x| x.backlog <= rate as i64)
        .map(|x| x.at - from)
}

/// The soak's figures: one row per phase and the recovery after each hold.
pub async fn soak_rows(s: &Settings, pg: &Postgres, table: &mut Table) {
    let settings = match SoakSettings::from_env() {
        Ok(settings) => settings,
        Err(e) => return table.error("soak", &e),
    };
    progress(&format!(
        "soak: stdout at {} ev/s, holds of {} s",
        settings.rate,
        settings.hold.as_secs()
    ));
    let report = match soak(s, pg, &settings).await {
        Ok(report) => report,
        Err(e) => return table.error("soak", &e),
    };
    let at = format!("soak at {}/s", thousands(report.rate as f64));
    for p in &report.phases {
        let held = matches!(p.phase, Phase::SnapshotHeld | Phase::WriterHeld);
        table.target(
            &format!("{at}, {}: lag p99 / max", p.phase.name()),
            format!("{:.2} / {:.2} s", p.lag_p99, p.lag_max),
            "p99 < 1 s",
            p.lag_p99 < SOAK_LAG_P99_TARGET_SECS,
        );
        table.info(
            &format!("{at}, {}: claim mean / max, backlog max", p.phase.name()),
            format!(
                "{:.2} / {:.2} ms, {} events",
                p.claim_mean_ms,
                p.claim_max_ms,
                thousands(p.backlog_max as f64)
            ),
        );
        table.info(
            &format!(
                "{at}, {}: dead tuples, table size at the end{}",
                p.phase.name(),
                if held { " (not removable)" } else { "" }
            ),
            format!(
                "{}, {:.1} MiB",
                thousands(p.dead_tuples_end as f64),
                p.table_mib_end
            ),
        );
    }
    for (phase, after) in &report.recovered_after {
        table.info(
            &format!("{at}: backlog under 1 s of production, {}", phase.name()),
            after.map_or("not within the phase".into(), |t| format!("after {t:.0} s")),
        );
    }
    table.target(
        &format!("{at}: delivered / produced (+ the held writer's event)"),
        format!(
            "{} / {} (+1: {})",
            thousands(report.delivered as f64),
            thousands(report.produced as f64),
            if report.held_event_delivered {
                "delivered"
            } else {
                "MISSING"
            }
        ),
        "all",
        report.held_event_delivered && report.delivered > report.produced,
    );
    table.info(
        &format!("{at}: everything delivered after the producer stopped"),
        report
            .drained_after
            .map_or("NOT within 5 min".into(), |t| format!("after {t:.0} s")),
    );
    table.info(
        &format!("{at}: relay peak RSS"),
        format!("{:.1} MiB", report.peak_rss_mib),
    );
}

/// Dead tuples of `outbox.events` (as the statistics collector last saw them) and its size.
async fn table_state(client: &Client) -> Result<(i64, f64)> {
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
    observer: &Client,
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
