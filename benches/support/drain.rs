//! The drain (`BENCH_ONLY=drain`): a copy of the preloaded backlog drained by one relay into a
//! sink, as configured by default (delivered events kept) and with delivered events deleted, in
//! `BENCH_DRAIN_ROUNDS` rounds. Each round first measures the sink's outbox reference
//! (PostgreSQL's plain claim+delete and the raw publisher at once) and then both drains, kept
//! first in odd rounds and deleted first in even ones, so that a drift of the machine hits both.
//! Every drain is timed by what arrived at a consumer (BullMQ's by the relay's count, checked
//! against the queue); its first and last tenth by the relay's own count, which a consumer's
//! fetches in bursts (Kafka's) would distort. Ratios are the mean of the rounds' ratios to their
//! own reference, with the spread.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::limits::{Limits, outbox_reference};
use super::machine::CpuSnapshot;
use super::settings::{Settings, SinkKind};
use super::table::{Table, events_label, mean, progress, rate, ratio, thousands};
use super::target::Target;
use super::workload::backlog_copy;
use crate::harness::{Inbox, Postgres, Relay, metric_sum};

// Targets of issue 7 (against the raw publisher alone) and of issue 33 (against the outbox
// reference of the same round, and flat from the first tenth to the last).
const DRAIN_RATIO_TARGET: f64 = 0.7;
const KEPT_REFERENCE_TARGET: f64 = 0.85;
const DELETED_REFERENCE_TARGET: f64 = 0.95;
const FLAT_TARGET: f64 = 0.9;
const CPU_PER_MILLION_TARGET: f64 = 5.0;
const RSS_TARGET_MIB: f64 = 50.0;
/// The relay's setting that deletes each event as its delivery is recorded.
const DELETE_ON_DELIVERY: &[(&str, &str)] = &[("OUTBOX_RETENTION_SECS", "0")];
/// How often the drain looks at the consumer's count and the relay's.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

pub struct Drain {
    pub rate: f64,
    /// Rates over the first tenth (1-10% of the events) and the last (90-100%).
    first_tenth: f64,
    last_tenth: f64,
    split: String,
    cores: String,
    pub cpu_per_million: f64,
    rss_mib: f64,
    pub problem: Option<String>,
    /// `outbox_relay_trace_spans_dropped_total` at the end; `None` with traces off.
    pub spans_dropped: Option<f64>,
}

impl Drain {
    /// The last tenth's rate against the first's: 1.0 is flat.
    fn flatness(&self) -> f64 {
        self.last_tenth / self.first_tenth
    }
}

/// How a drain records deliveries.
#[derive(Clone, Copy, PartialEq)]
enum Recording {
    Kept,
    Deleted,
}

impl Recording {
    fn label(self) -> &'static str {
        match self {
            Recording::Kept => "",
            Recording::Deleted => ", deleted on delivery",
        }
    }

    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Recording::Kept => &[],
            Recording::Deleted => DELETE_ON_DELIVERY,
        }
    }

    fn reference_target(self) -> f64 {
        match self {
            Recording::Kept => KEPT_REFERENCE_TARGET,
            Recording::Deleted => DELETED_REFERENCE_TARGET,
        }
    }

    /// Odd rounds drain kept first, even rounds deleted first.
    fn in_round(round: u64) -> [Recording; 2] {
        match round % 2 {
            1 => [Recording::Kept, Recording::Deleted],
            _ => [Recording::Deleted, Recording::Kept],
        }
    }
}

/// One drain and the outbox reference of its round, if that was measured.
struct RoundDrain {
    round: u64,
    drain: Drain,
    reference: Option<f64>,
}

impl RoundDrain {
    fn of_reference(&self) -> Option<f64> {
        self.reference.map(|r| self.drain.rate / r)
    }
}

/// `sink`'s drain rows: every round's drains and their summaries; the kept drains' mean rate,
/// the steady state's baseline.
pub async fn drain_rows(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    limits: &Limits,
    table: &mut Table,
) -> Option<f64> {
    let (name, nl) = (sink.name(), events_label(s.events));
    let (mut kept, mut deleted) = (Vec::new(), Vec::new());
    for round in 1..=s.drain_rounds {
        progress(&format!("{name}: outbox reference, round {round}"));
        let reference = match outbox_reference(s, pg, template, sink).await {
            Ok(r) => Some(r),
            Err(e) => {
                table.error(&format!("{name}: outbox reference, round {round}"), &e);
                None
            }
        };
        if let Some(r) = reference {
            table.info(
                &format!(
                    "{name}: round {round} outbox reference ({})",
                    sink.reference_name()
                ),
                rate(r),
            );
        }
        for recording in Recording::in_round(round) {
            let label = recording.label();
            progress(&format!("{name}: drain {nl}{label}, round {round}"));
            match drain_configured(s, pg, template, sink, recording.settings()).await {
                Ok(drain) => {
                    let run = RoundDrain {
                        round,
                        drain,
                        reference,
                    };
                    run_rows(sink, label, &run, table);
                    match recording {
                        Recording::Kept => kept.push(run),
                        Recording::Deleted => deleted.push(run),
                    }
                }
                Err(e) => table.error(&format!("{name}: drain{label}, round {round}"), &e),
            }
        }
    }
    summary_rows(s, sink, Recording::Kept, &kept, limits, table);
    summary_rows(s, sink, Recording::Deleted, &deleted, limits, table);
    (!kept.is_empty()).then(|| mean(kept.iter().map(|r| r.drain.rate)))
}

/// One drain's own rows: its rate against its round's reference, where the time went, CPU.
fn run_rows(sink: SinkKind, recording: &str, run: &RoundDrain, table: &mut Table) {
    let (name, d) = (sink.name(), &run.drain);
    let measure = format!("{name}: round {} drain{recording}", run.round);
    table.row(
        &measure,
        format!(
            "{}; first / last tenth {} / {}",
            rate(d.rate),
            thousands(d.first_tenth),
            thousands(d.last_tenth)
        ),
        "outbox reference".into(),
        ratio(d.rate, run.reference),
        "",
        None,
    );
    table.info(
        &format!("{measure}: time in claim / publish / mark"),
        d.split.clone(),
    );
    table.info(
        &format!("{measure}: CPU cores relay / PG / broker / bench / machine"),
        d.cores.clone(),
    );
    if let Some(problem) = &d.problem {
        table.info(&format!("{measure}: check"), problem.clone());
    }
}

/// The summary of one recording's drains over the rounds: means with their spread.
fn summary_rows(
    s: &Settings,
    sink: SinkKind,
    recording: Recording,
    runs: &[RoundDrain],
    limits: &Limits,
    table: &mut Table,
) {
    if runs.is_empty() {
        return;
    }
    let (name, nl, label) = (sink.name(), events_label(s.events), recording.label());
    let rates: Vec<f64> = runs.iter().map(|r| r.drain.rate).collect();
    let rounds = runs.len();
    let mean_rate = mean(rates.iter().copied());
    let of_reference: Vec<f64> = runs.iter().filter_map(RoundDrain::of_reference).collect();
    let references: Vec<f64> = runs.iter().filter_map(|r| r.reference).collect();
    let target = recording.reference_target();
    let (ratio_text, met) = match of_reference.len() == rounds {
        true => {
            let m = mean(of_reference.iter().copied());
            (
                format!("{m:.2} {}", spread(&of_reference, |x| format!("{x:.2}"))),
                Some(m >= target),
            )
        }
        false => (String::new(), None),
    };
    table.row(
        &format!("{name}: drain {nl} backlog{label}, mean of {rounds} rounds"),
        format!("{} {}", rate(mean_rate), spread(&rates, rate)),
        match references.is_empty() {
            true => String::new(),
            false => format!(
                "outbox reference {}",
                rate(mean(references.iter().copied()))
            ),
        },
        ratio_text,
        &format!(">= {target:.2} of each round's outbox reference"),
        met,
    );
    let raw = limits.of(sink);
    table.row(
        &format!(
            "{name}: drain{label} / {} alone (limits scenario)",
            sink.limit_name()
        ),
        rate(mean_rate),
        sink.limit_name().into(),
        ratio(mean_rate, raw),
        &format!(">= {DRAIN_RATIO_TARGET:.2}"),
        raw.map(|l| mean_rate >= DRAIN_RATIO_TARGET * l),
    );
    let flat: Vec<f64> = runs.iter().map(|r| r.drain.flatness()).collect();
    let least_flat = flat.iter().copied().fold(f64::INFINITY, f64::min);
    table.row(
        &format!("{name}: drain{label} last tenth / first tenth"),
        format!(
            "{:.2} {}",
            mean(flat.iter().copied()),
            spread(&flat, |x| format!("{x:.2}"))
        ),
        String::new(),
        String::new(),
        &format!(">= {FLAT_TARGET:.2} in every round"),
        Some(least_flat >= FLAT_TARGET),
    );
    let cpu = mean(runs.iter().map(|r| r.drain.cpu_per_million));
    let client = limits.client_cpu(sink);
    table.row(
        &format!("{name}: relay CPU per 1M events (drain{label}, mean)"),
        format!("{cpu:.2} CPU-s"),
        client.map_or_else(String::new, |c| format!("raw publisher {c:.2} CPU-s")),
        ratio(cpu, client),
        &format!("<= {CPU_PER_MILLION_TARGET} CPU-s"),
        Some(cpu <= CPU_PER_MILLION_TARGET),
    );
    let rss = runs.iter().map(|r| r.drain.rss_mib).fold(0.0, f64::max);
    table.target(
        &format!("{name}: relay peak RSS, {nl} backlog{label} (highest)"),
        format!("{rss:.1} MiB"),
        &format!("<= {RSS_TARGET_MIB} MiB"),
        rss <= RSS_TARGET_MIB,
    );
}

/// "(lowest-highest)" of `values`.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("({}-{})", show(low), show(high))
}

/// A drain with extra relay settings (a message format, a retention, traces).
pub async fn drain_configured(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    settings: &[(&'static str, &str)],
) -> Result<Drain> {
    let (db, url) = backlog_copy(pg, template, "drain").await?;
    // BullMQ's worker runs jobs far slower than the relay adds them: its drain is counted by
    // the relay and checked against the queue afterwards.
    let consume = sink != SinkKind::Bullmq;
    let result = match Target::open(s, sink, consume).await {
        Ok(target) => {
            let drain = drain_with(s, &url, &target, settings).await;
            target.close().await;
            drain
        }
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    result
}

/// What a drain saw: the arrivals and the relay's deliveries over time, the relay's metrics at
/// the end, CPU.
struct Run {
    progress: Progress,
    body: String,
    cpu: f64,
    rss_mib: f64,
    before: CpuSnapshot,
    after: CpuSnapshot,
}

async fn drain_with(
    s: &Settings,
    url: &str,
    target: &Target,
    settings: &[(&'static str, &str)],
) -> Result<Drain> {
    let n = s.events;
    let before = CpuSnapshot::take();
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
    let (mut relay, arrived) = target.spawn_relay(url, &env)?;
    let timeout = Duration::from_secs(120 + n / 1000);
    let progress = match &arrived {
        Some(inbox) => arrivals(&mut relay, inbox, n, timeout).await?,
        None => {
            let delivered = relay.wait_delivered(n, timeout).await?;
            Progress {
                arrived: delivered.clone(),
                delivered,
            }
        }
    };
    let after = CpuSnapshot::take();
    let run = Run {
        cpu: relay.cpu_secs(),
        rss_mib: relay.peak_rss_mib(),
        body: relay.metrics().await.unwrap_or_default(),
        progress,
        before,
        after,
    };
    relay.stop().await?;
    let problem = check(target, arrived.as_ref(), n).await;
    Ok(figures(n, &run, problem))
}

/// Counts over time, in seconds since the relay started.
struct Progress {
    /// What the consumer got.
    arrived: Vec<(f64, u64)>,
    /// What the relay counted delivered.
    delivered: Vec<(f64, u64)>,
}

/// The consumer's count and the relay's over time, until `n` arrived.
async fn arrivals(relay: &mut Relay, inbox: &Inbox, n: u64, timeout: Duration) -> Result<Progress> {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress {
        arrived: Vec::new(),
        delivered: Vec::new(),
    };
    loop {
        let count = inbox.count();
        let at = relay.started.elapsed().as_secs_f64();
        progress.arrived.push((at, count));
        if count >= n {
            // The relay counts an event once its delivery is recorded, after it arrived.
            let left = deadline.saturating_duration_since(Instant::now());
            progress
                .delivered
                .extend(relay.wait_delivered(n, left).await?);
            return Ok(progress);
        }
        relay.check_alive()?;
        if let Some(delivered) = relay.delivered().await {
            progress.delivered.push((at, delivered));
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the consumer got {count} of {n} messages within {timeout:?}");
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// What is wrong with what arrived, if anything: the service's count, the consumer's.
async fn check(target: &Target, arrived: Option<&Inbox>, n: u64) -> Option<String> {
    if let Some(problem) = target.check_delivered(n).await {
        return Some(problem);
    }
    let count = arrived?.count();
    (count != n).then(|| format!("the consumer got {count} messages for {n} events"))
}

/// The drain's figures from what it saw.
fn figures(n: u64, run: &Run, problem: Option<String>) -> Drain {
    let elapsed = run.progress.arrived.last().map_or(f64::NAN, |s| s.0);
    let delivered = &run.progress.delivered;
    let crossing = |fraction: f64| {
        let goal = (n as f64 * fraction).ceil() as u64;
        delivered.iter().find(|s| s.1 >= goal).map(|s| s.0)
    };
    let segment = |from: f64, to: f64| match (crossing(from), crossing(to)) {
        (Some(a), Some(b)) if b > a => n as f64 * (to - from) / (b - a),
        _ => f64::NAN,
    };
    let used = run.after.since(&run.before);
    let cores = format!(
        "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} of {}",
        run.cpu / used.wall,
        used.postgres / used.wall,
        used.broker / used.wall,
        used.bench / used.wall,
        used.machine_busy / used.wall,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    Drain {
        rate: n as f64 / elapsed,
        first_tenth: segment(0.01, 0.10),
        last_tenth: segment(0.90, 1.0),
        split: time_split(&run.body, elapsed),
        cores,
        cpu_per_million: run.cpu / (n as f64 / 1e6),
        rss_mib: run.rss_mib,
        problem,
        spans_dropped: metric_sum(&run.body, "outbox_relay_trace_spans_dropped_total", ""),
    }
}

/// Time in claim / publish / mark as shares of `elapsed`, and per batch, from the relay's
/// histograms in `body`.
fn time_split(body: &str, elapsed: f64) -> String {
    let sum = |name: &str, label: &str| metric_sum(body, name, label).unwrap_or(0.0);
    // The full claim and the steady one (after a claim that took everything it saw).
    let claim = sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"claim\"",
    ) + sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"claim_steady\"",
    );
    let mark = sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"mark\"",
    );
    let publish = sum("outbox_relay_publish_duration_seconds_sum", "");
    let batches = sum("outbox_relay_publish_duration_seconds_count", "");
    let pct = |x: f64| 100.0 * x / elapsed;
    format!(
        "{:.0}% / {:.0}% / {:.0}% of {:.1} s; {} batches, {:.2} / {:.2} / {:.2} ms each",
        pct(claim),
        pct(publish),
        pct(mark),
        elapsed,
        thousands(batches),
        1000.0 * claim / batches,
        1000.0 * publish / batches,
        1000.0 * mark / batches,
    )
}
