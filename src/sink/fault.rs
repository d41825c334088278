//! One way for every sink to say what its broker's error means: a [`Fault`], read from the error
//! by [`Classify`]. Whether an error uses one of the event's attempts, waits without one, or fails
//! the whole batch as an outage is then decided here, the same for every sink.

use super::{Outcome, SinkError};

/// What a broker's error means for the event it came with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The event's own fault (too large, unroutable, not allowed): uses an attempt, then the
    /// event is dead-lettered.
    Event(String),
    /// The broker pushes back (a full queue or stream): the event waits, no attempt used.
    BackPressure(String),
    /// The broker is unavailable: the whole batch is tried again after a backoff, no attempt used.
    Outage(String),
}

impl Fault {
    /// The event's outcome, or the batch's error for an outage.
    pub fn outcome(self) -> Result<Outcome, SinkError> {
        match self {
            Fault::Event(reason) => Ok(Outcome::Failed(reason)),
            Fault::BackPressure(reason) => Ok(Outcome::Deferred(reason)),
            Fault::Outage(reason) => Err(SinkError::Unavailable(reason)),
        }
    }

    pub fn is_outage(&self) -> bool {
        matches!(self, Fault::Outage(_))
    }
}

/// A broker's error (or refusal) that a sink knows how to read: the one signature with which
/// every sink sorts its broker's errors.
pub trait Classify {
    fn classify(&self) -> Fault;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_outage_fails_the_batch() {
        assert_eq!(
            Fault::Event("too large".into()).outcome().ok(),
            Some(Outcome::Failed("too large".into()))
        );
        assert_eq!(
            Fault::BackPressure("full".into()).outcome().ok(),
            Some(Outcome::Deferred("full".into()))
        );
        let outage = Fault::Outage("down".into());
        assert!(outage.is_outage());
        assert!(matches!(outage.outcome(), Err(SinkError::Unavailable(r)) if r == "down"));
    }
}
