//! The Helm chart (charts/outbox-relay) names every kind of [`KINDS`], so that a new sink cannot
//! be forgotten there: the `$kinds` list its templates validate against, both enums of
//! values.schema.json (`config.sink` and a named sink's `kind`), and the comments of values.yaml
//! that list the kinds.

use std::path::Path;

use super::{KINDS, Kind};

fn chart_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/outbox-relay")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kind_names() -> Vec<String> {
    KINDS.iter().map(|k| k.name.to_string()).collect()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names
}

#[test]
fn the_templates_validate_against_every_kind() {
    let helpers = chart_file("templates/_helpers.tpl");
    let line = helpers
        .lines()
        .find(|l| l.contains("$kinds := list"))
        .expect("_helpers.tpl defines $kinds");
    let listed: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert_eq!(listed, kind_names(), "{line}");
}

#[test]
fn the_schema_enums_are_the_kinds() {
    let schema: serde_json::Value =
        serde_json::from_str(&chart_file("values.schema.json")).expect("JSON");
    let names = |pointer: &str| -> Vec<String> {
        schema
            .pointer(pointer)
            .and_then(serde_json::Value::as_array)
            .unwrap_or_else(|| panic!("values.schema.json has no {pointer}"))
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let mut default_sink = names("/properties/config/properties/sink/enum");
    assert!(
        default_sink.contains(&String::new()),
        "config.sink may be empty"
    );
    default_sink.retain(|n| !n.is_empty());
    assert_eq!(sorted(default_sink), sorted(kind_names()), "config.sink");
    let named = names("/properties/sinks/additionalProperties/properties/kind/enum");
    assert_eq!(sorted(named), sorted(kind_names()), "sinks.*.kind");
}

#[test]
fn the_values_comments_list_every_kind() {
    // The comments as one text, so that a list may wrap across lines.
    let comments: String = chart_file("values.yaml")
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    let list = Kind::names();
    assert_eq!(
        comments.matches(list.as_str()).count(),
        2,
        "values.yaml lists the kinds as {list:?} for config.sink and for sinks"
    );
}
