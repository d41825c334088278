//! `WEBHOOK_URL` as a template: `{topic}` replaced per event, percent-encoded. No I/O.

use reqwest::Url;

/// `WEBHOOK_URL`, with `{topic}` replaced per event.
#[derive(Clone, PartialEq)]
pub(super) struct UrlTemplate {
    template: String,
    /// The URL itself when it holds no `{topic}`: parsed once, not per event (URL parsing was
    /// ~3% of the sink's CPU in a drain).
    fixed: Option<Url>,
}

impl UrlTemplate {
    /// What stands for the topic when the template is checked or shown.
    const SAMPLE: &'static str = "outbox-topic-sample";

    pub(super) fn new(template: &str) -> Result<UrlTemplate, String> {
        let mut template = UrlTemplate {
            template: template.to_string(),
            fixed: None,
        };
        let sample = template
            .for_topic(Self::SAMPLE)
            .map_err(|e| format!("is not a valid URL: {e}"))?;
        if sample.scheme() != "http" && sample.scheme() != "https" {
            return Err(format!(
                "must start with http:// or https://, not {}://",
                sample.scheme()
            ));
        }
        if sample.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        if !template.template.contains("{topic}") {
            template.fixed = Some(sample);
        }
        Ok(template)
    }

    /// The URL for `topic`, which is percent-encoded except for unreserved characters.
    pub(super) fn for_topic(&self, topic: &str) -> Result<Url, url::ParseError> {
        match &self.fixed {
            Some(url) => Ok(url.clone()),
            None => Url::parse(&self.template.replace("{topic}", &encode_topic(topic))),
        }
    }

    /// For logs and errors: scheme, host, port and path (`{topic}` as written), without the user
    /// info or query, which may hold credentials.
    pub(super) fn describe(&self) -> String {
        match self.for_topic(Self::SAMPLE) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                url.to_string().replace(Self::SAMPLE, "{topic}")
            }
            Err(_) => "(invalid URL)".into(),
        }
    }

    /// `scheme://host:port/` to probe when connecting; `None` when the host holds `{topic}`.
    pub(super) fn origin(&self) -> Option<Url> {
        let url = self.for_topic(Self::SAMPLE).ok()?;
        if url.host_str()?.contains(Self::SAMPLE) {
            return None;
        }
        let mut origin = url.clone();
        let _ = origin.set_username("");
        let _ = origin.set_password(None);
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Some(origin)
    }
}

/// Unreserved characters (RFC 3986) stay, every other byte is `%XX`.
fn encode_topic(topic: &str) -> String {
    let mut encoded = String::with_capacity(topic.len());
    for byte in topic.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_is_percent_encoded_into_the_url() {
        let template = UrlTemplate::new("http://127.0.0.1:9/in/{topic}").expect("valid");
        let url = template.for_topic("orders.paid/eu?x#y").expect("url");
        assert_eq!(url.path(), "/in/orders.paid%2Feu%3Fx%23y");
        assert_eq!(url.query(), None);
    }
}
