//! The webhook sink's service: the client, a batch sent as concurrent `POST`s, and what the
//! receiver's answer means ([`verdict`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;

use super::answer::{Answer, verdict};
use super::client::{client, describe_failure};
use super::encode::{Unencodable, request};
use super::settings::HttpConfig;
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::sink::{Ordering, Outcome, Publisher, SinkConfig, SinkError};

impl SinkConfig for HttpConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(HttpSink {
            config: Arc::new(self.clone()),
            client: None,
            healthy: false,
        })
    }
}

pub struct HttpSink {
    config: Arc<HttpConfig>,
    /// Pools the connections; `None` until connected, and after `abandon`/`close`.
    client: Option<reqwest::Client>,
    /// The last probe or batch reached the receiver.
    healthy: bool,
}

impl HttpSink {
    /// The client, connecting first when there is none.
    async fn connected_client(&mut self) -> Result<reqwest::Client, SinkError> {
        if self.client.is_none() {
            self.connect().await?;
        }
        match &self.client {
            Some(client) => Ok(client.clone()),
            None => Err(SinkError::Unavailable(
                "the webhook client is not set up".into(),
            )),
        }
    }
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
                let client = client(&self.config).map_err(SinkError::Unavailable)?;
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
        let client = self.connected_client().await?;
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
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let request = match request(config, event, timestamp) {
        Ok(request) => request,
        Err(Unencodable::Event(reason)) => return Ok(Outcome::Failed(reason)),
        Err(Unencodable::WebhookHeader(e)) => return Err(SinkError::Unavailable(e.to_string())),
    };
    let answer = match client.execute(request).await {
        Ok(response) => Ok(Answer::read(response).await),
        Err(e) => Err(e),
    };
    verdict(answer, config, &event.topic)
}
