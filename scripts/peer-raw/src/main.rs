// Raw reference for the peer job: N persistent publishes (confirms awaited per batch of 500, as
// the relay publishes) into a fresh topic exchange bound to a durable, unconsumed queue; timed
// until the queue holds N (as ours.py and Debezium's bench.py time their relays).
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::time::Instant;

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let name = format!("raw_{}", std::process::id());
    let conn = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        name.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        name.as_str().into(),
        name.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let pad = "x".repeat(230);
    let started = Instant::now();
    let mut seq = 0;
    while seq < n {
        let end = (seq + 500).min(n);
        let mut confirms = Vec::new();
        for i in seq..end {
            let body = format!("{{\"n\": {i}, \"pad\": \"{pad}\"}}");
            let props = BasicProperties::default()
                .with_message_id(ShortString::from(format!("{i}-{}", i % 50)))
                .with_delivery_mode(2);
            confirms.push(
                ch.basic_publish(
                    name.as_str().into(),
                    "bench".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body.as_bytes(),
                    props,
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            c.await.unwrap();
        }
        seq = end;
    }
    let confirmed = started.elapsed();
    loop {
        let q = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() as u64 >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "peer=raw-lapin sink=rabbitmq events={n} seconds={secs:.2} rate={:.0} events/s (last confirm {:.2} s)",
        n as f64 / secs,
        confirmed.as_secs_f64()
    );
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
