//! Which sink an event goes to: the first route whose topic pattern matches the event's topic,
//! else the default sink (`OUTBOX_SINK`). With no default sink, a topic that no route matches has
//! nowhere to go: the relay dead-letters such an event with that reason.

/// A topic pattern: `*` stands for any run of characters (dots included), everything else is
/// literal. `orders.*` matches `orders.created` and `orders.eu.created`, not `orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a route's topic pattern is empty; use * to match every topic".into());
        }
        Ok(Pattern {
            text: text.to_string(),
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = self.text.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = topic.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*`: the whole topic must be the literal.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The routes in order, each to a sink by its index, and the default sink.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<(Pattern, usize)>,
    default: Option<usize>,
}

impl Routes {
    pub fn new(routes: Vec<(Pattern, usize)>, default: Option<usize>) -> Routes {
        Routes { routes, default }
    }

    /// The index of the sink for `topic`; `None` when no route matches and there is no default.
    pub fn sink_for(&self, topic: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map(|(_, sink)| *sink)
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern).expect("valid").matches(topic)
    }

    #[test]
    fn star_matches_any_run_of_characters() {
        assert!(matches("orders.*", "orders.created"));
        assert!(matches("orders.*", "orders.eu.created"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "audit.orders.created"));
        assert!(matches("*", "anything"));
        assert!(matches("*.created", "orders.created"));
        assert!(!matches("*.created", "orders.created.v2"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("a*b*c", "a-c"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.created"));
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn the_first_matching_route_wins_then_the_default() {
        let p = |t: &str| Pattern::parse(t).expect("valid");
        let routes = Routes::new(vec![(p("audit.secret"), 2), (p("audit.*"), 1)], Some(0));
        assert_eq!(routes.sink_for("audit.secret"), Some(2));
        assert_eq!(routes.sink_for("audit.login"), Some(1));
        assert_eq!(routes.sink_for("orders.created"), Some(0));
        let no_default = Routes::new(vec![(p("audit.*"), 0)], None);
        assert_eq!(no_default.sink_for("orders.created"), None);
    }
}
