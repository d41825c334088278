//! Which lanes this replica relays. Every event belongs to one of [`LANE_COUNT`] lanes (by its
//! key, see migration 0004); a replica relays the lanes whose advisory locks its session holds, so
//! PostgreSQL guarantees one owner per lane, and a lane is free again the moment its owner's
//! session ends (a crash, or a vanished host once the keepalives give up on it).
//!
//! In lanes mode, every replica takes a fair share, as one unbroken run of lanes: with `n` relays
//! ranked by backend pid, the replica of rank `r` owns the `r`-th run of ⌊64/n⌋ lanes (the first
//! `64 mod n` runs one more). A run is what makes a share cheap to read: the claim skips the other
//! lanes inside the pending index (see `outbox.in_lanes`, migration 0005). Each replica checks its
//! run every `OUTBOX_LEADER_POLL_MS`: it gives up the lanes it owns outside its run and takes the
//! free lanes of its run. A relay that joins or gives up lanes notifies the others, which then
//! check at once instead of at their next poll. Lanes change hands only between batches, after the
//! batch in flight was recorded.
//! In single mode, the replica holding the leader lock takes every lane and the others stand by.

use std::ops::Range;
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
            ReplicaMode::Lanes => run_of(&map),
            ReplicaMode::Single => 0..LANE_COUNT,
        };
        let (mut owned, give_up): (Vec<i32>, Vec<i32>) =
            map.owned.iter().partition(|lane| target.contains(lane));
        let mut taken_now = map.taken.len();
        let mut taken_any = false;
        if !give_up.is_empty() {
            session.release_lanes(&give_up).await?;
            taken_now -= give_up.len();
            tracing::info!(lanes = ?give_up, owned = owned.len(), "gave up lanes for another replica");
        }
        let free: Vec<i32> = target.filter(|lane| !map.taken.contains(lane)).collect();
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
        if owned != map.owned {
            metrics::counter!(telemetry::REBALANCES).increment(1);
        }
        let unowned = (LANE_COUNT as usize).saturating_sub(taken_now);
        metrics::gauge!(telemetry::LANES_UNOWNED).set(unowned as f64);
        self.owned = owned;
        Ok(taken_any)
    }
}

/// This replica's fair share of the lanes, as a run: the replicas ranked by backend pid, the
/// `r`-th takes the `r`-th run of ⌊L/n⌋ lanes, and the first `L mod n` runs have one lane more.
/// Beyond `L` replicas, the extra ones get an empty run and stand by.
fn run_of(map: &LaneMap) -> Range<i32> {
    let lanes = LANE_COUNT as usize;
    let mut members = map.members.clone();
    // A replica not yet counted (it joins before its first check) ranks as if it were.
    if !members.contains(&map.me) {
        members.push(map.me);
        members.sort_unstable();
    }
    let n = members.len();
    let rank = members.iter().position(|&pid| pid == map.me).unwrap_or(0);
    let (base, extra) = (lanes / n, lanes % n);
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    // Both at most LANE_COUNT.
    start as i32..(start + len) as i32
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
    fn runs_cover_every_lane_once_and_differ_in_length_by_at_most_one() {
        for n in 1..=70 {
            let members: Vec<i32> = (100..100 + n).collect();
            let runs: Vec<Range<i32>> = members
                .iter()
                .map(|&me| run_of(&map(me, &members)))
                .collect();
            let mut next = 0;
            for run in &runs {
                assert_eq!(run.start, next, "n = {n}: {runs:?}");
                next = run.end;
            }
            assert_eq!(next, LANE_COUNT, "n = {n}: {runs:?}");
            let lengths: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            let (min, max) = (lengths.iter().min(), lengths.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "n = {n}: {lengths:?}"
            );
        }
    }

    #[test]
    fn a_replica_not_yet_counted_ranks_by_its_pid() {
        assert_eq!(run_of(&map(7, &[])), 0..LANE_COUNT);
        assert_eq!(run_of(&map(7, &[3, 5])), 43..64);
        assert_eq!(run_of(&map(4, &[3, 5])), 22..43);
        assert_eq!(run_of(&map(1, &[3, 5])), 0..22);
    }
}
