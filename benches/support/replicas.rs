//! Scale-out (`BENCH_ONLY=replicas`): the same backlog drained by 1, 2 and 4 replicas in lanes
//! mode, per sink, in `BENCH_REPLICA_ROUNDS` rounds of 1, 2, 4 replicas (so that a drift of the
//! machine hits every count); each count's figures are the means of its rounds. For RabbitMQ,
//! the broker's own cost of scale-out next to it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::limits::raw_rabbit_publishers;
use super::machine::CpuSnapshot;
use super::settings::{Settings, SinkKind};
use super::table::{Table, against_first, events_label, in_run_order, mean, progress, rate};
use super::target::Target;
use super::workload::{Backlogs, backlog_copy};
use crate::harness::{Postgres, Relay, RelayStdout};

const REPLICA_COUNTS: [usize; 3] = [1, 2, 4];
// Target of the scale-out issue: on this 2-core machine, 4 replicas cost nothing.
const REPLICAS_RATIO_TARGET: f64 = 0.9;

struct ReplicasDrain {
    /// The whole drain, from starting the relays to the last event delivered.
    rate: f64,
    /// Between 10% and 90% delivered.
    steady_rate: f64,
    cpu_per_million: f64,
    machine_cores: f64,
    problem: Option<String>,
}

/// Every sink's scale-out rows.
pub async fn replicas_rows(s: &Settings, pg: &Postgres, backlogs: &Backlogs, table: &mut Table) {
    for &sink in &s.sinks {
        let Some(template) = backlogs.of(sink) else {
            continue;
        };
        let drains = replica_drains(s, pg, template, sink, table).await;
        replicas_table(s, sink, &drains, table);
        if sink == SinkKind::RabbitMq {
            rabbit_publishers_rows(s, table).await;
        }
    }
}

/// `sink`'s drains, per replica count, in run order.
async fn replica_drains(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    table: &mut Table,
) -> [Vec<ReplicasDrain>; REPLICA_COUNTS.len()] {
    let name = sink.name();
    let mut drains: [Vec<ReplicasDrain>; REPLICA_COUNTS.len()] = Default::default();
    for round in 1..=s.replica_rounds {
        for (replicas, drains) in REPLICA_COUNTS.into_iter().zip(&mut drains) {
            progress(&format!(
                "{name}: drain {} with {replicas} replica(s), round {round}",
                events_label(s.events)
            ));
            match drain_replicas(s, pg, template, sink, replicas).await {
                Ok(d) => {
                    if let Some(problem) = &d.problem {
                        table.info(
                            &format!("{name}: {replicas} replica(s) check"),
                            problem.clone(),
                        );
                    }
                    drains.push(d);
                }
                Err(e) => table.error(&format!("{name}: drain with {replicas} replica(s)"), &e),
            }
        }
    }
    drains
}

/// The rows of `sink`'s drains per replica count, when every round of every count succeeded.
fn replicas_table(s: &Settings, sink: SinkKind, drains: &[Vec<ReplicasDrain>], table: &mut Table) {
    let (name, nl, rounds) = (sink.name(), events_label(s.events), s.replica_rounds);
    let complete = drains.iter().all(|d| d.len() == rounds as usize);
    let mean_of =
        |d: &[ReplicasDrain], f: fn(&ReplicasDrain) -> f64| complete.then(|| mean(d.iter().map(f)));
    let one = mean_of(&drains[0], |d| d.steady_rate);
    for (replicas, drains) in REPLICA_COUNTS.into_iter().zip(drains) {
        let (Some(steady_rate), Some(whole), Some(cpu), Some(cores)) = (
            mean_of(drains, |d| d.steady_rate),
            mean_of(drains, |d| d.rate),
            mean_of(drains, |d| d.cpu_per_million),
            mean_of(drains, |d| d.machine_cores),
        ) else {
            continue;
        };
        let (target, met) = if replicas == 4 {
            (
                format!(">= {REPLICAS_RATIO_TARGET:.1} of 1 replica"),
                one.map(|o| steady_rate >= REPLICAS_RATIO_TARGET * o),
            )
        } else {
            (String::new(), None)
        };
        let (baseline, versus) = against_first(replicas == 1, "1 replica", steady_rate, one);
        table.row(
            &format!(
                "{name}: drain {nl} backlog, {replicas} replica(s) (lanes), 10-90% delivered, mean of {rounds}"
            ),
            rate(steady_rate),
            baseline,
            versus,
            &target,
            met,
        );
        table.info(
            &format!("{name}: {replicas} replica(s): 10-90% rates, in run order"),
            in_run_order(drains.iter().map(|d| d.steady_rate)),
        );
        table.info(
            &format!("{name}: {replicas} replica(s): whole drain, from the relays' start"),
            rate(whole),
        );
        table.info(
            &format!("{name}: {replicas} replica(s): relay CPU per 1M events (all replicas) / machine cores busy"),
            format!("{cpu:.2} CPU-s / {cores:.2}"),
        );
    }
}

/// RabbitMQ's own cost of scale-out, in the same run: the raw publisher (as the relay publishes,
/// see `rabbit_raw_publish`) on 1 connection, then on 4 connections side by side, as 1 and 4
/// replicas publish, into the same single queue; `BENCH_REPLICA_ROUNDS` rounds of 1, 4.
async fn rabbit_publishers_rows(s: &Settings, table: &mut Table) {
    const CONNECTIONS: [u64; 2] = [1, 4];
    let nl = events_label(s.events);
    let rounds = s.replica_rounds;
    let mut rates: [Vec<f64>; CONNECTIONS.len()] = Default::default();
    for round in 1..=rounds {
        for (publishers, rates) in CONNECTIONS.into_iter().zip(&mut rates) {
            progress(&format!(
                "rabbitmq: raw publish {nl} on {publishers} connection(s), round {round}"
            ));
            match raw_rabbit_publishers(s, publishers).await {
                Ok(r) => rates.push(r),
                Err(e) => table.error(
                    &format!("rabbitmq: raw publish on {publishers} connection(s)"),
                    &e,
                ),
            }
        }
    }
    if rates.iter().any(|r| r.len() != rounds as usize) {
        return;
    }
    let one = mean(rates[0].iter().copied());
    for (publishers, rates) in CONNECTIONS.into_iter().zip(&rates) {
        let r = mean(rates.iter().copied());
        let (baseline, versus) = against_first(publishers == 1, "1 connection", r, Some(one));
        table.row(
            &format!(
                "rabbitmq: broker reference, raw publish on {publishers} connection(s), mean of {rounds}"
            ),
            rate(r),
            baseline,
            versus,
            "",
            None,
        );
        table.info(
            &format!("rabbitmq: raw publish on {publishers} connection(s), in run order"),
            in_run_order(rates.iter().copied()),
        );
    }
}

async fn drain_replicas(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    replicas: usize,
) -> Result<ReplicasDrain> {
    let (db, url) = backlog_copy(pg, template, "replicas").await?;
    let result = match Target::open(s, sink, false).await {
        Ok(target) => {
            let drain = drain_replicas_with(s, &url, &target, replicas).await;
            target.close().await;
            drain
        }
        Err(e) => Err(e),
    };
    pg.drop(&db).await;
    result
}

async fn drain_replicas_with(
    s: &Settings,
    url: &str,
    target: &Target,
    replicas: usize,
) -> Result<ReplicasDrain> {
    let n = s.events;
    let before = CpuSnapshot::take();
    let started = Instant::now();
    let mut env = s.relay_env();
    env.extend(target.env.iter().cloned());
    env.push(("OUTBOX_REPLICA_MODE", "lanes".into()));
    let mut relays = Vec::new();
    for _ in 0..replicas {
        relays.push(Relay::spawn(url, &env, RelayStdout::Null)?.0);
    }
    let (at_10, at_90) =
        wait_delivered(&relays, n, started + Duration::from_secs(120 + n / 1000)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let used = CpuSnapshot::take().since(&before);
    let cpu: f64 = relays.iter().map(Relay::cpu_secs).sum();
    for relay in &mut relays {
        relay.stop().await?;
    }
    let mut problem = None;
    if let Some(received) = &target.received
        && let Err(e) = received.try_wait_for(n, Duration::from_secs(60)).await
    {
        problem = Some(format!("{e:#}"));
    }
    let steady_rate = match (at_10, at_90) {
        (Some((t10, d10)), Some((t90, d90))) if t90 > t10 => {
            (d90 - d10) as f64 / (t90 - t10).as_secs_f64()
        }
        _ => f64::NAN,
    };
    Ok(ReplicasDrain {
        rate: n as f64 / elapsed,
        steady_rate,
        cpu_per_million: cpu / (n as f64 / 1e6),
        machine_cores: used.machine_busy / used.wall,
        problem,
    })
}

/// When (and at how many delivered) the relays together passed 10% and 90% of `n`, polling every
/// 100 ms until they delivered `n`. Throughput once the replicas share the lanes: the rate between
/// 10% and 90% delivered, leaving out the start (processes starting, the first replica holding
/// every lane until the others join and it gives them up) and the tail.
async fn wait_delivered(
    relays: &[Relay],
    n: u64,
    deadline: Instant,
) -> Result<(Option<(Instant, u64)>, Option<(Instant, u64)>)> {
    let (mut at_10, mut at_90) = (None, None);
    loop {
        let mut delivered = 0;
        for relay in relays {
            delivered += relay.delivered().await.unwrap_or(0);
        }
        if at_10.is_none() && delivered >= n / 10 {
            at_10 = Some((Instant::now(), delivered));
        }
        if at_90.is_none() && delivered >= n - n / 10 {
            at_90 = Some((Instant::now(), delivered));
        }
        if delivered >= n {
            return Ok((at_10, at_90));
        }
        if Instant::now() >= deadline {
            bail!(
                "{} replicas delivered {delivered} of {n} events in time",
                relays.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
