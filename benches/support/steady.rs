//! The steady state (`BENCH_ONLY=steady`): a producer at rising rates (fractions of the drain's
//! rate, or `BENCH_STEADY_RATES`) with the NOTIFY trigger off; the highest rate at which the
//! backlog stays flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::machine::slope;
use super::settings::{Settings, SinkKind};
use super::table::{Table, progress, rate, ratio, thousands};
use super::target::Target;
use super::workload::{fresh_database, produce_in_ticks, set_notify};
use crate::harness::{Postgres, Relay, RelayStdout, try_connect};

struct Steady {
    tried: String,
    best: Option<f64>,
    note: Option<String>,
}

/// `sink`'s steady-state rows, against `drain_rate`.
pub async fn steady_rows(
    s: &Settings,
    pg: &Postgres,
    sink: SinkKind,
    drain_rate: Option<f64>,
    table: &mut Table,
) {
    let name = sink.name();
    progress(&format!("{name}: steady state"));
    match steady(s, pg, sink, drain_rate).await {
        Ok(st) => {
            let best = st.best.map_or("none of the rates".into(), rate);
            table.row(
                &format!("{name}: steady max, NOTIFY off (tried {})", st.tried),
                best,
                "drain".into(),
                st.best.map_or(String::new(), |b| ratio(b, drain_rate)),
                "",
                None,
            );
            if let Some(note) = st.note {
                table.info(&format!("{name}: steady at that rate"), note);
            }
        }
        Err(e) => table.error(&format!("{name}: steady state"), &e),
    }
}

async fn steady(
    s: &Settings,
    pg: &Postgres,
    sink: SinkKind,
    drain_rate: Option<f64>,
) -> Result<Steady> {
    let (db, url) = fresh_database(pg, "steady").await?;
    let result = match Target::open(s, sink, false).await {
        Ok(target) => {
            let r = steady_with(s, &url, &target, drain_rate).await;
            target.close().await;
            r
        }
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    result
}

/// One rate's measurement.
struct Window {
    produced: f64,
    delivered: f64,
    growth: f64,
    /// The relay's CPU seconds over `span` seconds.
    cpu: f64,
    span: f64,
}

async fn steady_with(
    s: &Settings,
    url: &str,
    target: &Target,
    drain_rate: Option<f64>,
) -> Result<Steady> {
    let client = try_connect(url).await?;
    set_notify(&client, false).await?;
    let rates: Vec<u64> = match (&s.steady_rates, drain_rate) {
        (Some(rates), _) => rates.clone(),
        (None, Some(d)) => [0.3, 0.5, 0.7, 0.85, 1.0]
            .iter()
            .map(|f| ((d * f / 100.0).round() as u64).max(1) * 100)
            .collect(),
        (None, None) => vec![1_000, 2_000, 5_000, 10_000, 20_000],
    };
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    let (mut relay, _) = Relay::spawn(url, &env, RelayStdout::Null)?;
    relay.wait_leading(Duration::from_secs(30)).await?;
    let inserted = Arc::new(AtomicU64::new(0));
    let mut steady = Steady {
        tried: String::new(),
        best: None,
        note: None,
    };
    let mut tried = Vec::new();
    for &r in &rates {
        tried.push(thousands(r as f64));
        drained(s, &relay, &inserted).await?;
        let w = window(s, url, &relay, &inserted, r).await?;
        let sustained = w.produced >= 0.95 * r as f64 && w.growth <= 0.05 * r as f64;
        progress(&format!(
            "steady {r}/s: produced {:.0}/s, delivered {:.0}/s, backlog slope {:.0}/s, \
             relay {:.0}% CPU -> {}",
            w.produced,
            w.delivered,
            w.growth,
            100.0 * w.cpu / w.span,
            if sustained { "flat" } else { "growing" }
        ));
        if w.produced < 0.95 * r as f64 {
            steady.note = Some(format!(
                "the producer reached only {} at {} (producer-bound)",
                rate(w.produced),
                rate(r as f64)
            ));
            break;
        }
        if !sustained {
            break;
        }
        steady.best = Some(r as f64);
        steady.note = Some(format!(
            "relay {:.0}% of a core, {:.1} CPU-s per 1M events",
            100.0 * w.cpu / w.span,
            w.cpu / (w.delivered * w.span / 1e6).max(1e-9)
        ));
    }
    relay.stop().await?;
    steady.tried = tried.join(", ");
    Ok(steady)
}

/// Waits until the backlog of the previous rate is gone: each rate starts from an empty one.
async fn drained(s: &Settings, relay: &Relay, inserted: &AtomicU64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = relay.delivered().await.unwrap_or(0);
        if inserted.load(Ordering::Relaxed).saturating_sub(delivered) <= s.batch_size {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the backlog of the previous rate did not drain within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces at `r` events/s for the warm-up and the window; samples the backlog every 200 ms
/// of the window.
async fn window(
    s: &Settings,
    url: &str,
    relay: &Relay,
    inserted: &Arc<AtomicU64>,
    r: u64,
) -> Result<Window> {
    let warmup = Duration::from_secs(s.steady_warmup_secs);
    let window = Duration::from_secs(s.steady_secs);
    let producer_client = try_connect(url).await?;
    let counter = inserted.clone();
    let first_seq = inserted.load(Ordering::Relaxed) + 1;
    let producer = tokio::spawn(async move {
        let duration = warmup + window + Duration::from_millis(300);
        produce_in_ticks(&producer_client, r, duration, first_seq, &counter).await
    });
    tokio::time::sleep(warmup).await;
    let start = Instant::now();
    let cpu_start = relay.cpu_secs();
    let mut points = Vec::new();
    let mut first = None;
    let mut last = (0, 0);
    while start.elapsed() < window {
        let delivered = relay.delivered().await.unwrap_or(0);
        let ins = inserted.load(Ordering::Relaxed);
        let t = start.elapsed().as_secs_f64();
        first.get_or_insert((ins, delivered, t));
        last = (ins, delivered);
        points.push((t, ins as f64 - delivered as f64));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = relay.cpu_secs() - cpu_start;
    let span = start.elapsed().as_secs_f64();
    producer.await.context("producer task")??;
    let (ins0, del0, t0) = first.unwrap_or((0, 0, 0.0));
    let measured = (points.last().map_or(span, |p| p.0) - t0).max(0.001);
    Ok(Window {
        produced: (last.0 - ins0) as f64 / measured,
        delivered: (last.1 - del0) as f64 / measured,
        growth: slope(&points),
        cpu,
        span,
    })
}
