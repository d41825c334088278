//! The HTTP client: rustls with the system's roots and `WEBHOOK_CA_FILE`'s, and how its errors
//! read without the URL (which may hold credentials).

use std::sync::Arc;
use std::time::Duration;

use super::settings::HttpConfig;

/// A client with rustls (ring): the system's roots and the CA file's, HTTP/2 when the server
/// offers it (ALPN), HTTP/1.1 otherwise; redirects are not followed (a redirected POST would
/// turn into a GET).
pub(super) fn client(config: &HttpConfig) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, not fatal.
        let _ = roots.add(cert);
    }
    for cert in &config.extra_roots {
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
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("outbox-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {}", chain(&e)))
}

/// A failed request, without its URL (which may hold credentials).
pub(super) fn describe_failure(error: &reqwest::Error, timeout: Duration) -> String {
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
pub(super) fn chain(error: &reqwest::Error) -> String {
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
