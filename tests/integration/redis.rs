//! The redis sink end to end: the conformance suite (entries with exactly the contract's fields,
//! a relay SIGKILLed mid-stream adding every event once, an outage of a private Redis, a stream
//! key of the wrong type, the formats' fields), MAXLEN trim, dispatch-once (an event relayed
//! again adds no second entry, also after the script cache was flushed; the dedup window
//! ending), a stream key of the wrong type across the script calls of one large batch, an ACL
//! user, and TLS. Against the Redis on 127.0.0.1:6379 (`TEST_REDIS_URL`) and private
//! `redis-server` processes on free ports (`scripts/services.sh redis` installs both).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis::Value;

use crate::harness::conformance::*;
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Redis in the conformance suite: streams `{prefix}:{topic}` followed by a consumer, on the
/// shared Redis or, when the scenario takes it away, on a private one that persists every write.
pub struct RedisSink {
    url: String,
    prefix: String,
    streams: Vec<String>,
    consumer: RedisConsumer,
    private: Option<PrivateRedis>,
}

impl RedisSink {
    /// Every entry of topic `topic`'s stream.
    async fn entries(&self, topic: &str) -> Vec<Entry> {
        let mut con = redis_client(&self.url).await;
        entries(&mut con, &self.destination(topic)).await
    }
}

impl SinkUnderTest for RedisSink {
    const CARRIES_KEY: bool = true;
    type Consumer = RedisConsumer;

    async fn open(topics: &[&str], outage: bool) -> Self {
        let private = match outage {
            // Persisted with every write, so that what was added before a SIGKILL is still there.
            true => {
                Some(PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await)
            }
            false => None,
        };
        let url = private.as_ref().map_or_else(redis_url, PrivateRedis::url);
        let prefix = unique("conformance");
        let streams: Vec<String> = topics.iter().map(|t| format!("{prefix}:{t}")).collect();
        let consumer =
            RedisConsumer::start(&url, streams.clone(), Inbox::keeping()).expect("consumer");
        RedisSink {
            url,
            prefix,
            streams,
            consumer,
            private,
        }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        redis_settings(&self.url, &format!("{}:{{topic}}", self.prefix))
    }

    fn consumer(&self) -> &RedisConsumer {
        &self.consumer
    }

    fn destination(&self, topic: &str) -> String {
        format!("{}:{topic}", self.prefix)
    }

    async fn stored(&self) -> Option<u64> {
        let mut con = redis_client(&self.url).await;
        let mut total = 0;
        for stream in &self.streams {
            total += xlen(&mut con, stream).await;
        }
        Some(total)
    }

    async fn fail(&mut self) {
        self.private.as_mut().expect("a private Redis").kill();
    }

    async fn restore(&mut self) {
        self.private
            .as_mut()
            .expect("a private Redis")
            .restart()
            .await;
        self.consumer = RedisConsumer::start(&self.url, self.streams.clone(), Inbox::keeping())
            .expect("consumer");
    }

    /// A key of another type where the event's stream would be.
    async fn refusal(&self) -> Refusal {
        let mut con = redis_client(&self.url).await;
        let key = self.destination("refused");
        let _: () = redis_query(&mut con, redis::cmd("SET").arg(&key).arg("not a stream")).await;
        Refusal {
            topic: "refused".into(),
            payload: b"refused".to_vec(),
            reason: |e| e.contains("WRONGTYPE"),
            uses_attempts: true,
        }
    }

    /// Fields other than `payload` as headers: no CloudEvents binding exists for Redis; binary
    /// mode's fields are named like the Kafka binding's headers, so the SDK's Kafka binding reads
    /// them (which proves names and values are valid attributes, not that a Redis consumer
    /// library exists); structured mode's payload is read with the SDK's JSON event format.
    fn to_sdk(&self, message: &Received, mode: &'static str) -> Delivered {
        Delivered {
            binding: "redis",
            mode,
            headers: message.headers.clone(),
            content_type: None,
            key: None,
            body: message.payload.clone(),
        }
    }

    fn sdk_reader(&self, mode: &'static str) -> Option<String> {
        Some(match mode {
            "binary" => "kafka.from_binary_event".into(),
            _ => "JSONFormat.read".into(),
        })
    }

    /// Exactly the contract's fields, in order; only the scenario's three streams.
    async fn after_arrival(&self, arrival: &Arrival<'_>) {
        let ids = arrival.db.message_ids().await;
        let orders = self.entries("orders.paid").await;
        assert_eq!(orders.len(), 1, "one entry per event");
        let entry = &orders[0];
        assert_eq!(
            entry.names(),
            ["message_id", "topic", "key", "payload", "headers"]
        );
        assert_eq!(entry.text("message_id"), ids[&arrival.paid]);
        assert_eq!(entry.text("topic"), "orders.paid");
        assert_eq!(entry.text("key"), "42");
        let headers: BTreeMap<String, String> =
            serde_json::from_slice(entry.get("headers").expect("headers")).expect("headers JSON");
        assert_eq!(
            headers,
            BTreeMap::from([
                ("tenant".to_string(), "t1".to_string()),
                ("traceparent".to_string(), "00-abc-def-01".to_string()),
            ])
        );
        let raw_entries = self.entries("orders.binary").await;
        assert_eq!(raw_entries.len(), 1);
        let entry = &raw_entries[0];
        assert_eq!(
            entry.names(),
            ["message_id", "topic", "payload", "headers"],
            "no key field for a null key"
        );
        assert_eq!(entry.get("payload"), Some(BINARY), "payload verbatim");
        assert_eq!(entry.text("headers"), "{}");
        let mut con = redis_client(&self.url).await;
        let keys: Value = redis_query(
            &mut con,
            redis::cmd("KEYS").arg(format!("{}*", self.prefix)),
        )
        .await;
        assert!(
            matches!(&keys, Value::Array(k) if k.len() == 3),
            "only the three streams under the prefix: {keys:?}"
        );
    }

    async fn during_outage(&self, relay: &Relay) {
        eventually("the relay counts the outage", WAIT, || async {
            relay.outages().await > 0.0
        })
        .await;
    }

    /// The reason names the stream; the key of another type is left alone.
    async fn after_event_fault(&self, fault: &EventFault<'_>) {
        let bad = self.destination("refused");
        assert!(
            fault.last_error.contains(&bad),
            "last_error names the cause and the stream: {}",
            fault.last_error
        );
        let mut con = redis_client(&self.url).await;
        let kind: String = redis_query(&mut con, redis::cmd("TYPE").arg(&bad)).await;
        assert_eq!(kind, "string", "the key of another type is left alone");
    }

    /// The format's fields, the headers it passes on, the SDK's legacy reader, and dispatch-once:
    /// relayed again, no event adds a second entry.
    async fn after_cloudevents(&self, cloudevents: &CloudEvents<'_>) {
        let mut all = Vec::new();
        for topic in ["orders", "blobs", "notes"] {
            let stream = self.entries(topic).await;
            assert_eq!(stream.len(), 1, "one entry per event in {topic}");
            all.extend(stream);
        }
        let ids = cloudevents.db.message_ids().await;
        let entry = |id: i64| {
            all.iter()
                .find(|e| e.text("message_id") == ids[&id])
                .expect("the event's entry")
        };
        let (order, blob) = (entry(cloudevents.ids[0]), entry(cloudevents.ids[1]));
        if cloudevents.mode == "binary" {
            assert_binary_fields(order, blob);
        } else {
            assert_eq!(
                order.names(),
                [
                    "message_id",
                    "topic",
                    "key",
                    "content-type",
                    "payload",
                    "headers"
                ]
            );
            assert_eq!(order.text("content-type"), "application/cloudevents+json");
            assert_legacy_reader_agrees(self, cloudevents);
        }
        assert_eq!(
            order.text("headers"),
            r#"{"trace":"abc"}"#,
            "the headers the format passes on"
        );
        let db = cloudevents.db;
        db.client
            .execute(
                "UPDATE outbox.events SET delivered_at = NULL, available_at = now()",
                &[],
            )
            .await
            .expect("make events due again");
        eventually("relayed again", WAIT, || async {
            db.undelivered().await == 0
        })
        .await;
        assert_eq!(
            self.stored().await,
            Some(3),
            "relayed again, nothing is added"
        );
    }

    async fn after_masstransit(&self, _masstransit: &MassTransit<'_>) {
        let stream = self.entries("orders").await;
        let entry = &stream[0];
        assert_eq!(
            entry.names(),
            [
                "message_id",
                "topic",
                "key",
                "content-type",
                "payload",
                "headers"
            ]
        );
        assert_eq!(
            entry.text("content-type"),
            "application/vnd.masstransit+json"
        );
        assert_eq!(
            entry.text("headers"),
            "{}",
            "the event's headers travel inside the envelope"
        );
    }

    async fn close(self) {
        if self.private.is_none() {
            delete_streams(&mut redis_client(&self.url).await, &self.prefix).await;
        }
    }
}

conformance_tests!(RedisSink);

/// Binary CloudEvents' fields: the attributes after the key, named like Kafka's headers.
fn assert_binary_fields(order: &Entry, blob: &Entry) {
    assert_eq!(
        order.names(),
        [
            "message_id",
            "topic",
            "key",
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
            "content-type",
            "payload",
            "headers"
        ]
    );
    assert_eq!(order.text("ce_id"), order.text("message_id"));
    assert_eq!(order.get("payload"), Some(&b"{\"orderId\":42}"[..]));
    assert_eq!(
        blob.names(),
        [
            "message_id",
            "topic",
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "content-type",
            "payload",
            "headers"
        ],
        "no key, no subject"
    );
    assert_eq!(blob.get("payload"), Some(&[0xff, 0x00, 0x01][..]));
}

/// Structured mode read with the SDK's legacy `from_json` agrees on every attribute.
fn assert_legacy_reader_agrees(sink: &RedisSink, cloudevents: &CloudEvents<'_>) {
    let legacy = read_cloudevents(
        &cloudevents
            .received
            .iter()
            .map(|m| Delivered {
                binding: "json_v1",
                ..sink.to_sdk(m, cloudevents.mode)
            })
            .collect::<Vec<_>>(),
    );
    for (new, old) in cloudevents.parsed.iter().zip(&legacy) {
        assert_eq!(
            (&old.id, &old.source, &old.kind, &old.subject, &old.time),
            (&new.id, &new.source, &new.kind, &new.subject, &new.time),
            "{old:?}"
        );
        assert_eq!(old.datacontenttype, new.datacontenttype);
    }
}

/// Per key, the sequence numbers of payloads `k:seq` in stream order (no duplicates skipped: with
/// dispatch-once there must be none).
fn sequences_by_key(entries: &[Entry]) -> HashMap<String, Vec<u64>> {
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for entry in entries {
        let payload = entry.text("payload");
        let (key, seq) = payload.split_once(':').expect("payload key:seq");
        assert_eq!(entry.text("key"), key, "the key field is the event's key");
        by_key
            .entry(key.to_string())
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    by_key
}

fn assert_each_key_once_in_order(entries: &[Entry], keys: usize, per_key: u64) {
    let by_key = sequences_by_key(entries);
    assert_eq!(by_key.len(), keys, "every key arrived");
    let expected: Vec<u64> = (0..per_key).collect();
    for (key, seqs) in &by_key {
        assert_eq!(
            seqs, &expected,
            "key {key}: entries missing, duplicated or out of order"
        );
    }
}

#[tokio::test]
async fn maxlen_trims_each_stream_approximately() {
    let db = TestDb::create().await;
    let prefix = unique("maxlen");
    let stream = format!("{prefix}:t");
    let mut con = redis_client(&redis_url()).await;
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_REDIS_MAXLEN", "10".into()));
    insert_keyed_sequence(&db.client, "t", 1, 0, 300, 50).await;
    let _relay = Relay::start(&db.url, &settings);
    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let len = xlen(&mut con, &stream).await;
    // `MAXLEN ~` removes whole radix-tree nodes (100 entries by default): between 10 and 300.
    assert!((10..300).contains(&len), "XLEN {len} after 300 events");
    let kept = entries(&mut con, &stream).await;
    assert_eq!(
        kept.last().map(|e| e.text("payload")),
        Some("k0:299".to_string()),
        "trimming removes the oldest entries"
    );
    delete_streams(&mut con, &prefix).await;

    // Without MAXLEN nothing is trimmed.
    let db = TestDb::create().await;
    let prefix = unique("nomaxlen");
    insert_keyed_sequence(&db.client, "t", 1, 0, 300, 50).await;
    let _relay = Relay::start(
        &db.url,
        &redis_settings(&redis_url(), &format!("{prefix}:{{topic}}")),
    );
    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(xlen(&mut con, &format!("{prefix}:t")).await, 300);
    delete_streams(&mut con, &prefix).await;
}

#[tokio::test]
async fn an_event_relayed_again_adds_no_second_entry_also_after_a_script_flush() {
    let redis = PrivateRedis::start(&[]).await;
    let mut con = redis_client(&redis.url()).await;
    let db = TestDb::create().await;
    let relay = Relay::start(&db.url, &redis_settings(&redis.url(), "s:{topic}"));
    insert_keyed_sequence(&db.client, "t", 4, 0, 10, 10).await;
    eventually("first 40 delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(xlen(&mut con, "s:t").await, 40);

    // The script cache is emptied (as by a restart or SCRIPT FLUSH), then every event is made
    // due again as if its delivery had never been recorded: the relay publishes all 40 again,
    // plus 20 new ones.
    let _: () = redis_query(&mut con, redis::cmd("SCRIPT").arg("FLUSH")).await;
    db.client
        .execute(
            "UPDATE outbox.events SET delivered_at = NULL, available_at = now()",
            &[],
        )
        .await
        .expect("make events due again");
    insert_keyed_sequence(&db.client, "t", 4, 10, 15, 5).await;
    eventually("all 60 delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let all = entries(&mut con, "s:t").await;
    assert_eq!(all.len(), 60, "the 40 relayed again added no entries");
    assert_each_key_once_in_order(&all, 4, 15);
    let ids: HashSet<String> = all.iter().map(|e| e.text("message_id")).collect();
    let expected: HashSet<String> = db.message_ids().await.into_values().collect();
    assert_eq!(ids, expected, "every message id exactly once");
    assert!(!relay.stderr().contains("panicked"), "{}", relay.stderr());
}

#[tokio::test]
async fn dedup_ends_after_redis_dedup_secs() {
    let redis = PrivateRedis::start(&[]).await;
    let mut con = redis_client(&redis.url()).await;
    let db = TestDb::create().await;
    let mut settings = redis_settings(&redis.url(), "s:{topic}");
    settings.push(("OUTBOX_REDIS_DEDUP_SECS", "5".into()));
    let _relay = Relay::start(&db.url, &settings);
    let id = db.insert("t", Some("a"), b"a:0", "{}").await;
    eventually("delivered", WAIT, || async { db.undelivered().await == 0 }).await;
    let message_id = &db.message_ids().await[&id];
    let remembered: i64 = redis_query(
        &mut con,
        redis::cmd("TTL").arg(format!("outbox-relay:dedup:{{s:t}}:{message_id}")),
    )
    .await;
    // Written with the entry and expiring within the window: not absent (-2: no dedup key
    // written) and not without expiry (-1).
    assert!((1..=5).contains(&remembered), "TTL {remembered}");
    eventually("the message id is forgotten", WAIT, || async {
        let exists: i64 = redis_query(
            &mut con.clone(),
            redis::cmd("EXISTS").arg(format!("outbox-relay:dedup:{{s:t}}:{message_id}")),
        )
        .await;
        exists == 0
    })
    .await;
    db.client
        .execute(
            "UPDATE outbox.events SET delivered_at = NULL, available_at = now()",
            &[],
        )
        .await
        .expect("make the event due again");
    eventually("a second entry once the id is forgotten", WAIT, || async {
        xlen(&mut con.clone(), "s:t").await == 2
    })
    .await;
}

#[tokio::test]
async fn an_acl_user_limited_to_what_the_sink_needs_publishes() {
    let redis = PrivateRedis::start(&[]).await;
    let mut admin = redis_client(&redis.url()).await;
    let password = "s3cret-relay-pw";
    let _: () = redis_query(
        &mut admin,
        redis::cmd("ACL").arg(&[
            "SETUSER",
            "relay",
            "on",
            &format!(">{password}"),
            "resetkeys",
            "~events:*",
            "~outbox-relay:dedup:*",
            "resetchannels",
            "-@all",
            "+script|load",
            "+evalsha",
            "+xadd",
            "+get",
            "+set",
        ]),
    )
    .await;
    let url = format!("redis://relay:{password}@127.0.0.1:{}", redis.port);
    let db = TestDb::create().await;
    let relay = Relay::start(&db.url, &redis_settings(&url, "events:{topic}"));
    insert_keyed_sequence(&db.client, "t", 2, 0, 20, 10).await;
    eventually("delivered as the ACL user", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let all = entries(&mut admin, "events:t").await;
    assert_each_key_once_in_order(&all, 2, 20);

    // A stream key outside the user's patterns is refused as that event's fault.
    let db2 = TestDb::create().await;
    let mut settings = redis_settings(&url, "elsewhere:{topic}");
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let denied = Relay::start(&db2.url, &settings);
    db2.insert("t", Some("x"), b"x:0", "{}").await;
    eventually("dead-lettered: NOPERM on its stream key", WAIT, || async {
        db2.count("dead_lettered_at IS NOT NULL AND last_error LIKE '%NOPERM%'")
            .await
            == 1
    })
    .await;

    // A wrong password is an outage that never shows the password.
    let wrong = format!("redis://relay:wrong-{password}@127.0.0.1:{}", redis.port);
    let db3 = TestDb::create().await;
    let refused = Relay::start(&db3.url, &redis_settings(&wrong, "events:{topic}"));
    db3.insert("t", Some("y"), b"y:0", "{}").await;
    wait_ready(&refused, 503, WAIT).await;
    eventually("the refused login is logged", WAIT, || async {
        refused.stderr().contains("authentication failed")
    })
    .await;
    assert_eq!(db3.undelivered().await, 1);
    assert_eq!(db3.count("attempts > 0").await, 0, "no attempt used");
    for stderr in [relay.stderr(), denied.stderr(), refused.stderr()] {
        assert!(!stderr.contains(password), "the password is never logged");
    }
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, made with the openssl CLI;
/// returns the directory holding `ca.crt`, `server.crt` and `server.key`.
fn make_certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("redis_tls"));
    std::fs::create_dir_all(&dir).expect("tls dir");
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("san.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            ec[0],
            ec[1],
            ec[2],
            ec[3],
            ec[4],
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=outbox-relay test CA",
        ],
        &[
            "req",
            ec[0],
            ec[1],
            ec[2],
            ec[3],
            ec[4],
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run openssl (scripts/services.sh redis installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    dir
}

#[tokio::test]
async fn rediss_urls_publish_over_tls_and_verify_the_server() {
    let certs = make_certificates();
    let tls_port = free_port();
    let path = |name: &str| certs.join(name).display().to_string();
    // One server, TLS on `tls_port` for the relay, plain on its own port for the test's reads.
    let redis = PrivateRedis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ])
    .await;
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // The CA is not trusted: the relay refuses the server and publishes nothing.
    let db = TestDb::create().await;
    let untrusted = Relay::start(&db.url, &redis_settings(&url, "tls:{topic}"));
    db.insert("t", Some("a"), b"a:0", "{}").await;
    wait_ready(&untrusted, 503, WAIT).await;
    eventually("the certificate is refused", WAIT, || async {
        untrusted.stderr().contains("UnknownIssuer")
    })
    .await;
    drop(untrusted);
    assert_eq!(db.undelivered().await, 1);

    // SSL_CERT_FILE makes the CA trusted (rustls-native-certs reads it).
    let mut settings = redis_settings(&url, "tls:{topic}");
    settings.push(("SSL_CERT_FILE", path("ca.crt")));
    let _relay = Relay::start(&db.url, &settings);
    for i in 1..20 {
        db.insert("t", Some("a"), format!("a:{i}").as_bytes(), "{}")
            .await;
    }
    eventually("delivered over TLS", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let mut con = redis_client(&redis.url()).await;
    let all = entries(&mut con, "tls:t").await;
    let payloads: Vec<String> = all.iter().map(|e| e.text("payload")).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("a:{i}")).collect();
    assert_eq!(payloads, expected);
}

#[tokio::test]
async fn a_batch_split_into_several_calls_keeps_a_refused_keys_later_events_back() {
    let db = TestDb::create().await;
    let prefix = unique("chunks");
    let mut con = redis_client(&redis_url()).await;
    let _: () = redis_query(
        &mut con,
        redis::cmd("SET").arg(format!("{prefix}:bad")).arg("x"),
    )
    .await;
    // 5 MB each: more than one script call's 8 MB, all in one batch of the relay.
    let big = |tag: &str| {
        let mut payload = format!("{tag}:").into_bytes();
        payload.resize(5 * 1024 * 1024, b'.');
        payload
    };
    db.client.batch_execute("BEGIN").await.expect("begin");
    db.insert("bad", Some("a"), &big("a0"), "{}").await;
    db.insert("good", Some("a"), &big("a1"), "{}").await;
    db.insert("good", Some("b"), &big("b0"), "{}").await;
    db.client.batch_execute("COMMIT").await.expect("commit");
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    settings.push(("OUTBOX_BATCH_MAX_BYTES", (64 * 1024 * 1024).to_string()));
    let _relay = Relay::start(&db.url, &settings);
    eventually("a0 dead-lettered, the rest delivered", WAIT, || async {
        db.count("dead_lettered_at IS NOT NULL").await == 1 && db.undelivered().await == 0
    })
    .await;
    let good = entries(&mut con, &format!("{prefix}:good")).await;
    let tags: Vec<String> = good
        .iter()
        .map(|e| e.text("payload")[..2].to_string())
        .collect();
    // a1 was held back from the second call after a0 was refused in the first, so b0 came first.
    assert_eq!(tags, ["b0", "a1"]);
    delete_streams(&mut con, &prefix).await;
}

#[tokio::test]
async fn a_connection_redis_closed_while_idle_is_replaced_without_an_outage() {
    // Redis closes connections idle for a second.
    let redis = PrivateRedis::start(&["--timeout", "1"]).await;
    let mut con = redis_client(&redis.url()).await;
    let db = TestDb::create().await;
    let relay = Relay::start(&db.url, &redis_settings(&redis.url(), "s:{topic}"));
    db.insert("t", Some("a"), b"a:0", "{}").await;
    eventually("the first event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    // Only the test's own connection is left once Redis closed the relay's.
    eventually("Redis closed the relay's idle connection", WAIT, || async {
        let _: String = redis_query(&mut con.clone(), &redis::cmd("PING")).await;
        let clients: String = redis_query(&mut con.clone(), redis::cmd("CLIENT").arg("LIST")).await;
        clients.lines().count() == 1
    })
    .await;
    db.insert("t", Some("a"), b"a:1", "{}").await;
    eventually("the second event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(
        relay.outages().await,
        0.0,
        "a closed idle connection is no outage"
    );
    assert_eq!(xlen(&mut con, "s:t").await, 2);
}
