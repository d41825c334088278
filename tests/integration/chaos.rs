//! Fault injection with RabbitMQ (see `faults`): relays SIGKILLed, RabbitMQ connections cut,
//! PostgreSQL sessions terminated while events are produced; nothing lost, per-key order held.

use std::time::Duration;

use crate::harness::faults;
use crate::harness::*;

/// How long faults are injected while events are produced.
const CHAOS: Duration = Duration::from_secs(25);

// Two worker threads, so the producer keeps committing while a fault is being injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_broker_cuts_and_db_terminations_every_event_arrives_in_key_order() {
    let seed = faults::seed();
    let db = TestDb::create().await;
    let rabbit = Rabbit::setup("#").await;
    let proxy = Proxy::start(rabbitmq_addr()).await;
    let mut settings = rabbitmq_settings(&rabbit.exchange, &amqp_url_via(proxy.addr));
    settings.push(("OUTBOX_BATCH_SIZE", "100".into()));
    let run = faults::run(&db, &settings, &proxy, "chaos.k{k}", seed, CHAOS).await;
    faults::check(&db, &run, || rabbit.received()).await;
}
