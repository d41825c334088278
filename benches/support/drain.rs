//! The drain (`BENCH_ONLY=drain`): a copy of the preloaded backlog drained by one relay into a
//! sink, as configured by default and with delivered events deleted; its rate against the
//! sink's limits, where the time goes, who used the CPU, the relay's peak RSS.

use std::time::Duration;

use anyhow::Result;

use super::limits::Limits;
use super::machine::CpuSnapshot;
use super::settings::{Settings, SinkKind};
use super::table::{Table, events_label, progress, rate, ratio, thousands};
use super::target::Target;
use super::workload::backlog_copy;
use crate::harness::{Postgres, Relay, RelayStdout, metric_sum};

// Targets of issue 7.
const DRAIN_RATIO_TARGET: f64 = 0.7;
const CPU_PER_MILLION_TARGET: f64 = 5.0;
const RSS_TARGET_MIB: f64 = 50.0;
/// The relay's setting that deletes each event as its delivery is recorded.
const DELETE_ON_DELIVERY: &[(&str, &str)] = &[("OUTBOX_RETENTION_SECS", "0")];

pub struct Drain {
    pub rate: f64,
    early: f64,
    late: f64,
    split: String,
    cores: String,
    pub cpu_per_million: f64,
    rss_mib: f64,
    pub problem: Option<String>,
    /// `outbox_relay_trace_spans_dropped_total` at the end; `None` with traces off.
    pub spans_dropped: Option<f64>,
}

/// `sink`'s drain rows, as configured by default (delivered events kept), then deleted on
/// delivery; the default drain's rate, the steady state's baseline.
pub async fn drain_rows(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    limits: &Limits,
    table: &mut Table,
) -> Option<f64> {
    let mut drain_rate = None;
    for (recorded, settings) in [("", &[][..]), (", deleted on delivery", DELETE_ON_DELIVERY)] {
        progress(&format!(
            "{}: drain {} events{recorded}",
            sink.name(),
            s.events
        ));
        match drain_configured(s, pg, template, sink, settings).await {
            Ok(d) => {
                // The steady state runs as configured by default: its baseline is that drain.
                if settings.is_empty() {
                    drain_rate = Some(d.rate);
                }
                drain_table(s, sink, recorded, &d, limits, table);
            }
            Err(e) => table.error(&format!("{}: drain{recorded}", sink.name()), &e),
        }
    }
    drain_rate
}

/// The rows of one drain of `sink` (`recorded`: how delivered events were recorded).
fn drain_table(
    s: &Settings,
    sink: SinkKind,
    recorded: &str,
    d: &Drain,
    limits: &Limits,
    table: &mut Table,
) {
    let (name, nl) = (sink.name(), events_label(s.events));
    let limit = limits.of(sink);
    table.row(
        &format!("{name}: drain {nl} backlog{recorded}"),
        rate(d.rate),
        sink.limit_name().into(),
        ratio(d.rate, limit),
        &format!(">= {DRAIN_RATIO_TARGET:.2} of limit"),
        limit.map(|l| d.rate >= DRAIN_RATIO_TARGET * l),
    );
    if let Some(outbox) = limits.outbox(sink) {
        table.row(
            &format!("{name}: drain{recorded} / PG claim+delete and {name} raw at once"),
            rate(d.rate),
            "outbox limit".into(),
            ratio(d.rate, Some(outbox)),
            "",
            None,
        );
    }
    table.info(
        &format!("{name}: drain{recorded} rate early (5-15%) / late (85-95%)"),
        format!("{} / {}", rate(d.early), rate(d.late)),
    );
    table.info(
        &format!("{name}: drain{recorded} time in claim / publish / mark"),
        d.split.clone(),
    );
    table.info(
        &format!("{name}: drain{recorded} CPU cores: relay / PG / broker / bench / machine"),
        d.cores.clone(),
    );
    let client = limits.client_cpu(sink);
    table.row(
        &format!("{name}: relay CPU per 1M events (drain{recorded})"),
        format!("{:.2} CPU-s", d.cpu_per_million),
        client.map_or_else(String::new, |c| format!("raw publisher {c:.2} CPU-s")),
        ratio(d.cpu_per_million, client),
        &format!("<= {CPU_PER_MILLION_TARGET} CPU-s"),
        Some(d.cpu_per_million <= CPU_PER_MILLION_TARGET),
    );
    table.target(
        &format!("{name}: relay peak RSS, {nl} backlog{recorded}"),
        format!("{:.1} MiB", d.rss_mib),
        &format!("<= {RSS_TARGET_MIB} MiB"),
        d.rss_mib <= RSS_TARGET_MIB,
    );
    if let Some(problem) = &d.problem {
        table.info(&format!("{name}: drain{recorded} check"), problem.clone());
    }
}

/// A drain with extra relay settings (a message format, a retention, traces).
pub async fn drain_configured(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    format: &[(&'static str, &str)],
) -> Result<Drain> {
    let (db, url) = backlog_copy(pg, template, "drain").await?;
    let result = match Target::open(s, sink, false).await {
        Ok(target) => {
            let drain = drain_with(s, &url, &target, format).await;
            target.close().await;
            drain
        }
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    result
}

/// What a drain saw: the delivered counter over time, the relay's metrics at the end, CPU.
struct Run {
    samples: Vec<(f64, u64)>,
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
    format: &[(&'static str, &str)],
) -> Result<Drain> {
    let n = s.events;
    let before = CpuSnapshot::take();
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    env.extend(format.iter().map(|(k, v)| (*k, v.to_string())));
    let (mut relay, _) = Relay::spawn(url, &env, RelayStdout::Null)?;
    let samples = relay
        .wait_delivered(n, Duration::from_secs(120 + n / 1000))
        .await?;
    let after = CpuSnapshot::take();
    let run = Run {
        cpu: relay.cpu_secs(),
        rss_mib: relay.peak_rss_mib(),
        body: relay.metrics().await.unwrap_or_default(),
        samples,
        before,
        after,
    };
    relay.stop().await?;
    let problem = check(target, n).await;
    Ok(figures(n, &run, problem))
}

/// What is wrong with what arrived, if anything: the service's count, the consumer's.
async fn check(target: &Target, n: u64) -> Option<String> {
    if let Some(problem) = target.check_delivered(n).await {
        return Some(problem);
    }
    let received = target.received.as_ref()?;
    if let Err(e) = received.try_wait_for(n, Duration::from_secs(60)).await {
        Some(format!("{e:#}"))
    } else if received.count() != n {
        Some(format!(
            "the consumer got {} messages for {n} events",
            received.count()
        ))
    } else {
        None
    }
}

/// The drain's figures from what it saw.
fn figures(n: u64, run: &Run, problem: Option<String>) -> Drain {
    let samples = &run.samples;
    let elapsed = samples.last().map_or(f64::NAN, |s| s.0);
    let crossing = |fraction: f64| {
        let goal = (n as f64 * fraction) as u64;
        samples.iter().find(|s| s.1 >= goal).map(|s| s.0)
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
        early: segment(0.05, 0.15),
        late: segment(0.85, 0.95),
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
    let claim = sum(
        "outbox_relay_db_query_duration_seconds_sum",
        "query=\"claim\"",
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
