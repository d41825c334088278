//! A webhook receiver of the test's (or bench scenario's) own: an HTTP/1.1 and HTTP/2 server on
//! 127.0.0.1 that records every request as it arrives and as it was answered (a status, headers,
//! a body; after a delay), and puts the POSTs it accepted (2xx) in its inbox.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};

use super::consumer::{Consumer, Inbox, Received};
use super::relay::fast_settings;

/// The relay's settings for the http sink posting to `url` (a template with `{topic}`).
pub fn http_settings(url: &str) -> Vec<(&'static str, String)> {
    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "http".into()));
    settings.push(("OUTBOX_WEBHOOK_URL", url.into()));
    settings
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names; a repeated header keeps its last value.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// As a consumer got it: the message id from `webhook-id`, the destination the path.
    pub fn received(&self) -> Received {
        Received {
            destination: self.path.clone(),
            message_id: self.header("webhook-id").unwrap_or_default().to_string(),
            headers: self.headers.clone(),
            content_type: self.header("content-type").map(str::to_string),
            at: self.at,
            ..Received::new(self.body.clone())
        }
    }
}

/// How the receiver answers a request: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// How the receiver decides its answer.
pub enum Respond {
    /// The same status, no body, to everything.
    Always(u16),
    /// What the function says of the request.
    With(Box<dyn Fn(&Request) -> Answer + Send>),
}

/// Answers every request with `status`.
pub fn always(status: u16) -> Respond {
    Respond::Always(status)
}

/// Answers each request as `respond` says.
pub fn answer(respond: impl Fn(&Request) -> Answer + Send + 'static) -> Respond {
    Respond::With(Box::new(respond))
}

struct Shared {
    /// Every request, when the inbox keeps messages.
    requests: Mutex<Vec<Request>>,
    respond: Mutex<Respond>,
    /// How long to wait before answering a POST.
    delay: Mutex<Duration>,
    posts: AtomicU64,
    /// The distinct `webhook-id`s of the POSTs (as UUIDs).
    ids: Mutex<HashSet<u128>>,
    /// The `webhook-id` of every POST as it arrived, before any delay or answer.
    arrivals: Mutex<Vec<String>>,
    inbox: Inbox,
}

/// A webhook receiver on 127.0.0.1, stopped on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer for Receiver {
    fn received(&self) -> Vec<Received> {
        self.shared.inbox.received()
    }

    fn count(&self) -> usize {
        self.shared.inbox.count() as usize
    }
}

impl Receiver {
    /// On a free port, keeping every request (the tests).
    pub async fn start(respond: Respond) -> Receiver {
        Self::start_on(0, respond).await
    }

    /// On `port`, keeping every request.
    pub async fn start_on(port: u16, respond: Respond) -> Receiver {
        Self::serve(port, respond, Inbox::keeping())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// On `port` (0: a free one), the accepted POSTs going to `inbox`; requests are kept only when
    /// the inbox keeps messages.
    pub async fn serve(port: u16, respond: Respond, inbox: Inbox) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (shared, app) = Self::app(respond, inbox);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("webhook receiver: {e}");
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    /// Over TLS with `tls` (whose ALPN decides between HTTP/2 and HTTP/1.1).
    pub async fn start_tls(tls: rustls::ServerConfig, respond: Respond) -> Receiver {
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the test receiver");
        let addr = tcp.local_addr().expect("receiver address");
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        };
        let (shared, app) = Self::app(respond, Inbox::keeping());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    fn app(respond: Respond, inbox: Inbox) -> (Arc<Shared>, axum::Router) {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            respond: Mutex::new(respond),
            delay: Mutex::new(Duration::ZERO),
            posts: AtomicU64::new(0),
            ids: Mutex::new(HashSet::new()),
            arrivals: Mutex::new(Vec::new()),
            inbox,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        (shared, app)
    }

    /// Where the accepted POSTs go: counts and arrival instants (the bench).
    pub fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn respond(&self, respond: Respond) {
        *self.shared.respond.lock().expect("respond") = respond;
    }

    pub fn delay(&self, delay: Duration) {
        *self.shared.delay.lock().expect("delay") = delay;
    }

    /// Every POST so far, in arrival order (HEAD probes are left out).
    pub fn posts(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|r| r.method == Method::POST)
            .cloned()
            .collect()
    }

    /// The POSTs answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Request> {
        self.posts()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// How many POSTs arrived.
    pub fn post_count(&self) -> u64 {
        self.shared.posts.load(Ordering::Relaxed)
    }

    /// The `webhook-id` of every POST that arrived, answered or not (still waiting out the
    /// delay, or given up by the sender), in arrival order.
    pub fn arrivals(&self) -> Vec<String> {
        self.shared
            .arrivals
            .lock()
            .map_or(Vec::new(), |a| a.clone())
    }

    /// How many different `webhook-id`s the POSTs carried.
    pub fn distinct_ids(&self) -> u64 {
        self.shared.ids.lock().map_or(0, |ids| ids.len() as u64)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts TCP connections and completes their TLS handshake; failed handshakes are dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = *shared.delay.lock().unwrap_or_else(|e| e.into_inner());
    let post = method == Method::POST;
    if post
        && shared.inbox.keeps()
        && let Ok(mut arrivals) = shared.arrivals.lock()
    {
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
        arrivals.push(id.unwrap_or_default().to_string());
    }
    if post && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let at = Instant::now();
    if post {
        shared.posts.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| uuid::Uuid::parse_str(v).ok())
            && let Ok(mut ids) = shared.ids.lock()
        {
            ids.insert(id.as_u128());
        }
    }
    let fixed = match &*shared.respond.lock().unwrap_or_else(|e| e.into_inner()) {
        Respond::Always(status) => Some(*status),
        Respond::With(_) => None,
    };
    let (status, extra, text) = match fixed {
        // Counting (the bench): answered without building a request.
        Some(status) if !shared.inbox.keeps() => {
            if post && (200..300).contains(&status) {
                shared
                    .inbox
                    .arrived(&body, at, || Received::new(Vec::new()));
            }
            (status, Vec::new(), String::new())
        }
        _ => record(&shared, method, version, uri, headers, body, at),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, text.into_bytes()).into_response();
    for (name, value) in extra {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Keeps the request and its answer; an accepted POST goes to the inbox too.
fn record(
    shared: &Shared,
    method: Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
) -> Answer {
    let mut request = Request {
        method,
        version,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: 0,
        at,
    };
    let answer = match &*shared.respond.lock().unwrap_or_else(|e| e.into_inner()) {
        Respond::Always(status) => (*status, Vec::new(), String::new()),
        Respond::With(respond) => respond(&request),
    };
    request.status = answer.0;
    if request.method == Method::POST && (200..300).contains(&request.status) {
        shared
            .inbox
            .arrived(&request.body, at, || request.received());
    }
    if shared.inbox.keeps()
        && let Ok(mut requests) = shared.requests.lock()
    {
        requests.push(request);
    }
    answer
}
