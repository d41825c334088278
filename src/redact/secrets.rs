//! Every secret the configuration holds, found once at start, and masked wherever it shows up in
//! a line of output. The client libraries log what they were given in their own words (async-nats
//! its server URL, hyper's pool the webhook URL, lapin its URI): only the values themselves can be
//! looked for there.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode,
};

use super::{MASK, is_secret_name, url_parts, value_length};

/// Shorter values are not looked for: they would mask ordinary words in every line (a password
/// this short is no secret anyway; a URL still shows it as `***`).
const MIN_LEN: usize = 4;

/// What a URL's user part percent-encodes (the WHATWG userinfo set): how the `url` crate, and so
/// the clients built on it, print a password.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

/// The secrets of a configuration, in each form they may be printed in.
#[derive(Default)]
pub struct Secrets {
    /// `None` when the configuration holds no secret: nothing to look for.
    matcher: Option<AhoCorasick>,
}

/// The automaton's `Debug` would show the secrets.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let forms = self.matcher.as_ref().map_or(0, AhoCorasick::patterns_len);
        write!(f, "Secrets({forms} forms)")
    }
}

impl Secrets {
    /// The secrets in `settings` (name, value): passwords, tokens and secret query parameters of
    /// URLs (one or many hosts, comma-separated lists), `password` of key/value DSNs, the values
    /// of `name=value` items whose name says secret (Kafka properties), settings whose own name
    /// does (`OUTBOX_WEBHOOK_SECRET`), and every value of `OTEL_EXPORTER_OTLP_*HEADERS`.
    pub fn collect<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Secrets {
        let mut found = Found::default();
        for (name, value) in settings {
            found.setting(name, value);
        }
        let mut patterns: Vec<String> = found.forms().into_iter().collect();
        patterns.retain(|p| p.chars().count() >= MIN_LEN);
        if patterns.is_empty() {
            return Secrets::default();
        }
        // Leftmost-longest: a secret that contains another is masked whole. Building fails only
        // past the automaton's size limits, far beyond a configuration's few dozen values.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Secrets { matcher }
    }

    /// `text` with every secret replaced by `***`; borrowed when there is none.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => {
                let mut out = String::with_capacity(text.len());
                m.replace_all_with(text, &mut out, |_, _, out| {
                    out.push_str(MASK);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// [`Secrets::scrub`] for bytes (a formatted log line).
    pub fn scrub_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(bytes) => {
                let mut out = Vec::with_capacity(bytes.len());
                m.replace_all_with_bytes(bytes, &mut out, |_, _, out| {
                    out.extend_from_slice(MASK.as_bytes());
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(bytes),
        }
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }
}

/// Secrets as the configuration holds them, before their other forms are added.
#[derive(Default)]
struct Found {
    values: Vec<String>,
    /// `user:password` pairs of URLs, decoded: HTTP clients send them as Basic credentials.
    basic: Vec<String>,
}

impl Found {
    fn setting(&mut self, name: &str, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("OTEL_") && upper.ends_with("_HEADERS") {
            self.headers(value);
        } else if upper.starts_with("OTEL_")
            || upper.starts_with("OUTBOX_")
            || upper == "DATABASE_URL"
        {
            // By the last word only: a sink named `keys` does not make its settings secret.
            if is_secret_name(name.rsplit('_').next().unwrap_or(name)) {
                self.secret(value);
                // A Standard Webhooks secret is `whsec_` and the key in base64.
                if let Some(key) = value.strip_prefix("whsec_") {
                    self.secret(key);
                }
            }
        } else {
            return;
        }
        self.urls(value);
        // Key/value DSNs and Kafka properties; not every `name=value` list (`OUTBOX_SINKS` names
        // a sink `token=nats`).
        if upper.ends_with("_URL") || upper.ends_with("_PROPERTIES") {
            self.key_values(value);
        }
    }

    fn secret(&mut self, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            self.values.push(value.to_string());
        }
    }

    /// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` items (values percent-encoded), there to
    /// authenticate: every value, and its token without the scheme (`Bearer`, `Basic`).
    fn headers(&mut self, value: &str) {
        for item in value.split(',') {
            if let Some((_, header)) = item.split_once('=') {
                self.secret(header);
                let decoded = decode(header);
                if let Some((_, token)) = decoded.trim().rsplit_once(' ') {
                    self.secret(token);
                }
            }
        }
    }

    /// The credentials of every URL in `value`: the whole value, and each item of a list.
    fn urls(&mut self, value: &str) {
        let items = value.split([',', ' ', '\n', '\t']);
        for text in std::iter::once(value).chain(items) {
            let Some(parts) = url_parts(text.trim()) else {
                continue;
            };
            match parts.userinfo.split_once(':') {
                Some((user, password)) => {
                    self.secret(password);
                    self.basic_credentials(user, password);
                }
                // A lone user name is a token for NATS and HTTP; for PostgreSQL it is the role.
                None if !parts.userinfo.is_empty() && !parts.scheme.starts_with("postgres") => {
                    self.secret(parts.userinfo);
                    self.basic_credentials(parts.userinfo, "");
                }
                None => {}
            }
            if let Some((_, query)) = parts.path.split_once('?') {
                self.key_values(&query.split('#').next().unwrap_or("").replace('&', "\n"));
            }
        }
    }

    /// `user:password` as HTTP Basic credentials, when the secret is long enough to look for.
    fn basic_credentials(&mut self, user: &str, password: &str) {
        let (user, password) = (decode(user), decode(password));
        let secret = if password.is_empty() {
            &user
        } else {
            &password
        };
        if secret.chars().count() >= MIN_LEN {
            self.basic.push(format!("{user}:{password}"));
        }
    }

    /// Secret-named `key=value` pairs: a key/value DSN (`password = 'a secret'`), and items
    /// separated by commas or new lines (Kafka properties, a TOML table).
    fn key_values(&mut self, text: &str) {
        let mut rest = text;
        while let Some(eq) = rest.find('=') {
            let key = rest[..eq].trim_end();
            let key = key
                .rsplit([' ', '\n', '\t', ',', '&', '?'])
                .next()
                .unwrap_or(key);
            let after = rest[eq + 1..].trim_start();
            let len = value_length(after);
            if is_secret_name(key) {
                let value = &after[..len];
                self.secret(unquote(value).as_ref());
                // As written too, escapes and all (a client may print the DSN).
                let inner = value.strip_prefix('\'').unwrap_or(value);
                self.secret(inner.strip_suffix('\'').unwrap_or(inner));
            }
            rest = &after[len..];
        }
        for item in text.split([',', '\n']) {
            if let Some((key, value)) = item.split_once('=')
                && is_secret_name(key.trim())
            {
                self.secret(value);
            }
        }
    }

    /// Every form a secret may be printed in: as written, percent-decoded, percent-encoded, with
    /// the escapes of JSON and of Rust's `Debug`, and `user:password` in Basic credentials.
    fn forms(self) -> std::collections::BTreeSet<String> {
        let mut plain = std::collections::BTreeSet::new();
        for value in &self.values {
            let decoded = decode(value);
            plain.insert(value.clone());
            plain.insert(utf8_percent_encode(&decoded, USERINFO).to_string());
            plain.insert(utf8_percent_encode(&decoded, NON_ALPHANUMERIC).to_string());
            plain.insert(decoded);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        plain.extend(self.basic.iter().map(|pair| b64.encode(pair)));
        let mut forms = plain.clone();
        for form in plain {
            if let Ok(json) = serde_json::to_string(&form) {
                forms.insert(json[1..json.len() - 1].to_string());
            }
            let debug = format!("{form:?}");
            forms.insert(debug[1..debug.len() - 1].to_string());
        }
        forms
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// A DSN value without its single quotes and escapes.
fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value.strip_prefix('\'') else {
        return Cow::Borrowed(value);
    };
    let inner = inner.strip_suffix('\'').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubbed(settings: &[(&str, &str)], line: &str) -> String {
        Secrets::collect(settings.iter().copied())
            .scrub(line)
            .into_owned()
    }

    #[test]
    fn url_passwords_are_masked_in_every_form() {
        let settings = [(
            "OUTBOX_NATS_URL",
            "nats://relay:p%40ss%2Fw0rd@a:4222,nats://other:second-pw@b:4222",
        )];
        for (line, expected) in [
            (
                "url: nats://relay:p%40ss%2Fw0rd@a",
                "url: nats://relay:***@a",
            ),
            ("password: \"p@ss/w0rd\"", "password: \"***\""),
            ("pass=p%40ss%2Fw0rd other=second-pw", "pass=*** other=***"),
            // Basic credentials of relay:p@ss/w0rd
            (
                "Authorization: Basic cmVsYXk6cEBzcy93MHJk",
                "Authorization: Basic ***",
            ),
            ("relay connected to a:4222", "relay connected to a:4222"),
        ] {
            assert_eq!(scrubbed(&settings, line), expected, "{line}");
        }
    }

    #[test]
    fn several_hosts_key_value_dsns_and_tokens() {
        let settings = [
            (
                "OUTBOX_DATABASE_URL",
                "postgres://u:multi-pw@h1:5432,h2:5432/db",
            ),
            (
                "OUTBOX_SINK_X_DATABASE_URL",
                "host=db password = 'kv \\'quoted\\' secret' user=u",
            ),
            ("OUTBOX_NATS_URL", "nats://lone-token@n:4222"),
        ];
        let line = "multi-pw kv 'quoted' secret lone-token kv \\'quoted\\' secret";
        assert_eq!(scrubbed(&settings, line), "*** *** *** ***");
    }

    #[test]
    fn secret_settings_properties_and_headers() {
        let settings = [
            (
                "OUTBOX_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            (
                "OUTBOX_KAFKA_PROPERTIES",
                "security.protocol=SASL_SSL,sasl.username=u,sasl.password=kafka-pw\nssl.key.password=key-pw",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20otel-token,x-tenant=acme-tenant",
            ),
            ("OUTBOX_KAFKA_BROKERS", "k1:9092"),
            ("OUTBOX_SINKS", "token=nats,keys=kafka"),
            ("OUTBOX_SINK_KEYS_FORMAT", "cloudevents"),
            ("PATH", "/usr/bin"),
        ];
        let line = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw kafka-pw key-pw otel-token acme-tenant SASL_SSL k1:9092 /usr/bin nats kafka cloudevents";
        assert_eq!(
            scrubbed(&settings, line),
            "*** *** *** *** *** SASL_SSL k1:9092 /usr/bin nats kafka cloudevents"
        );
    }

    #[test]
    fn without_secrets_nothing_is_looked_for() {
        let secrets = Secrets::collect([
            ("OUTBOX_DATABASE_URL", "postgres://postgres@db/x"),
            ("OUTBOX_AMQP_URL", "amqp://u:pw@mq"),
        ]);
        assert!(
            secrets.is_empty(),
            "the role name and a short password are not looked for"
        );
        assert!(matches!(secrets.scrub("postgres pw"), Cow::Borrowed(_)));
        let secrets = Secrets::collect([("OUTBOX_AMQP_URL", "amqp://u:long-password@mq")]);
        assert!(!format!("{secrets:?}").contains("long-password"));
    }
}
