//! The exchanges an `AMQP_EXCHANGE` template names: checked to exist before the first publish to
//! each on a connection, so that a missing one fails its events instead of closing the channel.

use std::collections::{HashMap, HashSet};

use lapin::ExchangeKind;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, ShortString};

use super::classify::Problem;
use super::encode::Message;
use super::link::Link;
use crate::sink::{Classify, Fault, Outcome, SinkError, Verdicts};

/// Makes sure every exchange a template named exists, asking RabbitMQ once per connection
/// (on a channel of its own: a missing exchange closes the channel that asked). The events
/// of a missing exchange fail; the others are returned.
pub(super) async fn check<'a>(
    link: &mut Option<Link>,
    template: &str,
    messages: Vec<(usize, Message<'a>)>,
    verdicts: &mut Verdicts<'_>,
) -> Result<Vec<(usize, Message<'a>)>, SinkError> {
    // Missing exchange -> why its events fail.
    let mut missing: HashMap<String, String> = HashMap::new();
    let mut asked: HashSet<&str> = HashSet::new();
    for name in messages.iter().filter_map(|(_, m)| m.exchange_name()) {
        if !asked.insert(name)
            || link
                .as_ref()
                .is_some_and(|link| link.exchanges.contains(name))
        {
            continue;
        }
        if let Some(reason) = declare(link, name, template).await? {
            missing.insert(name.to_string(), reason);
        }
    }
    if missing.is_empty() {
        return Ok(messages);
    }
    let mut kept = Vec::with_capacity(messages.len());
    for (index, message) in messages {
        match message.exchange_name().and_then(|name| missing.get(name)) {
            Some(reason) => verdicts.settle(index, Outcome::Failed(reason.clone())),
            None => kept.push((index, message)),
        }
    }
    Ok(kept)
}

/// Asks RabbitMQ whether exchange `name` exists (a passive declare). `Some(reason)`: it does not,
/// and its events fail for that reason; an outage drops the connection.
async fn declare(
    link: &mut Option<Link>,
    name: &str,
    template: &str,
) -> Result<Option<String>, SinkError> {
    let Some(open) = link.as_mut() else {
        return Err(SinkError::Unavailable("RabbitMQ is not connected".into()));
    };
    let probe = match open.connection.create_channel().await {
        Ok(probe) => probe,
        Err(e) => {
            *link = None;
            return Err(SinkError::Unavailable(format!(
                "cannot open a channel on RabbitMQ: {e}"
            )));
        }
    };
    let declared = probe
        .exchange_declare(
            ShortString::from(name),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    let Err(error) = declared else {
        open.exchanges.insert(name.to_string());
        let _ = probe.close(200, ShortString::from("checked")).await;
        return Ok(None);
    };
    let problem = Problem::ExchangeCheck {
        name,
        template,
        error: &error,
    };
    match problem.classify() {
        Fault::Outage(reason) => {
            *link = None;
            Err(SinkError::Unavailable(reason))
        }
        Fault::Event(reason) | Fault::BackPressure(reason) => Ok(Some(reason)),
    }
}
