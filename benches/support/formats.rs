//! What a message format costs (`BENCH_ONLY=formats`): the same backlog drained in `raw` and in
//! binary CloudEvents, alternately (raw, cloudevents, raw, cloudevents, ...) so that a drift of
//! the machine hits both; each format's rate is the mean of its `BENCH_FORMAT_ROUNDS` drains, and
//! so is the relay's CPU per event, which shows the format's own cost without the drains' noise.

use anyhow::Result;

use super::drain::{Drain, drain_configured};
use super::limits::raw_kafka;
use super::raw::redis_raw_xadd;
use super::raw_http::raw_http;
use super::settings::{Settings, SinkKind};
use super::table::{Table, events_label, in_run_order, mean, progress, rate, ratio};
use super::workload::Backlogs;
use crate::harness::Postgres;

// Target of the formats issue: a format costs at most 10% of the drain rate.
const FORMAT_RATIO_TARGET: f64 = 0.9;

const CLOUDEVENTS: &[(&str, &str)] = &[("OUTBOX_FORMAT", "cloudevents")];

/// Every sink's format rows.
pub async fn formats_rows(s: &Settings, pg: &Postgres, backlogs: &Backlogs, table: &mut Table) {
    for &sink in &s.sinks {
        let Some(template) = backlogs.of(sink) else {
            continue;
        };
        let (mut raw, mut ce) = (Vec::new(), Vec::new());
        // The broker's (receiver's) and its client's own cost of the format's headers, in the
        // same rounds, where the bench has a raw publisher (Kafka, Redis, HTTP).
        let (mut plain_refs, mut ce_refs) = (Vec::new(), Vec::new());
        for round in 1..=s.format_rounds {
            format_drains(s, pg, template, sink, round, [&mut raw, &mut ce], table).await;
            for (headers, rates) in [(false, &mut plain_refs), (true, &mut ce_refs)] {
                progress(&format!(
                    "{}: raw reference {}, cloudevents headers {headers}, round {round}",
                    sink.name(),
                    events_label(s.events)
                ));
                match format_reference(s, sink, headers).await {
                    Some(Ok(r)) => rates.push(r),
                    Some(Err(e)) => table.error(&format!("{}: raw reference", sink.name()), &e),
                    None => {}
                }
            }
        }
        references_table(sink, &plain_refs, &ce_refs, table);
        formats_table(s, sink, &raw, &ce, table);
    }
}

/// One round: `sink` drained in raw, then in cloudevents.
async fn format_drains(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
    round: u64,
    drains: [&mut Vec<Drain>; 2],
    table: &mut Table,
) {
    let name = sink.name();
    for (format, drains) in [&[][..], CLOUDEVENTS].into_iter().zip(drains) {
        let label = if format.is_empty() {
            "raw"
        } else {
            "cloudevents"
        };
        progress(&format!(
            "{name}: drain {} in {label}, round {round}",
            events_label(s.events)
        ));
        match drain_configured(s, pg, template, sink, format).await {
            Ok(d) => {
                if let Some(problem) = &d.problem {
                    table.info(&format!("{name}: {label} drain check"), problem.clone());
                }
                drains.push(d);
            }
            Err(e) => table.error(&format!("{name}: {label} drain"), &e),
        }
    }
}

/// The raw publisher's rates without and with the cloudevents headers.
fn references_table(sink: SinkKind, plain_refs: &[f64], ce_refs: &[f64], table: &mut Table) {
    if ce_refs.is_empty() || ce_refs.len() != plain_refs.len() {
        return;
    }
    let name = sink.name();
    let (plain, with_headers) = (
        mean(plain_refs.iter().copied()),
        mean(ce_refs.iter().copied()),
    );
    table.row(
        &format!(
            "{name}: reference, raw publisher with the cloudevents headers, mean of {}",
            ce_refs.len()
        ),
        rate(with_headers),
        "raw publisher".to_string(),
        ratio(with_headers, Some(plain)),
        "",
        None,
    );
    table.info(
        &format!("{name}: raw publisher without / with the cloudevents headers, in run order"),
        format!(
            "{} / {}",
            in_run_order(plain_refs.iter().copied()),
            in_run_order(ce_refs.iter().copied())
        ),
    );
}

/// The drains' rates and the relay's CPU per format, when every round of both succeeded.
fn formats_table(s: &Settings, sink: SinkKind, raw: &[Drain], ce: &[Drain], table: &mut Table) {
    let (name, nl, rounds) = (sink.name(), events_label(s.events), s.format_rounds);
    let complete = raw.len() == rounds as usize && ce.len() == rounds as usize;
    let mean_of = |d: &[Drain], f: fn(&Drain) -> f64| complete.then(|| mean(d.iter().map(f)));
    let (raw_rate, ce_rate) = (mean_of(raw, |d| d.rate), mean_of(ce, |d| d.rate));
    let each = |d: &[Drain]| in_run_order(d.iter().map(|d| d.rate));
    table.info(
        &format!("{name}: drains {nl} raw / cloudevents, in run order"),
        format!("{} / {}", each(raw), each(ce)),
    );
    if let (Some(raw_cpu), Some(ce_cpu)) = (
        mean_of(raw, |d| d.cpu_per_million),
        mean_of(ce, |d| d.cpu_per_million),
    ) {
        table.info(
            &format!("{name}: relay CPU per 1M raw / cloudevents, mean of {rounds}"),
            format!(
                "{raw_cpu:.2} / {ce_cpu:.2} CPU-s ({:+.0}%)",
                (ce_cpu / raw_cpu - 1.0) * 100.0
            ),
        );
    }
    if let Some(ce_rate) = ce_rate {
        table.row(
            &format!("{name}: drain {nl} in cloudevents (binary), mean of {rounds}"),
            rate(ce_rate),
            format!("raw, mean of {rounds}"),
            ratio(ce_rate, raw_rate),
            &format!(">= {FORMAT_RATIO_TARGET:.1} of raw"),
            raw_rate.map(|r| ce_rate >= FORMAT_RATIO_TARGET * r),
        );
    }
}

/// The raw publisher's rate with or without the headers binary CloudEvents add; `None` for a
/// sink without one here.
async fn format_reference(s: &Settings, sink: SinkKind, headers: bool) -> Option<Result<f64>> {
    match sink {
        SinkKind::Kafka => Some(raw_kafka(s, s.kafka_brokers.as_deref()?, headers).await),
        SinkKind::Http => Some(raw_http(s.events, headers).await),
        SinkKind::Redis => Some(
            redis_raw_xadd(&s.redis_url, s.events, s.batch_size, headers)
                .await
                .map(|took| s.events as f64 / took.as_secs_f64()),
        ),
        _ => None,
    }
}
