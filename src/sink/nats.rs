//! NATS JetStream through async-nats: each event is published to JetStream with the header
//! `Nats-Msg-Id` = its message id (the stream drops a copy inside its duplicate window) and is
//! delivered once the stream's publish acknowledgement arrived. A batch (a wave, see
//! [`Ordering::OneVerdictPerKey`]) is sent whole, then its acknowledgements are awaited.
//!
//! A publish that no stream captures comes back as "no responders", and so does every publish
//! while JetStream is disabled or down. On "no responders" the sink asks the JetStream API: no
//! answer is an outage; an answer saying no stream captures the subject is an error about the
//! event; a stream that captures it but did not answer is an outage.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    GetStreamByNameErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::{Client, ConnectOptions, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;

use super::{Kind, Ordering, Outcome, Publisher, SinkConfig, SinkError};
use crate::format::{Binding, Format};
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::redact::without_credentials;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_SUBJECT_TEMPLATE: &str = "{topic}";

/// Publishes awaiting their acknowledgement at once; a larger wave is sent in parts of this size.
const MAX_IN_FLIGHT: usize = 1024;

/// How long one publish acknowledgement or JetStream API request may take. The whole publish is
/// bounded by `OUTBOX_PUBLISH_TIMEOUT_MS` too.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub const KIND: Kind = Kind {
    name: "nats",
    settings: &["NATS_URL", "NATS_CREDS", "NATS_SUBJECT_TEMPLATE"],
    configure: |settings| Ok(Box::new(NatsConfig::read(settings)?)),
};

#[derive(Clone)]
struct NatsConfig {
    /// One URL per server, validated (`nats://` or `tls://`).
    servers: Vec<String>,
    /// `NATS_CREDS`: a `.creds` file (user JWT and NKey seed).
    creds: Option<PathBuf>,
    subject_template: String,
    /// User and password, or token, from the URLs' user info (async-nats does not read it there).
    login: Option<Login>,
    /// Message format, with the NATS protocol binding's naming.
    format: Format,
}

#[derive(Clone, PartialEq)]
enum Login {
    UserPassword(String, String),
    Token(String),
}

/// Without user names, passwords or tokens in the URLs.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &redacted(&self.servers))
            .field("creds", &self.creds)
            .field("subject_template", &self.subject_template)
            .finish()
    }
}

impl NatsConfig {
    fn read(settings: &SinkSettings) -> Result<NatsConfig, ConfigError> {
        let urls = settings.required(
            "NATS_URL",
            "a nats:// or tls:// URL such as nats://127.0.0.1:4222, comma-separated for several servers",
        )?;
        let mut servers = Vec::new();
        let mut login = None;
        for url in urls.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(settings.error("NATS_URL", "has an empty entry between commas"));
            }
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(settings.error(
                    "NATS_URL",
                    format!(
                        "{} must start with nats:// or tls://",
                        without_credentials(url).unwrap_or_else(|| "an entry".into())
                    ),
                ));
            }
            // The parser's message may quote the URL: it is not passed on.
            if ServerAddr::from_str(url).is_err() {
                return Err(settings.error(
                    "NATS_URL",
                    "is not a valid NATS URL; expected nats://[user:password@]host[:port] or tls://host[:port]",
                ));
            }
            let found = login_of(url).map_err(|problem| settings.error("NATS_URL", problem))?;
            if found.is_some() && login.is_some() && found != login {
                return Err(settings.error(
                    "NATS_URL",
                    "the servers name different users or tokens; the relay logs in to each with the same one",
                ));
            }
            login = login.or(found);
            servers.push(url.to_string());
        }
        let creds = settings.get("NATS_CREDS").map(PathBuf::from);
        if let Some(path) = &creds
            && !path.is_file()
        {
            return Err(settings.error(
                "NATS_CREDS",
                format!(
                    "{} is not a readable file; give the path of a .creds file (user JWT and NKey seed)",
                    path.display()
                ),
            ));
        }
        let subject_template = settings
            .get("NATS_SUBJECT_TEMPLATE")
            .unwrap_or(DEFAULT_SUBJECT_TEMPLATE)
            .to_string();
        if !subject_template.contains("{topic}") {
            return Err(settings.error(
                "NATS_SUBJECT_TEMPLATE",
                "must contain {topic}, e.g. \"outbox.{topic}\"",
            ));
        }
        if let Err(problem) = check_subject(&subject_template.replace("{topic}", "topic")) {
            return Err(settings.error("NATS_SUBJECT_TEMPLATE", problem));
        }
        if creds.is_some() && login.is_some() {
            return Err(settings.error(
                "NATS_CREDS",
                "is set and NATS_URL names a user or token too; use one of them",
            ));
        }
        Ok(NatsConfig {
            servers,
            creds,
            subject_template,
            login,
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for NatsConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(NatsSink {
            config: self.clone(),
            link: None,
        })
    }
}

pub struct NatsSink {
    config: NatsConfig,
    /// The client and its JetStream context; `None` until connected or after an outage.
    link: Option<Link>,
}

struct Link {
    client: Client,
    jetstream: async_nats::jetstream::Context,
}

impl NatsSink {
    fn servers(&self) -> String {
        redacted(&self.config.servers).join(",")
    }

    fn subject_for(&self, topic: &str) -> String {
        self.config.subject_template.replace("{topic}", topic)
    }

    /// Forgets the connection after an outage: the next publish connects afresh.
    fn lost(&mut self, error: SinkError) -> SinkError {
        self.link = None;
        error
    }
}

#[async_trait]
impl Publisher for NatsSink {
    /// JetStream may refuse one message (no stream captures its subject, too large for the
    /// stream, the stream is full) and store the next one of the same key, which may go to
    /// another subject: a later event of a key is sent only once the earlier one is acknowledged.
    /// Each wave is still one pipelined round trip.
    fn ordering(&self) -> Ordering {
        Ordering::OneVerdictPerKey
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        self.link = None;
        let mut options = ConnectOptions::new()
            .name("outbox-relay")
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        match &self.config.login {
            Some(Login::UserPassword(user, password)) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            Some(Login::Token(token)) => options = options.token(token.clone()),
            None => {}
        }
        if let Some(path) = &self.config.creds {
            options = options.credentials_file(path).await.map_err(|e| {
                SinkError::Unavailable(format!(
                    "cannot read the NATS credentials file {} (NATS_CREDS): {e}",
                    path.display()
                ))
            })?;
        }
        let mut addresses = Vec::with_capacity(self.config.servers.len());
        for url in &self.config.servers {
            addresses.push(ServerAddr::from_str(url).map_err(|_| {
                SinkError::Unavailable(format!("invalid NATS URL {}", redact_one(url)))
            })?);
        }
        let client = options.connect(addresses).await.map_err(|e| {
            SinkError::Unavailable(format!("cannot connect to NATS at {}: {e}", self.servers()))
        })?;
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(MAX_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        // So that `check` and readiness mean that JetStream answers, not only the server.
        jetstream_answers(&jetstream).await.map_err(|e| {
            SinkError::Unavailable(format!(
                "NATS at {} does not answer JetStream requests ({e}): start the server with JetStream enabled (-js) and make it available to this account",
                self.servers()
            ))
        })?;
        self.link = Some(Link { client, jetstream });
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|link| link.client.connection_state() == State::Connected)
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        if !self.is_connected() {
            self.connect().await?;
        }
        let Some(link) = &self.link else {
            return Err(SinkError::Unavailable("NATS is not connected".into()));
        };
        let jetstream = link.jetstream.clone();
        let mut outcomes = vec![Outcome::Delivered; events.len()];
        // Verdicts on subjects that got "no responders", asked of the JetStream API once a batch.
        let mut no_stream: HashMap<String, Outcome> = HashMap::new();
        let mut outage: Option<SinkError> = None;
        let start_indices: Vec<usize> = (0..events.len()).step_by(MAX_IN_FLIGHT).collect();
        for start in start_indices {
            let end = (start + MAX_IN_FLIGHT).min(events.len());
            if outage.is_some() {
                for outcome in &mut outcomes[start..end] {
                    *outcome = Outcome::NotSent;
                }
                continue;
            }
            // Send the part whole, then collect its acknowledgements: one round trip.
            let mut acks: Vec<(usize, String, PublishAckFuture)> = Vec::new();
            for index in start..end {
                let event = events[index];
                let subject = self.subject_for(&event.topic);
                let message = match message(event, &subject, &self.config.format) {
                    Ok(message) => message,
                    Err(reason) => {
                        outcomes[index] = Outcome::Failed(reason);
                        continue;
                    }
                };
                match jetstream.send_publish(subject.clone(), message).await {
                    Ok(ack) => acks.push((index, subject, ack)),
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        outcomes[index] = Outcome::Failed(format!(
                            "the message is larger than the NATS server's max_payload: {e}"
                        ));
                    }
                    Err(e) => {
                        outage = Some(SinkError::Unavailable(format!(
                            "publishing to NATS at {} failed: {e}",
                            self.servers()
                        )));
                        for outcome in &mut outcomes[index..end] {
                            *outcome = Outcome::NotSent;
                        }
                        break;
                    }
                }
            }
            for (index, subject, ack) in acks {
                // After an outage, only acknowledgements that already arrived count.
                let result = if outage.is_some() {
                    match ack.into_future().now_or_never() {
                        Some(result) => result,
                        None => {
                            outcomes[index] = Outcome::NotSent;
                            continue;
                        }
                    }
                } else {
                    ack.await
                };
                outcomes[index] = match result {
                    Ok(_) => Outcome::Delivered,
                    // NATS is down already: do not ask it which stream captures the subject.
                    Err(e) if e.kind() == PublishErrorKind::StreamNotFound && outage.is_some() => {
                        Outcome::NotSent
                    }
                    Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                        let verdict = match no_stream.get(&subject) {
                            Some(verdict) => Ok(verdict.clone()),
                            None => no_stream_verdict(&jetstream, &subject).await,
                        };
                        match verdict {
                            Ok(verdict) => {
                                no_stream.insert(subject, verdict.clone());
                                verdict
                            }
                            Err(e) => {
                                outage.get_or_insert(e);
                                Outcome::NotSent
                            }
                        }
                    }
                    Err(e) => match classify(&e) {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            outage.get_or_insert(e);
                            Outcome::NotSent
                        }
                    },
                };
            }
        }
        match outage {
            // What was acknowledged is still marked delivered; the rest waits for NATS (not the
            // event's fault, so no attempt is used).
            Some(error) if outcomes.contains(&Outcome::Delivered) => {
                self.link = None;
                Ok(outcomes
                    .into_iter()
                    .map(|o| match o {
                        Outcome::NotSent => Outcome::Deferred(error.to_string()),
                        other => other,
                    })
                    .collect())
            }
            Some(error) => Err(self.lost(error)),
            None => Ok(outcomes),
        }
    }

    /// Drops the connection; acknowledgements of the abandoned publishes cannot reach a new
    /// batch, which waits on replies of its own. A publish the old client still sends later is
    /// dropped by the stream's duplicate window (same `Nats-Msg-Id`).
    async fn abandon(&mut self) {
        self.link = None;
    }

    /// Every publish was acknowledged already: closing only says goodbye, and a server that is
    /// down must not hold up the relay's shutdown.
    async fn close(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), link.client.drain()).await;
        }
    }
}

/// Whether the JetStream API answers for this account (`$JS.API.INFO`). The reply is read as
/// plain JSON: its exact shape differs between server versions.
async fn jetstream_answers(jetstream: &async_nats::jetstream::Context) -> Result<(), String> {
    let reply: serde_json::Value = jetstream
        .request("INFO", &serde_json::Map::new())
        .await
        .map_err(|e| e.to_string())?;
    match reply.get("error") {
        Some(error) => Err(format!("JetStream answered with an error: {error}")),
        None => Ok(()),
    }
}

/// After "no responders": whether JetStream answers, and whether a stream captures `subject`.
async fn no_stream_verdict(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
) -> Result<Outcome, SinkError> {
    if let Err(e) = jetstream_answers(jetstream).await {
        return Err(SinkError::Unavailable(format!(
            "JetStream did not answer a publish to {subject:?} nor an API request ({e}): JetStream is disabled or unavailable on the NATS server"
        )));
    }
    match jetstream.stream_by_subject(subject).await {
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Ok(Outcome::Failed(format!(
            "no JetStream stream captures subject {subject:?} (NATS answered \"no responders\"); add the subject to a stream or change NATS_SUBJECT_TEMPLATE, then `outbox-relay dead-letters retry`"
        ))),
        Ok(stream) => Err(SinkError::Unavailable(format!(
            "stream {stream:?} captures subject {subject:?} but did not answer the publish: the stream is unavailable (e.g. it has no leader)"
        ))),
        Err(e) => Err(SinkError::Unavailable(format!(
            "JetStream did not answer a publish to {subject:?} and looking up its stream failed: {e}"
        ))),
    }
}

/// An error in a publish acknowledgement: the event's fault (an attempt), back-pressure (no
/// attempt) or an outage (`Err`).
fn classify(error: &PublishError) -> Result<Outcome, SinkError> {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Ok(Outcome::Failed(format!(
            "the message is larger than the NATS server's max_payload: {error}"
        ))),
        PublishErrorKind::MaxAckPending => {
            Ok(Outcome::Deferred(format!("NATS back-pressure: {error}")))
        }
        PublishErrorKind::Other => {
            let api_error = std::error::Error::source(error)
                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>());
            match api_error {
                Some(api) => classify_code(api.error_code(), api.code(), &api.to_string()),
                None => Err(SinkError::Unavailable(format!(
                    "publishing to JetStream failed: {error}"
                ))),
            }
        }
        _ => Err(SinkError::Unavailable(format!(
            "publishing to JetStream failed: {error}"
        ))),
    }
}

/// A JetStream API error in a publish acknowledgement, by its error code.
fn classify_code(code: ErrorCode, status: usize, text: &str) -> Result<Outcome, SinkError> {
    match code {
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_SEALED => Ok(Outcome::Failed(format!(
            "JetStream rejected the event: {text}"
        ))),
        // A stream or account at its limits with discard=new: wait until there is room.
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES => {
            Ok(Outcome::Deferred(format!("JetStream is full: {text}")))
        }
        _ if status >= 500 => Err(SinkError::Unavailable(format!(
            "JetStream is unavailable: {text}"
        ))),
        _ => Ok(Outcome::Failed(format!(
            "JetStream rejected the event: {text}"
        ))),
    }
}

/// The NATS message of an event in `format`: its headers, `Nats-Msg-Id` and the body (raw: the
/// event's headers and the payload verbatim).
fn message(event: &Event, subject: &str, format: &Format) -> Result<PublishMessage, String> {
    check_subject(subject)
        .map_err(|problem| format!("topic {:?} gives subject {problem}", event.topic))?;
    let formatted = format.message(event, Binding::Nats)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &formatted.headers {
        if name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
        {
            return Err(format!(
                "header {name:?}: headers starting with Nats- are JetStream directives, reserved for the relay (Nats-Msg-Id is the message id)"
            ));
        }
        let header_name = HeaderName::from_str(name).map_err(|_| {
            format!("header name {name:?} is not a valid NATS header name (no ':', spaces, control or non-ASCII characters)")
        })?;
        let header_value = HeaderValue::from_str(value.as_ref())
            .map_err(|_| format!("header {name:?}: a NATS header value cannot contain CR or LF"))?;
        headers.append(header_name, header_value);
    }
    headers.insert(NATS_MESSAGE_ID, event.message_id.to_string().as_str());
    Ok(PublishMessage::build()
        .payload(Bytes::copy_from_slice(&formatted.body))
        .headers(headers))
}

/// A subject a message can be published to: dot-separated non-empty tokens, no wildcards, no
/// white space, and not the system's API subjects.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("\"\": a NATS subject cannot be empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{subject:?}: a NATS subject cannot contain white space or control characters"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "{subject:?}: a NATS subject cannot have empty tokens (leading, trailing or double dots)"
        ));
    }
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return Err(format!(
            "{subject:?}: a message cannot be published to a wildcard subject"
        ));
    }
    if subject.starts_with("$JS.") || subject.starts_with("$SYS.") || subject.starts_with("$JSC.") {
        return Err(format!(
            "{subject:?}: subjects starting with $JS., $JSC. or $SYS. are NATS's own API"
        ));
    }
    Ok(())
}

/// The user and password (`nats://user:password@host`) or token (`nats://token@host`) of a URL,
/// percent-decoded.
fn login_of(url: &str) -> Result<Option<Login>, String> {
    let parsed = url::Url::parse(url).map_err(|_| "is not a valid URL".to_string())?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "has a user name or password that is not UTF-8 once decoded".to_string())
    };
    let user = decode(parsed.username())?;
    Ok(match parsed.password() {
        Some(password) => Some(Login::UserPassword(user, decode(password)?)),
        None if !user.is_empty() => Some(Login::Token(user)),
        None => None,
    })
}

fn redact_one(url: &str) -> String {
    without_credentials(url).unwrap_or_else(|| "(unparsable URL)".into())
}

fn redacted(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redact_one(u)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn read(pairs: &[(&str, &str)]) -> Result<NatsConfig, ConfigError> {
        NatsConfig::read(&Settings::from_pairs(pairs).default_sink())
    }

    #[test]
    fn urls_are_checked_and_secrets_stay_out_of_debug_output() {
        let config = read(&[(
            "OUTBOX_NATS_URL",
            "nats://app:s3cret@n1:4222, tls://app:s3cret@n2:4222",
        )])
        .expect("valid");
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.subject_template, "{topic}");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("n1:4222"), "{debug}");
        assert!(read(&[("OUTBOX_NATS_URL", "nats://app:s3cret@n1, nats://other:x@n2")]).is_err());
        let encoded = read(&[("OUTBOX_NATS_URL", "nats://app:p%40ss@n1")]).expect("valid");
        assert!(encoded.login == Some(Login::UserPassword("app".into(), "p@ss".into())));
        let token = read(&[("OUTBOX_NATS_URL", "tls://t0ken@n1")]).expect("valid");
        assert!(token.login == Some(Login::Token("t0ken".into())));
        assert!(!format!("{token:?}").contains("t0ken"));

        let wrong = read(&[("OUTBOX_NATS_URL", "http://n1:4222")]).unwrap_err();
        assert!(wrong.to_string().contains("OUTBOX_NATS_URL"), "{wrong}");
        assert!(read(&[("OUTBOX_NATS_URL", "nats://n1,")]).is_err());
        assert!(read(&[]).is_err());
    }

    #[test]
    fn the_subject_template_needs_topic_and_a_valid_subject() {
        let url = ("OUTBOX_NATS_URL", "nats://127.0.0.1:4222");
        let ok = read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "outbox.{topic}")]).expect("valid");
        assert_eq!(ok.subject_template, "outbox.{topic}");
        assert!(read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "outbox")]).is_err());
        assert!(read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "a.*.{topic}")]).is_err());
        assert!(read(&[url, ("OUTBOX_NATS_CREDS", "/nonexistent/x.creds")]).is_err());
    }

    #[test]
    fn subjects_and_headers_nats_cannot_carry_are_the_events_fault() {
        assert!(check_subject("orders.paid").is_ok());
        for bad in ["", "a b", "a..b", ".a", "a.", "a.*", "a.>", "$JS.API.INFO"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        let mut event = crate::outbox::event::test_event(1, Some("k"));
        event.headers = vec![("trace".into(), "abc".into())];
        assert!(message(&event, "t", &Format::Raw).is_ok());
        event.headers = vec![("Nats-Rollup".into(), "all".into())];
        assert!(
            message(&event, "t", &Format::Raw)
                .unwrap_err()
                .contains("reserved")
        );
        event.headers = vec![("a:b".into(), "x".into())];
        assert!(message(&event, "t", &Format::Raw).is_err());
        event.headers = vec![("a".into(), "x\r\ny".into())];
        assert!(message(&event, "t", &Format::Raw).is_err());
    }

    #[test]
    fn a_format_applies_and_an_event_it_cannot_carry_is_the_events_fault() {
        // The headers' naming (ce-*, content-type) is tested in `format`.
        let mut event = crate::outbox::event::test_event(1, Some("k"));
        event.payload = b"not json".to_vec();
        let cloudevents = Format::CloudEvents {
            source: "/relay".into(),
            mode: crate::format::Mode::Binary,
        };
        assert!(message(&event, "t", &cloudevents).is_ok());
        let masstransit = read(&[
            ("OUTBOX_NATS_URL", "nats://127.0.0.1:4222"),
            ("OUTBOX_FORMAT", "masstransit"),
        ])
        .expect("valid")
        .format;
        let err = message(&event, "t", &masstransit).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn jetstream_errors_are_classified() {
        assert!(matches!(
            classify_code(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM, 400, "too big"),
            Ok(Outcome::Failed(_))
        ));
        assert!(matches!(
            classify_code(
                ErrorCode::STREAM_STORE_FAILED,
                503,
                "maximum messages exceeded"
            ),
            Ok(Outcome::Deferred(_))
        ));
        assert!(classify_code(ErrorCode::CLUSTER_NOT_AVAILABLE, 503, "unavailable").is_err());
        assert!(classify(&PublishError::new(PublishErrorKind::TimedOut)).is_err());
        assert!(classify(&PublishError::new(PublishErrorKind::BrokenPipe)).is_err());
    }
}
