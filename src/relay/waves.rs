//! Publishing a batch in key order. For a sink that needs it ([`Sink::publishes_in_waves`]), an
//! event is sent only after the broker's verdict on every earlier event of its key in the batch,
//! so a later event can never overtake an earlier one that the broker refused. Wave n holds the
//! n-th event of each key; everything in a wave (different keys, and events without a key) is in
//! flight together, so a batch of distinct keys is one round trip and only a key with several
//! events in the batch waits for its own confirmations.

use std::collections::HashMap;

use crate::order::KeyGate;
use crate::outbox::event::Event;
use crate::sink::{Outcome, Sink, SinkError};

/// Publishes `events` wave by wave and returns one outcome per event, in the same order.
/// A broker outage fails the whole batch, which is then sent again in order.
pub async fn publish_in_key_order(
    sink: &mut Sink,
    events: &[&Event],
) -> Result<Vec<Outcome>, SinkError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    let mut stopped = KeyGate::default();
    let waves = if sink.publishes_in_waves() {
        waves(events)
    } else {
        vec![(0..events.len()).collect()]
    };
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

/// Indices of `events` by wave: wave n holds the n-th event of each key, in id order; events
/// without a key have no order to keep and all go in the first wave.
fn waves(events: &[&Event]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let n = match event.key.as_deref() {
            Some(key) => {
                let count = seen.entry(key).or_insert(0);
                *count += 1;
                *count - 1
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
        assert_eq!(waves(&events), vec![vec![0, 1, 3, 5], vec![2, 6], vec![4]]);
    }

    #[test]
    fn distinct_keys_are_one_wave() {
        let events: Vec<Event> = (0..100).map(|i| event(i, Some(&format!("k{i}")))).collect();
        let events: Vec<&Event> = events.iter().collect();
        assert_eq!(waves(&events).len(), 1);
    }

    #[tokio::test]
    async fn every_event_gets_an_outcome_in_batch_order() {
        let events = [event(1, Some("a")), event(2, Some("a")), event(3, None)];
        let mut sink = Sink::stdout();
        let outcomes = publish_in_key_order(&mut sink, &events.iter().collect::<Vec<_>>())
            .await
            .expect("stdout accepts");
        assert_eq!(outcomes, vec![Outcome::Delivered; 3]);
    }
}
