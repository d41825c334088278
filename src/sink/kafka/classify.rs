//! What librdkafka's errors mean for an event (Vector's Kafka sink sorts them the same way).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sink::{Classify, Fault};

/// The event's own fault (uses an attempt), back-pressure (no attempt) or an outage.
impl Classify for KafkaError {
    fn classify(&self) -> Fault {
        use RDKafkaErrorCode as Code;
        match self.rdkafka_error_code() {
            Some(
                Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::TopicAuthorizationFailed
                | Code::InvalidTopic
                | Code::UnknownTopicOrPartition
                | Code::UnknownTopic
                | Code::MessageBatchTooLarge
                | Code::InvalidRecord
                | Code::PolicyViolation,
            ) => Fault::Event(format!("Kafka rejected the event: {self}")),
            Some(Code::QueueFull) => Fault::BackPressure(format!("Kafka back-pressure: {self}")),
            _ => Fault::Outage(format!("Kafka is unavailable: {self}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_authorization_errors_are_the_events_fault() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(too_large.classify(), Fault::Event(_)));
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert!(matches!(full.classify(), Fault::BackPressure(_)));
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert!(down.classify().is_outage());
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(timeout.classify().is_outage());
    }
}
