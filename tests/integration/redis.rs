//! The redis sink end to end: entries with exactly the contract's fields, per-key order, MAXLEN
//! trim, dispatch-once (an event relayed again adds no second entry, also after the script cache
//! was flushed; a relay SIGKILLed mid-stream; the dedup window ending), an outage of a private
//! Redis, a stream key of the wrong type (also across the script calls of one large batch), an
//! ACL user, and TLS. Against the Redis on 127.0.0.1:6379 (`TEST_REDIS_URL`) and private
//! `redis-server` processes on free ports (`scripts/services.sh redis` installs both).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

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
async fn events_arrive_as_stream_entries_with_exactly_the_contracts_fields() {
    let db = TestDb::create().await;
    let prefix = unique("fields");
    let mut con = redis_client(&redis_url()).await;
    let binary = [0u8, 159, 146, 150, 255, b'\r', b'\n'];
    let paid = db
        .insert(
            "orders.paid",
            Some("42"),
            b"{\"type\":\"OrderPaid\"}",
            r#"{"traceparent":"00-abc-def-01","tenant":"t1"}"#,
        )
        .await;
    let raw = db.insert("binary", None, &binary, "{}").await;
    insert_keyed_sequence(&db.client, "seq", 3, 0, 40, 10).await;
    let _relay = Relay::start(
        &db.url,
        &redis_settings(&redis_url(), &format!("{prefix}:{{topic}}")),
    );

    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let ids = db.message_ids().await;

    let orders = entries(&mut con, &format!("{prefix}:orders.paid")).await;
    assert_eq!(orders.len(), 1, "one entry per event");
    let entry = &orders[0];
    assert_eq!(
        entry.names(),
        ["message_id", "topic", "key", "payload", "headers"]
    );
    assert_eq!(entry.text("message_id"), ids[&paid]);
    assert_eq!(entry.text("topic"), "orders.paid");
    assert_eq!(entry.text("key"), "42");
    assert_eq!(entry.get("payload"), Some(&b"{\"type\":\"OrderPaid\"}"[..]));
    let headers: BTreeMap<String, String> =
        serde_json::from_slice(entry.get("headers").expect("headers")).expect("headers JSON");
    assert_eq!(
        headers,
        BTreeMap::from([
            ("tenant".to_string(), "t1".to_string()),
            ("traceparent".to_string(), "00-abc-def-01".to_string()),
        ])
    );

    let raw_entries = entries(&mut con, &format!("{prefix}:binary")).await;
    assert_eq!(raw_entries.len(), 1);
    let entry = &raw_entries[0];
    assert_eq!(
        entry.names(),
        ["message_id", "topic", "payload", "headers"],
        "no key field for a null key"
    );
    assert_eq!(entry.text("message_id"), ids[&raw]);
    assert_eq!(entry.get("payload"), Some(&binary[..]), "payload verbatim");
    assert_eq!(entry.text("headers"), "{}");

    let seq = entries(&mut con, &format!("{prefix}:seq")).await;
    assert_eq!(seq.len(), 120);
    assert_each_key_once_in_order(&seq, 3, 40);
    let keys: redis::Value =
        redis_query(&mut con, redis::cmd("KEYS").arg(format!("{prefix}*"))).await;
    assert!(
        matches!(&keys, Value::Array(k) if k.len() == 3),
        "only the three streams under the prefix: {keys:?}"
    );
    delete_streams(&mut con, &prefix).await;
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
    settings.push(("OUTBOX_REDIS_DEDUP_SECS", "1".into()));
    let _relay = Relay::start(&db.url, &settings);
    let id = db.insert("t", Some("a"), b"a:0", "{}").await;
    eventually("delivered", WAIT, || async { db.undelivered().await == 0 }).await;
    let message_id = &db.message_ids().await[&id];
    let remembered: i64 = redis_query(
        &mut con,
        redis::cmd("TTL").arg(format!("outbox-relay:dedup:{{s:t}}:{message_id}")),
    )
    .await;
    // 1 or 0 seconds left, or already gone (-2) on a slow machine; never without expiry (-1).
    assert!(
        (-2..=1).contains(&remembered) && remembered != -1,
        "TTL {remembered}"
    );
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
async fn a_relay_killed_mid_stream_adds_every_event_exactly_once() {
    const KEYS: usize = 8;
    const PER_KEY: u64 = 1500;
    let db = TestDb::create().await;
    let prefix = unique("crash");
    let stream = format!("{prefix}:t");
    let mut con = redis_client(&redis_url()).await;
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_BATCH_SIZE", "2000".into()));
    insert_keyed_sequence(&db.client, "t", KEYS, 0, PER_KEY, 250).await;
    let total = KEYS as u64 * PER_KEY;

    let mut first = Relay::start(&db.url, &settings);
    eventually("the first relay added some entries", WAIT, || async {
        xlen(&mut con.clone(), &stream).await >= 2500
    })
    .await;
    first.kill();
    let added = xlen(&mut con, &stream).await;
    let marked = db.count("delivered_at IS NOT NULL").await as u64;
    assert!(added < total, "killed mid-stream: {added} of {total} added");
    println!(
        "redis sigkill: {added} entries added, {marked} marked delivered when killed; {} to be relayed again",
        added - marked.min(added)
    );

    let _second = Relay::start(&db.url, &settings);
    eventually("everything delivered after the restart", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let all = entries(&mut con, &stream).await;
    assert_eq!(all.len() as u64, total, "no entry added twice");
    let ids: HashSet<String> = all.iter().map(|e| e.text("message_id")).collect();
    let expected: HashSet<String> = db.message_ids().await.into_values().collect();
    assert_eq!(ids, expected, "every message id exactly once");
    assert_each_key_once_in_order(&all, KEYS, PER_KEY);
    delete_streams(&mut con, &prefix).await;
}

#[tokio::test]
async fn a_redis_outage_uses_no_attempts_and_loses_nothing() {
    // Persisted with every write, so that what was added before the SIGKILL is still there.
    let mut redis = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let db = TestDb::create().await;
    let mut settings = redis_settings(&redis.url(), "s:{topic}");
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);
    wait_ready(&relay, 200, WAIT).await;
    insert_keyed_sequence(&db.client, "t", 3, 0, 50, 10).await;
    eventually("first events delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    // Killed while events flow in.
    let producer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let db = connect(&url).await;
            insert_keyed_sequence(&db, "t", 3, 50, 150, 5).await;
        })
    };
    redis.kill();
    producer.await.expect("producer");
    wait_ready(&relay, 503, WAIT).await;
    eventually("the relay counts the outage", WAIT, || async {
        relay.outages().await > 0.0
    })
    .await;
    assert!(db.undelivered().await > 0, "nothing delivered while down");

    redis.restart().await;
    let mut con = redis_client(&redis.url()).await;
    assert_delivered_without_attempts(&db, WAIT).await;
    wait_ready(&relay, 200, WAIT).await;
    let all = entries(&mut con, "s:t").await;
    assert_eq!(all.len(), 450, "every event once");
    assert_each_key_once_in_order(&all, 3, 150);
}

#[tokio::test]
async fn a_stream_key_of_another_type_dead_letters_its_event_and_others_flow() {
    let db = TestDb::create().await;
    let prefix = unique("wrongtype");
    let mut con = redis_client(&redis_url()).await;
    let bad = format!("{prefix}:bad");
    let _: () = redis_query(&mut con, redis::cmd("SET").arg(&bad).arg("not a stream")).await;
    // One transaction, so that the relay's first batch holds all of them: key "a" goes first to
    // the broken stream, then to a good one; key "b" only to the good one.
    db.client
        .batch_execute(
            "BEGIN;
             INSERT INTO outbox.events (topic, key, payload) VALUES ('bad', 'a', 'a:0'::bytea);
             INSERT INTO outbox.events (topic, key, payload) VALUES ('good', 'b', 'b:0'::bytea);
             INSERT INTO outbox.events (topic, key, payload) VALUES ('good', 'a', 'a:1'::bytea);
             INSERT INTO outbox.events (topic, key, payload) VALUES ('good', 'b', 'b:1'::bytea);
             INSERT INTO outbox.events (topic, key, payload) VALUES ('good', NULL, 'none'::bytea);
             COMMIT;",
        )
        .await
        .expect("insert events");
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    let _relay = Relay::start(&db.url, &settings);

    eventually(
        "the bad event dead-lettered, the rest delivered",
        WAIT,
        || async {
            db.count("dead_lettered_at IS NOT NULL").await == 1 && db.undelivered().await == 0
        },
    )
    .await;
    let row = db
        .client
        .query_one(
            "SELECT convert_from(payload, 'UTF8'), attempts, last_error FROM outbox.events WHERE dead_lettered_at IS NOT NULL",
            &[],
        )
        .await
        .expect("dead letter");
    let (payload, attempts, error): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(payload, "a:0");
    assert_eq!(attempts, 2);
    assert!(
        error.contains("WRONGTYPE") && error.contains(&bad),
        "last_error names the cause and the stream: {error}"
    );
    let later_first: bool = db
        .client
        .query_one(
            "SELECT (SELECT delivered_at FROM outbox.events WHERE payload = 'a:1'::bytea)
                 >= (SELECT dead_lettered_at FROM outbox.events WHERE payload = 'a:0'::bytea)",
            &[],
        )
        .await
        .expect("order")
        .get(0);
    assert!(later_first, "a:1 was delivered only after a:0 was settled");
    assert_eq!(
        db.count("payload <> 'a:0'::bytea AND attempts > 0").await,
        0,
        "the other events used no attempts"
    );
    let good = entries(&mut con, &format!("{prefix}:good")).await;
    let payloads: Vec<String> = good.iter().map(|e| e.text("payload")).collect();
    // b's events went out in the first batch; a:1 only once a:0 was dead-lettered.
    assert_eq!(payloads.len(), 4, "{payloads:?}");
    assert_eq!(
        payloads
            .iter()
            .filter(|p| p.starts_with("b:"))
            .collect::<Vec<_>>(),
        ["b:0", "b:1"]
    );
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("a:1"),
        "{payloads:?}"
    );
    let kind: String = redis_query(&mut con, redis::cmd("TYPE").arg(&bad)).await;
    assert_eq!(kind, "string", "the key of another type is left alone");
    delete_streams(&mut con, &prefix).await;
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

/// An entry as the CloudEvents SDK reads it (`read_cloudevents.py`, binding "redis"): its fields
/// other than `payload`, and the payload.
fn delivered(entry: &Entry, binding: &'static str, mode: &'static str) -> Delivered {
    Delivered {
        binding,
        mode,
        headers: entry
            .fields
            .iter()
            .filter(|(name, _)| name.as_str() != "payload")
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect(),
        content_type: None,
        key: None,
        body: entry.get("payload").expect("payload").to_vec(),
    }
}

/// The redis sink in the cloudevents format, `mode` binary or structured. No CloudEvents binding
/// exists for Redis: binary mode's fields are named like the Kafka binding's headers, so the SDK's
/// Kafka binding reads them (which proves names and values are valid attributes, not that a
/// Redis consumer library exists); structured mode's payload is read with the SDK's JSON event
/// format (and its legacy `from_json`). Relayed again, no event adds a second entry.
async fn cloudevents_entries_read_back_with_the_sdk(mode: &'static str) {
    let db = TestDb::create().await;
    let prefix = unique(&format!("ce_{mode}"));
    let mut con = redis_client(&redis_url()).await;
    let ids = crate::formats::insert_cloudevents_cases(&db).await;
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_FORMAT", "cloudevents".into()));
    settings.push(("OUTBOX_CLOUDEVENTS_MODE", mode.into()));
    let _relay = Relay::start(&db.url, &settings);
    eventually("every event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    let mut all = Vec::new();
    for topic in ["orders", "blobs", "notes"] {
        let stream = entries(&mut con, &format!("{prefix}:{topic}")).await;
        assert_eq!(stream.len(), 1, "one entry per event in {topic}");
        all.extend(stream);
    }
    let message_ids = db.message_ids().await;
    let order = all
        .iter()
        .find(|e| e.text("message_id") == message_ids[&ids[0]])
        .expect("the order's entry");
    let blob = all
        .iter()
        .find(|e| e.text("message_id") == message_ids[&ids[1]])
        .expect("the blob's entry");
    if mode == "binary" {
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
    }
    assert_eq!(
        order.text("headers"),
        r#"{"trace":"abc"}"#,
        "the headers the format passes on"
    );

    let parsed = read_cloudevents(
        &all.iter()
            .map(|e| delivered(e, "redis", mode))
            .collect::<Vec<_>>(),
    );
    let reader = if mode == "binary" {
        "kafka.from_binary_event"
    } else {
        "JSONFormat.read"
    };
    assert!(parsed[0].sdk.contains(reader), "{}", parsed[0].sdk);
    crate::formats::assert_cloudevents_cases(&db, ids, &parsed, "/outbox-relay").await;
    if mode == "structured" {
        let legacy = read_cloudevents(
            &all.iter()
                .map(|e| delivered(e, "json_v1", mode))
                .collect::<Vec<_>>(),
        );
        for (new, old) in parsed.iter().zip(&legacy) {
            assert_eq!(
                (&old.id, &old.source, &old.kind, &old.subject, &old.time),
                (&new.id, &new.source, &new.kind, &new.subject, &new.time),
                "{old:?}"
            );
            assert_eq!(old.datacontenttype, new.datacontenttype);
        }
    }

    // Dispatch-once with the format's fields: relayed again, nothing is added.
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
    for topic in ["orders", "blobs", "notes"] {
        assert_eq!(xlen(&mut con, &format!("{prefix}:{topic}")).await, 1);
    }
    delete_streams(&mut con, &prefix).await;
}

#[tokio::test]
async fn cloudevents_binary_entries_read_back_with_the_sdk() {
    cloudevents_entries_read_back_with_the_sdk("binary").await;
}

#[tokio::test]
async fn cloudevents_structured_entries_read_back_with_the_sdk() {
    cloudevents_entries_read_back_with_the_sdk("structured").await;
}

#[tokio::test]
async fn masstransit_entries_hold_the_envelope_and_a_payload_that_is_not_json_is_dead_lettered() {
    let db = TestDb::create().await;
    let prefix = unique("masstransit");
    let mut con = redis_client(&redis_url()).await;
    let created = db
        .insert(
            "orders",
            Some("42"),
            b"{\"orderId\":42}",
            r#"{"type":"Contracts:OrderCreated","tenant":"t1"}"#,
        )
        .await;
    let not_json = db.insert("orders", Some("44"), b"not json", "{}").await;
    let after = db.insert("orders", Some("44"), b"{\"n\":2}", "{}").await;
    let mut settings = redis_settings(&redis_url(), &format!("{prefix}:{{topic}}"));
    settings.push(("OUTBOX_FORMAT", "masstransit".into()));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    let _relay = Relay::start(&db.url, &settings);
    eventually(
        "two delivered, the one that is not JSON dead-lettered",
        WAIT,
        || async {
            db.count("delivered_at IS NOT NULL").await == 2
                && db.count("dead_lettered_at IS NOT NULL").await == 1
        },
    )
    .await;
    let ids = db.message_ids().await;
    let stream = entries(&mut con, &format!("{prefix}:orders")).await;
    let sent: Vec<String> = stream.iter().map(|e| e.text("message_id")).collect();
    assert_eq!(
        sent,
        [ids[&created].clone(), ids[&after].clone()],
        "the event that is not JSON added nothing; its key's later event followed"
    );
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
    let envelope: serde_json::Value =
        serde_json::from_slice(entry.get("payload").expect("payload")).expect("JSON");
    let rows = rows(&db.client).await;
    crate::formats::assert_masstransit_envelope(
        &envelope,
        &ids[&created],
        "Contracts:OrderCreated",
        serde_json::json!({"orderId": 42}),
        serde_json::json!({"tenant": "t1"}),
        rows[&ids[&created]].created_at,
    );
    let reason: String = db
        .client
        .query_one(
            "SELECT last_error FROM outbox.events WHERE id = $1",
            &[&not_json],
        )
        .await
        .expect("dead letter")
        .get(0);
    assert!(reason.contains("not JSON"), "{reason}");
    delete_streams(&mut con, &prefix).await;
}
