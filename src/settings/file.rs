//! The optional TOML file: the core settings and the default sink's settings as top-level keys,
//! `routes`, and named sinks as tables. Each value becomes the text its environment variable
//! would hold.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;
use super::table::{CONFIG, CORE, Setting};

/// Reads the TOML file: the core settings and the default sink's settings as top-level keys,
/// `routes`, and named sinks as tables (`[sinks.audit]` with `kind` and its settings).
pub(super) fn read_file(
    path: &Path,
    sink_keys: &[&str],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let setting = CONFIG.env;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError::new(setting, syntax_error(path, &text, &e)))?;
    let file = File { path, sink_keys };
    let mut values = BTreeMap::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("sinks", toml::Value::Table(sinks)) => {
                let named = file.named_sinks(sinks, &mut values)?;
                values.insert("OUTBOX_SINKS".into(), named.join(","));
            }
            ("routes", toml::Value::Array(routes)) => {
                let routes: Result<Vec<String>, _> = routes
                    .into_iter()
                    .map(|r| file_text("routes", r, path))
                    .collect();
                values.insert("OUTBOX_ROUTES".into(), routes?.join(","));
            }
            ("routes", value) => {
                values.insert("OUTBOX_ROUTES".into(), file_text("routes", value, path)?);
            }
            (key, value) => {
                values.insert(file.variable(key)?, file_text(key, value, path)?);
            }
        }
    }
    Ok(values)
}

/// Where the file is not TOML and why, without quoting the line: toml's own message shows the line,
/// and it may hold a password (an unquoted URL is the usual mistake).
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let what = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = error.span() else {
        return format!("{} is not valid TOML: {what}", path.display());
    };
    let before = text.get(..span.start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!(
        "{} is not valid TOML at line {line}, column {column}: {what}",
        path.display()
    )
}

/// The file being read, for its keys and its errors.
struct File<'a> {
    path: &'a Path,
    /// The settings any sink may read, without `OUTBOX_`.
    sink_keys: &'a [&'a str],
}

impl File<'_> {
    /// The sink keys as the file writes them.
    fn sink_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.sink_keys.iter().map(|k| k.to_lowercase())
    }

    /// The environment variable of a top-level key.
    fn variable(&self, key: &str) -> Result<String, ConfigError> {
        if let Some(setting) = CORE.iter().find(|s| s.key() == key) {
            return Ok(setting.env.to_string());
        }
        if self.sink_keys().any(|k| k == key) {
            return Ok(format!("OUTBOX_{}", key.to_uppercase()));
        }
        let mut known: Vec<String> = CORE.iter().map(Setting::key).collect();
        known.extend(self.sink_keys());
        known.extend(["routes".into(), "sinks".into()]);
        Err(self.unknown(key, known))
    }

    /// The `[sinks.<name>]` tables: each one's settings go into `values`; returns the
    /// `name=kind` items of `OUTBOX_SINKS`.
    fn named_sinks(
        &self,
        sinks: toml::Table,
        values: &mut BTreeMap<String, String>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut named = Vec::new();
        for (name, sink) in sinks {
            let toml::Value::Table(sink) = sink else {
                return Err(ConfigError::new(
                    "OUTBOX_SINKS",
                    format!("sinks.{name} in {} must be a table", self.path.display()),
                ));
            };
            let prefix = format!("OUTBOX_SINK_{}_", name.to_uppercase().replace('-', "_"));
            for (key, value) in sink {
                if key == "kind" {
                    named.push(format!("{name}={}", file_text(&key, value, self.path)?));
                } else if self.sink_keys().any(|k| k == key) {
                    let var = format!("{prefix}{}", key.to_uppercase());
                    values.insert(var, file_text(&key, value, self.path)?);
                } else {
                    let mut known: Vec<String> = self.sink_keys().collect();
                    known.insert(0, "kind".into());
                    return Err(self.unknown(&format!("sinks.{name}.{key}"), known));
                }
            }
        }
        Ok(named)
    }

    fn unknown(&self, key: &str, known: Vec<String>) -> ConfigError {
        ConfigError::new(
            CONFIG.env,
            format!(
                "unknown key {key:?} in {}; known keys: {}",
                self.path.display(),
                known.join(", ")
            ),
        )
    }
}

/// A file value as the text the environment variable would hold. A table is a list of
/// `name=value` lines (e.g. `kafka_properties`).
fn file_text(key: &str, value: toml::Value, path: &Path) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Table(t) => Ok(t
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("\n")),
        other => Err(ConfigError::new(
            CONFIG.env,
            format!(
                "{key} in {} must be a string or a number, got {}",
                path.display(),
                other.type_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_names_line_and_column_without_quoting_the_line() {
        let text = "sink = \"rabbitmq\"\namqp_url = amqp://relay:s3cr3t-pw@mq:5672/%2f\n";
        let error = text.parse::<toml::Table>().expect_err("an unquoted URL");
        let message = syntax_error(Path::new("/etc/relay.toml"), text, &error);
        assert!(
            message.starts_with("/etc/relay.toml is not valid TOML at line 2, column 12: "),
            "{message}"
        );
        assert!(!message.contains("s3cr3t"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}
