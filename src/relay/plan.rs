//! The pipeline's decisions, apart from its I/O: which events of a claim go out, what the session
//! does while a batch is in flight, whether the next batch goes out before its verdicts, how long a batch delivered whole waits to be marked by the
//! next claim, and what follows a settled batch. Each is a plain function of what the loop knows,
//! so that it can be tested without PostgreSQL or a broker.

use std::time::{Duration, Instant};

use super::settle::Settlement;
use crate::order::KeyGate;
use crate::outbox::session::{BatchLimits, Claimed, Cursor, Wake};

/// How often the claim reads again from the first id, to find events put back below its floor
/// by hand (`UPDATE ... SET delivered_at = NULL`, a dead letter repaired without `available_at`).
/// It is the one claim that walks the delivered history, once per interval.
const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How long a batch delivered whole may wait to be marked by the next claim, which marks it in
/// the same statement. At a steady slow rate the next notification comes well within it, and
/// each round costs one statement instead of two; a quiet outbox gets its mark after it.
const MARK_WITH_NEXT_CLAIM_WITHIN: Duration = Duration::from_millis(50);

/// Where the next claim reads from, and when it last read from the first id.
pub struct Reader {
    /// The cursor after the last claim (or where a batch must be read again from).
    pub cursor: Cursor,
    /// When a claim last read from the first id (see [`RESCAN_INTERVAL`]).
    last_rescan: Instant,
}

impl Reader {
    /// From the first id: a new leader reads every undelivered event once.
    pub fn start() -> Reader {
        Reader {
            cursor: Cursor::start(),
            last_rescan: Instant::now(),
        }
    }

    /// The cursor for the next claim: the current one, or once per [`RESCAN_INTERVAL`] the same
    /// reading from the first id.
    pub fn next(&mut self) -> Cursor {
        if self.last_rescan.elapsed() >= RESCAN_INTERVAL {
            self.last_rescan = Instant::now();
            return self.cursor.rescan();
        }
        self.cursor.clone()
    }
}

/// The per-key rule across batches: keys not settled in the previous batch (`unsettled`), and
/// keys of rows that cannot be published, hold back their later events in this one. Returns the
/// events to send and those held back, as indices into `claimed.events`.
pub fn gate(unsettled: Option<&KeyGate>, claimed: &Claimed) -> (Vec<usize>, Vec<usize>) {
    let mut gate = unsettled.cloned().unwrap_or_default();
    for bad in &claimed.invalid {
        gate.close(bad.id, bad.key.as_deref());
    }
    (0..claimed.events.len()).partition(|&i| {
        let event = &claimed.events[i];
        gate.admits(event.id, event.key.as_deref())
    })
}

/// What decides whether the next batch, claimed early while this one is in flight, goes out at
/// once rather than after this one's verdicts.
#[derive(Debug, Clone, Copy)]
pub struct Overlap {
    /// This batch's verdicts are outstanding, and each of its sinks keeps its order across
    /// batches (Kafka's idempotent producer keeps each partition in order across its retries;
    /// RabbitMQ keeps one channel's messages on one route in order; NATS, a batch of one event
    /// per key).
    pub in_flight: bool,
    /// Every sink of the next batch keeps its order across batches for its events (RabbitMQ: each
    /// key keeps its route; NATS: no key in flight), and is up and connected.
    pub next_sinks: bool,
    /// The lanes are due for a check, which needs nothing in flight.
    pub lanes_due: bool,
    /// Shutting down: nothing more goes out.
    pub stopping: bool,
}

/// Whether `next` goes out while this batch's verdicts are outstanding. At most two batches are
/// in flight: this one is awaited before the next claim. It is gated by the keys unsettled in the
/// batch before this one, and settled after this one with this one's undelivered keys
/// ([`settle`](super::settle::settle)'s `after`): an event of a key this batch did not deliver
/// is not marked delivered, but published again after it. With large payloads it waits: two
/// batches' payloads in flight stay within the byte budget.
pub fn send_early(next: &Claimed, limits: BatchLimits, overlap: Overlap) -> bool {
    overlap.in_flight
        && overlap.next_sinks
        && !overlap.lanes_due
        && !overlap.stopping
        && !next.events.is_empty()
        && next.payload_bytes() <= limits.bytes / 2
}

/// What the loop knows of NOTIFY and the lanes when a batch goes out.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    /// The last wait ended with a notification (or with listening again): NOTIFY works.
    pub notified: bool,
    /// The session listens for new events' notifications.
    pub listening: bool,
    /// The lanes are due for a check, which needs nothing in flight.
    pub lanes_due: bool,
}

/// What the session does while a batch is in flight, decided when it goes out.
#[derive(Debug, PartialEq)]
pub struct Outlook {
    /// No more events are expected: no early claim; after the batch, record it and wait for a
    /// notification.
    pub idle: bool,
    /// Claim the next batch while this one is in flight.
    pub prefetch: bool,
    /// Stop listening before the early claim (a steady stream while claims linger).
    pub stop_listening: bool,
    /// The early claim (and the wait after an idle batch) lingers until then for more events.
    pub linger_until: Option<Instant>,
}

impl Outlook {
    /// Decides for `claimed`. `take_wakeup` says whether a notification came since the claim;
    /// it is asked (and the notifications drained) only when the answer matters.
    pub fn new(
        claimed: &Claimed,
        limits: BatchLimits,
        linger: Duration,
        signals: Signals,
        take_wakeup: impl FnOnce() -> bool,
    ) -> Outlook {
        let full = claimed.is_full(limits);
        // More events are on their way when the batch was full, when a notification came since
        // it was claimed, when the claim did not follow a notification (NOTIFY may be off:
        // then the relay reads on while it finds events), or when the session does not listen
        // (see below). Otherwise an early claim would come back empty: the batch is recorded on
        // its own and the next claim waits for a notification. An isolated event costs one
        // claim and one mark.
        let watching = !full && signals.notified && signals.listening;
        let notified_since = watching && take_wakeup();
        let idle = watching && !notified_since;
        // A steady stream (several events per batch, and more notified since the claim) while
        // claims linger: the relay claims again after each batch anyway, so it stops listening
        // until a claim comes back empty; each notification would wake it and its backend.
        let stop_listening = notified_since && !linger.is_zero() && claimed.events.len() > 1;
        // With large payloads, no early claim: one batch's payloads in memory, not two. Nor when
        // the lanes are due for a check, which needs nothing in flight.
        let prefetch = !idle && claimed.payload_bytes() <= limits.bytes / 2 && !signals.lanes_due;
        // After a batch that was not full, more events come slowly: the early claim waits a
        // little for them, so that fewer, larger batches go out (a full one means a backlog:
        // read on at once).
        let linger_until = claimed
            .started
            .filter(|_| !linger.is_zero() && !full)
            .map(|started| started + linger);
        Outlook {
            idle,
            prefetch,
            stop_listening,
            linger_until,
        }
    }
}

/// After an empty claim: whether to claim again at once. A notification that came after an
/// early claim was sent announces events it could not see (recorded with the previous batch in
/// the same statement). Without one, nothing was committed since (or NOTIFY is off, and the poll
/// interval applies as anywhere): record and wait. An isolated event costs two claims and a
/// mark, not three claims. `take_wakeup` is asked only after an early claim.
pub fn claim_again(was_prefetched: bool, take_wakeup: impl FnOnce() -> bool) -> bool {
    was_prefetched && take_wakeup()
}

/// How long an idle relay waits for a notification: the poll interval, or less when the lanes
/// are due for a check sooner.
pub fn idle_wait(poll_interval: Duration, until_lanes_due: Duration) -> Duration {
    poll_interval.min(until_lanes_due)
}

/// Before an idle wait, a batch delivered whole is not recorded at once: for a moment, a
/// notification leaves it to the next claim to mark ([`MARK_WITH_NEXT_CLAIM_WITHIN`]). Any other
/// batch (failures to record, parked events) is recorded at once, so that the next claim sees it.
#[derive(Debug, PartialEq)]
pub struct Hold {
    /// How long to wait for a notification before recording.
    pub first: Duration,
    /// The whole wait.
    wait: Duration,
}

/// What follows a [`Hold`].
#[derive(Debug, PartialEq)]
pub enum AfterHold {
    /// A notification came: the next claim marks the batch.
    LeaveToClaim(Wake),
    /// Record the batch, then wait for the rest.
    Record { then_wait: Duration },
}

impl Hold {
    /// The hold for an idle wait of `wait` with `unrecorded` to record, if it is held at all.
    pub fn before(unrecorded: Option<&Settlement>, wait: Duration) -> Option<Hold> {
        unrecorded.filter(|s| s.is_all_delivered()).map(|_| Hold {
            first: MARK_WITH_NEXT_CLAIM_WITHIN.min(wait),
            wait,
        })
    }

    /// After the hold ended with `wake`, or with a shutdown (`None`): the batch is recorded
    /// before stopping.
    pub fn then(&self, wake: Option<Wake>) -> AfterHold {
        match wake {
            Some(Wake::Timeout) => AfterHold::Record {
                then_wait: self.wait.saturating_sub(self.first),
            },
            Some(wake) => AfterHold::LeaveToClaim(wake),
            None => AfterHold::Record {
                then_wait: self.wait,
            },
        }
    }
}

/// What follows a settled batch.
#[derive(Debug, PartialEq)]
pub enum AfterSettle {
    /// The broker refused events for now: record at once (they are parked, due at once), drop
    /// the early claim, which held back their keys, and give the broker a moment.
    BackOff { events: usize, reason: String },
    /// Nothing more is expected: record and wait for a notification.
    Idle,
    /// Claim on (the early claim, if made, is the next batch).
    ClaimOn,
}

impl AfterSettle {
    pub fn of(settlement: &Settlement, outlook: &Outlook) -> AfterSettle {
        match &settlement.back_pressure {
            Some((events, reason)) => AfterSettle::BackOff {
                events: *events,
                reason: reason.clone(),
            },
            None if outlook.idle => AfterSettle::Idle,
            None => AfterSettle::ClaimOn,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::outbox::event::{InvalidEvent, test_event as event};
    use crate::outbox::session::Failure;

    const LIMITS: BatchLimits = BatchLimits {
        events: 3,
        bytes: 1000,
        max_payload_bytes: 1000,
    };
    const LINGER: Duration = Duration::from_millis(5);
    /// After a wait that ended with a notification, listening, lanes not due.
    const NOTIFIED: Signals = Signals {
        notified: true,
        listening: true,
        lanes_due: false,
    };

    fn claimed(ids: &[i64]) -> Claimed {
        Claimed {
            events: ids.iter().map(|&id| event(id, Some("k"))).collect(),
            started: Some(Instant::now()),
            ..Claimed::default()
        }
    }

    /// Decides for `claimed` and says whether the notifications were asked for.
    fn outlook(claimed: &Claimed, signals: Signals, notified_since: bool) -> (Outlook, bool) {
        let asked = Cell::new(false);
        let outlook = Outlook::new(claimed, LIMITS, LINGER, signals, || {
            asked.set(true);
            notified_since
        });
        (outlook, asked.get())
    }

    fn delivered(ids: &[i64]) -> Settlement {
        Settlement {
            delivered: ids.to_vec(),
            ..Settlement::default()
        }
    }

    #[test]
    fn a_batch_not_full_with_no_notification_since_its_claim_is_followed_by_a_wait() {
        let batch = claimed(&[1]);
        let (decided, asked) = outlook(&batch, NOTIFIED, false);
        assert!(asked);
        assert!(decided.idle);
        assert!(!decided.prefetch, "an early claim would come back empty");
        assert!(!decided.stop_listening);
        assert_eq!(decided.linger_until, batch.started.map(|s| s + LINGER));
    }

    #[test]
    fn a_notification_since_the_claim_means_an_early_claim() {
        let (decided, _) = outlook(&claimed(&[1]), NOTIFIED, true);
        assert!(!decided.idle);
        assert!(decided.prefetch);
        assert!(!decided.stop_listening, "one event is not a steady stream");
        let (decided, _) = outlook(&claimed(&[1, 2]), NOTIFIED, true);
        assert!(decided.stop_listening, "several events and more notified");
    }

    #[test]
    fn a_full_batch_reads_on_at_once_without_draining_notifications() {
        let (decided, asked) = outlook(&claimed(&[1, 2, 3]), NOTIFIED, false);
        assert!(!asked);
        assert!(!decided.idle);
        assert!(decided.prefetch);
        assert_eq!(decided.linger_until, None);
    }

    #[test]
    fn without_a_notification_or_listening_the_relay_reads_on() {
        let quiet = Signals {
            notified: false,
            ..NOTIFIED
        };
        let deaf = Signals {
            listening: false,
            ..NOTIFIED
        };
        for signals in [quiet, deaf] {
            let (decided, asked) = outlook(&claimed(&[1]), signals, false);
            assert!(!asked, "{signals:?}");
            assert!(!decided.idle && decided.prefetch, "{signals:?}");
        }
    }

    #[test]
    fn large_payloads_or_a_lanes_check_due_mean_no_early_claim() {
        let mut large = claimed(&[1]);
        large.events[0].payload = vec![0; 501];
        let (decided, _) = outlook(&large, NOTIFIED, true);
        assert!(!decided.idle && !decided.prefetch);
        let due = Signals {
            lanes_due: true,
            ..NOTIFIED
        };
        let (decided, _) = outlook(&claimed(&[1]), due, true);
        assert!(!decided.idle && !decided.prefetch);
    }

    #[test]
    fn no_linger_configured_means_no_linger_and_listening_on() {
        let batch = claimed(&[1, 2]);
        let decided = Outlook::new(&batch, LIMITS, Duration::ZERO, NOTIFIED, || true);
        assert_eq!(decided.linger_until, None);
        assert!(!decided.stop_listening);
    }

    #[test]
    fn an_empty_claim_is_made_again_only_when_early_and_notified_since() {
        assert!(claim_again(true, || true));
        assert!(!claim_again(true, || false));
        let asked = Cell::new(false);
        assert!(!claim_again(false, || {
            asked.set(true);
            true
        }));
        assert!(!asked.get(), "a claim made now covers the notifications");
    }

    #[test]
    fn an_idle_wait_ends_for_a_lanes_check() {
        let poll = Duration::from_millis(500);
        assert_eq!(idle_wait(poll, Duration::from_secs(5)), poll);
        let due = Duration::from_millis(20);
        assert_eq!(idle_wait(poll, due), due);
    }

    #[test]
    fn a_batch_delivered_whole_is_held_for_the_next_claim_within_50_ms() {
        let whole = delivered(&[1]);
        let wait = Duration::from_millis(500);
        let hold = Hold::before(Some(&whole), wait);
        assert_eq!(
            hold.as_ref().map(|h| h.first),
            Some(MARK_WITH_NEXT_CLAIM_WITHIN)
        );
        let short = Duration::from_millis(10);
        let hold = Hold::before(Some(&whole), short);
        assert_eq!(hold.map(|h| h.first), Some(short));
        assert_eq!(Hold::before(None, wait), None);
    }

    #[test]
    fn a_batch_with_failures_or_parked_events_is_recorded_at_once() {
        let failed = Settlement {
            failures: vec![Failure {
                id: 2,
                error: "too large".into(),
                retry_in: Duration::ZERO,
                permanent: false,
            }],
            ..delivered(&[1])
        };
        let parked = Settlement {
            parked: vec![2],
            ..delivered(&[1])
        };
        let wait = Duration::from_millis(500);
        assert_eq!(Hold::before(Some(&failed), wait), None);
        assert_eq!(Hold::before(Some(&parked), wait), None);
    }

    #[test]
    fn a_notification_within_the_hold_leaves_the_batch_to_the_claim() {
        let wait = Duration::from_millis(500);
        let Some(hold) = Hold::before(Some(&delivered(&[1])), wait) else {
            panic!("a batch delivered whole is held");
        };
        assert_eq!(
            hold.then(Some(Wake::Notified)),
            AfterHold::LeaveToClaim(Wake::Notified)
        );
        assert_eq!(
            hold.then(Some(Wake::Listening)),
            AfterHold::LeaveToClaim(Wake::Listening)
        );
        assert_eq!(
            hold.then(Some(Wake::Timeout)),
            AfterHold::Record {
                then_wait: wait - MARK_WITH_NEXT_CLAIM_WITHIN
            }
        );
    }

    #[test]
    fn shutdown_during_the_hold_records_the_batch_before_stopping() {
        let wait = Duration::from_millis(500);
        let Some(hold) = Hold::before(Some(&delivered(&[1])), wait) else {
            panic!("a batch delivered whole is held");
        };
        assert_eq!(hold.then(None), AfterHold::Record { then_wait: wait });
    }

    #[test]
    fn back_pressure_is_handled_before_an_idle_wait() {
        let refused = Settlement {
            back_pressure: Some((2, "queue full".into())),
            parked: vec![1, 2],
            ..Settlement::default()
        };
        let idle = Outlook {
            idle: true,
            prefetch: false,
            stop_listening: false,
            linger_until: None,
        };
        assert_eq!(
            AfterSettle::of(&refused, &idle),
            AfterSettle::BackOff {
                events: 2,
                reason: "queue full".into()
            }
        );
        assert_eq!(AfterSettle::of(&delivered(&[1]), &idle), AfterSettle::Idle);
        let busy = Outlook {
            idle: false,
            prefetch: true,
            ..idle
        };
        assert_eq!(
            AfterSettle::of(&delivered(&[1]), &busy),
            AfterSettle::ClaimOn
        );
    }

    #[test]
    fn unsettled_keys_and_invalid_rows_hold_back_later_events_of_their_key() {
        let mut batch = Claimed {
            events: vec![
                event(5, Some("a")),
                event(6, Some("b")),
                event(7, Some("c")),
            ],
            ..Claimed::default()
        };
        batch.invalid.push(InvalidEvent {
            id: 4,
            key: Some("c".into()),
            reason: "headers must be a JSON object".into(),
        });
        let mut unsettled = KeyGate::default();
        unsettled.close(2, Some("a"));
        let (sent, held) = gate(Some(&unsettled), &batch);
        let ids = |indices: Vec<usize>| {
            indices
                .iter()
                .map(|&i| batch.events[i].id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(sent), vec![6]);
        assert_eq!(ids(held), vec![5, 7]);
        let (sent, _) = gate(None, &batch);
        assert_eq!(ids(sent), vec![5, 6]);
    }

    /// Kafka in flight, Kafka up for the next batch, nothing else in the way.
    const OVERLAP: Overlap = Overlap {
        in_flight: true,
        next_sinks: true,
        lanes_due: false,
        stopping: false,
    };

    #[test]
    fn the_next_batch_goes_out_early_only_to_sinks_that_keep_order_across_batches() {
        let next = claimed(&[4, 5]);
        assert!(send_early(&next, LIMITS, OVERLAP));
        let answered_or_not_pipelined = Overlap {
            in_flight: false,
            ..OVERLAP
        };
        let next_sink_waves_or_down = Overlap {
            next_sinks: false,
            ..OVERLAP
        };
        let lanes_due = Overlap {
            lanes_due: true,
            ..OVERLAP
        };
        let stopping = Overlap {
            stopping: true,
            ..OVERLAP
        };
        for overlap in [
            answered_or_not_pipelined,
            next_sink_waves_or_down,
            lanes_due,
            stopping,
        ] {
            assert!(!send_early(&next, LIMITS, overlap), "{overlap:?}");
        }
    }

    #[test]
    fn an_empty_or_large_next_batch_waits_for_the_verdicts() {
        assert!(!send_early(&claimed(&[]), LIMITS, OVERLAP));
        let mut large = claimed(&[4]);
        large.events[0].payload = vec![0; 501];
        assert!(!send_early(&large, LIMITS, OVERLAP));
        large.events[0].payload = vec![0; 500];
        assert!(send_early(&large, LIMITS, OVERLAP));
    }

    #[test]
    fn the_claim_reads_from_the_first_id_once_per_interval() {
        let mut reader = Reader::start();
        assert_eq!(reader.next(), reader.cursor);
        reader.last_rescan = Instant::now() - RESCAN_INTERVAL;
        assert_eq!(reader.next(), reader.cursor.rescan());
        assert!(reader.last_rescan.elapsed() < RESCAN_INTERVAL);
    }
}
