//! Who relays what: the leader lock (single mode) and the lanes' locks (lanes mode). The lanes
//! held are the fence of every claim and settle.

use std::sync::atomic::Ordering;

use super::Session;
use crate::outbox::{
    LANE_COUNT, LANE_LOCK_BASE, LANES_CHANNEL, LEADER_LOCK_KEY, MEMBER_LOCK_KEY, StoreError,
};

const LANE_MAP_SQL: &str = include_str!("../../../sql/queries/lane_map.sql");

/// Who relays which lane, as the advisory locks of this database say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneMap {
    /// This session's backend pid.
    pub me: i32,
    /// The backend pids of every relay in lanes mode, this one included, in order.
    pub members: Vec<i32>,
    /// The lanes this session owns.
    pub owned: Vec<i32>,
    /// The lanes any session owns.
    pub taken: Vec<i32>,
}

impl Session {
    /// Takes the leader lock if no other session holds it. Never waits.
    pub async fn try_lead(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("trying the leader lock", e))?;
        row.try_get(0)
            .map_err(|e| StoreError::new("reading the leader lock", e))
    }

    /// Joins the relays that share the lanes (a shared lock that lives as long as the session), so
    /// that the others count this one when they compute their share.
    pub async fn join_lanes(&self) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&MEMBER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("joining the relays that share the lanes", e))?;
        self.announce_lanes_changed().await
    }

    /// Tells the other relays to check their share now rather than at their next periodic check:
    /// a relay joined (they give up lanes for it) or lanes were given up (they take them).
    async fn announce_lanes_changed(&self) -> Result<(), StoreError> {
        self.client
            .batch_execute(&format!("NOTIFY {LANES_CHANNEL}"))
            .await
            .map_err(|e| StoreError::new("telling the other relays that lanes changed", e))
    }

    /// Whether another relay joined or gave up lanes since the last call (its own announcements
    /// included: they only cause one more check).
    pub fn lanes_changed(&self) -> bool {
        self.lanes_changed.swap(false, Ordering::Relaxed)
    }

    /// Who relays which lane (see `sql/queries/lane_map.sql`).
    pub async fn lane_map(&mut self) -> Result<LaneMap, StoreError> {
        let read = |e: tokio_postgres::Error| StoreError::new("reading the lane map", e);
        let row = self
            .client
            .query_one(LANE_MAP_SQL, &[])
            .await
            .map_err(read)?;
        let map = LaneMap {
            me: row.try_get("me").map_err(read)?,
            members: row.try_get("members").map_err(read)?,
            owned: row.try_get("owned").map_err(read)?,
            taken: row.try_get("taken").map_err(read)?,
        };
        self.lanes.clone_from(&map.owned);
        Ok(map)
    }

    /// Takes the lane locks of `lanes` that no other session holds; returns those taken.
    pub async fn take_lanes(&mut self, lanes: &[i32]) -> Result<Vec<i32>, StoreError> {
        let read = |e: tokio_postgres::Error| StoreError::new("taking lanes", e);
        let rows = self
            .client
            .query(
                "SELECT lane FROM unnest($1::integer[]) AS lane \
                 WHERE pg_try_advisory_lock($2::bigint + lane)",
                &[&lanes, &LANE_LOCK_BASE],
            )
            .await
            .map_err(read)?;
        let taken: Vec<i32> = rows
            .iter()
            .map(|r| r.try_get(0).map_err(read))
            .collect::<Result<_, _>>()?;
        self.lanes.extend(&taken);
        self.lanes.sort_unstable();
        self.lanes.dedup();
        Ok(taken)
    }

    /// Gives up the lane locks of `lanes`. Only between batches: nothing of them is in flight.
    pub async fn release_lanes(&mut self, lanes: &[i32]) -> Result<(), StoreError> {
        self.client
            .execute(
                "SELECT pg_advisory_unlock($2::bigint + lane) FROM unnest($1::integer[]) AS lane",
                &[&lanes, &LANE_LOCK_BASE],
            )
            .await
            .map_err(|e| StoreError::new("releasing lanes", e))?;
        self.lanes.retain(|lane| !lanes.contains(lane));
        self.announce_lanes_changed().await
    }

    /// Leaves the relays that share the lanes (a graceful stop): first no longer counted as a
    /// member, then every lane given up with the notification, so that the others, checking at
    /// once, count one relay less and take the lanes.
    pub async fn leave_lanes(&mut self) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_advisory_unlock_shared($1)", &[&MEMBER_LOCK_KEY])
            .await
            .map_err(|e| StoreError::new("leaving the relays that share the lanes", e))?;
        if self.lanes.is_empty() {
            return Ok(());
        }
        let lanes = std::mem::take(&mut self.lanes);
        self.release_lanes(&lanes).await
    }

    /// The fence parameter of the claim and settle statements: the lanes held, or `None` when
    /// every lane is held (no filter needed, so a single replica reads no lane at all).
    pub(super) fn fence(&self) -> Option<&[i32]> {
        (self.lanes.len() != LANE_COUNT as usize).then_some(self.lanes.as_slice())
    }
}
