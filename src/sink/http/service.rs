//! The webhook sink's service: the client, a batch sent as concurrent `POST`s, and what the
//! receiver's answers and failures mean ([`classify`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::client::{chain, client, describe_failure};
use super::encode::{Unencodable, request};
use super::settings::HttpConfig;
use crate::health::SinkHealth;
use crate::outbox::event::Event;
use crate::sink::{Ordering, Outcome, Publisher, SinkConfig, SinkError};

/// How much of a refusing response's body goes into `last_error`, in characters.
const BODY_START_CHARS: usize = 200;
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Bytes of a response body read at most (the rest is dropped with the connection).
const MAX_BODY_READ: usize = 64 * 1024;

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
    classify(answer, config, &event.topic)
}

/// The receiver's answer to a `POST`, read whole before it is classified.
struct Answer {
    status: StatusCode,
    /// `Retry-After`, honoured when the status is an outage.
    retry_after: Option<Duration>,
    /// The start of the body (see [`body_start`]).
    body: String,
}

impl Answer {
    /// Reads (a bounded part of) the body also on success, so the connection can be reused.
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = body_start(response).await;
        Answer {
            status,
            retry_after,
            body,
        }
    }
}

/// What the answer to a `POST` of an event of `topic`, or its failure, means: delivered, the
/// event's fault (an attempt), or an outage (`Err`, with the receiver's `Retry-After`).
fn classify(
    answer: Result<Answer, reqwest::Error>,
    config: &HttpConfig,
    topic: &str,
) -> Result<Outcome, SinkError> {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) if e.is_builder() => {
            return Ok(Outcome::Failed(format!(
                "cannot build the request for topic {topic:?}: {}",
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
    if answer.status.is_success() {
        return Ok(Outcome::Delivered);
    }
    let answered = format!(
        "the webhook {} answered {}{}",
        config.url.describe(),
        describe_status(answer.status),
        if answer.body.is_empty() {
            String::new()
        } else {
            format!(": {}", answer.body)
        }
    );
    if is_outage(answer.status) {
        let reason = format!("{answered}; the batch will be sent again");
        return Err(match answer.retry_after {
            Some(retry_after) => SinkError::RetryAfter {
                reason,
                retry_after,
            },
            None => SinkError::Unavailable(reason),
        });
    }
    Ok(Outcome::Failed(answered))
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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

    fn answer(status: u16, retry_after: Option<u64>, body: &str) -> Result<Answer, reqwest::Error> {
        Ok(Answer {
            status: StatusCode::from_u16(status).expect("status"),
            retry_after: retry_after.map(Duration::from_secs),
            body: body.into(),
        })
    }

    #[test]
    fn answers_are_classified_without_credentials() {
        let config = crate::sink::http::settings::tests::read(&[(
            "OUTBOX_WEBHOOK_URL",
            "https://user:pa55word@hooks.example.com/in/{topic}?token=t0ken",
        )])
        .expect("valid");
        assert_eq!(
            classify(answer(204, None, ""), &config, "t").expect("delivered"),
            Outcome::Delivered
        );
        let Ok(Outcome::Failed(refused)) = classify(answer(404, None, ""), &config, "t") else {
            panic!("404 is the event's fault");
        };
        assert_eq!(
            refused,
            "the webhook https://hooks.example.com/in/{topic} answered HTTP 404 Not Found"
        );
        let Err(SinkError::RetryAfter {
            reason,
            retry_after,
        }) = classify(answer(503, Some(3), "busy"), &config, "t")
        else {
            panic!("503 with Retry-After is an outage that asks to wait");
        };
        assert_eq!(retry_after, Duration::from_secs(3));
        assert!(
            reason.ends_with(
                "answered HTTP 503 Service Unavailable: busy; the batch will be sent again"
            ),
            "{reason}"
        );
        let Err(SinkError::Unavailable(reason)) = classify(answer(429, None, ""), &config, "t")
        else {
            panic!("429 is an outage");
        };
        for secret in ["pa55word", "t0ken"] {
            assert!(
                !reason.contains(secret) && !refused.contains(secret),
                "{reason}"
            );
        }
    }
}
