//! Read and repair queries for operators: status, dead letters. Plain SQL does the same; these
//! files are what the command line runs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::{LEADER_LOCK_KEY, StoreError};

const STATS_SQL: &str = include_str!("../../sql/queries/stats.sql");
const BACKLOG_SQL: &str = include_str!("../../sql/queries/backlog.sql");
const LAG_SQL: &str = include_str!("../../sql/queries/lag.sql");
const PENDING_BY_TOPIC_SQL: &str = include_str!("../../sql/queries/pending_by_topic.sql");
const LANE_OWNERS_SQL: &str = include_str!("../../sql/queries/lane_owners.sql");
const ACTIVE_RELAY_SQL: &str = include_str!("../../sql/queries/active_relay.sql");
const DEAD_LETTERS_LIST_SQL: &str = include_str!("../../sql/queries/dead_letters_list.sql");
const DEAD_LETTERS_RETRY_SQL: &str = include_str!("../../sql/queries/dead_letters_retry.sql");
const DEAD_LETTERS_DISCARD_SQL: &str = include_str!("../../sql/queries/dead_letters_discard.sql");

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Events not yet delivered and not dead-lettered.
    pub pending: i64,
    /// Age of the oldest deliverable undelivered event, 0 when none.
    pub lag_seconds: f64,
    pub dead_letters: i64,
}

/// The backlog of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicBacklog {
    pub topic: String,
    pub pending: i64,
    /// Age of its oldest deliverable undelivered event, 0 when none.
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveRelay {
    pub application_name: String,
    /// `None` when this role may not see other roles' sessions (see `active_relay.sql`).
    pub client: Option<String>,
    pub backend_pid: i32,
    pub since: Option<DateTime<Utc>>,
}

/// A relay session that owns lanes.
#[derive(Debug, Clone, Serialize)]
pub struct LaneOwner {
    pub application_name: String,
    pub backend_pid: i32,
    /// `None` when this role may not see other roles' sessions.
    pub since: Option<DateTime<Utc>>,
    pub lanes: Vec<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub key: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_lettered_at: DateTime<Utc>,
}

/// Which dead letters a repair applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
}

impl Selection {
    fn ids(&self) -> Option<&[i64]> {
        match self {
            Selection::All => None,
            Selection::Ids(ids) => Some(ids),
        }
    }
}

/// Exact figures for `status`: counts every undelivered row.
pub async fn stats(client: &Client) -> Result<Stats, StoreError> {
    let row = client
        .query_one(STATS_SQL, &[])
        .await
        .map_err(|e| StoreError::new("reading outbox statistics", e))?;
    stats_from(&row)
}

/// Pending events and lag per topic (see `sql/queries/pending_by_topic.sql`).
pub async fn pending_by_topic(client: &Client) -> Result<Vec<TopicBacklog>, StoreError> {
    let read = |e: tokio_postgres::Error| StoreError::new("reading the backlog per topic", e);
    let rows = client
        .query(PENDING_BY_TOPIC_SQL, &[])
        .await
        .map_err(read)?;
    rows.iter()
        .map(|row| {
            Ok(TopicBacklog {
                topic: row.try_get("topic").map_err(read)?,
                pending: row.try_get("pending").map_err(read)?,
                lag_seconds: row.try_get("lag_seconds").map_err(read)?,
            })
        })
        .collect()
}

/// The metrics sampler's lag of `lanes`, read from the relay's claim floor (see
/// `sql/queries/lag.sql`): two index probes, cheap under a long transaction elsewhere.
pub async fn lag(client: &Client, claim_floor: i64, lanes: &[i32]) -> Result<f64, StoreError> {
    let row = client
        .query_one(LAG_SQL, &[&claim_floor, &lanes])
        .await
        .map_err(|e| StoreError::new("reading the lag", e))?;
    row.try_get("lag_seconds")
        .map_err(|e| StoreError::new("reading the lag", e))
}

/// Pending events and dead letters of `lanes`.
pub struct Backlog {
    pub pending: i64,
    pub dead_letters: i64,
}

/// The metrics sampler's counts of `lanes`, read from the relay's claim floor (see
/// `sql/queries/backlog.sql`): they read every pending row.
pub async fn backlog(
    client: &Client,
    claim_floor: i64,
    lanes: &[i32],
) -> Result<Backlog, StoreError> {
    let read = |e: tokio_postgres::Error| StoreError::new("reading the backlog", e);
    let row = client
        .query_one(BACKLOG_SQL, &[&claim_floor, &lanes])
        .await
        .map_err(read)?;
    Ok(Backlog {
        pending: row.try_get("pending").map_err(read)?,
        dead_letters: row.try_get("dead_letters").map_err(read)?,
    })
}

fn stats_from(row: &tokio_postgres::Row) -> Result<Stats, StoreError> {
    let read = |e: tokio_postgres::Error| StoreError::new("reading outbox statistics", e);
    Ok(Stats {
        pending: row.try_get("pending").map_err(read)?,
        lag_seconds: row.try_get("lag_seconds").map_err(read)?,
        dead_letters: row.try_get("dead_letters").map_err(read)?,
    })
}

pub async fn active_relay(client: &Client) -> Result<Option<ActiveRelay>, StoreError> {
    let row = client
        .query_opt(ACTIVE_RELAY_SQL, &[&LEADER_LOCK_KEY])
        .await
        .map_err(|e| StoreError::new("finding the active relay", e))?;
    Ok(row.map(|row| ActiveRelay {
        application_name: row.get("application_name"),
        client: row.get("client"),
        backend_pid: row.get("pid"),
        since: row.get("backend_start"),
    }))
}

/// Which relay session owns which lanes (see `sql/queries/lane_owners.sql`).
pub async fn lane_owners(client: &Client) -> Result<Vec<LaneOwner>, StoreError> {
    let read = |e: tokio_postgres::Error| StoreError::new("reading the lane owners", e);
    let rows = client.query(LANE_OWNERS_SQL, &[]).await.map_err(read)?;
    rows.iter()
        .map(|row| {
            Ok(LaneOwner {
                application_name: row.try_get("application_name").map_err(read)?,
                backend_pid: row.try_get("pid").map_err(read)?,
                since: row.try_get("backend_start").map_err(read)?,
                lanes: row.try_get("lanes").map_err(read)?,
            })
        })
        .collect()
}

pub async fn dead_letters(client: &Client, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = client
        .query(DEAD_LETTERS_LIST_SQL, &[&limit])
        .await
        .map_err(|e| StoreError::new("listing dead letters", e))?;
    Ok(rows
        .iter()
        .map(|row| DeadLetter {
            id: row.get("id"),
            topic: row.get("topic"),
            key: row.get("key"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
            dead_lettered_at: row.get("dead_lettered_at"),
        })
        .collect())
}

/// Puts dead letters back for delivery; returns the ids that were dead letters.
pub async fn retry_dead_letters(
    client: &Client,
    selection: &Selection,
) -> Result<Vec<i64>, StoreError> {
    let rows = client
        .query(DEAD_LETTERS_RETRY_SQL, &[&selection.ids()])
        .await
        .map_err(|e| StoreError::new("retrying dead letters", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes dead letters; returns the ids deleted.
pub async fn discard_dead_letters(
    client: &Client,
    selection: &Selection,
) -> Result<Vec<i64>, StoreError> {
    let rows = client
        .query(DEAD_LETTERS_DISCARD_SQL, &[&selection.ids()])
        .await
        .map_err(|e| StoreError::new("discarding dead letters", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
