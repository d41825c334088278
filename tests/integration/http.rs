//! The http (webhook) sink end to end: a real HTTP receiver in the test on a free port records
//! every request; the Standard Webhooks reference library (Python `standardwebhooks`, installed
//! by `scripts/services.sh webhooks`) verifies every signature. The conformance suite (signed
//! POSTs with verbatim bodies and headers in key order, a crash, 503s, a 4xx, the formats), and
//! `Retry-After`, a receiver that is not there, one that is too slow, TLS.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::Version;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::harness::conformance::*;
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// The webhook receiver in the conformance suite: it answers 204, but 400 with a long reason to
/// a topic `refused` (and 503 to everything while the scenario takes it away); the relay signs
/// with two secrets (a rotation), posts to `/hooks/{topic}?token=t0ken` in batches of 50.
pub struct HttpSink {
    receiver: Receiver,
    secrets: [String; 2],
}

/// A 4xx's reason longer than the relay keeps.
fn long_reason() -> String {
    format!(
        "schema mismatch: field total is required {}",
        "x".repeat(400)
    )
}

fn usual_answers() -> Respond {
    let reason = long_reason();
    answer(move |r: &Request| {
        if r.path.ends_with("/refused") {
            (400, Vec::new(), reason.clone())
        } else {
            (204, Vec::new(), String::new())
        }
    })
}

impl SinkUnderTest for HttpSink {
    const CARRIES_KEY: bool = false;
    type Consumer = Receiver;

    async fn open(_topics: &[&str], _outage: bool) -> Self {
        HttpSink {
            receiver: Receiver::start(usual_answers()).await,
            secrets: [new_secret(), new_secret()],
        }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let url = self.receiver.url("/hooks/{topic}?token=t0ken");
        let mut settings = http_settings(&url);
        let [first, second] = &self.secrets;
        settings.push(("OUTBOX_WEBHOOK_SECRET", format!("{first}, {second}")));
        // Several waves per batch.
        settings.push(("OUTBOX_BATCH_SIZE", "50".into()));
        settings
    }

    fn consumer(&self) -> &Receiver {
        &self.receiver
    }

    fn destination(&self, topic: &str) -> String {
        format!("/hooks/{topic}")
    }

    async fn fail(&mut self) {
        self.receiver.respond(always(503));
    }

    async fn restore(&mut self) {
        self.receiver.respond(usual_answers());
    }

    async fn refusal(&self) -> Refusal {
        Refusal {
            topic: "refused".into(),
            payload: b"{\"n\":0}".to_vec(),
            reason: |e| e.contains("HTTP 400"),
            uses_attempts: true,
        }
    }

    /// As a receiver reads it: the SDK tells the mode from the request.
    fn to_sdk(&self, message: &Received, _mode: &'static str) -> Delivered {
        Delivered {
            binding: "http",
            mode: "auto",
            headers: message.headers.clone(),
            content_type: None,
            key: None,
            body: message.payload.clone(),
        }
    }

    fn sdk_reader(&self, _mode: &'static str) -> Option<String> {
        Some("bindings.http.from_http_event".into())
    }

    /// Headers no event may set, or that are not valid, next to the usual ones.
    fn paid_headers(&self) -> String {
        r#"{"traceparent":"00-abc-def-01","tenant":"t1","content-type":"application/vnd.shop+json",
            "webhook-id":"spoofed","Host":"evil.example","bad header":"x","x-newline":"a\nb"}"#
            .to_string()
    }

    /// JSON without a content-type header.
    async fn arrival_extras(&self, db: &TestDb) -> Vec<i64> {
        vec![db.insert("orders.plain", None, b"[1,2,3]", "{}").await]
    }

    async fn after_arrival(&self, arrival: &Arrival<'_>) {
        let accepted = self.receiver.accepted();
        let ids = arrival.db.message_ids().await;
        assert_eq!(
            accepted.len(),
            arrival.received.len(),
            "one POST per event, nothing sent twice without an outage"
        );
        let first = accepted
            .iter()
            .find(|r| r.path == "/hooks/orders.paid")
            .expect("orders.paid arrived at its topic's URL");
        assert_signed_with_the_events_headers(&self.receiver, first, &ids[&arrival.paid]);
        let second = accepted
            .iter()
            .find(|r| r.path == "/hooks/orders.plain")
            .expect("orders.plain arrived");
        assert_eq!(second.body, b"[1,2,3]");
        assert_eq!(
            second.header("webhook-id"),
            Some(ids[&arrival.extras[0]].as_str())
        );
        assert_eq!(second.header("content-type"), Some("application/json"));
        // The reference library verifies every request (whose body it can decode) with each
        // secret alone (as a receiver that knows only the old, or only the new, secret), and none
        // with a secret we never used.
        let utf8 = utf8_bodies(&accepted);
        assert_eq!(utf8.len(), accepted.len() - 1, "all but the binary payload");
        let [first_secret, second_secret] = &self.secrets;
        assert_eq!(reference_verify(first_secret, &utf8), (utf8.len(), 0));
        assert_eq!(reference_verify(second_secret, &utf8), (utf8.len(), 0));
        assert_eq!(reference_verify(&new_secret(), &utf8), (0, utf8.len()));
        let logs = format!("{}{}", arrival.relay.stdout(), arrival.relay.stderr());
        for secret in [first_secret, second_secret, &"t0ken".to_string()] {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret was logged:\n{logs}"
            );
        }
    }

    /// One POST per attempt, the status and the start of the body in the reason; the later
    /// event of the key after the last refusal.
    async fn after_event_fault(&self, fault: &EventFault<'_>) {
        let reason = fault.last_error;
        assert!(
            reason.contains("schema mismatch: field total is required"),
            "{reason}"
        );
        assert!(
            !reason.contains(&"x".repeat(201)),
            "only the start of the body: {reason}"
        );
        let ids = fault.db.message_ids().await;
        let posts = self.receiver.posts();
        assert_eq!(
            posts.iter().filter(|r| r.status == 400).count(),
            2,
            "one POST per attempt"
        );
        let later = posts
            .iter()
            .position(|r| r.header("webhook-id") == Some(ids[&fault.later].as_str()))
            .expect("the later event of key a arrived");
        let last_refusal = posts
            .iter()
            .rposition(|r| r.status == 400)
            .expect("refusals");
        assert!(
            later > last_refusal,
            "the later event of key a overtook the refused one"
        );
    }

    async fn after_cloudevents(&self, cloudevents: &CloudEvents<'_>) {
        let forged = forged_headers_are_not_attributes(self, cloudevents).await;
        let accepted = self.receiver.accepted();
        assert_eq!(accepted.len(), 4, "one POST per event");
        for request in &accepted {
            assert_cloudevents_request(request, cloudevents.mode);
        }
        if cloudevents.mode == "binary" {
            let ids = cloudevents.db.message_ids().await;
            let note = accepted
                .iter()
                .find(|r| r.header("webhook-id") == Some(ids[&cloudevents.ids[2]].as_str()))
                .expect("the note arrived");
            assert_eq!(
                note.header("ce-subject"),
                Some("key%20with%20spaces%20%C3%A9"),
                "percent-encoded as the HTTP binding says"
            );
            assert_eq!(note.header("content-type"), Some("text/plain"));
        }
        let mode = cloudevents.mode;
        assert_legacy_reader_agrees(self, mode, cloudevents.received, cloudevents.parsed);
        let (forged_request, forged) = forged;
        assert_legacy_reader_agrees(self, mode, &[forged_request], std::slice::from_ref(&forged));
        // Every body that is UTF-8 (all but binary mode's raw bytes, which the Python library
        // cannot decode: docs/sinks/http.md) verifies with a secret, none with another.
        let utf8 = utf8_bodies(&accepted);
        assert_eq!(utf8.len(), if cloudevents.mode == "binary" { 3 } else { 4 });
        assert_eq!(reference_verify(&self.secrets[0], &utf8), (utf8.len(), 0));
        assert_eq!(reference_verify(&new_secret(), &utf8), (0, utf8.len()));
        assert_eq!(forged.kind, "orders");
    }

    async fn after_masstransit(&self, _masstransit: &MassTransit<'_>) {
        let accepted = self.receiver.accepted();
        assert_eq!(
            accepted.len(),
            2,
            "the event that is not JSON is never sent"
        );
        assert_eq!(reference_verify(&self.secrets[0], &accepted), (2, 0));
    }
}

conformance_tests!(HttpSink);

/// The requests whose body is UTF-8.
fn utf8_bodies(requests: &[Request]) -> Vec<Request> {
    requests
        .iter()
        .filter(|r| std::str::from_utf8(&r.body).is_ok())
        .cloned()
        .collect()
}

/// The arrival's JSON event: its topic's URL with the query, the message id as `webhook-id`,
/// its headers but those that would spoof or are not valid, a fresh timestamp, two signatures.
fn assert_signed_with_the_events_headers(receiver: &Receiver, first: &Request, message_id: &str) {
    assert_eq!(first.body, b"{\"type\":\"OrderPaid\"}");
    assert_eq!(first.query.as_deref(), Some("token=t0ken"));
    assert_eq!(first.header("webhook-id"), Some(message_id));
    assert_eq!(first.header("traceparent"), Some("00-abc-def-01"));
    assert_eq!(first.header("tenant"), Some("t1"));
    assert_eq!(
        first.header("content-type"),
        Some("application/vnd.shop+json")
    );
    assert_eq!(
        first.header("host"),
        Some(receiver.addr.to_string().as_str()),
        "an event header does not replace Host"
    );
    assert!(first.header("bad header").is_none() && first.header("x-newline").is_none());
    let timestamp: u64 = first
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        timestamp.abs_diff(now) < 120,
        "timestamp {timestamp} vs now {now}"
    );
    let signatures = first.header("webhook-signature").expect("signed");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
}

/// An event whose headers look like attributes: they are not passed on; the others are. Its
/// request, and as the SDK read it.
async fn forged_headers_are_not_attributes(
    sink: &HttpSink,
    cloudevents: &CloudEvents<'_>,
) -> (Received, Parsed) {
    let db = cloudevents.db;
    let forged = db
        .insert(
            "orders",
            Some("43"),
            b"{\"orderId\":43}",
            r#"{"ce-type":"forged","CE-Source":"forged","tenant":"t1"}"#,
        )
        .await;
    eventually("the forged event delivered", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let id = &db.message_ids().await[&forged];
    let request = sink
        .receiver
        .wait_for(4, WAIT)
        .await
        .into_iter()
        .find(|r| &r.message_id == id)
        .expect("the event with forged headers arrived");
    assert_eq!(request.header("tenant"), Some("t1"));
    if cloudevents.mode == "binary" {
        assert_eq!(request.header("ce-type"), Some("orders"));
        assert_eq!(request.header("ce-source"), Some(CUSTOM_SOURCE));
    }
    let parsed = read_cloudevents(&[sink.to_sdk(&request, cloudevents.mode)]).remove(0);
    (request, parsed)
}

/// Binary: `ce-id` is the `webhook-id`; structured: the CloudEvents content type and no `ce-`
/// header; either: `type` is an attribute, not a header.
fn assert_cloudevents_request(request: &Request, mode: &str) {
    let id = request.header("webhook-id").expect("webhook-id");
    if mode == "binary" {
        assert_eq!(request.header("ce-id"), Some(id), "ce-id = webhook-id");
        assert_eq!(request.header("ce-source"), Some(CUSTOM_SOURCE));
    } else {
        assert_eq!(
            request.header("content-type"),
            Some("application/cloudevents+json")
        );
        let ce_headers: Vec<&String> = (request.headers.keys())
            .filter(|n| n.starts_with("ce-"))
            .collect();
        assert!(ce_headers.is_empty(), "{ce_headers:?}");
    }
    assert!(request.header("type").is_none(), "type is an attribute");
}

/// The SDK's legacy API (`cloudevents.http.from_http` of SDK 1.x) agrees on the attributes it
/// decodes the same way: it does not percent-decode header values (binary mode), and hands over
/// data that is not JSON as bytes.
fn assert_legacy_reader_agrees(
    sink: &HttpSink,
    mode: &'static str,
    received: &[Received],
    parsed: &[Parsed],
) {
    let legacy = read_cloudevents(
        &(received.iter())
            .map(|m| Delivered {
                binding: "http_v1",
                ..sink.to_sdk(m, mode)
            })
            .collect::<Vec<_>>(),
    );
    for (new, old) in parsed.iter().zip(&legacy) {
        assert_eq!(
            (&old.id, &old.source, &old.kind, &old.specversion, &old.time),
            (&new.id, &new.source, &new.kind, &new.specversion, &new.time),
            "{old:?}"
        );
        assert_eq!(old.datacontenttype, new.datacontenttype, "{old:?}");
        if mode == "structured" || !new.subject.as_deref().unwrap_or("").contains(' ') {
            assert_eq!(old.subject, new.subject, "{old:?}");
        }
        if new.datacontenttype.as_deref() == Some("application/json") {
            assert_eq!(old.data, new.data, "{old:?}");
        }
    }
}

/// A CA of the test's own (its certificate as PEM) and a server config with a certificate it
/// issued for `localhost`, offering HTTP/2 and HTTP/1.1.
fn test_ca_and_server() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "outbox-relay test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server TLS config");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), tls)
}

/// A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes.
fn new_secret() -> String {
    let mut key = Vec::new();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("whsec_{}", STANDARD.encode(key))
}

/// The venv `scripts/services.sh webhooks` installs the reference library into.
fn reference_python() -> PathBuf {
    let cache = std::env::var_os("OUTBOX_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/outbox-relay")
        });
    let python = cache.join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/services.sh webhooks",
        python.display()
    );
    python
}

const VERIFY: &str = r#"
import base64, json, sys
from standardwebhooks import Webhook
secret, path = sys.argv[1], sys.argv[2]
requests = json.load(open(path))
wh = Webhook(secret)
failed = 0
for r in requests:
    try:
        wh.verify(base64.b64decode(r["body"]), r["headers"], json_parse=False)
    except Exception as e:
        failed += 1
        print(f"{r['headers'].get('webhook-id')}: {type(e).__name__}: {e}", file=sys.stderr)
print(f"verified {len(requests) - failed} failed {failed}")
"#;

/// (verified, failed) by the reference library's `Webhook(secret).verify` over `requests`.
fn reference_verify(secret: &str, requests: &[Request]) -> (usize, usize) {
    let json: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "body": STANDARD.encode(&r.body),
                "headers": r.headers,
            })
        })
        .collect();
    let path = std::env::temp_dir().join(format!("{}.json", unique("webhooks")));
    std::fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write requests");
    let output = Command::new(reference_python())
        .args(["-c", VERIFY, secret])
        .arg(&path)
        .output()
        .expect("run the reference library");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "reference library failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words.as_slice() {
        ["verified", ok, "failed", failed] => {
            (ok.parse().expect("count"), failed.parse().expect("count"))
        }
        _ => panic!("unexpected output of the reference library: {stdout}"),
    }
}

async fn attempts_total(db: &TestDb) -> i64 {
    db.client
        .query_one(
            "SELECT coalesce(sum(attempts), 0)::int8 FROM outbox.events",
            &[],
        )
        .await
        .expect("attempts")
        .get(0)
}

#[tokio::test]
async fn a_503_with_retry_after_is_an_outage_that_waits_and_uses_no_attempt() {
    let db = TestDb::create().await;
    let receiver = Receiver::start(answer(|_: &Request| {
        (
            503,
            vec![("retry-after", "1".to_string())],
            "maintenance".into(),
        )
    }))
    .await;
    for n in 0..3 {
        db.insert("orders", Some(&format!("k{n}")), b"{}", "{}")
            .await;
    }
    let mut settings = http_settings(&format!("http://{}/in/{{topic}}", receiver.addr));
    // One event per batch: each 503 is one try of the sink.
    settings.push(("OUTBOX_BATCH_SIZE", "1".into()));
    let relay = Relay::start(&db.url, &settings);

    eventually("three tries answered 503", WAIT, || async {
        receiver.posts().iter().filter(|r| r.status == 503).count() >= 3
    })
    .await;
    // After each 503 the sink stays down for Retry-After (1 s); the relay's own backoff (50 to
    // 500 ms here) alone would try again sooner.
    let tries: Vec<Instant> = receiver.posts().iter().map(|r| r.at).collect();
    for pair in tries.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "a try came {:?} after the previous one, before Retry-After",
            pair[1] - pair[0]
        );
    }
    assert!(relay.outages().await >= 1.0, "counted as an outage");
    assert_eq!(attempts_total(&db).await, 0, "an outage uses no attempt");
    assert_eq!(db.count("delivered_at IS NOT NULL").await, 0);

    receiver.respond(always(200));
    eventually("delivered once the receiver answers 200", WAIT, || async {
        db.count("delivered_at IS NOT NULL").await == 3
    })
    .await;
    assert_eq!(attempts_total(&db).await, 0);
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);
}

#[tokio::test]
async fn nothing_listening_is_an_outage_until_a_receiver_appears() {
    let db = TestDb::create().await;
    let port = free_port();
    for n in 0..3 {
        db.insert(
            "orders",
            Some("k"),
            format!("{{\"n\":{n}}}").as_bytes(),
            "{}",
        )
        .await;
    }
    let relay = Relay::start(
        &db.url,
        &http_settings(&format!("http://127.0.0.1:{port}/in/{{topic}}")),
    );
    // The sink cannot connect: not ready, nothing delivered, no attempt used.
    eventually("the relay reports the receiver down", WAIT, || async {
        relay.stderr().contains("cannot reach the webhook receiver")
    })
    .await;
    wait_ready(&relay, 503, WAIT).await;
    assert_eq!(db.undelivered().await, 3);
    assert_eq!(attempts_total(&db).await, 0);

    let receiver = Receiver::start_on(port, always(200)).await;
    eventually("delivered once the receiver listens", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    assert_eq!(attempts_total(&db).await, 0);
    let bodies: Vec<Vec<u8>> = receiver.accepted().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        vec![
            b"{\"n\":0}".to_vec(),
            b"{\"n\":1}".to_vec(),
            b"{\"n\":2}".to_vec()
        ],
        "in key order"
    );
    wait_ready(&relay, 200, WAIT).await;
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_an_outage() {
    let db = TestDb::create().await;
    let receiver = Receiver::start(always(200)).await;
    receiver.delay(Duration::from_secs(3));
    for n in 0..3 {
        db.insert("orders", Some(&format!("k{n}")), b"{}", "{}")
            .await;
    }
    let mut settings = http_settings(&format!("http://{}/in/{{topic}}", receiver.addr));
    settings.push(("OUTBOX_WEBHOOK_TIMEOUT_MS", "500".into()));
    let relay = Relay::start(&db.url, &settings);

    eventually("timed-out requests counted as outages", WAIT, || async {
        relay.outages().await >= 2.0
    })
    .await;
    assert!(
        relay
            .stderr()
            .contains("no answer within WEBHOOK_TIMEOUT_MS"),
        "{}",
        relay.stderr()
    );
    assert_eq!(attempts_total(&db).await, 0, "a timeout uses no attempt");
    assert_eq!(db.count("dead_lettered_at IS NOT NULL").await, 0);

    receiver.delay(Duration::ZERO);
    eventually(
        "delivered once the receiver is fast again",
        WAIT,
        || async { db.undelivered().await == 0 },
    )
    .await;
    assert_eq!(attempts_total(&db).await, 0);
}

#[tokio::test]
async fn https_with_a_private_ca_speaks_http2_and_without_the_ca_is_an_outage() {
    let db = TestDb::create().await;
    let (ca_pem, tls) = test_ca_and_server();
    let receiver = Receiver::start_tls(tls, always(200)).await;
    let ca_file = std::env::temp_dir().join(format!("{}.pem", unique("test_ca")));
    std::fs::write(&ca_file, &ca_pem).expect("write CA file");
    for n in 0..3 {
        db.insert(
            "orders",
            Some("k"),
            format!("{{\"n\":{n}}}").as_bytes(),
            "{}",
        )
        .await;
    }
    let url = format!("https://localhost:{}/in/{{topic}}", receiver.addr.port());

    // Without the CA the certificate is not trusted: an outage, nothing sent, no attempt used.
    let mut untrusting = Relay::start(&db.url, &http_settings(&url));
    eventually("the certificate refused", WAIT, || async {
        untrusting
            .stderr()
            .contains("cannot reach the webhook receiver")
    })
    .await;
    wait_ready(&untrusting, 503, WAIT).await;
    untrusting.kill();
    assert!(
        untrusting.stderr().to_lowercase().contains("certificate"),
        "{}",
        untrusting.stderr()
    );
    assert!(receiver.posts().is_empty());
    assert_eq!(attempts_total(&db).await, 0);

    let mut settings = http_settings(&url);
    settings.push((
        "OUTBOX_WEBHOOK_CA_FILE",
        ca_file.to_string_lossy().into_owned(),
    ));
    let _relay = Relay::start(&db.url, &settings);
    eventually("delivered over TLS", WAIT, || async {
        db.undelivered().await == 0
    })
    .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3);
    assert!(
        accepted.iter().all(|r| r.version == Version::HTTP_2),
        "HTTP/2 negotiated by ALPN: {:?}",
        accepted.iter().map(|r| r.version).collect::<Vec<_>>()
    );
    assert_eq!(attempts_total(&db).await, 0);
    let _ = std::fs::remove_file(&ca_file);
}
