//! The relay's HTTP endpoints: a minimal GET, and metrics read from the Prometheus text.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The sum of the samples of metric `name` whose labels contain `label` (`""`: every series,
/// labelled or not); `None` when there is none.
pub fn metric_sum(body: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name
            && labels.contains(label)
            && let Ok(v) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A minimal HTTP/1.1 GET, enough for /metrics, /healthz and /readyz: status and body, `None`
/// when nothing answers within 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .ok()
        .flatten()
}
