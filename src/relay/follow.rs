//! What a batch sent before the verdicts on the batch in flight must keep so that per-key order
//! holds across the two ([`Follow`], [`Tail`]), and the check of the next batch against it
//! ([`RouteCheck`]). The rule per sink ordering is [`Ordering`]'s.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::outbox::event::Event;
use crate::sink::Ordering;

/// What a batch sent to a sink before its part of the batch in flight is answered must keep.
pub(super) enum Follow {
    /// Nothing: the sink keeps its order across batches ([`Ordering::Pipelined`]).
    Anything,
    /// Each key's route: the sink keeps one route's messages in order ([`Ordering::PerRoute`],
    /// a part sent whole); or no key of the part, each of whose events needs its own verdict
    /// ([`Ordering::OneVerdictPerKey`], a part of one event per key). Key -> the route of its
    /// last event in the part (empty for the latter).
    Routes(HashMap<String, String>),
    /// The next batch waits for the verdicts.
    Nothing,
}

impl Follow {
    /// What a batch sent before the verdicts on `events` must keep, for a sink of `ordering`
    /// whose verdicts are `outstanding`; `route` is where the sink routes an event.
    pub(super) fn of<'e>(
        ordering: Ordering,
        outstanding: bool,
        events: &[&'e Event],
        route: impl Fn(&'e Event) -> Cow<'e, str>,
    ) -> Follow {
        if ordering == Ordering::Pipelined {
            return Follow::Anything;
        }
        if !outstanding {
            return Follow::Nothing;
        }
        Follow::Routes(
            (events.iter())
                .filter_map(|e| {
                    let key = e.key.clone()?;
                    let route = match ordering {
                        Ordering::PerRoute => route(e).into_owned(),
                        _ => String::new(),
                    };
                    Some((key, route))
                })
                .collect(),
        )
    }
}

/// What the batch in flight asks of a batch sent before its verdicts are in
/// ([`InFlight::tail`](super::sinks::InFlight::tail), [`Sinks::may_follow`](super::sinks::Sinks::may_follow)).
pub struct Tail {
    /// Per sink slot that keeps each route in order, or needs a verdict per event of a key: its
    /// part's key -> route.
    routes: Vec<(usize, HashMap<String, String>)>,
}

impl Tail {
    pub(super) fn new(routes: Vec<(usize, HashMap<String, String>)>) -> Tail {
        Tail { routes }
    }

    /// The route of `key`'s last event in the batch in flight on sink `slot`, if any.
    fn route(&self, slot: usize, key: &str) -> Option<&str> {
        (self.routes.iter())
            .find(|(s, _)| *s == slot)
            .and_then(|(_, routes)| routes.get(key))
            .map(String::as_str)
    }
}

/// Whether each key keeps its route on a sink: from its last event in the batch in flight
/// through the next batch's events, in order. A key whose every event needs its own verdict has
/// no route to keep: it may not have an event in flight, nor two in the next batch.
pub(super) struct RouteCheck<'t, 'e> {
    tail: &'t Tail,
    /// (slot, key) -> the route of the key's last event so far in the next batch.
    seen: HashMap<(usize, &'e str), Cow<'e, str>>,
}

impl<'t, 'e> RouteCheck<'t, 'e> {
    pub(super) fn after(tail: &'t Tail) -> Self {
        RouteCheck {
            tail,
            seen: HashMap::new(),
        }
    }

    /// The next event of `key` on sink `slot` takes `route` (`None`: it needs its own verdict):
    /// whether that is the key's route so far.
    pub(super) fn keeps(&mut self, slot: usize, key: &'e str, route: Option<Cow<'e, str>>) -> bool {
        let last = match self.seen.get(&(slot, key)) {
            Some(last) => Some(last.as_ref()),
            None => self.tail.route(slot, key),
        };
        let kept = match (last, &route) {
            (None, _) => true,
            (Some(last), Some(route)) => last == route.as_ref(),
            (Some(_), None) => false,
        };
        self.seen.insert((slot, key), route.unwrap_or_default());
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(routes: &[(usize, &[(&str, &str)])]) -> Tail {
        Tail {
            routes: (routes.iter())
                .map(|(slot, keys)| {
                    let keys = keys.iter().map(|(k, r)| (k.to_string(), r.to_string()));
                    (*slot, keys.collect())
                })
                .collect(),
        }
    }

    #[test]
    fn a_key_may_follow_on_the_route_it_took_in_the_batch_in_flight() {
        let tail = tail(&[(0, &[("a", "orders")])]);
        let mut check = RouteCheck::after(&tail);
        assert!(check.keeps(0, "a", Some("orders".into())));
        assert!(
            check.keeps(0, "b", Some("payments".into())),
            "a key not in flight"
        );
        assert!(check.keeps(1, "a", Some("payments".into())), "another sink");
    }

    #[test]
    fn a_key_that_changes_route_waits() {
        let tail = tail(&[(0, &[("a", "orders")])]);
        assert!(!RouteCheck::after(&tail).keeps(0, "a", Some("payments".into())));
        // Within the next batch too: it would go out in two waves.
        let mut check = RouteCheck::after(&tail);
        assert!(check.keeps(0, "b", Some("orders".into())));
        assert!(!check.keeps(0, "b", Some("payments".into())));
    }

    #[test]
    fn a_key_whose_events_each_need_a_verdict_follows_only_when_not_in_flight_and_once() {
        let tail = tail(&[(0, &[("a", "")])]);
        let mut check = RouteCheck::after(&tail);
        assert!(!check.keeps(0, "a", None), "in flight");
        assert!(check.keeps(0, "b", None));
        assert!(!check.keeps(0, "b", None), "twice in the next batch");
    }
}
