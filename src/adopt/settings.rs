//! The adoption settings, read through the core settings table.

use std::fmt;

use crate::settings::table::{ADOPT, ADOPT_TABLE, ADOPT_TOPIC_TEMPLATE};
use crate::settings::{ConfigError, Settings};

/// The framework whose outbox table is adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// Debezium's outbox event router layout (`id, aggregatetype, aggregateid, type, payload`).
    Debezium,
    /// MassTransit's Entity Framework Core outbox (`OutboxMessage`, `OutboxState`).
    MassTransit,
}

impl Framework {
    /// The table EF Core or Debezium's documentation creates, when `OUTBOX_ADOPT_TABLE` is unset.
    pub fn default_table(self) -> &'static str {
        match self {
            Framework::Debezium => "public.outboxevent",
            Framework::MassTransit => "public.\"OutboxMessage\"",
        }
    }

    /// The setting's value, also the name of its SQL file under sql/adopt/.
    pub fn name(self) -> &'static str {
        match self {
            Framework::Debezium => "debezium",
            Framework::MassTransit => "masstransit",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `OUTBOX_ADOPT` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub framework: Framework,
    /// The application's table, as PostgreSQL parses a table name (`schema."Name"`).
    pub table: String,
    /// Debezium: the topic of a row, `{column}` replaced by the row's column.
    pub topic_template: String,
}

impl Adoption {
    /// `None` when `OUTBOX_ADOPT` is unset: only `outbox.events` is relayed.
    pub fn read(settings: &Settings) -> Result<Option<Adoption>, ConfigError> {
        let framework = match settings.get(ADOPT.env) {
            None => return Ok(None),
            Some("debezium") => Framework::Debezium,
            Some("masstransit") => Framework::MassTransit,
            Some(other) => {
                return Err(ConfigError::new(
                    ADOPT.env,
                    format!("expected debezium or masstransit, got {other:?}"),
                ));
            }
        };
        let table = settings
            .get(ADOPT_TABLE.env)
            .unwrap_or(framework.default_table())
            .to_string();
        let topic_template = settings
            .text(&ADOPT_TOPIC_TEMPLATE)
            .unwrap_or_default()
            .to_string();
        check_template(&topic_template)
            .map_err(|problem| ConfigError::new(ADOPT_TOPIC_TEMPLATE.env, problem))?;
        Ok(Some(Adoption {
            framework,
            table,
            topic_template,
        }))
    }
}

/// A template is text and `{column}` placeholders, braces balanced, every placeholder named.
/// Whether the columns exist is PostgreSQL's to say when `migrate` installs the capture.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{template:?} has a `}}` without `{{`"));
        }
        let after = &rest[open + 1..];
        let Some(close) = after
            .find(['{', '}'])
            .filter(|&i| after[i..].starts_with('}'))
        else {
            return Err(format!("{template:?} has a `{{` without `}}`"));
        };
        if after[..close].trim().is_empty() {
            return Err(format!("{template:?} has an empty `{{}}`: name a column"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Adoption>, ConfigError> {
        Adoption::read(&Settings::from_pairs(pairs))
    }

    #[test]
    fn unset_adopts_nothing() {
        assert_eq!(read(&[]).expect("valid"), None);
    }

    #[test]
    fn each_framework_has_its_default_table_and_debeziums_topic() {
        let debezium = read(&[("OUTBOX_ADOPT", "debezium")]).expect("valid");
        assert_eq!(
            debezium,
            Some(Adoption {
                framework: Framework::Debezium,
                table: "public.outboxevent".into(),
                topic_template: "outbox.event.{aggregatetype}".into(),
            })
        );
        let masstransit = read(&[
            ("OUTBOX_ADOPT", "masstransit"),
            ("OUTBOX_ADOPT_TABLE", "sales.\"OutboxMessage\""),
        ])
        .expect("valid")
        .expect("adopted");
        assert_eq!(masstransit.framework, Framework::MassTransit);
        assert_eq!(masstransit.table, "sales.\"OutboxMessage\"");
    }

    #[test]
    fn errors_name_the_setting() {
        let err = read(&[("OUTBOX_ADOPT", "nservicebus")]).unwrap_err();
        assert_eq!(err.setting, "OUTBOX_ADOPT");
        for bad in ["events.{", "events.}", "events.{}", "{a{b}"] {
            let err = read(&[
                ("OUTBOX_ADOPT", "debezium"),
                ("OUTBOX_ADOPT_TOPIC_TEMPLATE", bad),
            ])
            .unwrap_err();
            assert_eq!(err.setting, "OUTBOX_ADOPT_TOPIC_TEMPLATE", "{bad}");
        }
        let fine = read(&[
            ("OUTBOX_ADOPT", "debezium"),
            ("OUTBOX_ADOPT_TOPIC_TEMPLATE", "{aggregatetype}.{type}"),
        ]);
        assert!(fine.is_ok());
    }
}
