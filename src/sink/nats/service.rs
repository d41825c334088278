//! The NATS sink's service: the connection and its JetStream context, publishing a batch in
//! parts of at most [`MAX_IN_FLIGHT`] and waiting for their acknowledgements. A batch of one
//! part is sent and its acknowledgements awaited later, so that the next batch may follow it.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::{
    Context, GetStreamByNameErrorKind, PublishAckFuture, PublishErrorKind,
};
use async_nats::{Client, ConnectOptions, ServerAddr};
use async_trait::async_trait;
use futures_util::FutureExt;

use super::classify::too_large;
use super::encode::message;
use super::settings::{Login, NatsConfig, redact_one};
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::sink::{Answer, Classify, Ordering, Outcome, Publisher, SinkConfig, SinkError};

/// Publishes awaiting their acknowledgement at once; a larger wave is sent in parts of this size.
const MAX_IN_FLIGHT: usize = 1024;

/// How long one publish acknowledgement or JetStream API request may take. The whole publish is
/// bounded by `OUTBOX_PUBLISH_TIMEOUT_MS` too.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    jetstream: Context,
    /// Set when a batch whose acknowledgements were awaited later ended in an outage: the next
    /// publish connects afresh, as after any other outage.
    lost: Arc<AtomicBool>,
}

impl NatsSink {
    /// The link, connecting first when it is not connected.
    async fn connected(&mut self) -> Result<&Link, SinkError> {
        if !self.is_connected() {
            self.connect().await?;
        }
        (self.link.as_ref()).ok_or_else(|| SinkError::Unavailable("NATS is not connected".into()))
    }

    /// The client's options: its name, timeouts and login.
    async fn options(&self) -> Result<ConnectOptions, SinkError> {
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
        Ok(options)
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
        let options = self.options().await?;
        let mut addresses = Vec::with_capacity(self.config.servers.len());
        for url in &self.config.servers {
            addresses.push(ServerAddr::from_str(url).map_err(|_| {
                SinkError::Unavailable(format!("invalid NATS URL {}", redact_one(url)))
            })?);
        }
        let client = options.connect(addresses).await.map_err(|e| {
            SinkError::Unavailable(format!(
                "cannot connect to NATS at {}: {e}",
                self.config.describe_servers()
            ))
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
                self.config.describe_servers()
            ))
        })?;
        self.link = Some(Link {
            client,
            jetstream,
            lost: Arc::default(),
        });
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|link| {
            link.client.connection_state() == State::Connected && !link.lost.load(Atomic::Relaxed)
        })
    }

    async fn publish(&mut self, events: &[&Event]) -> Result<Vec<Outcome>, SinkError> {
        let link = self.connected().await?;
        let mut batch = Batch::new(link.jetstream.clone(), events.len());
        for start in (0..events.len()).step_by(MAX_IN_FLIGHT) {
            let part = start..(start + MAX_IN_FLIGHT).min(events.len());
            if batch.outage.is_some() {
                batch.not_sent(part);
                continue;
            }
            // Send the part whole, then collect its acknowledgements: one round trip.
            let acks = batch.send(events, part, &self.config).await;
            batch.settle(acks).await;
        }
        if batch.outage.is_some() {
            // Forgets the connection: the next publish connects afresh.
            self.link = None;
        }
        batch.verdicts()
    }

    /// A batch of one part: sent whole, its acknowledgements awaited later, holding nothing of
    /// the sink.
    async fn send(&mut self, events: &[&Event]) -> Result<Answer, SinkError> {
        if events.len() > MAX_IN_FLIGHT {
            return self.publish(events).await.map(Answer::Now);
        }
        let link = self.connected().await?;
        let lost = link.lost.clone();
        let mut batch = Batch::new(link.jetstream.clone(), events.len());
        let acks = batch.send(events, 0..events.len(), &self.config).await;
        Ok(Answer::Later(Box::pin(async move {
            batch.settle(acks).await;
            if batch.outage.is_some() {
                lost.store(true, Atomic::Relaxed);
            }
            batch.verdicts()
        })))
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

/// A publish sent, awaiting its acknowledgement: the event's index and its subject.
type Ack = (usize, String, PublishAckFuture);

/// One publish of a batch: the verdicts so far and the outage that ends it.
struct Batch {
    jetstream: Context,
    /// One per event; delivered until known otherwise.
    outcomes: Vec<Outcome>,
    /// Verdicts on subjects that got "no responders", asked of the JetStream API once a batch.
    no_stream: HashMap<String, Outcome>,
    /// The first outage: nothing more is sent, and only acknowledgements that arrived count.
    outage: Option<SinkError>,
}

impl Batch {
    fn new(jetstream: Context, events: usize) -> Batch {
        Batch {
            jetstream,
            outcomes: vec![Outcome::Delivered; events],
            no_stream: HashMap::new(),
            outage: None,
        }
    }

    fn not_sent(&mut self, part: Range<usize>) {
        for outcome in &mut self.outcomes[part] {
            *outcome = Outcome::NotSent;
        }
    }

    /// Sends the events of `part` without waiting; stops at an outage (the rest is not sent).
    async fn send(
        &mut self,
        events: &[&Event],
        part: Range<usize>,
        config: &NatsConfig,
    ) -> Vec<Ack> {
        let mut acks = Vec::new();
        for index in part.clone() {
            let event = events[index];
            let subject = config.subject_for(&event.topic);
            let message = match message(event, &subject, &config.format) {
                Ok(message) => message,
                Err(reason) => {
                    self.outcomes[index] = Outcome::Failed(reason);
                    continue;
                }
            };
            match self.jetstream.send_publish(subject.clone(), message).await {
                Ok(ack) => acks.push((index, subject, ack)),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    self.outcomes[index] = Outcome::Failed(too_large(&e));
                }
                Err(e) => {
                    self.outage = Some(SinkError::Unavailable(format!(
                        "publishing to NATS at {} failed: {e}",
                        config.describe_servers()
                    )));
                    self.not_sent(index..part.end);
                    break;
                }
            }
        }
        acks
    }

    /// Waits for the acknowledgements of `acks` and records the verdicts. After an outage, only
    /// acknowledgements that already arrived count.
    async fn settle(&mut self, acks: Vec<Ack>) {
        for (index, subject, ack) in acks {
            let result = if self.outage.is_some() {
                match ack.into_future().now_or_never() {
                    Some(result) => result,
                    None => {
                        self.outcomes[index] = Outcome::NotSent;
                        continue;
                    }
                }
            } else {
                ack.await
            };
            self.outcomes[index] = match result {
                Ok(_) => Outcome::Delivered,
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                    self.no_stream(subject).await
                }
                Err(e) => match e.classify().outcome() {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        self.outage.get_or_insert(e);
                        Outcome::NotSent
                    }
                },
            };
        }
    }

    /// The batch's verdicts: one per event, or the outage when nothing was delivered. What was
    /// acknowledged before an outage is still delivered; the rest waits for NATS (not the
    /// event's fault, so no attempt is used).
    fn verdicts(self) -> Result<Vec<Outcome>, SinkError> {
        match self.outage {
            Some(error) if self.outcomes.contains(&Outcome::Delivered) => Ok((self.outcomes)
                .into_iter()
                .map(|o| match o {
                    Outcome::NotSent => Outcome::Deferred(error.to_string()),
                    other => other,
                })
                .collect()),
            Some(error) => Err(error),
            None => Ok(self.outcomes),
        }
    }

    /// The verdict on an event whose publish to `subject` got "no responders".
    async fn no_stream(&mut self, subject: String) -> Outcome {
        // NATS is down already: do not ask it which stream captures the subject.
        if self.outage.is_some() {
            return Outcome::NotSent;
        }
        let verdict = match self.no_stream.get(&subject) {
            Some(verdict) => Ok(verdict.clone()),
            None => no_stream_verdict(&self.jetstream, &subject).await,
        };
        match verdict {
            Ok(verdict) => {
                self.no_stream.insert(subject, verdict.clone());
                verdict
            }
            Err(e) => {
                self.outage.get_or_insert(e);
                Outcome::NotSent
            }
        }
    }
}

/// Whether the JetStream API answers for this account (`$JS.API.INFO`). The reply is read as
/// plain JSON: its exact shape differs between server versions.
async fn jetstream_answers(jetstream: &Context) -> Result<(), String> {
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
async fn no_stream_verdict(jetstream: &Context, subject: &str) -> Result<Outcome, SinkError> {
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
