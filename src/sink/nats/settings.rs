//! The NATS sink's settings, validated once at start.

use std::path::PathBuf;
use std::str::FromStr;

use async_nats::ServerAddr;

use super::encode::check_subject;
use crate::format::Format;
use crate::redact::without_credentials;
use crate::settings::{ConfigError, SinkSettings};

pub const DEFAULT_SUBJECT_TEMPLATE: &str = "{topic}";

#[derive(Clone)]
pub(super) struct NatsConfig {
    /// One URL per server, validated (`nats://` or `tls://`).
    pub(super) servers: Vec<String>,
    /// `NATS_CREDS`: a `.creds` file (user JWT and NKey seed).
    pub(super) creds: Option<PathBuf>,
    pub(super) subject_template: String,
    /// User and password, or token, from the URLs' user info (async-nats does not read it there).
    pub(super) login: Option<Login>,
    /// Message format, with the NATS protocol binding's naming.
    pub(super) format: Format,
}

#[derive(Clone, PartialEq)]
pub(super) enum Login {
    UserPassword(String, String),
    Token(String),
}

/// Without user names, passwords or tokens in the URLs.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &redacted(&self.servers))
            .field("creds", &self.creds)
            .field("subject_template", &self.subject_template)
            .finish()
    }
}

impl NatsConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<NatsConfig, ConfigError> {
        let (servers, login) = read_servers(settings)?;
        let creds = settings.get("NATS_CREDS").map(PathBuf::from);
        if let Some(path) = &creds
            && !path.is_file()
        {
            return Err(settings.error(
                "NATS_CREDS",
                format!(
                    "{} is not a readable file; give the path of a .creds file (user JWT and NKey seed)",
                    path.display()
                ),
            ));
        }
        let subject_template = settings
            .get("NATS_SUBJECT_TEMPLATE")
            .unwrap_or(DEFAULT_SUBJECT_TEMPLATE)
            .to_string();
        if !subject_template.contains("{topic}") {
            return Err(settings.error(
                "NATS_SUBJECT_TEMPLATE",
                "must contain {topic}, e.g. \"outbox.{topic}\"",
            ));
        }
        if let Err(problem) = check_subject(&subject_template.replace("{topic}", "topic")) {
            return Err(settings.error("NATS_SUBJECT_TEMPLATE", problem));
        }
        if creds.is_some() && login.is_some() {
            return Err(settings.error(
                "NATS_CREDS",
                "is set and NATS_URL names a user or token too; use one of them",
            ));
        }
        Ok(NatsConfig {
            servers,
            creds,
            subject_template,
            login,
            format: Format::read(settings)?,
        })
    }

    /// The subject of `topic`.
    pub(super) fn subject_for(&self, topic: &str) -> String {
        self.subject_template.replace("{topic}", topic)
    }

    /// The servers for logs and errors, without credentials.
    pub(super) fn describe_servers(&self) -> String {
        redacted(&self.servers).join(",")
    }
}

/// `NATS_URL`: the servers, and the login their user info names (the same for all).
fn read_servers(settings: &SinkSettings) -> Result<(Vec<String>, Option<Login>), ConfigError> {
    let urls = settings.required(
        "NATS_URL",
        "a nats:// or tls:// URL such as nats://127.0.0.1:4222, comma-separated for several servers",
    )?;
    let mut servers = Vec::new();
    let mut login = None;
    for url in urls.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(settings.error("NATS_URL", "has an empty entry between commas"));
        }
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(settings.error(
                "NATS_URL",
                format!(
                    "{} must start with nats:// or tls://",
                    without_credentials(url).unwrap_or_else(|| "an entry".into())
                ),
            ));
        }
        // The parser's message may quote the URL: it is not passed on.
        if ServerAddr::from_str(url).is_err() {
            return Err(settings.error(
                "NATS_URL",
                "is not a valid NATS URL; expected nats://[user:password@]host[:port] or tls://host[:port]",
            ));
        }
        let found = login_of(url).map_err(|problem| settings.error("NATS_URL", problem))?;
        if found.is_some() && login.is_some() && found != login {
            return Err(settings.error(
                "NATS_URL",
                "the servers name different users or tokens; the relay logs in to each with the same one",
            ));
        }
        login = login.or(found);
        servers.push(url.to_string());
    }
    Ok((servers, login))
}

/// The user and password (`nats://user:password@host`) or token (`nats://token@host`) of a URL,
/// percent-decoded.
fn login_of(url: &str) -> Result<Option<Login>, String> {
    let parsed = url::Url::parse(url).map_err(|_| "is not a valid URL".to_string())?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "has a user name or password that is not UTF-8 once decoded".to_string())
    };
    let user = decode(parsed.username())?;
    Ok(match parsed.password() {
        Some(password) => Some(Login::UserPassword(user, decode(password)?)),
        None if !user.is_empty() => Some(Login::Token(user)),
        None => None,
    })
}

pub(super) fn redact_one(url: &str) -> String {
    without_credentials(url).unwrap_or_else(|| "(unparsable URL)".into())
}

fn redacted(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redact_one(u)).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::settings::Settings;

    pub(in crate::sink::nats) fn read(pairs: &[(&str, &str)]) -> Result<NatsConfig, ConfigError> {
        NatsConfig::read(&Settings::from_pairs(pairs).default_sink())
    }

    #[test]
    fn urls_are_checked_and_secrets_stay_out_of_debug_output() {
        let config = read(&[(
            "OUTBOX_NATS_URL",
            "nats://app:s3cret@n1:4222, tls://app:s3cret@n2:4222",
        )])
        .expect("valid");
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.subject_template, "{topic}");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("n1:4222"), "{debug}");
        assert!(read(&[("OUTBOX_NATS_URL", "nats://app:s3cret@n1, nats://other:x@n2")]).is_err());
        let encoded = read(&[("OUTBOX_NATS_URL", "nats://app:p%40ss@n1")]).expect("valid");
        assert!(encoded.login == Some(Login::UserPassword("app".into(), "p@ss".into())));
        let token = read(&[("OUTBOX_NATS_URL", "tls://t0ken@n1")]).expect("valid");
        assert!(token.login == Some(Login::Token("t0ken".into())));
        assert!(!format!("{token:?}").contains("t0ken"));

        let wrong = read(&[("OUTBOX_NATS_URL", "http://n1:4222")]).unwrap_err();
        assert!(wrong.to_string().contains("OUTBOX_NATS_URL"), "{wrong}");
        assert!(read(&[("OUTBOX_NATS_URL", "nats://n1,")]).is_err());
        assert!(read(&[]).is_err());
    }

    #[test]
    fn the_subject_template_needs_topic_and_a_valid_subject() {
        let url = ("OUTBOX_NATS_URL", "nats://127.0.0.1:4222");
        let ok = read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "outbox.{topic}")]).expect("valid");
        assert_eq!(ok.subject_template, "outbox.{topic}");
        assert!(read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "outbox")]).is_err());
        assert!(read(&[url, ("OUTBOX_NATS_SUBJECT_TEMPLATE", "a.*.{topic}")]).is_err());
        assert!(read(&[url, ("OUTBOX_NATS_CREDS", "/nonexistent/x.creds")]).is_err());
    }
}
