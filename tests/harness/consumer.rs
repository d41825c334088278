//! What arrived at a broker, the same way for every sink: a [`Consumer`] per broker (RabbitMQ
//! queue, Kafka topic, Redis stream, JetStream stream, webhook receiver, the stdout sink's lines)
//! puts every message it gets in an [`Inbox`], as a [`Received`] with the message id, key,
//! headers and payload. The checks every sink shares read it: complete, per-key order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::eventually;

/// A message as a consumer received it, whatever the broker.
#[derive(Debug, Clone)]
pub struct Received {
    /// RabbitMQ: the exchange it was published to; empty elsewhere.
    pub exchange: String,
    /// Where it was published: the routing key (RabbitMQ), the subject (NATS), the stream
    /// (Redis), the topic (Kafka), the path (HTTP), the topic field (stdout).
    pub destination: String,
    /// The event's key where the transport carries it: Kafka's message key, Redis' `key` field,
    /// RabbitMQ's `outbox-key` header, the stdout line's `key`.
    pub key: Option<String>,
    /// The relay's message id: RabbitMQ's property, Kafka's `message-id` header, `Nats-Msg-Id`,
    /// Redis' `message_id` field, `webhook-id`.
    pub message_id: String,
    /// Headers (Redis: every field but `payload`) as text.
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    /// RabbitMQ: delivery mode 2; true where a broker keeps everything (streams, topics).
    pub persistent: bool,
    /// RabbitMQ's `content_type` property, else the `content-type` header.
    pub content_type: Option<String>,
    /// Kafka: the partition it was read from.
    pub partition: Option<i32>,
    /// Kafka: the record's timestamp in ms (the producer's create time).
    pub produced_ms: Option<i64>,
    /// When the consumer got it.
    pub at: Instant,
}

impl Received {
    /// A message with `payload` and nothing else yet, received now.
    pub fn new(payload: Vec<u8>) -> Received {
        Received {
            exchange: String::new(),
            destination: String::new(),
            key: None,
            message_id: String::new(),
            headers: BTreeMap::new(),
            payload,
            persistent: false,
            content_type: None,
            partition: None,
            produced_ms: None,
            at: Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A broker's consumer: what arrived so far.
pub trait Consumer {
    /// Every message so far, in arrival order (stream order for streams).
    fn received(&self) -> Vec<Received>;

    /// How many messages arrived so far.
    fn count(&self) -> usize {
        self.received().len()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    #[allow(async_fn_in_trait)]
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(&format!("{n} messages consumed"), timeout, || async {
            self.count() >= n
        })
        .await;
        self.received()
    }
}

/// Implements [`Consumer`] for a type whose field `inbox` collects what arrives.
macro_rules! consumer_with_inbox {
    ($type:ty) => {
        impl $crate::harness::consumer::Consumer for $type {
            fn received(&self) -> Vec<$crate::harness::consumer::Received> {
                self.inbox.received()
            }

            fn count(&self) -> usize {
                self.inbox.count() as usize
            }
        }

        impl $type {
            /// Where what arrives goes: counts and arrival instants (the bench).
            pub fn inbox(&self) -> &$crate::harness::consumer::Inbox {
                &self.inbox
            }
        }
    };
}
pub(crate) use consumer_with_inbox;

/// Where a consumer puts what arrives. Keeping (the tests): every message. Counting (the bench,
/// a million messages): how many, and when recording, the instant each sequence number
/// ([`parse_seq`]) first arrived.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
}

struct Shared {
    keep: bool,
    messages: Mutex<Vec<Received>>,
    count: AtomicU64,
    recording: AtomicBool,
    stamps: Mutex<Vec<(u64, Instant)>>,
}

impl Inbox {
    /// Keeps every message (the tests).
    pub fn keeping() -> Inbox {
        Inbox::new(true)
    }

    /// Counts messages, and records the instants of sequence numbers while [`Inbox::reset`]
    /// asked for it (the bench).
    pub fn counting() -> Inbox {
        Inbox::new(false)
    }

    fn new(keep: bool) -> Inbox {
        Inbox {
            shared: Arc::new(Shared {
                keep,
                messages: Mutex::new(Vec::new()),
                count: AtomicU64::new(0),
                recording: AtomicBool::new(false),
                stamps: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether it keeps messages: a consumer builds a [`Received`] only then.
    pub fn keeps(&self) -> bool {
        self.shared.keep
    }

    /// A message with `payload` arrived at `at`; `message` builds it, when it is kept.
    pub fn arrived(&self, payload: &[u8], at: Instant, message: impl FnOnce() -> Received) {
        let shared = &self.shared;
        if shared.keep {
            let mut message = message();
            message.at = at;
            if let Ok(mut all) = shared.messages.lock() {
                all.push(message);
            }
        } else if shared.recording.load(Ordering::Relaxed)
            && let Some(seq) = parse_seq(payload)
            && let Ok(mut stamps) = shared.stamps.lock()
        {
            stamps.push((seq, at));
        }
        shared.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Every message kept so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .messages
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default()
    }

    /// How many messages arrived.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Forgets what arrived; from now on records arrival instants when `record`.
    pub fn reset(&self, record: bool) {
        self.shared.count.store(0, Ordering::Relaxed);
        if let Ok(mut stamps) = self.shared.stamps.lock() {
            stamps.clear();
        }
        if let Ok(mut all) = self.shared.messages.lock() {
            all.clear();
        }
        self.shared.recording.store(record, Ordering::Relaxed);
    }

    /// (sequence number, arrival) of every message recorded, in arrival order.
    pub fn stamps(&self) -> Vec<(u64, Instant)> {
        self.shared
            .stamps
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits (polling every 20 ms) until `n` messages arrived.
    pub async fn try_wait_for(&self, n: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() >= deadline {
                bail!(
                    "the consumer got {} of {n} messages within {timeout:?}",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The sequence number a bench payload starts with (12 digits).
pub fn parse_seq(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..12)?).ok()?.parse().ok()
}

/// How many different payloads arrived (at-least-once: duplicates count once).
pub fn distinct_payloads(received: &[Received]) -> usize {
    received
        .iter()
        .map(|m| m.payload.as_slice())
        .collect::<HashSet<_>>()
        .len()
}

/// For payloads `k{key}:{seq}`: per key, the sequence numbers in the order they first arrived.
/// Later copies of a payload (redeliveries) are skipped: this is what per-key order is about.
pub fn first_arrivals_by_key(received: &[Received]) -> HashMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for message in received {
        if !seen.insert(message.payload.as_slice()) {
            continue;
        }
        let text = String::from_utf8_lossy(&message.payload);
        let (key, seq) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("payload {text:?} is not key:seq"));
        by_key
            .entry(key.to_string())
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    by_key
}

/// Every key `k0..k{keys}` arrived with sequence numbers `0..per_key`, first arrivals in order.
pub fn assert_keys_ordered_and_complete(received: &[Received], keys: usize, per_key: u64) {
    let by_key = first_arrivals_by_key(received);
    assert_eq!(by_key.len(), keys, "every key arrived");
    let expected: Vec<u64> = (0..per_key).collect();
    for (key, seqs) in &by_key {
        assert_eq!(seqs, &expected, "key {key}: events missing or out of order");
    }
}

/// As [`assert_keys_ordered_and_complete`], and every message id once: what a broker that drops
/// a message id it already stored (Redis, JetStream) holds.
pub fn assert_exactly_once_in_order(received: &[Received], keys: usize, per_key: u64) {
    let mut ids = HashSet::new();
    for message in received {
        assert!(
            ids.insert(message.message_id.clone()),
            "message id {} stored twice",
            message.message_id
        );
    }
    assert_keys_ordered_and_complete(received, keys, per_key);
    assert_eq!(received.len(), keys * per_key as usize);
}
