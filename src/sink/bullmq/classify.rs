//! What the BullMQ client's errors mean: a refusal of the job itself is the event's fault,
//! anything about Redis or the connection is an outage.

use crate::sink::{Classify, Fault};

impl Classify for bullmq::Error {
    fn classify(&self) -> Fault {
        match self {
            // ACL: the user may not access the queue's keys (checked before the script runs, so
            // nothing was added). A missing command permission is the setup's: an outage.
            bullmq::Error::Redis(e)
                if e.code() == Some("NOPERM") && e.detail().is_some_and(|d| d.contains("key")) =>
            {
                Fault::Event(format!(
                    "Redis refused the add: {self}; the Redis user may not access this queue's keys: add them to the user's key patterns (ACL SETUSER ... ~pattern) or change OUTBOX_BULLMQ_QUEUE_TEMPLATE"
                ))
            }
            // The job as the client or BullMQ's add script refused it.
            bullmq::Error::InvalidConfig(_)
            | bullmq::Error::Serialization(_)
            | bullmq::Error::MsgPack(_)
            | bullmq::Error::Script { .. } => {
                Fault::Event(format!("BullMQ refused the job: {self}"))
            }
            _ => Fault::Outage(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn a_refused_job_is_the_events_fault_and_redis_trouble_an_outage() {
        let refused = bullmq::Error::InvalidConfig("Queue name cannot contain :".into());
        assert!(matches!(refused.classify(), Fault::Event(r) if r.contains("cannot contain")));
        let key = bullmq::Error::Redis(RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoPerm),
            "",
            "no permissions to access one of the keys".to_string(),
        )));
        assert!(matches!(key.classify(), Fault::Event(r) if r.contains("ACL SETUSER")));
        let command = bullmq::Error::Redis(RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoPerm),
            "",
            "no permissions to run the 'evalsha' command".to_string(),
        )));
        assert!(command.classify().is_outage());
        let dropped = bullmq::Error::Redis(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert!(dropped.classify().is_outage());
        assert!(bullmq::Error::ConnectionClosed.classify().is_outage());
    }
}
