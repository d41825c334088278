//! The Redis client of a URL, for the sinks that speak to Redis (redis, bullmq). For `rediss://` it trusts the operating system's certificate store
//! (and `SSL_CERT_FILE`), given explicitly: redis-rs trusts only webpki's bundled roots once its
//! `tls-rustls-webpki-roots` feature is on, which BullMQ's client (the bullmq sink) turns on for
//! the whole build.

use base64::Engine;
use redis::{Client, RedisResult, TlsCertificates};

/// A client for `url`; for `rediss://`, one that trusts the system's root certificates.
pub(crate) fn client(url: &str) -> RedisResult<Client> {
    if !url.starts_with("rediss://") {
        return Client::open(url);
    }
    let roots = system_roots_pem().map_err(|problem| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot read the system's root certificates",
            problem,
        ))
    })?;
    Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(roots),
        },
    )
}

/// The system's root certificates as PEM. A certificate store that cannot be read is an error,
/// as redis-rs makes it when it loads them itself.
pub(crate) fn system_roots_pem() -> Result<Vec<u8>, String> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(error) = found.errors.first() {
        return Err(error.to_string());
    }
    let mut pem = String::new();
    for cert in &found.certs {
        pem.push_str(&pem_certificate(cert.as_ref()));
    }
    Ok(pem.into_bytes())
}

/// One DER certificate as a PEM block: base64 in lines of 64 characters.
fn pem_certificate(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_wrap_base64_at_64_characters() {
        let pem = pem_certificate(&[0u8; 60]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
    }

    #[test]
    fn plain_urls_need_no_certificates() {
        assert!(client("redis://127.0.0.1:6379").is_ok());
    }
}
