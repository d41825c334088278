//! Publishing a batch in key order. An event may overtake an earlier one of its key only where
//! the broker cannot refuse the earlier one and take the later ([`Ordering`]): elsewhere it is
//! sent only after the broker's verdict on every earlier event of its key in the batch. Wave n
//! holds the n-th run of each key's events (one event per run, or a run of events that take the
//! same route); everything in a wave (different keys, and events without a key) is in flight
//! together, so a batch of distinct keys is one round trip and only a key whose events need
//! separate verdicts waits for its own confirmations.

use std::collections::HashMap;

use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::sink::{Ordering, Outcome, Sent, Sink, SinkError};

/// Sends `events` for [`Sent::answer`]. A batch that is one wave is sent whole, its verdicts
/// awaited later where the sink answers later (the sink may send the next batch meanwhile): a
/// [`Ordering::Pipelined`] sink's batch always, a [`Ordering::PerRoute`] sink's when each key
/// keeps one route, a [`Ordering::OneVerdictPerKey`] sink's when each key has one event. Any
/// other batch is published wave by wave now.
pub async fn send_in_key_order(sink: &mut Sink, events: &[&Event]) -> Result<Sent, SinkError> {
    let waves = match sink.ordering() {
        Ordering::Pipelined => return sink.send(events).await,
        Ordering::PerRoute => waves(events, |e| Some(sink.route(e))),
        Ordering::OneVerdictPerKey => waves(events, |_| None::<()>),
    };
    if waves.len() == 1 {
        return sink.send(events).await;
    }
    let outcomes = publish_waves(sink, events, waves).await?;
    Ok(sink.answered(outcomes))
}

/// Publishes `events` by `waves` (indices, each wave after the verdicts on the one before);
/// one outcome per event, in order. An event whose key was refused in an earlier wave is not
/// sent. A broker outage fails the whole batch, which is then sent again in order.
async fn publish_waves(
    sink: &mut Sink,
    events: &[&Event],
    waves: Vec<Vec<usize>>,
) -> Result<Vec<Outcome>, SinkError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    let mut stopped = KeyGate::default();
    for wave in waves {
        let wave: Vec<usize> = wave
            .into_iter()
            .filter(|&i| stopped.admits(events[i].id, events[i].key.as_deref()))
            .collect();
        if wave.is_empty() {
            continue;
        }
        let batch: Vec<&Event> = wave.iter().map(|&i| events[i]).collect();
        let results = sink.publish(&batch).await?;
        for (i, outcome) in wave.into_iter().zip(results) {
            if outcome != Outcome::Delivered {
                stopped.close(events[i].id, events[i].key.as_deref());
            }
            outcomes[i] = Some(outcome);
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::NotSent))
        .collect())
}

/// Indices of `events` by wave, in id order. A key's event joins the wave of the key's previous
/// event when both have the same `Some` run value, else the next wave; events without a key have
/// no order to keep and all go in the first wave.
fn waves<'a, R: PartialEq>(
    events: &[&'a Event],
    run: impl Fn(&'a Event) -> Option<R>,
) -> Vec<Vec<usize>> {
    // Key -> the wave of its last event, and that event's run value.
    let mut last: HashMap<&str, (usize, Option<R>)> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let n = match event.key.as_deref() {
            Some(key) => {
                let value = run(event);
                match last.get_mut(key) {
                    Some((wave, previous)) => {
                        if value.is_none() || *previous != value {
                            *wave += 1;
                        }
                        *previous = value;
                        *wave
                    }
                    None => {
                        last.insert(key, (0, value));
                        0
                    }
                }
            }
            None => 0,
        };
        if waves.len() <= n {
            waves.push(Vec::new());
        }
        waves[n].push(i);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::event::test_event as event;

    #[test]
    fn the_nth_event_of_each_key_goes_in_wave_n() {
        let events = [
            event(1, Some("a")),
            event(2, Some("b")),
            event(3, Some("a")),
            event(4, None),
            event(5, Some("a")),
            event(6, None),
            event(7, Some("b")),
        ];
        let events: Vec<&Event> = events.iter().collect();
        assert_eq!(
            waves(&events, |_| None::<()>),
            vec![vec![0, 1, 3, 5], vec![2, 6], vec![4]]
        );
    }

    #[test]
    fn distinct_keys_are_one_wave() {
        let events: Vec<Event> = (0..100).map(|i| event(i, Some(&format!("k{i}")))).collect();
        let events: Vec<&Event> = events.iter().collect();
        assert_eq!(waves(&events, |_| None::<()>).len(), 1);
    }

    #[test]
    fn a_keys_events_share_a_wave_until_their_route_changes() {
        let routed = |id, key, topic: &str| {
            let mut e = event(id, Some(key));
            e.topic = topic.to_string();
            e
        };
        let events = [
            routed(1, "a", "x"),
            routed(2, "a", "x"),
            routed(3, "b", "y"),
            routed(4, "a", "y"),
            routed(5, "a", "y"),
            routed(6, "b", "y"),
            routed(7, "a", "x"),
        ];
        let events: Vec<&Event> = events.iter().collect();
        assert_eq!(
            waves(&events, |e| Some(e.topic.clone())),
            vec![vec![0, 1, 2, 5], vec![3, 4], vec![6]]
        );
    }

    #[tokio::test]
    async fn every_event_gets_an_outcome_in_batch_order() {
        let events = [event(1, Some("a")), event(2, Some("a")), event(3, None)];
        let mut sink = Sink::stdout();
        let sent = send_in_key_order(&mut sink, &events.iter().collect::<Vec<_>>())
            .await
            .expect("stdout accepts");
        let outcomes = sent.answer().await.expect("stdout answers");
        assert_eq!(outcomes, vec![Outcome::Delivered; 3]);
    }
}
