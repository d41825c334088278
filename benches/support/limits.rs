//! The references the relay is measured against (`BENCH_ONLY=limits`), each measured without the
//! relay in the same run (references, not upper bounds: a relay that batches differently from a
//! raw client can pass one): PostgreSQL's plain claim+delete of the backlog and the relay's own claim SQL,
//! each broker's raw publisher and its own CPU, both at once; and the producer's insert rate
//! with and without the NOTIFY trigger (`BENCH_ONLY=producer`).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use outbox_relay::outbox::session::OnDelivery;
use tokio_postgres::{Client, Statement};

use super::machine::cpu_per_million_since;
use super::raw::{nats_raw_publish, rabbit_raw_publish, redis_raw_xadd};
use super::raw_bullmq::bullmq_raw_add;
use super::raw_http::{WEBHOOK_CONCURRENCY, http_raw_client_cpu, raw_http};
use super::raw_kafka::raw_produce;
use super::settings::{Settings, SinkKind};
use super::table::{Table, events_label, limit_result, progress, rate, ratio};
use super::workload::{
    Backlogs, PAYLOAD_BYTES, PLAIN_CLAIM, PLAIN_CLAIM_MARKING, TOPIC, backlog_copy, fresh_database,
    insert_flat_out, set_notify,
};
use crate::harness::{
    Declare, Inbox, Postgres, Rabbit, own_cpu_secs, pg_error, try_connect, try_create_topic, unique,
};

const CLAIM_SQL: &str = include_str!("../../sql/queries/claim.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../../sql/queries/mark_delivered.sql");
/// `OUTBOX_BATCH_MAX_BYTES` and `OUTBOX_MAX_PAYLOAD_BYTES` defaults.
const RELAY_DEFAULT_BYTES: i64 = 16 * 1024 * 1024;

#[derive(Default)]
pub struct Limits {
    pub pg_delete: Option<f64>,
    rabbitmq: Option<f64>,
    kafka: Option<f64>,
    redis: Option<f64>,
    nats: Option<f64>,
    http: Option<f64>,
    bullmq: Option<f64>,
    /// The raw publishers' own CPU per 1M messages (this process, which runs nothing else
    /// meanwhile): what the client library costs without the relay. RabbitMQ's is measured into
    /// a queue nobody consumes, HTTP's against a receiver in another process.
    client_cpu: Vec<(SinkKind, f64)>,
}

impl Limits {
    /// The limit `sink`'s drain is compared with.
    pub fn of(&self, sink: SinkKind) -> Option<f64> {
        match sink {
            SinkKind::RabbitMq => self.rabbitmq,
            SinkKind::Stdout => self.pg_delete,
            SinkKind::Kafka => self.kafka,
            SinkKind::Redis => self.redis,
            SinkKind::Nats => self.nats,
            SinkKind::Http => self.http,
            SinkKind::Bullmq => self.bullmq,
        }
    }

    /// Keeps a raw client's own CPU per 1M messages, measured on its own, and shows it.
    fn note_client_cpu(
        &mut self,
        table: &mut Table,
        sink: SinkKind,
        measure: &str,
        cpu: Result<f64>,
    ) {
        match cpu {
            Ok(cpu) => {
                self.client_cpu.push((sink, cpu));
                table.info(measure, format!("{cpu:.2} CPU-s"));
            }
            Err(e) => table.error(measure, &e),
        }
    }

    pub fn client_cpu(&self, sink: SinkKind) -> Option<f64> {
        self.client_cpu
            .iter()
            .find(|(kind, _)| *kind == sink)
            .map(|&(_, cpu)| cpu)
    }
}

/// Every limit row: PostgreSQL's (with a backlog), the brokers', and both at once.
pub async fn limits_rows(
    s: &Settings,
    pg: &Postgres,
    backlogs: &Backlogs,
    table: &mut Table,
) -> Limits {
    let mut limits = Limits::default();
    if let Some(template) = &backlogs.plain {
        postgres_rows(s, pg, template, &mut limits, table).await;
    }
    rabbitmq_rows(s, &mut limits, table).await;
    kafka_rows(s, &mut limits, table).await;
    redis_nats_rows(s, &mut limits, table).await;
    http_rows(s, &mut limits, table).await;
    bullmq_rows(s, &mut limits, table).await;
    // The drains measure it in each of their rounds, beside the drains themselves.
    if !s.wants("drain") {
        outbox_rows(s, pg, backlogs, table).await;
    }
    limits
}

/// PostgreSQL's plain claim+delete of the backlog, and the relay's claim SQL marking or deleting.
async fn postgres_rows(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    limits: &mut Limits,
    table: &mut Table,
) {
    progress("limit: PostgreSQL claim+delete");
    match raw_pg_delete(s, pg, template).await {
        Ok(r) => {
            limits.pg_delete = Some(r);
            table.info(
                &format!(
                    "limit: PostgreSQL claim+delete, {} backlog, batches of {}, no broker",
                    events_label(s.events),
                    s.batch_size
                ),
                rate(r),
            );
        }
        Err(e) => table.error("limit: PostgreSQL claim+delete", &e),
    }
    progress("reference: PostgreSQL claim+mark");
    match raw_pg_claim(s, pg, template, PLAIN_CLAIM_MARKING).await {
        Ok(r) => table.row(
            "ref: PostgreSQL claim+mark (plain UPDATE ... RETURNING: history kept), no broker",
            rate(r),
            "PG claim+delete".into(),
            ratio(r, limits.pg_delete),
            "",
            None,
        ),
        Err(e) => table.error("ref: PostgreSQL claim+mark", &e),
    }
    for on_delivery in [OnDelivery::Mark, OnDelivery::Delete] {
        let verb = recording(on_delivery);
        progress(&format!("reference: the relay's own claim SQL, {verb}"));
        match raw_pg_relay_sql(s, pg, template, on_delivery).await {
            Ok((r, done)) => table.row(
                &format!(
                    "ref: relay's claim.sql, each {verb} the batch before, no broker (first {})",
                    events_label(done)
                ),
                rate(r),
                "PG claim+delete".into(),
                ratio(r, limits.pg_delete),
                "",
                None,
            ),
            Err(e) => table.error("ref: relay's claim SQL", &e),
        }
    }
}

/// RabbitMQ's publish with confirms, and its client's own CPU.
async fn rabbitmq_rows(s: &Settings, limits: &mut Limits, table: &mut Table) {
    progress("limit: RabbitMQ publish with confirms");
    match raw_rabbit_publishers(s, 1).await {
        Ok(r) => {
            limits.rabbitmq = Some(r);
            table.info(
                &format!(
                    "limit: RabbitMQ publish+confirm, {} msgs, batches of {}, no DB",
                    events_label(s.events),
                    s.batch_size
                ),
                rate(r),
            );
        }
        Err(e) => table.error("limit: RabbitMQ publish+confirm", &e),
    }
    // The client's own CPU needs a run without the consumer, which shares this process.
    limits.note_client_cpu(
        table,
        SinkKind::RabbitMq,
        "limit: RabbitMQ publisher CPU per 1M msgs (lapin, no consumer in the process)",
        raw_rabbit_client_cpu(s).await,
    );
}

/// Kafka's produce (with `KAFKA_BROKERS`), and its client's own CPU.
async fn kafka_rows(s: &Settings, limits: &mut Limits, table: &mut Table) {
    let Some(brokers) = &s.kafka_brokers else {
        return;
    };
    progress("limit: Kafka produce");
    let cpu = own_cpu_secs();
    match raw_kafka(s, brokers, false).await {
        Ok(r) => {
            let cpu = cpu_per_million_since(cpu, s.events);
            limits.kafka = Some(r);
            limits.client_cpu.push((SinkKind::Kafka, cpu));
            table.info(
                &format!(
                    "limit: Kafka produce (idempotent, acks=all), {} msgs, batches of {}",
                    events_label(s.events),
                    s.batch_size
                ),
                limit_result(r, cpu),
            );
        }
        Err(e) => table.error("limit: Kafka produce", &e),
    }
}

/// Redis' pipelined XADD and JetStream's publish+ack, with their clients' own CPU.
async fn redis_nats_rows(s: &Settings, limits: &mut Limits, table: &mut Table) {
    let (n, nl) = (s.events, events_label(s.events));
    if s.sinks.contains(&SinkKind::Redis) {
        progress("limit: Redis pipelined XADD");
        let cpu = own_cpu_secs();
        match redis_raw_xadd(&s.redis_url, n, s.batch_size, false).await {
            Ok(took) => {
                let cpu = cpu_per_million_since(cpu, n);
                let r = n as f64 / took.as_secs_f64();
                limits.redis = Some(r);
                limits.client_cpu.push((SinkKind::Redis, cpu));
                let what = format!(
                    "limit: Redis pipelined XADD, {nl} msgs, pipelines of {}, no DB",
                    s.batch_size
                );
                table.info(&what, limit_result(r, cpu));
            }
            Err(e) => table.error("limit: Redis pipelined XADD", &e),
        }
    }
    if s.sinks.contains(&SinkKind::Nats) {
        progress("limit: JetStream publish+ack");
        let cpu = own_cpu_secs();
        match nats_raw_publish(&s.nats_url, n, s.batch_size).await {
            Ok(took) => {
                let cpu = cpu_per_million_since(cpu, n);
                let r = n as f64 / took.as_secs_f64();
                limits.nats = Some(r);
                limits.client_cpu.push((SinkKind::Nats, cpu));
                let what = format!(
                    "limit: JetStream publish+ack, {nl} msgs, batches of {}, no DB",
                    s.batch_size
                );
                table.info(&what, limit_result(r, cpu));
            }
            Err(e) => table.error("limit: JetStream publish+ack", &e),
        }
    }
}

/// The HTTP client's own CPU (receiver in another process), then POSTs to the bench's receiver.
async fn http_rows(s: &Settings, limits: &mut Limits, table: &mut Table) {
    if !s.sinks.contains(&SinkKind::Http) {
        return;
    }
    progress("limit: HTTP client CPU, receiver in another process");
    limits.note_client_cpu(
        table,
        SinkKind::Http,
        "limit: HTTP client CPU per 1M POSTs (reqwest, receiver in another process)",
        http_raw_client_cpu(s.events).await,
    );
    progress("limit: HTTP POST");
    match raw_http(s.events, false).await {
        Ok(r) => {
            limits.http = Some(r);
            table.info(
                &format!(
                    "limit: HTTP POST, {WEBHOOK_CONCURRENCY} in flight, {} requests, unsigned, no DB",
                    events_label(s.events)
                ),
                rate(r),
            );
        }
        Err(e) => table.error("limit: HTTP POST", &e),
    }
}

/// BullMQ's adds through bullmq-official as the sink makes them, and the client's own CPU.
async fn bullmq_rows(s: &Settings, limits: &mut Limits, table: &mut Table) {
    if !s.sinks.contains(&SinkKind::Bullmq) {
        return;
    }
    progress("limit: BullMQ add");
    let (n, cpu) = (s.events, own_cpu_secs());
    match bullmq_raw_add(&s.redis_url, n, s.batch_size).await {
        Ok(took) => {
            let cpu = cpu_per_million_since(cpu, n);
            let r = n as f64 / took.as_secs_f64();
            limits.bullmq = Some(r);
            limits.client_cpu.push((SinkKind::Bullmq, cpu));
            let what = format!(
                "limit: BullMQ add (bullmq-official, job id + dedup), {} jobs, {} in flight, no DB",
                events_label(n),
                s.batch_size
            );
            table.info(&what, limit_result(r, cpu));
        }
        Err(e) => table.error("limit: BullMQ add", &e),
    }
}

/// Per sink but stdout: PostgreSQL's claim+delete (of the sink's backlog) and the raw publisher
/// at once.
async fn outbox_rows(s: &Settings, pg: &Postgres, backlogs: &Backlogs, table: &mut Table) {
    for &sink in s.sinks.iter().filter(|&&k| k != SinkKind::Stdout) {
        let Some(template) = backlogs.of(sink) else {
            continue;
        };
        let name = sink.name();
        progress(&format!(
            "reference: PostgreSQL claim+delete and {name} raw at once"
        ));
        match outbox_limit(s, pg, template, sink).await {
            Ok(r) => {
                table.info(
                    &format!(
                        "reference: PG claim+delete and {name} raw at once, {}",
                        events_label(s.events)
                    ),
                    rate(r),
                );
            }
            Err(e) => table.error(&format!("reference: PG claim+delete and {name} raw"), &e),
        }
    }
}

async fn raw_pg_delete(s: &Settings, pg: &Postgres, template: &str) -> Result<f64> {
    raw_pg_claim(s, pg, template, PLAIN_CLAIM).await
}

/// The rate of the plain claim `sql` ([`PLAIN_CLAIM`] or [`PLAIN_CLAIM_MARKING`]) through the
/// whole backlog.
async fn raw_pg_claim(s: &Settings, pg: &Postgres, template: &str, sql: &str) -> Result<f64> {
    let (db, url) = backlog_copy(pg, template, "pgraw").await?;
    let result = async {
        let claims = PlainClaims::prepare(&url, sql).await?;
        let took = claims.run(s).await?;
        Ok(s.events as f64 / took.as_secs_f64())
    }
    .await;
    pg.drop(&db).await;
    result
}

/// PostgreSQL's plain claim of a backlog, batch by batch (`DELETE` or `UPDATE ... RETURNING`, no
/// relay).
struct PlainClaims {
    client: Client,
    statement: Statement,
}

impl PlainClaims {
    async fn prepare(url: &str, sql: &str) -> Result<PlainClaims> {
        let client = try_connect(url).await?;
        let statement = client.prepare(sql).await?;
        Ok(PlainClaims { client, statement })
    }

    /// Claims the whole backlog; how long it took.
    async fn run(&self, s: &Settings) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(60 + s.events / 1000);
        let started = Instant::now();
        let mut total = 0u64;
        let mut bytes = 0usize;
        loop {
            let rows = self
                .client
                .query(&self.statement, &[&(s.batch_size as i64)])
                .await
                .map_err(|e| anyhow!("plain claim: {}", pg_error(&e)))?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                bytes += row
                    .try_get::<_, &[u8]>("payload")
                    .map_err(|e| anyhow!("plain claim payload: {e}"))?
                    .len();
            }
            total += rows.len() as u64;
            if Instant::now() > deadline {
                bail!("the plain claim took longer than its deadline");
            }
        }
        let took = started.elapsed();
        if total != s.events || bytes != total as usize * PAYLOAD_BYTES {
            bail!(
                "claimed {total} events ({bytes} bytes), expected {}",
                s.events
            );
        }
        Ok(took)
    }
}

/// The outbox reference of `sink`: PostgreSQL's plain claim+delete of the backlog and the raw
/// publisher of as many messages, running at the same time on the same cores, as a relay that
/// overlapped them perfectly and cost nothing itself would (a reference: a relay whose client
/// batches better than the raw one can pass it, as Kafka's did). Rate: events / the later of the two to finish.
async fn outbox_limit(s: &Settings, pg: &Postgres, template: &str, sink: SinkKind) -> Result<f64> {
    let (db, url) = backlog_copy(pg, template, "outboxlimit").await?;
    let result = async {
        let claims = PlainClaims::prepare(&url, PLAIN_CLAIM).await?;
        let n = s.events;
        let publish = async {
            let rate = raw_publisher_rate(s, sink).await?;
            anyhow::Ok(Duration::from_secs_f64(n as f64 / rate))
        };
        let (claimed, published) = tokio::join!(claims.run(s), publish);
        let took = claimed?.max(published?);
        Ok(n as f64 / took.as_secs_f64())
    }
    .await;
    pg.drop(&db).await;
    result
}

/// What `sink`'s drain is measured against in each round: the outbox limit of the sink, or
/// PostgreSQL's plain claim+delete alone for stdout. A reference, not an upper bound: a relay
/// that batches better than the raw publisher (Kafka) can pass it.
pub async fn outbox_reference(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    sink: SinkKind,
) -> Result<f64> {
    match sink {
        SinkKind::Stdout => raw_pg_delete(s, pg, template).await,
        _ => outbox_limit(s, pg, template, sink).await,
    }
}

/// The rate of `sink`'s raw publisher for the whole backlog.
async fn raw_publisher_rate(s: &Settings, sink: SinkKind) -> Result<f64> {
    let n = s.events;
    Ok(match sink {
        SinkKind::RabbitMq => raw_rabbit_publishers(s, 1).await?,
        SinkKind::Kafka => match &s.kafka_brokers {
            Some(brokers) => raw_kafka(s, brokers, false).await?,
            None => bail!("no Kafka brokers"),
        },
        SinkKind::Redis => {
            let took = redis_raw_xadd(&s.redis_url, n, s.batch_size, false).await?;
            n as f64 / took.as_secs_f64()
        }
        SinkKind::Nats => {
            let took = nats_raw_publish(&s.nats_url, n, s.batch_size).await?;
            n as f64 / took.as_secs_f64()
        }
        SinkKind::Http => raw_http(n, false).await?,
        SinkKind::Bullmq => {
            let took = bullmq_raw_add(&s.redis_url, n, s.batch_size).await?;
            n as f64 / took.as_secs_f64()
        }
        SinkKind::Stdout => bail!("stdout's limit is PostgreSQL's alone"),
    })
}

/// How the relay records a delivery, in the reference rows' labels.
fn recording(on_delivery: OnDelivery) -> &'static str {
    match on_delivery {
        OnDelivery::Mark => "marking",
        OnDelivery::Delete => "deleting",
    }
}

/// The relay's own queries without a broker, as it runs them: each claim also records the batch
/// before it delivered; for at most 20 s.
async fn raw_pg_relay_sql(
    s: &Settings,
    pg: &Postgres,
    template: &str,
    on_delivery: OnDelivery,
) -> Result<(f64, u64)> {
    let (db, url) = backlog_copy(pg, template, "pgsql").await?;
    let result = async {
        let mut queries = RelayQueries::prepare(&url, on_delivery).await?;
        let started = Instant::now();
        let mut total = 0u64;
        while started.elapsed() < Duration::from_secs(20) {
            let claimed = queries.claim(s.batch_size).await?;
            if claimed == 0 {
                break;
            }
            total += claimed;
        }
        queries.record_last().await?;
        Ok((total as f64 / started.elapsed().as_secs_f64(), total))
    }
    .await;
    pg.drop(&db).await;
    result
}

/// The relay's claim and mark queries on a session set up as the relay's (see
/// src/outbox/session.rs), with the claim's cursor; the fence is NULL as for one relay owning
/// every lane.
struct RelayQueries {
    client: Client,
    claim: Statement,
    mark: Statement,
    on_delivery: OnDelivery,
    /// The claim's cursor: floor id and watched transactions.
    floor: i64,
    xip: Vec<String>,
    xmax: Option<String>,
    /// Claimed by the last claim, recorded by the next.
    previous: Vec<i64>,
}

const EVERY_LANE: Option<Vec<i32>> = None;

impl RelayQueries {
    async fn prepare(url: &str, on_delivery: OnDelivery) -> Result<RelayQueries> {
        let client = try_connect(url).await?;
        client
            .batch_execute(
                "SET max_parallel_workers_per_gather = 0; SET plan_cache_mode = force_custom_plan; \
                 SET jit = off",
            )
            .await?;
        Ok(RelayQueries {
            claim: client.prepare(CLAIM_SQL).await?,
            mark: client.prepare(MARK_DELIVERED_SQL).await?,
            client,
            on_delivery,
            floor: 0,
            xip: Vec::new(),
            xmax: None,
            previous: Vec::new(),
        })
    }

    /// Claims the next batch and records the one before; how many it claimed.
    async fn claim(&mut self, batch_size: u64) -> Result<u64> {
        let (marked, deleted) = self.on_delivery.split(&self.previous);
        let rows = self
            .client
            .query(
                &self.claim,
                &[
                    &(batch_size as i64),
                    &self.floor,
                    &self.xip,
                    &self.previous,
                    // The relay's default byte budget and payload limit (i64::MAX would
                    // overflow the claim's `limit + 1`).
                    &RELAY_DEFAULT_BYTES,
                    &RELAY_DEFAULT_BYTES,
                    &EVERY_LANE,
                    &self.xmax,
                    &marked,
                    &deleted,
                ],
            )
            .await
            .map_err(|e| anyhow!("claim: {}", pg_error(&e)))?;
        let first = rows
            .first()
            .ok_or_else(|| anyhow!("claim: no cursor row"))?;
        if first.try_get::<_, bool>("advanced")? {
            self.floor = first.try_get("next_floor")?;
            self.xip = first.try_get("next_xip")?;
            self.xmax = first.try_get("next_xmax")?;
        }
        self.previous = rows
            .iter()
            .filter_map(|r| r.try_get::<_, Option<i64>>("id").ok().flatten())
            .collect();
        Ok(self.previous.len() as u64)
    }

    /// Cut off by the time limit: the last batch is recorded alone, as the relay does when
    /// nothing follows.
    async fn record_last(&self) -> Result<()> {
        let (marked, deleted) = self.on_delivery.split(&self.previous);
        self.client
            .execute(&self.mark, &[&marked, &EVERY_LANE, &deleted])
            .await
            .map_err(|e| anyhow!("mark: {}", pg_error(&e)))?;
        Ok(())
    }
}

pub async fn raw_kafka(s: &Settings, brokers: &str, cloudevents_headers: bool) -> Result<f64> {
    let topic = format!("{}.{TOPIC}", unique("outbox_bench_raw"));
    try_create_topic(brokers, &topic, 1).await?;
    let took = raw_produce(brokers, &topic, s.events, s.batch_size, cloudevents_headers).await?;
    Ok(s.events as f64 / took.as_secs_f64())
}

/// The raw RabbitMQ publisher's CPU per 1M messages, into a queue that nobody consumes (this
/// process runs nothing else meanwhile).
async fn raw_rabbit_client_cpu(s: &Settings) -> Result<f64> {
    let rabbit = bench_queue(s, None).await?;
    let cpu = own_cpu_secs();
    let result = rabbit_raw_publish(&s.amqp_url, &rabbit.exchange, s.events, s.batch_size).await;
    let cpu = cpu_per_million_since(cpu, s.events);
    rabbit.teardown().await;
    result.map(|_| cpu)
}

/// A topic exchange and a durable queue bound with `#` of the bench's own, consumed into
/// `inbox` when there is one.
async fn bench_queue(s: &Settings, inbox: Option<Inbox>) -> Result<Rabbit> {
    let declare = Declare {
        exchange: &unique("outbox_bench"),
        kind: lapin::ExchangeKind::Topic,
        binding: "#",
        lasting: true,
    };
    Rabbit::open(&s.amqp_url, declare, inbox).await
}

/// RabbitMQ's limit: `publishers` connections side by side, each publishing its share of the
/// events as the relay does (see `rabbit_raw_publish`), until the consumer has them all.
pub async fn raw_rabbit_publishers(s: &Settings, publishers: u64) -> Result<f64> {
    let rabbit = bench_queue(s, Some(Inbox::counting())).await?;
    let result = async {
        let each = s.events / publishers;
        let started = Instant::now();
        let runs = (0..publishers)
            .map(|_| rabbit_raw_publish(&s.amqp_url, &rabbit.exchange, each, s.batch_size));
        for run in futures_util::future::join_all(runs).await {
            run?;
        }
        let took = started.elapsed();
        rabbit
            .inbox()
            .try_wait_for(each * publishers, Duration::from_secs(60))
            .await?;
        Ok((each * publishers) as f64 / took.as_secs_f64())
    }
    .await;
    rabbit.teardown().await;
    result
}

/// The producer's insert rate with and without the NOTIFY trigger.
pub async fn producer_rows(s: &Settings, pg: &Postgres, table: &mut Table) {
    progress("producer insert rate with and without NOTIFY");
    match producer_rates(s, pg).await {
        Ok((on, off)) => {
            let what = format!("producer: {} conns, 1 event per tx", s.producer_conns);
            table.info(&format!("{what}, NOTIFY trigger on"), rate(on));
            table.row(
                &format!("{what}, NOTIFY trigger off"),
                rate(off),
                "NOTIFY on".into(),
                ratio(off, Some(on)),
                "",
                None,
            );
        }
        Err(e) => table.error("producer insert rate", &e),
    }
}

async fn producer_rates(s: &Settings, pg: &Postgres) -> Result<(f64, f64)> {
    let (db, url) = fresh_database(pg, "producer").await?;
    let result = async {
        let client = try_connect(&url).await?;
        set_notify(&client, true).await?;
        // A listener, as the relay would be.
        let listener = try_connect(&url).await?;
        listener.batch_execute("LISTEN outbox_events").await?;
        let secs = Duration::from_secs(s.producer_secs);
        let on = insert_flat_out(&url, s.producer_conns, secs).await? as f64 / secs.as_secs_f64();
        set_notify(&client, false).await?;
        let off = insert_flat_out(&url, s.producer_conns, secs).await? as f64 / secs.as_secs_f64();
        Ok((on, off))
    }
    .await;
    pg.drop(&db).await;
    result
}
