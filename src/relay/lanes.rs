//! Which lanes this replica relays. Every event belongs to one of [`LANE_COUNT`] lanes (by its
//! key, see migration 0004); a replica relays the lanes whose advisory locks its session holds, so
//! PostgreSQL guarantees one owner per lane, and a lane is free again the moment its owner's
//! session ends (a crash, or a vanished host once the keepalives give up on it).
//!
//! In lanes mode, every replica takes a fair share: with `n` relays, each owns ⌊64/n⌋ lanes and
//! the first `64 mod n` (by backend pid) one more. Each checks its share every
//! `OUTBOX_LEADER_POLL_MS`: one with too many gives up its highest lanes, one with too few takes
//! free ones. A relay that joins or gives up lanes notifies the others, which then check at once
//! instead of at their next poll. Lanes change hands only between batches, after the batch in
//! flight was recorded.
//! In single mode, the replica holding the leader lock takes every lane and the others stand by.

use std::time::{Duration, Instant};

use crate::config::ReplicaMode;
use crate::outbox::session::{LaneMap, Session};
use crate::outbox::{LANE_COUNT, StoreError};
use crate::telemetry;

pub struct Lanes {
    mode: ReplicaMode,
    owned: Vec<i32>,
    interval: Duration,
    next_check: Instant,
}

impl Lanes {
    pub fn new(mode: ReplicaMode, interval: Duration) -> Lanes {
        Lanes {
            mode,
            owned: Vec::new(),
            interval,
            next_check: Instant::now(),
        }
    }

    pub fn owned(&self) -> &[i32] {
        &self.owned
    }

    /// Whether it is time to check the share.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next_check
    }

    /// Makes the share due for a check now: another relay joined or gave up lanes.
    pub fn check_now(&mut self) {
        self.next_check = Instant::now();
    }

    pub fn until_due(&self) -> Duration {
        self.next_check.saturating_duration_since(Instant::now())
    }

    /// Takes or gives up lanes to match this replica's share. Call only when nothing is in
    /// flight. Returns whether lanes were taken: their undelivered events may lie below the
    /// claim's floor, so the next claim must read from the first id.
    pub async fn rebalance(&mut self, session: &mut Session) -> Result<bool, StoreError> {
        self.next_check = Instant::now() + self.interval;
        let map = session.lane_map().await?;
        let target = match self.mode {
            ReplicaMode::Lanes => share(&map),
            ReplicaMode::Single => LANE_COUNT as usize,
        };
        let mut owned = map.owned.clone();
        let mut taken_now = map.taken.len();
        let mut taken_any = false;
        if owned.len() > target {
            let give_up = owned.split_off(target);
            session.release_lanes(&give_up).await?;
            taken_now -= give_up.len();
            tracing::info!(lanes = ?give_up, owned = owned.len(), "gave up lanes for another replica");
        } else if owned.len() < target {
            let free: Vec<i32> = (0..LANE_COUNT)
                .filter(|lane| !map.taken.contains(lane))
                .take(target - owned.len())
                .collect();
            if !free.is_empty() {
                let got = session.take_lanes(&free).await?;
                if !got.is_empty() {
                    taken_any = true;
                    taken_now += got.len();
                    owned.extend(&got);
                    owned.sort_unstable();
                    tracing::info!(lanes = ?got, owned = owned.len(), "took lanes");
                }
            }
        }
        if owned != map.owned {
            metrics::counter!(telemetry::REBALANCES).increment(1);
        }
        let unowned = (LANE_COUNT as usize).saturating_sub(taken_now);
        metrics::gauge!(telemetry::LANES_UNOWNED).set(unowned as f64);
        self.owned = owned;
        Ok(taken_any)
    }
}

/// This replica's fair share of the lanes: ⌊L/n⌋, plus one for the first `L mod n` members.
fn share(map: &LaneMap) -> usize {
    let lanes = LANE_COUNT as usize;
    let n = map.members.len().max(1);
    let rank = map
        .members
        .iter()
        .position(|&pid| pid == map.me)
        .unwrap_or(n - 1);
    lanes / n + usize::from(rank < lanes % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(me: i32, members: &[i32]) -> LaneMap {
        LaneMap {
            me,
            members: members.to_vec(),
            owned: Vec::new(),
            taken: Vec::new(),
        }
    }

    #[test]
    fn shares_add_up_to_every_lane_and_differ_by_at_most_one() {
        for n in 1..=70 {
            let members: Vec<i32> = (100..100 + n).collect();
            let shares: Vec<usize> = members
                .iter()
                .map(|&me| share(&map(me, &members)))
                .collect();
            assert_eq!(shares.iter().sum::<usize>(), LANE_COUNT as usize, "n = {n}");
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "n = {n}: {shares:?}"
            );
        }
    }

    #[test]
    fn a_replica_not_yet_counted_takes_the_smallest_share() {
        assert_eq!(share(&map(7, &[])), LANE_COUNT as usize);
        assert_eq!(share(&map(7, &[3, 5])), 32);
    }
}
