//! The kafka sink's settings: `KAFKA_BROKERS`, `KAFKA_PROPERTIES` (librdkafka properties passed
//! through, except any that would weaken the delivery guarantees) and `KAFKA_TOPIC_TEMPLATE`.

use super::KafkaSink;
use crate::format::Format;
use crate::health::SinkHealth;
use crate::settings::{ConfigError, SinkSettings};
use crate::sink::{Publisher, SinkConfig};

/// Settings the relay's guarantees depend on; a pass-through property may not change them.
pub(super) const SAFETY: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

#[derive(Clone)]
pub(super) struct KafkaConfig {
    brokers: String,
    /// Extra librdkafka properties, validated against the safety settings.
    properties: Vec<(String, String)>,
    topic_template: Option<String>,
    format: Format,
}

/// Property names only: values may hold credentials (`sasl.password`).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &names)
            .field("topic_template", &self.topic_template)
            .field("format", &self.format)
            .finish()
    }
}

impl KafkaConfig {
    pub(super) fn read(settings: &SinkSettings) -> Result<KafkaConfig, ConfigError> {
        let brokers = settings.required(
            "KAFKA_BROKERS",
            "bootstrap servers such as kafka-0:9092,kafka-1:9092",
        )?;
        let properties = match settings.get("KAFKA_PROPERTIES") {
            None => Vec::new(),
            Some(text) => {
                parse_properties(text).map_err(|p| settings.error("KAFKA_PROPERTIES", p))?
            }
        };
        let topic_template = settings.get("KAFKA_TOPIC_TEMPLATE").map(str::to_string);
        if let Some(template) = &topic_template
            && !template.contains("{topic}")
        {
            return Err(settings.error(
                "KAFKA_TOPIC_TEMPLATE",
                "must contain {topic}, e.g. \"prod.{topic}\"",
            ));
        }
        Ok(KafkaConfig {
            brokers: brokers.to_string(),
            properties,
            topic_template,
            format: Format::read(settings)?,
        })
    }
}

impl SinkConfig for KafkaConfig {
    fn publisher(&self, _: SinkHealth) -> Box<dyn Publisher> {
        Box::new(KafkaSink::new(
            self.brokers.clone(),
            self.properties.clone(),
            self.topic_template.clone(),
            self.format.clone(),
        ))
    }
}

/// Parses `name=value` pairs separated by commas or new lines, and rejects any that would weaken
/// the delivery guarantees.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut properties = Vec::new();
    for item in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("expected name=value, got {item:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name == "bootstrap.servers" {
            return Err("set the brokers with OUTBOX_KAFKA_BROKERS, not bootstrap.servers".into());
        }
        for (safe_name, safe_value) in SAFETY {
            let weakens = name == *safe_name
                && !(value.eq_ignore_ascii_case(safe_value) || (name == "acks" && value == "-1"));
            if weakens {
                return Err(format!(
                    "{name}={value} would break the relay's delivery guarantees; it requires {safe_name}={safe_value}"
                ));
            }
        }
        if name == "max.in.flight.requests.per.connection"
            && value.parse::<u32>().map_or(true, |n| n > 5)
        {
            return Err(format!(
                "{name}={value}: the idempotent producer keeps order only with at most 5"
            ));
        }
        properties.push((name.to_string(), value.to_string()));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn properties_pass_through_and_safety_settings_are_guarded() {
        let props = parse_properties(
            "security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512\ncompression.type=zstd",
        )
        .expect("valid");
        assert_eq!(props.len(), 3);
        assert_eq!(props[1], ("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
        assert!(
            parse_properties("enable.idempotence=false")
                .unwrap_err()
                .contains("enable.idempotence=true")
        );
        assert!(parse_properties("acks=1").is_err());
        assert!(parse_properties("acks=-1").is_ok());
        assert!(parse_properties("max.in.flight.requests.per.connection=10").is_err());
        assert!(
            parse_properties("linger.ms")
                .unwrap_err()
                .contains("name=value")
        );
    }

    #[test]
    fn property_values_stay_out_of_debug_output() {
        let settings = Settings::from_pairs(&[
            ("OUTBOX_KAFKA_BROKERS", "k:9092"),
            ("OUTBOX_KAFKA_PROPERTIES", "sasl.password=s3cret"),
        ]);
        let config = KafkaConfig::read(&settings.default_sink()).expect("valid");
        let debug = format!("{config:?}");
        assert!(
            debug.contains("sasl.password") && !debug.contains("s3cret"),
            "{debug}"
        );
    }
}
