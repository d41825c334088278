//! The receiver's answer to a `POST`, read whole, and what it (or the request's failure) means
//! for the event: delivered, the event's fault, or an outage that may ask to wait
//! (`Retry-After`, which goes out as [`SinkError::RetryAfter`]).

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::client::{chain, describe_failure};
use super::settings::HttpConfig;
use crate::sink::{Classify, Fault, Outcome, SinkError};

/// How much of a refusing response's body goes into `last_error`, in characters.
const BODY_START_CHARS: usize = 200;
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Bytes of a response body read at most (the rest is dropped with the connection).
const MAX_BODY_READ: usize = 64 * 1024;

/// The receiver's answer to a `POST`, read whole before it is classified.
pub(super) struct Answer {
    status: StatusCode,
    /// `Retry-After`, honoured when the status is an outage.
    retry_after: Option<Duration>,
    /// The start of the body (see [`body_start`]).
    body: String,
}

impl Answer {
    /// Reads (a bounded part of) the body also on success, so the connection can be reused.
    pub(super) async fn read(response: reqwest::Response) -> Answer {
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

/// The answer to a `POST` of an event of `topic`, or its failure, as the event's verdict:
/// delivered, the event's fault (an attempt), or an outage (`Err`, with the receiver's
/// `Retry-After`).
pub(super) fn verdict(
    answer: Result<Answer, reqwest::Error>,
    config: &HttpConfig,
    topic: &str,
) -> Result<Outcome, SinkError> {
    if answer.as_ref().is_ok_and(|a| a.status.is_success()) {
        return Ok(Outcome::Delivered);
    }
    let undelivered = Undelivered {
        answer,
        config,
        topic,
    };
    let retry_after = undelivered.answer.as_ref().ok().and_then(|a| a.retry_after);
    match (undelivered.classify(), retry_after) {
        (Fault::Outage(reason), Some(retry_after)) => Err(SinkError::RetryAfter {
            reason,
            retry_after,
        }),
        (fault, _) => fault.outcome(),
    }
}

/// A `POST` that did not deliver its event: the receiver answered other than 2xx, or the
/// request failed. With what names the webhook and the event in messages.
struct Undelivered<'a> {
    answer: Result<Answer, reqwest::Error>,
    config: &'a HttpConfig,
    topic: &'a str,
}

/// A request that could not be built is the event's fault; one that failed, and 408, 429 and
/// 5xx, an outage; any other status the event's fault, with the start of the body.
impl Classify for Undelivered<'_> {
    fn classify(&self) -> Fault {
        let answer = match &self.answer {
            Ok(answer) => answer,
            Err(e) if e.is_builder() => {
                return Fault::Event(format!(
                    "cannot build the request for topic {:?}: {}",
                    self.topic,
                    chain(e)
                ));
            }
            Err(e) => {
                return Fault::Outage(format!(
                    "POST to the webhook {} failed: {}",
                    self.config.url.describe(),
                    describe_failure(e, self.config.timeout)
                ));
            }
        };
        let answered = format!(
            "the webhook {} answered {}{}",
            self.config.url.describe(),
            describe_status(answer.status),
            if answer.body.is_empty() {
                String::new()
            } else {
                format!(": {}", answer.body)
            }
        );
        if is_outage(answer.status) {
            return Fault::Outage(format!("{answered}; the batch will be sent again"));
        }
        Fault::Event(answered)
    }
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
            verdict(answer(204, None, ""), &config, "t").expect("delivered"),
            Outcome::Delivered
        );
        let Ok(Outcome::Failed(refused)) = verdict(answer(404, None, ""), &config, "t") else {
            panic!("404 is the event's fault");
        };
        assert_eq!(
            refused,
            "the webhook https://hooks.example.com/in/{topic} answered HTTP 404 Not Found"
        );
        let Err(SinkError::RetryAfter {
            reason,
            retry_after,
        }) = verdict(answer(503, Some(3), "busy"), &config, "t")
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
        let Err(SinkError::Unavailable(reason)) = verdict(answer(429, None, ""), &config, "t")
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
