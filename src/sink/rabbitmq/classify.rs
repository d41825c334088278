//! What RabbitMQ's refusals mean for an event.

use crate::sink::{Classify, Fault};

/// Something RabbitMQ said against one message.
pub(super) enum Problem<'a> {
    /// Returned as unroutable (`mandatory`): no queue is bound for its exchange and routing key.
    Returned {
        reply_code: u16,
        reply_text: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
    },
    /// Nacked: RabbitMQ did not take it, e.g. a full queue with `overflow=reject-publish`.
    Nacked,
    /// The passive declare of an exchange a template named failed.
    ExchangeCheck {
        name: &'a str,
        template: &'a str,
        error: &'a lapin::Error,
    },
}

impl Classify for Problem<'_> {
    fn classify(&self) -> Fault {
        match self {
            Problem::Returned {
                reply_code,
                reply_text,
                exchange,
                routing_key,
            } => Fault::Event(format!(
                "unroutable: RabbitMQ returned the message ({reply_code} {reply_text}): no queue is bound to exchange {exchange:?} for routing key {routing_key:?}"
            )),
            Problem::Nacked => Fault::BackPressure(
                "RabbitMQ refused the message (nack), e.g. a full queue with overflow=reject-publish".into(),
            ),
            Problem::ExchangeCheck {
                name,
                template,
                error,
            } if is_not_found(error) => Fault::Event(format!(
                "exchange {name:?} (from the sink's AMQP_EXCHANGE template {template:?}) does not exist on RabbitMQ; declare it (a MassTransit consumer of this message type declares it when it starts), then retry the dead letter"
            )),
            Problem::ExchangeCheck { name, error, .. } => Fault::Outage(format!(
                "cannot check exchange {name:?} on RabbitMQ: {error}"
            )),
        }
    }
}

/// RabbitMQ's 404 NOT_FOUND: a passive declare of an exchange that does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_message_is_the_events_fault_and_a_nack_back_pressure() {
        let returned = Problem::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE",
            exchange: "amq.topic",
            routing_key: "orders",
        };
        match returned.classify() {
            Fault::Event(reason) => {
                assert!(reason.starts_with("unroutable:"), "{reason}");
                assert!(reason.contains("\"orders\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(Problem::Nacked.classify(), Fault::BackPressure(_)));
    }
}
