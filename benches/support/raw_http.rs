//! HTTP without the relay: POSTs with the relay's default concurrency to the bench's webhook
//! receiver (the harness's, counting), in this process or in a copy of it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;

use super::machine::cpu_per_million_since;
use super::raw::CloudEventsAttributes;
use super::workload::{keys, payload};
use crate::harness::{Inbox, Receiver, always, own_cpu_secs};

/// The signing secret the relay gets (`OUTBOX_WEBHOOK_SECRET`), so signing is measured.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The relay's default `OUTBOX_WEBHOOK_CONCURRENCY`.
pub const WEBHOOK_CONCURRENCY: usize = 32;

/// The bench's webhook receiver: on a free loopback port, every POST answered 204, counted with
/// its distinct `webhook-id`s.
pub async fn receiver() -> Result<Receiver> {
    Receiver::serve(0, always(204), Inbox::counting()).await
}

/// The path the relay posts to on the bench's receiver.
pub const HOOK_PATH: &str = "/hook";

/// Set in the environment of a copy of the bench that only serves the webhook receiver.
pub const RECEIVER_ONLY: &str = "BENCH_RECEIVER_ONLY";

/// The receiver-only copy: prints its URL, serves until its stdin closes, then prints the
/// number of distinct `webhook-id`s it got. Its exit code.
pub fn serve_receiver_until_stdin_closes() -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench receiver: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let receiver = match receiver().await {
            Ok(receiver) => receiver,
            Err(e) => {
                eprintln!("bench receiver: {e:#}");
                return 1;
            }
        };
        println!("{}", receiver.url(HOOK_PATH));
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
        println!("{}", receiver.distinct_ids());
        receiver.stop();
        0
    })
}

/// The raw HTTP client's own CPU per 1M POSTs: [`http_raw_post`] against a receiver in a copy
/// of this process, so that only the client runs here.
pub async fn http_raw_client_cpu(count: u64) -> Result<f64> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(RECEIVER_ONLY, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the receiver process")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the receiver process has no stdin or stdout");
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = lines
        .next_line()
        .await?
        .context("the receiver process printed no URL")?;
    let cpu = own_cpu_secs();
    http_raw_post(&url, count, WEBHOOK_CONCURRENCY, false).await?;
    let cpu = cpu_per_million_since(cpu, count);
    // Closing its stdin tells the receiver to print its count and stop.
    drop(stdin);
    let ids = lines
        .next_line()
        .await?
        .context("the receiver process printed no count")?;
    let _ = child.wait().await;
    if ids.trim() != count.to_string() {
        bail!(
            "the receiver got {} distinct webhook-ids for {count} requests",
            ids.trim()
        );
    }
    Ok(cpu)
}

/// `count` POSTs of the bench's payload (with a `webhook-id`, unsigned) to `url`, `in_flight` at
/// once on one pooled client. Returns the time until the last answer; every answer must be 2xx.
/// With `cloudevents_headers`, each request also carries the headers binary CloudEvents add
/// ([`CloudEventsAttributes`]).
pub async fn http_raw_post(
    url: &str,
    count: u64,
    in_flight: usize,
    cloudevents_headers: bool,
) -> Result<Duration> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .context("creating the HTTP client")?;
    let started = Instant::now();
    let mut cloudevents = cloudevents_headers.then(CloudEventsAttributes::new);
    let mut answers = futures_util::stream::iter(0..count)
        .map(|seq| {
            let id = uuid::Uuid::new_v4();
            let request = client
                .post(url)
                .header("webhook-id", id.to_string())
                .body(payload(seq));
            let request = match &mut cloudevents {
                None => Ok(request.header("content-type", "application/json")),
                Some(attributes) => attributes
                    .of(
                        outbox_relay::sink::http::BINDING,
                        id,
                        &(seq % keys()).to_string(),
                    )
                    .map(|headers| {
                        headers
                            .iter()
                            .fold(request, |r, (name, value)| r.header(*name, value.as_ref()))
                    }),
            };
            async move { Ok::<_, anyhow::Error>(request?.send().await?) }
        })
        .buffer_unordered(in_flight);
    while let Some(answer) = answers.next().await {
        let response = answer.context("POST")?;
        if !response.status().is_success() {
            bail!("the receiver answered {}", response.status());
        }
    }
    Ok(started.elapsed())
}

/// The bench's webhook receiver hit by `count` POSTs with the relay's default concurrency.
pub async fn raw_http(count: u64, cloudevents_headers: bool) -> Result<f64> {
    let receiver = receiver().await?;
    let result = async {
        let took = http_raw_post(
            &receiver.url(HOOK_PATH),
            count,
            WEBHOOK_CONCURRENCY,
            cloudevents_headers,
        )
        .await?;
        if receiver.distinct_ids() != count {
            bail!(
                "the receiver got {} distinct webhook-ids for {count} requests",
                receiver.distinct_ids()
            );
        }
        Ok(count as f64 / took.as_secs_f64())
    }
    .await;
    receiver.stop();
    result
}
