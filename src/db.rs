//! Connecting to PostgreSQL: URL parsing and redaction, rustls TLS, the pool for admin work.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::redact::redact;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS stream type of a relay connection.
type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A parsed PostgreSQL URL. Its `Display` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: Config,
    redacted: String,
    /// Built once from `sslmode`/`sslrootcert`, so a bad CA file is a configuration error.
    tls: MakeRustlsConnect,
}

/// How the server certificate is checked, following libpq's `sslmode`.
#[derive(Clone, Debug, PartialEq)]
enum TlsPolicy {
    /// `prefer` (the default) and `require`: encrypted, certificate not verified, as libpq does.
    Encrypt,
    /// `verify-full` or `verify-ca`: the chain must lead to the system roots or to `sslrootcert`,
    /// and the certificate must name the host.
    Verify { root_cert: Option<String> },
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (url_for_driver, policy) = split_tls_options(url)?;
        let mut config: Config = url_for_driver
            .parse()
            .map_err(|e| format!("is not a valid PostgreSQL URL ({e}); expected postgres://user:password@host:5432/database"))?;
        // Detect a dead peer within about half a minute instead of the OS default of hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(Self {
            config,
            redacted: redact(url),
            tls: tls(&policy).map_err(|e| e.to_string())?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same URL with `application_name` set, so that `status` can name the active replica.
    pub fn with_application_name(&self, name: &str) -> Self {
        let mut copy = self.clone();
        copy.config.application_name(name);
        copy
    }

    /// Opens one connection. The caller drives the returned `Connection`.
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }

    /// Opens one connection and drives it in the background, for short-lived work (commands,
    /// probes); the relay's own session drives its connection itself.
    pub async fn connect_client(&self) -> Result<Client, String> {
        // The connect timeout covers the TCP connect, not a server that accepts and never answers.
        let connecting = tokio::time::timeout(Duration::from_secs(30), self.connect());
        let (client, connection) = connecting
            .await
            .map_err(|_| format!("PostgreSQL at {self} did not answer within 30 s"))?
            .map_err(|e| format!("cannot connect to PostgreSQL at {self}: {}", describe(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A small pool for admin queries and the metrics sampler.
    pub fn pool(&self, size: usize) -> Result<Pool, String> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            // Short statements only (the sampler, status, retention, dead letters): no JIT, no
            // parallel workers. The sampler's count of a large backlog passes `jit_above_cost`,
            // and compiling it took ~110 ms of PostgreSQL's CPU every 2 s per replica.
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET jit = off; SET max_parallel_workers_per_gather = 0")
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .max_size(size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot build the PostgreSQL pool: {e}"))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

/// Takes libpq's `sslmode=verify-ca|verify-full` and `sslrootcert`, which tokio-postgres does
/// not know, out of a URL, leaving `sslmode=require` in their place.
fn split_tls_options(url: &str) -> Result<(String, TlsPolicy), String> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Key/value form: passed through as it is.
        return Ok((url.to_string(), TlsPolicy::Encrypt));
    };
    let mut verify = false;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (name, value) in parsed.query_pairs() {
        match (name.as_ref(), value.as_ref()) {
            ("sslmode", "verify-full" | "verify-ca") => verify = true,
            ("sslrootcert", path) => root_cert = Some(path.to_string()),
            _ => kept.push((name.into_owned(), value.into_owned())),
        }
    }
    if root_cert.is_some() && !verify {
        return Err("sslrootcert is only used with sslmode=verify-full or verify-ca".into());
    }
    if !verify {
        return Ok((url.to_string(), TlsPolicy::Encrypt));
    }
    kept.push(("sslmode".into(), "require".into()));
    parsed.query_pairs_mut().clear().extend_pairs(kept);
    Ok((parsed.to_string(), TlsPolicy::Verify { root_cert }))
}

/// The TLS connector for a policy (used only when `sslmode` asks for TLS).
fn tls(policy: &TlsPolicy) -> Result<MakeRustlsConnect, std::io::Error> {
    let builder = rustls::ClientConfig::builder();
    let config = match policy {
        TlsPolicy::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(unverified::AnyCertificate::new()))
            .with_no_client_auth(),
        TlsPolicy::Verify { root_cert } => {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot read sslrootcert {path}: {e}"),
                        )
                    })?;
                    use rustls::pki_types::pem::PemObject;
                    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert.map_err(|e| {
                            std::io::Error::other(format!("sslrootcert {path} is not PEM: {e}"))
                        })?;
                        roots.add(cert).map_err(|e| {
                            std::io::Error::other(format!("sslrootcert {path}: {e}"))
                        })?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        // A malformed system certificate is skipped, not fatal.
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's `sslmode=prefer|require`: encryption without certificate verification. The handshake
/// signatures are still checked, so the session is bound to whoever holds the key.
mod unverified {
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub struct AnyCertificate(CryptoProvider);

    impl AnyCertificate {
        pub fn new() -> Self {
            Self(rustls::crypto::ring::default_provider())
        }
    }

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// PostgreSQL's message with its detail and hint, or the client error with its causes;
/// `tokio_postgres::Error`'s own `Display` says only "db error".
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        if *db.code() == tokio_postgres::error::SqlState::UNDEFINED_TABLE
            || *db.code() == tokio_postgres::error::SqlState::UNDEFINED_FUNCTION
            || *db.code() == tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME
        {
            text.push_str("; the outbox schema is missing or outdated: run `outbox-relay migrate`");
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_modes_become_require_with_verification() {
        let (url, policy) = super::split_tls_options(
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a",
        )
        .expect("valid");
        assert!(
            url.contains("sslmode=require") && !url.contains("sslrootcert"),
            "{url}"
        );
        assert_eq!(
            policy,
            super::TlsPolicy::Verify {
                root_cert: Some("/ca.pem".into())
            }
        );
        let (_, policy) =
            super::split_tls_options("postgres://u@db/x?sslmode=require").expect("valid");
        assert_eq!(policy, super::TlsPolicy::Encrypt);
        assert!(super::split_tls_options("postgres://u@db/x?sslrootcert=/ca.pem").is_err());
    }
}
