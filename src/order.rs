//! The per-key order rule, in one place: an event that is not delivered holds back every later
//! event (higher id) of its key until it is settled. Each stage that can hold events back (the
//! batch after an unsettled one, rows that cannot be published, key-ordered waves, a sink that
//! refuses an event, settling a batch) asks a [`KeyGate`]. In the database the same rule is
//! `sql/queries/claim.sql`'s `blocked`: an earlier deferred event of the key that is not part of
//! the claim.

use std::collections::HashMap;

/// Keys closed from an event id on. Events without a key have no order and always pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyGate {
    /// Key -> the lowest id of an event of that key that was not delivered.
    closed: HashMap<String, i64>,
}

impl KeyGate {
    /// Whether an event with this id and key may go out.
    pub fn admits(&self, id: i64, key: Option<&str>) -> bool {
        match key.and_then(|k| self.closed.get(k)) {
            Some(&from) => id < from,
            None => true,
        }
    }

    /// Holds back the events of `key` after `id` (and `id` itself).
    pub fn close(&mut self, id: i64, key: Option<&str>) {
        if let Some(key) = key {
            let from = self.closed.entry(key.to_string()).or_insert(id);
            *from = (*from).min(id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_key_holds_back_only_its_later_events() {
        let mut gate = KeyGate::default();
        gate.close(5, Some("a"));
        gate.close(9, Some("a"));
        gate.close(7, None);
        assert!(gate.admits(4, Some("a")));
        assert!(!gate.admits(5, Some("a")));
        assert!(!gate.admits(6, Some("a")));
        assert!(gate.admits(6, Some("b")));
        assert!(gate.admits(8, None));
    }
}
