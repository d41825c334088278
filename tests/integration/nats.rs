//! The relay end to end with NATS JetStream: the conformance suite (fields and `Nats-Msg-Id`
//! intact in key order, a SIGKILL mid-stream where JetStream's duplicate window keeps one copy
//! per message id, an outage of a private nats-server, a subject no stream captures, MassTransit),
//! a replay of delivered rows after a restart (no second message stored), a server without
//! JetStream (an outage, not the event's fault), the kinds of events the sink
//! refuses, logins (user and password, a creds file) and TLS. Every test has its own database,
//! stream and subjects; outages use private servers on free ports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::conformance::*;
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// JetStream in the conformance suite: a stream capturing `{prefix}.{topic}` of the scenario's
/// topics only (any other subject is captured by none), read from its first message; on a
/// private server when the scenario takes it away.
pub struct NatsSink {
    url: String,
    stream: NatsStream,
    consumer: NatsConsumer,
    server: Option<NatsServer>,
}

impl SinkUnderTest for NatsSink {
    const CARRIES_KEY: bool = false;
    type Consumer = NatsConsumer;

    async fn open(topics: &[&str], outage: bool) -> Self {
        let server = match outage {
            true => Some(NatsServer::start(&["-js"]).await),
            false => None,
        };
        let url = server.as_ref().map_or_else(nats_url, NatsServer::url);
        let stream = NatsStream::create_capturing(&url, topics).await;
        let consumer = stream.consumer(Inbox::keeping());
        NatsSink {
            url,
            stream,
            consumer,
            server,
        }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        nats_settings(&self.url, &self.stream.template())
    }

    fn consumer(&self) -> &NatsConsumer {
        &self.consumer
    }

    fn destination(&self, topic: &str) -> String {
        format!("{}.{topic}", self.stream.prefix)
    }

    async fn stored(&self) -> Option<u64> {
        Some(self.stream.count().await)
    }

    async fn fail(&mut self) {
        self.server.as_mut().expect("a private server").stop();
    }

    /// The server again, with the stream from its store, and a consumer of it.
    async fn restore(&mut self) {
        self.server
            .as_mut()
            .expect("a private server")
            .start_again()
            .await;
        self.stream = self.stream.reconnect(&self.url).await;
        self.consumer = self.stream.consumer(Inbox::keeping());
    }

    /// A subject no stream captures.
    async fn refusal(&self) -> Refusal {
        Refusal {
            topic: "refused".into(),
            payload: b"refused".to_vec(),
            reason: |e| e.contains("no JetStream stream captures subject"),
            uses_attempts: true,
        }
    }

    async fn during_outage(&self, relay: &Relay) {
        eventually("reconnects are counted", WAIT, || async {
            relay
                .metric("outbox_relay_reconnects_total")
                .await
                .unwrap_or(0.0)
                >= 2.0
        })
        .await;
    }

    async fn close(self) {
        if self.server.is_none() {
            self.stream.delete().await;
        }
    }
}

conformance_tests!(NatsSink: arrival, killed_mid_stream, outage, event_fault, masstransit);

/// Every delivered row put back (`delivered_at = NULL`) and a new relay started: it publishes all
/// 40 again (a core subscriber sees each twice), and JetStream's duplicate window, keyed by
/// `Nats-Msg-Id`, stores none of them a second time.
#[tokio::test]
async fn an_event_relayed_again_after_a_restart_stores_no_second_message() {
    let url = nats_url();
    let stream = NatsStream::create(&url).await;
    let published = stream
        .subscribe(&url, Inbox::keeping())
        .await
        .expect("subscribe");
    let db = TestDb::create().await;
    let settings = nats_settings(&url, &stream.template());
    let mut relay = Relay::start(&db.url, &settings);
    insert_keyed_sequence(&db.client, "t", 4, 0, 10, 10).await;
    eventually("the first 40 delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    eventually("the stream holds 40", WAIT, || async {
        stream.count().await == 40
    })
    .await;
    relay.stop().await.expect("the first relay stops");

    // As if no delivery had been recorded, then 20 new events; a new relay.
    db.client
        .execute(
            "UPDATE outbox.events SET delivered_at = NULL, available_at = now()",
            &[],
        )
        .await
        .expect("make events due again");
    insert_keyed_sequence(&db.client, "t", 4, 10, 15, 5).await;
    let relay = Relay::start(&db.url, &settings);
    eventually("all 60 delivered again", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    // What was published, duplicates included: the 40 went out twice.
    eventually("100 publishes seen by a core subscriber", WAIT, || async {
        published.count() >= 100
    })
    .await;
    assert_eq!(
        relay.delivered().await,
        Some(60),
        "the new relay published all 60"
    );

    let stored = stream.read_all().await;
    assert_eq!(
        stored.len(),
        60,
        "the 40 published again were not stored again"
    );
    let ids: std::collections::HashSet<&str> =
        stored.iter().map(|m| m.message_id.as_str()).collect();
    let expected: std::collections::HashSet<String> =
        db.message_ids().await.into_values().collect();
    assert_eq!(
        ids,
        expected.iter().map(String::as_str).collect(),
        "every message id stored exactly once"
    );
    for (key, seqs) in first_arrivals_by_key(&stored) {
        assert_eq!(seqs, (0..15).collect::<Vec<u64>>(), "key {key} in order");
    }
    stream.delete().await;
}

#[tokio::test]
async fn a_server_without_jetstream_is_an_outage_not_the_events_fault() {
    let db = TestDb::create().await;
    // The stream is made first, in the server's store; the server then runs without JetStream
    // (core NATS only: every publish would get "no responders", as for a subject no stream
    // captures). The relay does not connect: JetStream does not answer.
    let with_js = vec!["-js".to_string()];
    let mut server = NatsServer::start(&["-js"]).await;
    let stream = NatsStream::create(&server.url()).await;
    let prefix = stream.prefix.clone();
    server.restart(&[]).await;
    let mut settings = nats_settings(&server.url(), &format!("{prefix}.{{topic}}"));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);
    insert_keyed_sequence(&db.client, "t", 2, 0, 10, 10).await;
    eventually(
        "the missing JetStream keeps the sink down",
        WAIT,
        || async {
            relay
                .metric("outbox_relay_reconnects_total")
                .await
                .unwrap_or(0.0)
                >= 2.0
        },
    )
    .await;
    assert_eq!(relay.get("/readyz").await.map(|r| r.0), Some(503));
    assert!(
        relay
            .stderr()
            .contains("does not answer JetStream requests"),
        "the log names JetStream:\n{}",
        relay.stderr()
    );

    // The same server with JetStream: the stream is back from the store, and delivered.
    server.restart(&with_js).await;
    eventually("delivered once JetStream is there", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    // Restarted without JetStream while the relay is connected: its client reconnects and its
    // publishes get "no responders"; asking the JetStream API tells an outage. (Should the relay
    // notice the restart first, its new connection finds no JetStream: an outage too.)
    server.restart(&[]).await;
    insert_keyed_sequence(&db.client, "t", 2, 10, 20, 10).await;
    eventually(
        "publishes without JetStream are an outage",
        WAIT,
        || async { relay.sees_an_outage().await },
    )
    .await;
    assert!(db.undelivered().await > 0);
    if relay.outages().await >= 1.0 {
        assert!(
            relay
                .stderr()
                .contains("JetStream did not answer a publish"),
            "{}",
            relay.stderr()
        );
    }

    server.restart(&with_js).await;
    assert_delivered_without_attempts(&db, WAIT).await;
    let stream = stream.reconnect(&server.url()).await;
    assert_exactly_once_in_order(&stream.read_all().await, 2, 20);
}

#[tokio::test]
async fn an_event_no_stream_captures_is_dead_lettered_and_others_continue() {
    let db = TestDb::create().await;
    let stream = NatsStream::create(&nats_url()).await;
    // Topics under `good.` go to `{prefix}.good.*`, which the stream captures; `nowhere.*` goes to
    // a subject outside it.
    let template = format!("{}.{{topic}}", stream.prefix);
    let outside = unique("nowhere");
    let mut settings = nats_settings(&nats_url(), "{topic}");
    settings.push(("OUTBOX_MAX_ATTEMPTS", "2".into()));
    settings.push(("OUTBOX_RETRY_BASE_DELAY_MS", "20".into()));
    settings.push(("OUTBOX_RETRY_MAX_DELAY_MS", "100".into()));
    let good = |t: &str| template.replace("{topic}", t);

    let before = db.insert(&good("a"), Some("a"), b"a:0", "{}").await;
    let unroutable = db
        .insert(&format!("{outside}.x"), Some("a"), b"x", "{}")
        .await;
    let after = db.insert(&good("a"), Some("a"), b"a:1", "{}").await;
    let reserved = db
        .insert(&good("b"), Some("b"), b"r", r#"{"Nats-Rollup":"all"}"#)
        .await;
    let bad_subject = db.insert("has space", Some("c"), b"s", "{}").await;
    let other = db.insert(&good("b"), Some("b"), b"b:0", "{}").await;
    let keyless = db.insert(&good("e"), None, b"e:0", "{}").await;
    // Larger than the server's max_payload (1 MiB by default).
    let too_large = db
        .insert(&good("f"), Some("f"), &vec![b'x'; 1_100_000], "{}")
        .await;
    let relay = Relay::start(&db.url, &settings);

    eventually(
        "good events delivered and bad ones dead-lettered",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    let dead: BTreeMap<i64, (String, i32)> = db
        .client
        .query(
            "SELECT id, last_error, attempts FROM outbox.dead_letters",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(
        dead.keys().copied().collect::<Vec<_>>(),
        vec![unroutable, reserved, bad_subject, too_large],
        "{dead:?}"
    );
    assert!(dead[&too_large].0.contains("max_payload"), "{dead:?}");
    assert!(
        dead[&unroutable]
            .0
            .contains("no JetStream stream captures subject"),
        "{dead:?}"
    );
    assert_eq!(dead[&unroutable].1, 2, "both attempts used: {dead:?}");
    assert!(dead[&reserved].0.contains("Nats-Rollup"), "{dead:?}");
    assert!(dead[&bad_subject].0.contains("white space"), "{dead:?}");
    let delivered = db.delivered_ids().await;
    assert_eq!(delivered, vec![before, after, other, keyless]);
    let received = stream.read_all().await;
    let payloads: Vec<&[u8]> = received.iter().map(|m| m.payload.as_slice()).collect();
    let position = |p: &[u8]| payloads.iter().position(|x| *x == p);
    assert_eq!(received.len(), 4, "{payloads:?}");
    assert!(position(b"a:0") < position(b"a:1"), "key a in order");
    // a:1 waited for the verdict on the event before it: stored only after it was dead-lettered.
    let stored = stream
        .js
        .get_stream(&stream.name)
        .await
        .expect("stream")
        .get_last_raw_message_by_subject(&good("a"))
        .await
        .expect("last message of key a's subject");
    assert_eq!(stored.payload.as_ref(), b"a:1");
    let dead_lettered: f64 = db
        .client
        .query_one(
            "SELECT extract(epoch FROM dead_lettered_at)::float8 FROM outbox.events WHERE id = $1",
            &[&unroutable],
        )
        .await
        .expect("dead_lettered_at")
        .get(0);
    let stored_at = stored.time.unix_timestamp_nanos() as f64 / 1e9;
    assert!(
        stored_at >= dead_lettered,
        "a:1 stored at {stored_at}, before its key's earlier event was settled at {dead_lettered}"
    );
    assert_eq!(
        relay.outages().await,
        0.0,
        "a missing stream is not an outage"
    );
    stream.delete().await;
}

#[tokio::test]
async fn a_server_that_wants_a_password_is_reached_and_the_password_not_logged() {
    let db = TestDb::create().await;
    let password = format!("pw{}", unique("s"));
    let server = NatsServer::start(&["-js", "--user", "relay", "--pass", &password]).await;
    let url = format!("nats://relay:{password}@127.0.0.1:{}", server.port);
    let client =
        async_nats::ConnectOptions::with_user_and_password("relay".into(), password.clone())
            .connect(server.url())
            .await
            .expect("connect with the password");
    let stream = NatsStream::create_on(client).await;

    // A wrong password: an outage, named in the log without the password.
    let wrong = format!("nats://relay:wrong{password}@127.0.0.1:{}", server.port);
    let mut relay = Relay::start(&db.url, &nats_settings(&wrong, &stream.template()));
    db.insert("t", Some("k"), b"k:0", "{}").await;
    eventually("a refused login is an outage", WAIT, || async {
        relay.outages().await >= 1.0 || relay.stderr().contains("cannot connect to NATS")
    })
    .await;
    assert_eq!(db.count("attempts > 0").await, 0);
    relay.kill();
    assert!(!relay.stderr().contains(&password), "{}", relay.stderr());

    let relay = Relay::start(&db.url, &nats_settings(&url, &stream.template()));
    eventually("delivered with the right password", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let received = stream.read_all().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].payload, b"k:0");
    assert!(!relay.stderr().contains(&password), "{}", relay.stderr());
    assert!(!relay.stdout().contains(&password));
}

/// The sink tells "no stream captures the subject" from "the stream did not answer" by asking
/// JetStream which stream captures a subject: that lookup must match the stream's wildcards.
#[tokio::test]
async fn the_stream_lookup_matches_wildcard_subjects() {
    let stream = NatsStream::create(&nats_url()).await;
    let found = stream
        .js
        .stream_by_subject(format!("{}.orders.paid", stream.prefix))
        .await
        .expect("the stream capturing {prefix}.> is found");
    assert_eq!(found, stream.name);
    assert!(
        stream
            .js
            .stream_by_subject(unique("nowhere"))
            .await
            .is_err()
    );
    stream.delete().await;
}

/// A NATS JWT (nats-io/jwt v2 layout) for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "jti": unique("jti").to_uppercase(),
        "iat": issued,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64.encode(signature))
}

/// A nats-server in operator mode (accounts and users as JWTs, JetStream on for the account) and
/// the `.creds` file of a user: returns the server and the file's path.
async fn operator_mode_server() -> (NatsServer, PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({
            "system_account": system.public_key(), "type": "operator", "version": 2,
        }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "test-account",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "relay",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let dir = std::env::temp_dir().join(unique("nats-operator"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("server.conf");
    std::fs::write(
        &config,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}\njetstream: enabled\n",
            system.public_key(),
            account.public_key(),
            system.public_key()
        ),
    )
    .expect("write server config");
    let creds = dir.join("relay.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
    .expect("write creds");
    let server = NatsServer::start(&["-c", config.to_str().expect("utf-8 path")]).await;
    (server, creds)
}

#[tokio::test]
async fn a_creds_file_logs_in_to_a_server_in_operator_mode() {
    let db = TestDb::create().await;
    let (server, creds) = operator_mode_server().await;
    assert!(
        async_nats::connect(server.url()).await.is_err(),
        "the server refuses a client without credentials"
    );
    let client = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .expect("read creds")
        .connect(server.url())
        .await
        .expect("connect with the creds file");
    let stream = NatsStream::create_on(client).await;

    // Without NATS_CREDS: the login is refused, an outage that uses no attempt.
    let mut relay = Relay::start(&db.url, &nats_settings(&server.url(), &stream.template()));
    db.insert("t", Some("k"), b"k:0", "{}").await;
    eventually("a refused login keeps the sink down", WAIT, || async {
        relay
            .metric("outbox_relay_reconnects_total")
            .await
            .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    assert_eq!(db.count("attempts > 0").await, 0);
    relay.kill();

    let mut settings = nats_settings(&server.url(), &stream.template());
    settings.push(("OUTBOX_NATS_CREDS", creds.display().to_string()));
    let relay = Relay::start(&db.url, &settings);
    eventually("delivered with the creds file", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let received = stream.read_all().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].payload, b"k:0");
    let seed_line = std::fs::read_to_string(&creds)
        .expect("creds")
        .lines()
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .expect("seed line");
    assert!(
        !relay.stderr().contains(&seed_line),
        "the seed is never logged"
    );
    let _ = std::fs::remove_dir_all(creds.parent().expect("dir"));
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command: returns
/// the directory holding `ca.pem`, `server.pem` and `server.key`.
fn tls_files() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("nats-tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run openssl (scripts/services.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=outbox test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    dir
}

#[tokio::test]
async fn a_tls_url_verifies_the_server_against_the_system_roots() {
    let db = TestDb::create().await;
    let tls = tls_files();
    let cert = tls.join("server.pem");
    let key = tls.join("server.key");
    let server = NatsServer::start(&[
        "-js",
        "--tls",
        "--tlscert",
        cert.to_str().expect("utf-8"),
        "--tlskey",
        key.to_str().expect("utf-8"),
    ])
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(tls.join("ca.pem"))
        .connect(&url)
        .await
        .expect("connect over TLS with the test CA");
    let stream = NatsStream::create_on(client).await;
    db.insert("t", Some("k"), b"k:0", "{}").await;

    // The test CA is not among the system roots: the certificate is refused, an outage.
    let mut relay = Relay::start(&db.url, &nats_settings(&url, &stream.template()));
    eventually(
        "an untrusted certificate keeps the sink down",
        WAIT,
        || async {
            relay
                .metric("outbox_relay_reconnects_total")
                .await
                .unwrap_or(0.0)
                >= 2.0
        },
    )
    .await;
    assert_eq!(db.count("attempts > 0").await, 0);
    assert!(
        relay.stderr().contains("cannot connect to NATS"),
        "{}",
        relay.stderr()
    );
    relay.kill();

    // SSL_CERT_FILE makes rustls-native-certs load the test CA as the system's roots.
    let mut settings = nats_settings(&url, &stream.template());
    settings.push(("SSL_CERT_FILE", tls.join("ca.pem").display().to_string()));
    let _relay = Relay::start(&db.url, &settings);
    eventually("delivered over TLS", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let received = stream.read_all().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].payload, b"k:0");
    let _ = std::fs::remove_dir_all(&tls);
}

#[tokio::test]
async fn a_server_that_stops_answering_is_an_outage_until_it_answers_again() {
    let db = TestDb::create().await;
    let server = NatsServer::start(&["-js"]).await;
    let stream = NatsStream::create(&server.url()).await;
    let mut settings = nats_settings(&server.url(), &stream.template());
    settings.push(("OUTBOX_PUBLISH_TIMEOUT_MS", "1500".into()));
    settings.push(("OUTBOX_MAX_ATTEMPTS", "1".into()));
    let relay = Relay::start(&db.url, &settings);
    wait_ready(&relay, 200, WAIT).await;
    insert_keyed_sequence(&db.client, "t", 2, 0, 20, 5).await;
    eventually("first events delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;

    // Frozen: the TCP connection stays open, nothing answers.
    signal(server.pid(), "STOP");
    insert_keyed_sequence(&db.client, "t", 2, 20, 40, 5).await;
    eventually("the frozen server is an outage", WAIT, || async {
        relay.sees_an_outage().await
    })
    .await;
    assert!(db.undelivered().await > 0);
    assert_eq!(db.count("attempts > 0").await, 0);

    signal(server.pid(), "CONT");
    assert_delivered_without_attempts(&db, WAIT).await;
    assert_exactly_once_in_order(&stream.read_all().await, 2, 40);
}

/// Two batches in flight (issue 33), each test's own: 20 keys in id order per sequence number and
/// batches of 10, so two batches in a row share no key; JetStream reached through a proxy that
/// holds its answers.
struct TwoInFlight {
    db: TestDb,
    stream: NatsStream,
    proxy: Proxy,
    relay: Relay,
}

impl TwoInFlight {
    const BATCH: usize = 10;
    const KEYS: usize = 2 * Self::BATCH;
    /// Sequence numbers per key in all.
    const PER_KEY: u64 = 4;

    /// A relay that delivered one event per key, then, with JetStream's answers held, sent the
    /// next batch before the acknowledgements of the one in flight, and no third.
    async fn held() -> TwoInFlight {
        let (batch, keys) = (Self::BATCH, Self::KEYS);
        let url = nats_url();
        let stream = NatsStream::create(&url).await;
        let published = stream
            .subscribe(&url, Inbox::keeping())
            .await
            .expect("subscribe");
        let proxy = Proxy::start(nats_addr()).await;
        let mut settings = nats_settings(&format!("nats://{}", proxy.addr), &stream.template());
        settings.extend(batches_in_flight(batch));
        let db = TestDb::create().await;
        let relay = Relay::start(&db.url, &settings);
        insert_keyed_sequence(&db.client, "t", keys, 0, 1, 1).await;
        eventually("the first events delivered", WAIT, || async {
            db.undelivered().await == 0
        })
        .await;

        proxy.hold_answers();
        insert_keyed_sequence(&db.client, "t", keys, 1, Self::PER_KEY, 3).await;
        eventually(
            "two batches published before any acknowledgement",
            WAIT,
            || async { published.count() >= keys + 2 * batch },
        )
        .await;
        // A third batch waits for the first one's verdicts, which the proxy holds.
        assert_eq!(
            published.count(),
            keys + 2 * batch,
            "two batches in flight, not more"
        );
        let in_flight = TwoInFlight {
            db,
            stream,
            proxy,
            relay,
        };
        in_flight.assert_none_recorded().await;
        in_flight
    }

    async fn assert_none_recorded(&self) {
        assert_eq!(
            self.db.count("delivered_at IS NOT NULL").await,
            Self::KEYS as i64,
            "nothing recorded delivered without its acknowledgement\n{}",
            self.relay.stderr_tail()
        );
    }

    /// Every event recorded delivered and stored once, in order per key.
    async fn assert_all_stored_once_in_order(&self) {
        eventually("every event delivered", WAIT, || async {
            self.db.undelivered().await == 0
        })
        .await;
        let stored = self.stream.read_all().await;
        assert_eq!(
            stored.len(),
            Self::KEYS * Self::PER_KEY as usize,
            "every event stored once"
        );
        for (key, seqs) in first_arrivals_by_key(&stored) {
            assert_eq!(
                seqs,
                (0..Self::PER_KEY).collect::<Vec<u64>>(),
                "key {key} in order"
            );
        }
        self.stream.delete().await;
    }
}

/// While JetStream's acknowledgements of one batch are outstanding, the next batch goes out when
/// it has none of its keys; never a third. Then every event is stored once, in order per key,
/// and recorded delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_of_other_keys_goes_out_before_the_acknowledgements_of_the_one_in_flight() {
    let in_flight = TwoInFlight::held().await;
    in_flight.proxy.restore();
    in_flight.assert_all_stored_once_in_order().await;
}

/// The connection lost with two batches in flight: neither is recorded; both are published again
/// once NATS is back, and the stream keeps one copy of each event, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_with_two_batches_in_flight_loses_nothing_and_stores_each_event_once() {
    let in_flight = TwoInFlight::held().await;
    cut_until_seen(&in_flight.proxy, &in_flight.relay, WAIT).await;
    in_flight.assert_none_recorded().await;
    in_flight.proxy.restore();
    in_flight.assert_all_stored_once_in_order().await;
}
