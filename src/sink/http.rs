//! Webhooks: one HTTP `POST` per event, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`), through reqwest with rustls (ring).
//! A key's events go one request at a time (the relay sends waves); different keys go together,
//! at most `WEBHOOK_CONCURRENCY` requests in flight.
//!
//! 2xx is delivered; 408, 429, 5xx, a timeout or a connection that fails is an outage (the batch
//! fails, no attempt is used, `Retry-After` is honoured); any other status is an error about the
//! event, with the status and the start of the response body.
//!
//! Message formats follow the CloudEvents HTTP protocol binding (`ce-*` headers, percent-encoded,
//! and `Content-Type` in binary mode; an `application/cloudevents+json` body in structured mode);
//! the webhook headers are on every request and the signature covers the body actually sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use rustls::pki_types::CertificateDer;
use sha2::Sha256;

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{self, Binding, Format};
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_CONCURRENCY: usize = 32;

/// How much of a refusing response's body goes into `last_error`, in characters.
const BODY_START_CHARS: usize = 200;
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Bytes of a response body read at most (the rest is dropped with the connection).
const MAX_BODY_READ: usize = 64 * 1024;

/// Event headers never copied into the request: the webhook headers this sink sets, what HTTP
/// itself manages (framing, hop-by-hop headers, which HTTP/2 forbids), and `content-type`, which
/// becomes the request's content type.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

pub const KIND: Kind = Kind {
    name: "http",
    settings: &[
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_TIMEOUT_MS",
        "WEBHOOK_CONCURRENCY",
        "WEBHOOK_CA_FILE",
    ],
    configure: |settings| Ok(Box::new(HttpConfig::read(settings)?)),
};

#[derive(Clone)]
struct HttpConfig {
    url: UrlTemplate,
    /// One signing key per secret; empty: requests are not signed.
    keys: Vec<Hmac<Sha256>>,
    timeout: Duration,
    concurrency: usize,
    /// `WEBHOOK_CA_FILE`'s certificates, trusted besides the system's.
    extra_roots: Vec<CertificateDer<'static>>,
    ca_file: Option<String>,
    /// Message format, with the CloudEvents HTTP binding's naming.
    format: Format,
}

/// The URL without user info or query (which may hold credentials), and the number of secrets.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url.describe())
            .field("secrets", &self.keys.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("ca_file", &self.ca_file)
            .field("format", &self.format)
            .finish()
    }
}

impl HttpConfig {
    fn read(settings: &SinkSettings) -> Result<HttpConfig, ConfigError> {
        let url = settings.required(
            "WEBHOOK_URL",
            "the URL to POST events to, such as https://hooks.example.com/outbox/{topic}",
        )?;
        let url = UrlTemplate::new(url).map_err(|p| settings.error("WEBHOOK_URL", p))?;
        let keys = match settings.get("WEBHOOK_SECRET") {
            None => Vec::new(),
            Some(text) => parse_secrets(text).map_err(|p| settings.error("WEBHOOK_SECRET", p))?,
        };
        let timeout_ms: u64 = settings.parsed(
            "WEBHOOK_TIMEOUT_MS",
            DEFAULT_TIMEOUT_MS,
            "a number of milliseconds",
        )?;
        if timeout_ms == 0 {
            return Err(settings.error("WEBHOOK_TIMEOUT_MS", "must be at least 1"));
        }
        let concurrency: usize = settings.parsed(
            "WEBHOOK_CONCURRENCY",
            DEFAULT_CONCURRENCY,
            "a number of requests",
        )?;
        if concurrency == 0 {
            return Err(settings.error("WEBHOOK_CONCURRENCY", "must be at least 1"));
        }
        let ca_file = settings.get("WEBHOOK_CA_FILE").map(str::to_string);
        let extra_roots = match &ca_file {
            None => Vec::new(),
            Some(path) => {
                read_certificates(path).map_err(|p| settings.error("WEBHOOK_CA_FILE", p))?
            }
        };
        Ok(HttpConfig {
            url,
            keys,
            timeout: Duration::from_millis(timeout_ms),
            concurrency,
            extra_roots,
            ca_file,
            format: Format::read(settings)?,
        })
    }

    /// A client with rustls (ring): the system's roots and the CA file's, HTTP/2 when the server
    /// offers it (ALPN), HTTP/1.1 otherwise; redirects are not followed (a redirected POST would
    /// turn into a GET).
    fn client(&self) -> Result<reqwest::Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A malformed system certificate is skipped, not fatal.
            let _ = roots.add(cert);
        }
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("a certificate of WEBHOOK_CA_FILE is not usable: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("outbox-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {}", chain(&e)))
    }
}

impl SinkConfig for HttpConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(HttpSink {
            config: Arc::new(self.clone()),
            client: None,
            healthy: false,
        })
    }
}

/// `WEBHOOK_URL`, with `{topic}` replaced per event.
#[derive(Clone, PartialEq)]
struct UrlTemplate {
    template: String,
    /// The URL itself when it holds no `{topic}`: parsed once, not per event (URL parsing was
    /// ~3% of the sink's CPU in a drain).
    fixed: Option<Url>,
}

impl UrlTemplate {
    /// What stands for the topic when the template is checked or shown.
    const SAMPLE: &'static str = "outbox-topic-sample";

    fn new(template: &str) -> Result<UrlTemplate, String> {
        let mut template = UrlTemplate {
            template: template.to_string(),
            fixed: None,
        };
        let sample = template
            .for_topic(Self::SAMPLE)
            .map_err(|e| format!("is not a valid URL: {e}"))?;
        if sample.scheme() != "http" && sample.scheme() != "https" {
            return Err(format!(
                "must start with http:// or https://, not {}://",
                sample.scheme()
            ));
        }
        if sample.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        if !template.template.contains("{topic}") {
            template.fixed = Some(sample);
        }
        Ok(template)
    }

    /// The URL for `topic`, which is percent-encoded except for unreserved characters.
    fn for_topic(&self, topic: &str) -> Result<Url, url::ParseError> {
        match &self.fixed {
            Some(url) => Ok(url.clone()),
            None => Url::parse(&self.template.replace("{topic}", &encode_topic(topic))),
        }
    }

    /// For logs and errors: scheme, host, port and path (`{topic}` as written), without the user
    /// info or query, which may hold credentials.
    fn describe(&self) -> String {
        match self.for_topic(Self::SAMPLE) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                url.to_string().replace(Self::SAMPLE, "{topic}")
            }
            Err(_) => "(invalid URL)".into(),
        }
    }

    /// `scheme://host:port/` to probe when connecting; `None` when the host holds `{topic}`.
    fn origin(&self) -> Option<Url> {
        let url = self.for_topic(Self::SAMPLE).ok()?;
        if url.host_str()?.contains(Self::SAMPLE) {
            return None;
        }
        let mut origin = url.clone();
        let _ = origin.set_username("");
        let _ = origin.set_password(None);
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Some(origin)
    }
}

/// Unreserved characters (RFC 3986) stay, every other byte is `%XX`.
fn encode_topic(topic: &str) -> String {
    let mut encoded = String::with_capacity(topic.len());
    for byte in topic.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Secrets separated by spaces or commas, each `whsec_` + base64 (the prefix may be left out,
/// as the reference libraries allow; padding is optional).
fn parse_secrets(text: &str) -> Result<Vec<Hmac<Sha256>>, String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut keys = Vec::new();
    for (n, secret) in text.split([' ', ',']).filter(|s| !s.is_empty()).enumerate() {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = LENIENT.decode(encoded).map_err(|e| {
            format!(
                "secret {} is not whsec_ followed by base64 ({e}); secrets are separated by spaces or commas",
                n + 1
            )
        })?;
        if key.is_empty() {
            return Err(format!("secret {} is empty", n + 1));
        }
        let key = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| format!("secret {} is not usable as an HMAC key: {e}", n + 1))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("holds no secret; leave it unset to send unsigned requests".into());
    }
    Ok(keys)
}

fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per key, space-separated.
fn signature(keys: &[Hmac<Sha256>], id: &str, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            let mut mac = key.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect();
    signatures.join(" ")
}

pub struct HttpSink {
    config: Arc<HttpConfig>,
    /// Pools the connections; `None` until connected, and after `abandon`/`close`.
    client: Option<reqwest::Client>,
    /// The last probe or batch reached the receiver.
    healthy: bool,
}

#[async_trait]
impl Publisher for HttpSink {
    /// A receiver may refuse one request and accept the next: a key's next event waits for the
    /// verdict on the one before.
    fn ordering(&self) -> Ordering {
        Ordering::OneVerdictPerKey
    }

    /// Builds the client and, unless the host depends on the topic, sends a `HEAD /` to the
    /// receiver's origin: any answer means it is reachable (and its certificate is trusted).
    async fn connect(&mut self) -> Result<(), SinkError> {
        self.healthy = false;
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let client = self.config.client().map_err(SinkError::Unavailable)?;
                self.client = Some(client.clone());
                client
            }
        };
        if let Some(origin) = self.config.url.origin() {
            client.head(origin.clone()).send().await.map_err(|e| {
                SinkError::Unavailable(format!(
                    "cannot reach the webhook receiver at {origin} (check the sink's WEBHOOK_URL, the receiver and, for https, WEBHOOK_CA_FILE): {}",
                    describe_failure(&e, self.config.timeout)
                ))
            })?;
        }
        self.healthy = true;
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.client.is_some() && self.healthy
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                self.connect().await?;
                match &self.client {
                    Some(client) => client.clone(),
                    None => {
                        return Err(SinkError::Unavailable(
                            "the webhook client is not set up".into(),
                        ));
                    }
                }
            }
        };
        let posts: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(index, event)| post_indexed(index, client.clone(), self.config.clone(), event))
            .collect();
        let mut requests =
            futures_util::stream::iter(posts).buffer_unordered(self.config.concurrency);
        let mut outcomes = vec![Outcome::NotSent; events.len()];
        while let Some((index, result)) = requests.next().await {
            match result {
                Ok(outcome) => outcomes[index] = outcome,
                // Dropping the stream cancels the requests still in flight.
                Err(error) => {
                    self.healthy = false;
                    return Err(error);
                }
            }
        }
        self.healthy = true;
        Ok(outcomes)
    }

    async fn abandon(&mut self) {
        self.healthy = false;
        self.client = None;
    }

    async fn close(&mut self) {
        self.healthy = false;
        self.client = None;
    }
}

async fn post_indexed(
    index: usize,
    client: reqwest::Client,
    config: Arc<HttpConfig>,
    event: &Event,
) -> (usize, Result<Outcome, SinkError>) {
    (index, post(&client, &config, event).await)
}

/// Sends one event and classifies the answer.
async fn post(
    client: &reqwest::Client,
    config: &HttpConfig,
    event: &Event,
) -> Result<Outcome, SinkError> {
    let url = match config.url.for_topic(&event.topic) {
        Ok(url) => url,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "WEBHOOK_URL with topic {:?} is not a valid URL: {e}",
                event.topic
            )));
        }
    };
    let message = match config.format.message(event, Binding::Http) {
        Ok(message) => message,
        Err(reason) => return Ok(Outcome::Failed(reason)),
    };
    let mut headers = match request_headers(&config.format, &message) {
        Ok(headers) => headers,
        Err(reason) => return Ok(Outcome::Failed(reason)),
    };
    let id = event.message_id.to_string();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let webhook_header = |text: String| {
        HeaderValue::from_str(&text).map_err(|e| SinkError::Unavailable(e.to_string()))
    };
    headers.insert("webhook-id", webhook_header(id.clone())?);
    headers.insert("webhook-timestamp", webhook_header(timestamp.to_string())?);
    if !config.keys.is_empty() {
        let signature = signature(&config.keys, &id, timestamp, &message.body);
        headers.insert("webhook-signature", webhook_header(signature)?);
    }
    // The header map moves into the request whole (a builder's `.headers()` re-inserts each).
    let mut request = reqwest::Request::new(reqwest::Method::POST, url);
    *request.headers_mut() = headers;
    *request.body_mut() = Some(message.body.into_owned().into());
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) if e.is_builder() => {
            return Ok(Outcome::Failed(format!(
                "cannot build the request for topic {:?}: {}",
                event.topic,
                chain(&e)
            )));
        }
        Err(e) => {
            return Err(SinkError::Unavailable(format!(
                "POST to the webhook {} failed: {}",
                config.url.describe(),
                describe_failure(&e, config.timeout)
            )));
        }
    };
    let status = response.status();
    if status.is_success() {
        // Read (a bounded part of) the body so the connection can be reused; the verdict is
        // already in.
        let _ = body_start(response).await;
        return Ok(Outcome::Delivered);
    }
    let retry_after = retry_after(response.headers());
    let body = body_start(response).await;
    let answered = format!(
        "the webhook {} answered {}{}",
        config.url.describe(),
        describe_status(status),
        if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        }
    );
    if is_outage(status) {
        let reason = format!("{answered}; the batch will be sent again");
        return Err(match retry_after {
            Some(retry_after) => SinkError::RetryAfter {
                reason,
                retry_after,
            },
            None => SinkError::Unavailable(reason),
        });
    }
    Ok(Outcome::Failed(answered))
}

/// The request's headers for a formatted event, without the webhook headers: the format's
/// headers (raw: the event's own) that HTTP can carry and that clash with nothing the sink or
/// HTTP sets, and `Content-Type`. `Err` is an event whose content type HTTP cannot carry in a
/// format that depends on it.
fn request_headers(format: &Format, message: &format::Message<'_>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(message.headers.len() + 4);
    // Raw: the event's last `content-type` header, if a valid value, as always.
    let mut raw_content_type = None;
    for (name, value) in &message.headers {
        if name.eq_ignore_ascii_case("content-type") {
            if format.is_raw() {
                raw_content_type = HeaderValue::from_str(value).ok();
            }
            continue;
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            continue;
        }
        // Names and values HTTP cannot carry are left out (see docs/sinks/http.md); attribute
        // values are percent-encoded by the format, so they always fit.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let content_type = match (&message.content_type, format.is_raw()) {
        // The format's own: the CloudEvents `datacontenttype` in binary mode, else the
        // document's type.
        (Some(content_type), false) => HeaderValue::from_str(content_type).map_err(|_| {
            format!(
                "the content type {content_type:?} (the event's content-type header) cannot be sent as an HTTP header value"
            )
        })?,
        _ => raw_content_type.unwrap_or(HeaderValue::from_static(format::JSON)),
    };
    headers.insert(reqwest::header::CONTENT_TYPE, content_type);
    Ok(headers)
}

/// 408, 429 and 5xx say nothing about the event: the receiver is not taking requests now.
fn is_outage(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// `Retry-After` as seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The first [`BODY_START_CHARS`] characters of the body (lossy UTF-8, whitespace folded).
async fn body_start(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let folded: Vec<&str> = text.split_whitespace().collect();
    folded.join(" ").chars().take(BODY_START_CHARS).collect()
}

/// A failed request, without its URL (which may hold credentials).
fn describe_failure(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!(
            "no answer within WEBHOOK_TIMEOUT_MS ({} ms)",
            timeout.as_millis()
        );
    }
    let what = if error.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    format!("{what}: {}", chain(error))
}

/// An error and its sources, `: `-separated, without the URL.
fn chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let part = e.to_string();
        // reqwest's own message names the URL: keep only its first words.
        let part = match part.split_once(" for url (") {
            Some((before, _)) => before.to_string(),
            None => part,
        };
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn read(pairs: &[(&str, &str)]) -> Result<HttpConfig, ConfigError> {
        let settings = Settings::from_pairs(pairs);
        HttpConfig::read(&settings.default_sink())
    }

    #[test]
    fn signs_as_the_reference_library_does() {
        // The signature the reference library (Python standardwebhooks 1.1.0) computes for this.
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let signature = signature(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_c2Vjb25k")
            .expect("secrets");
        let signature = signature(&keys, "id", 1, b"{}");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn settings_are_checked_and_named() {
        let base = ("OUTBOX_WEBHOOK_URL", "https://hooks.example.com/in/{topic}");
        assert!(read(&[base]).is_ok());
        let error = read(&[("OUTBOX_WEBHOOK_URL", "ftp://x/")]).expect_err("ftp");
        assert!(error.to_string().contains("OUTBOX_WEBHOOK_URL"), "{error}");
        let error =
            read(&[base, ("OUTBOX_WEBHOOK_SECRET", "whsec_not base64!")]).expect_err("bad secret");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_SECRET"),
            "{error}"
        );
        let error = read(&[base, ("OUTBOX_WEBHOOK_TIMEOUT_MS", "0")]).expect_err("zero");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_TIMEOUT_MS"),
            "{error}"
        );
        let error =
            read(&[base, ("OUTBOX_WEBHOOK_CA_FILE", "/nonexistent/ca.pem")]).expect_err("no CA");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_CA_FILE"),
            "{error}"
        );
    }

    #[test]
    fn secrets_and_credentials_stay_out_of_debug_output() {
        let config = read(&[
            (
                "OUTBOX_WEBHOOK_URL",
                "https://user:pa55word@hooks.example.com/in/{topic}?token=t0ken",
            ),
            (
                "OUTBOX_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ])
        .expect("valid");
        let debug = format!("{config:?}");
        for secret in ["pa55word", "t0ken", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("hooks.example.com/in/{topic}"), "{debug}");
    }

    #[test]
    fn the_topic_is_percent_encoded_into_the_url() {
        let template = UrlTemplate::new("http://127.0.0.1:9/in/{topic}").expect("valid");
        let url = template.for_topic("orders.paid/eu?x#y").expect("url");
        assert_eq!(url.path(), "/in/orders.paid%2Feu%3Fx%23y");
        assert_eq!(url.query(), None);
    }

    #[test]
    fn only_408_429_and_5xx_are_outages() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                is_outage(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [200, 301, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(
                !is_outage(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
    }

    fn event(headers: &[(&str, &str)], payload: &[u8]) -> Event {
        crate::outbox::event::test_event_with(Some("k 1"), headers, payload)
    }

    fn formatted(format: &Format, event: &Event) -> HeaderMap {
        let message = format.message(event, Binding::Http).expect("formats");
        request_headers(format, &message).expect("headers")
    }

    fn cloudevents(mode: crate::format::Mode) -> Format {
        Format::CloudEvents {
            source: "/relay".into(),
            mode,
        }
    }

    #[test]
    fn raw_headers_are_as_they_always_were() {
        let e = event(
            &[("tenant", "t1"), ("ce-id", "x"), ("webhook-id", "forged")],
            b"\xff",
        );
        let headers = formatted(&Format::Raw, &e);
        assert_eq!(headers["content-type"], "application/json", "not sniffed");
        assert_eq!(headers["tenant"], "t1");
        assert_eq!(headers["ce-id"], "x", "raw passes every header");
        assert!(headers.get("webhook-id").is_none());
        let text = event(&[("content-type", "text/plain")], b"hi");
        assert_eq!(formatted(&Format::Raw, &text)["content-type"], "text/plain");
    }

    #[test]
    fn cloudevents_binary_sets_the_bindings_headers_and_drops_forged_ones() {
        let e = event(
            &[
                ("type", "shop.note"),
                ("content-type", "text/plain"),
                ("tenant", "t1"),
                ("CE-Source", "forged"),
                ("Content-Length", "1"),
            ],
            b"hi",
        );
        let headers = formatted(&cloudevents(crate::format::Mode::Binary), &e);
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-id"], e.message_id.to_string().as_str());
        assert_eq!(headers["ce-source"], "/relay");
        assert_eq!(headers["ce-type"], "shop.note");
        assert_eq!(headers["ce-subject"], "k%201", "percent-encoded");
        assert!(headers.contains_key("ce-time"));
        assert_eq!(headers["content-type"], "text/plain", "datacontenttype");
        assert_eq!(headers["tenant"], "t1");
        assert_eq!(headers.get_all("ce-source").iter().count(), 1);
        assert!(headers.get("type").is_none() && headers.get("content-length").is_none());
        let bad = event(&[("content-type", "text/plain\nx")], b"hi");
        let binary = cloudevents(crate::format::Mode::Binary);
        let message = binary.message(&bad, Binding::Http).expect("formats");
        let err = request_headers(&binary, &message).expect_err("not an HTTP header value");
        assert!(err.contains("content type"), "{err}");
    }

    #[test]
    fn structured_and_masstransit_name_their_documents_content_type() {
        let e = event(&[("content-type", "text/plain"), ("tenant", "t1")], b"{}");
        let structured = formatted(&cloudevents(crate::format::Mode::Structured), &e);
        assert_eq!(structured["content-type"], format::CLOUDEVENTS_JSON);
        assert_eq!(structured["tenant"], "t1");
        assert!(structured.get("ce-id").is_none());
        let masstransit = Format::read(
            &crate::settings::Settings::from_pairs(&[("OUTBOX_FORMAT", "masstransit")])
                .default_sink(),
        )
        .expect("format");
        let headers = formatted(&masstransit, &e);
        assert_eq!(headers["content-type"], format::MASSTRANSIT_JSON);
        assert!(
            headers.get("tenant").is_none(),
            "the event's headers travel inside the envelope"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&later).expect("date"));
        let wait = retry_after(&headers).expect("a date");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
