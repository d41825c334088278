//! Secrets out of what the relay prints, in two ways:
//! - structurally, here: the relay's own text about a connection URL or DSN (logs, errors, `Debug`,
//!   `check`) shows it with the password replaced by `***`;
//! - by value, [`Secrets`]: every secret the configuration holds, in every form it may be printed
//!   in, is masked in each log line ([`ScrubbedStderr`]) and in the error a command exits with,
//!   which covers what the client libraries (NATS, HTTP, AMQP, Redis, Kafka, PostgreSQL) log.
//!
//! The text is never parsed and re-serialized: a URL parser refuses forms the drivers accept (a
//! PostgreSQL URL with several hosts, `postgres://u:pw@h1:5432,h2:5432/db`), and a refusal must
//! not fall back to printing the secret. Only the secret's characters are replaced; the rest stays
//! as the user wrote it, so the output still shows which host and database were meant.

mod secrets;
mod writer;

pub use self::secrets::Secrets;
pub use self::writer::ScrubbedStderr;

const MASK: &str = "***";

/// Replaces the password of a URL (in its user part or a `password=` parameter) or of a key/value
/// DSN (`password=secret`, `password = 'a secret'`) with `***`.
pub fn redact(text: &str) -> String {
    match url_parts(text) {
        Some(parts) => {
            let userinfo = match parts.userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}@"),
                None if parts.userinfo.is_empty() => String::new(),
                None => format!("{}@", parts.userinfo),
            };
            format!(
                "{}{userinfo}{}{}",
                parts.scheme,
                parts.rest_of_authority,
                redact_query(parts.path)
            )
        }
        None => redact_key_values(text),
    }
}

/// A URL without its user name, password or token (NATS takes a lone user name as a token).
/// `None` when the text is not a URL.
pub fn without_credentials(text: &str) -> Option<String> {
    let parts = url_parts(text)?;
    let userinfo = if parts.userinfo.is_empty() {
        ""
    } else {
        "***@"
    };
    Some(format!(
        "{}{userinfo}{}{}",
        parts.scheme,
        parts.rest_of_authority,
        redact_query(parts.path)
    ))
}

/// A URL cut where its secrets can be: `scheme://`, the user part (before the last `@` of the
/// authority), the hosts, and the rest (path, query, fragment).
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: &'a str,
    rest_of_authority: &'a str,
    path: &'a str,
}

fn url_parts(text: &str) -> Option<UrlParts<'_>> {
    let scheme_end = text.find("://")? + 3;
    let scheme = &text[..scheme_end];
    let valid_scheme = scheme[..scheme_end - 3]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme || scheme_end == 3 {
        return None;
    }
    let after = &text[scheme_end..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..at], &authority[at + 1..]),
        None => ("", authority),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        rest_of_authority: hosts,
        path,
    })
}

/// Masks the value of every query parameter whose name says it holds a secret.
fn redact_query(path: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_name(key) => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    let mut out = format!("{before}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// libpq's key/value form: `key=value` pairs separated by spaces, with optional spaces around `=`
/// and values optionally in single quotes (with `\'` and `\\` escapes).
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_end();
        let key_name = key.rsplit(char::is_whitespace).next().unwrap_or(key);
        out.push_str(&rest[..=eq]);
        let after_eq = &rest[eq + 1..];
        let spaces = after_eq.len() - after_eq.trim_start().len();
        out.push_str(&after_eq[..spaces]);
        let value_start = &after_eq[spaces..];
        let value_len = value_length(value_start);
        if is_secret_name(key_name) {
            out.push_str(MASK);
        } else {
            out.push_str(&value_start[..value_len]);
        }
        rest = &value_start[value_len..];
    }
    out.push_str(rest);
    out
}

/// The length of a key/value DSN value at the start of `text`: a quoted one up to its closing
/// quote (to the end if there is none), an unquoted one up to the next space.
fn value_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        let mut escaped = false;
        for (i, c) in chars {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return i + 1,
                _ => {}
            }
        }
        return text.len();
    }
    text.find(char::is_whitespace).unwrap_or(text.len())
}

/// A setting, DSN key, query parameter or Kafka property whose name says it holds a secret
/// (`password`, `sasl.password`, `ssl.key.pem`, `api_key`, `OUTBOX_WEBHOOK_SECRET`).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "key"]
        .iter()
        .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact("amqps://guest:guest@mq/%2f"),
            "amqps://guest:***@mq/%2f"
        );
        assert_eq!(
            redact("host=db user=app password=s3cret"),
            "host=db user=app password=***"
        );
        assert!(!redact("postgres://db/x?password=s3cret").contains("s3cret"));
    }

    #[test]
    fn a_url_with_several_hosts_keeps_its_hosts_and_loses_its_password() {
        assert_eq!(
            redact("postgres://u:pw@h1:5432,h2:5432/db?target_session_attrs=read-write"),
            "postgres://u:***@h1:5432,h2:5432/db?target_session_attrs=read-write"
        );
        assert_eq!(
            redact("postgresql://u:p%40ss@h1,h2/db?sslmode=require&password=x"),
            "postgresql://u:***@h1,h2/db?sslmode=require&password=***"
        );
        // A password holding '@' or ':' unencoded: everything before the last '@' is the user part.
        assert_eq!(
            redact("redis://:a@b:c@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
    }

    #[test]
    fn key_value_passwords_are_masked_whole_with_spaces_and_quotes() {
        for (dsn, expected) in [
            (
                "host=db password = secret user=app",
                "host=db password = *** user=app",
            ),
            (
                "host=db password='x secret' user=app",
                "host=db password=*** user=app",
            ),
            (r"password='it\'s secret' host=db", "password=*** host=db"),
            ("password='never closed", "password=***"),
        ] {
            let redacted = redact(dsn);
            assert_eq!(redacted, expected, "{dsn}");
            assert!(!redacted.contains("secret"), "{redacted}");
        }
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(
            without_credentials("nats://user:pw@a:4222,b:4222").as_deref(),
            Some("nats://***@a:4222,b:4222")
        );
        assert_eq!(
            without_credentials("nats://s3cr3t-token@a:4222").as_deref(),
            Some("nats://***@a:4222")
        );
        assert_eq!(
            without_credentials("nats://a:4222").as_deref(),
            Some("nats://a:4222")
        );
        assert_eq!(without_credentials("not a url"), None);
    }
}
