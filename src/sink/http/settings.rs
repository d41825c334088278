//! The webhook sink's settings, validated once at start.

use std::time::Duration;

use hmac::Hmac;
use rustls::pki_types::CertificateDer;
use sha2::Sha256;

use super::signing::parse_secrets;
use super::url_template::UrlTemplate;
use crate::format::Format;
use crate::settings::table::Range;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_CONCURRENCY: usize = 32;
/// A request may take at most an hour, as a publish may (`OUTBOX_PUBLISH_TIMEOUT_MS`).
const TIMEOUT_RANGE: Range = Range {
    unit: "milliseconds",
    min: 1,
    max: 3_600_000,
};
/// Requests in flight at once: at least one, at most as many events as a batch may hold.
const CONCURRENCY_RANGE: Range = Range {
    unit: "requests",
    min: 1,
    max: 100_000,
};

#[derive(Clone)]
pub(super) struct HttpConfig {
    pub(super) url: UrlTemplate,
    /// One signing key per secret; empty: requests are not signed.
    pub(super) keys: Vec<Hmac<Sha256>>,
    pub(super) timeout: Duration,
    pub(super) concurrency: usize,
    /// `WEBHOOK_CA_FILE`'s certificates, trusted besides the system's.
    pub(super) extra_roots: Vec<CertificateDer<'static>>,
    pub(super) ca_file: Option<String>,
    /// Message format, with the CloudEvents HTTP binding's naming.
    pub(super) format: Format,
}

/// The URL without user info or query (which may hold credentials), and the number of secrets.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url.describe())
            .field("secrets", &self.keys.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("ca_file", &self.ca_file)
            .field("format", &self.format)
            .finish()
    }
}

impl HttpConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<HttpConfig, ConfigError> {
        let url = settings.required(
            "WEBHOOK_URL",
            "the URL to POST events to, such as https://hooks.example.com/outbox/{topic}",
        )?;
        let url = UrlTemplate::new(url).map_err(|p| settings.error("WEBHOOK_URL", p))?;
        let keys = match settings.get("WEBHOOK_SECRET") {
            None => Vec::new(),
            Some(text) => parse_secrets(text).map_err(|p| settings.error("WEBHOOK_SECRET", p))?,
        };
        let timeout_ms =
            settings.number("WEBHOOK_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, TIMEOUT_RANGE)?;
        let concurrency = settings.number(
            "WEBHOOK_CONCURRENCY",
            DEFAULT_CONCURRENCY as u64,
            CONCURRENCY_RANGE,
        )? as usize;
        let ca_file = settings.get("WEBHOOK_CA_FILE").map(str::to_string);
        let extra_roots = match &ca_file {
            None => Vec::new(),
            Some(path) => {
                read_certificates(path).map_err(|p| settings.error("WEBHOOK_CA_FILE", p))?
            }
        };
        Ok(HttpConfig {
            url,
            keys,
            timeout: Duration::from_millis(timeout_ms),
            concurrency,
            extra_roots,
            ca_file,
            format: Format::read(settings)?,
        })
    }
}

fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::settings::Settings;

    pub(in crate::sink::http) fn read(pairs: &[(&str, &str)]) -> Result<HttpConfig, ConfigError> {
        let settings = Settings::from_pairs(pairs);
        HttpConfig::read(&settings.default_sink())
    }

    #[test]
    fn settings_are_checked_and_named() {
        let base = ("OUTBOX_WEBHOOK_URL", "https://hooks.example.com/in/{topic}");
        assert!(read(&[base]).is_ok());
        let error = read(&[("OUTBOX_WEBHOOK_URL", "ftp://x/")]).expect_err("ftp");
        assert!(error.to_string().contains("OUTBOX_WEBHOOK_URL"), "{error}");
        let error =
            read(&[base, ("OUTBOX_WEBHOOK_SECRET", "whsec_not base64!")]).expect_err("bad secret");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_SECRET"),
            "{error}"
        );
        let error = read(&[base, ("OUTBOX_WEBHOOK_TIMEOUT_MS", "0")]).expect_err("zero");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_TIMEOUT_MS"),
            "{error}"
        );
        // Accepted before they had a range.
        for (variable, value, range) in [
            ("OUTBOX_WEBHOOK_TIMEOUT_MS", "3600001", "from 1 to 3600000"),
            (
                "OUTBOX_WEBHOOK_TIMEOUT_MS",
                "18446744073709551615",
                "from 1 to 3600000",
            ),
            ("OUTBOX_WEBHOOK_CONCURRENCY", "0", "from 1 to 100000"),
            ("OUTBOX_WEBHOOK_CONCURRENCY", "100001", "from 1 to 100000"),
        ] {
            let error = read(&[base, (variable, value)])
                .expect_err(value)
                .to_string();
            assert!(error.contains(variable) && error.contains(range), "{error}");
        }
        for (variable, value) in [
            ("OUTBOX_WEBHOOK_TIMEOUT_MS", "3600000"),
            ("OUTBOX_WEBHOOK_CONCURRENCY", "100000"),
        ] {
            read(&[base, (variable, value)]).expect(value);
        }
        let error =
            read(&[base, ("OUTBOX_WEBHOOK_CA_FILE", "/nonexistent/ca.pem")]).expect_err("no CA");
        assert!(
            error.to_string().contains("OUTBOX_WEBHOOK_CA_FILE"),
            "{error}"
        );
    }

    #[test]
    fn secrets_and_credentials_stay_out_of_debug_output() {
        let config = read(&[
            (
                "OUTBOX_WEBHOOK_URL",
                "https://user:pa55word@hooks.example.com/in/{topic}?token=t0ken",
            ),
            (
                "OUTBOX_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ])
        .expect("valid");
        let debug = format!("{config:?}");
        for secret in ["pa55word", "t0ken", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("hooks.example.com/in/{topic}"), "{debug}");
    }
}
