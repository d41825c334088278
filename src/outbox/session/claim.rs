//! The claim (see `sql/queries/claim.sql`): the next events after a cursor, and the cursor and
//! snapshot it leaves for the next claim and for the notifications that follow. After a claim that
//! took everything it saw, the next one reads only what committed since
//! (`sql/queries/claim_steady.sql`, planned once per session).

use std::sync::MutexGuard;
use std::time::Instant;

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::{CLAIM_STEADY_SQL, Session};
use crate::outbox::StoreError;
use crate::outbox::event::{Event, InvalidEvent};
use crate::telemetry;

/// The transactions a claim's snapshot saw in progress or not yet started; every other one had
/// ended when the claim read the outbox.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Snapshot {
    xmax: u64,
    /// Sorted.
    in_progress: Vec<u64>,
}

impl Snapshot {
    fn read(xmax: &str, in_progress: &[String]) -> Option<Snapshot> {
        let mut in_progress: Vec<u64> = in_progress
            .iter()
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        in_progress.sort_unstable();
        Some(Snapshot {
            xmax: xmax.parse().ok()?,
            in_progress,
        })
    }

    /// Whether a transaction that notified (so committed) had committed before this snapshot.
    pub(super) fn saw_committed(&self, txid: u64) -> bool {
        txid < self.xmax && self.in_progress.binary_search(&txid).is_err()
    }
}

/// Where the next claim reads from (see `sql/queries/claim.sql`). Only the active relay's loop
/// holds one; a new leader starts from [`Cursor::start`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    /// Undelivered events from this id on are read as fresh.
    floor: i64,
    /// Transactions that the last claim saw in progress: their events below the floor are read
    /// as late commits.
    watched_in_progress: Vec<String>,
    /// The last claim's snapshot's xmax: transactions from it on are watched too (a snapshot
    /// lists only in-progress transactions below its xmax). `None` before the first claim.
    watched_from: Option<String>,
    /// The claim that left this cursor took every event it saw (none deferred, none left over),
    /// so the next one may read only what committed since its snapshot: the steady claim.
    complete: bool,
}

impl Cursor {
    /// From the first id: reads every undelivered event once, then only what is new.
    pub fn start() -> Cursor {
        Cursor::default()
    }

    /// The same cursor reading from the first id again, for the periodic rescan that finds
    /// events put back below the floor by hand (e.g. `UPDATE ... SET delivered_at = NULL`).
    pub fn rescan(&self) -> Cursor {
        Cursor {
            floor: 0,
            complete: false,
            ..self.clone()
        }
    }

    /// Undelivered events from this id on are read as fresh.
    pub fn floor(&self) -> i64 {
        self.floor
    }
}

/// How much one claim may take.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub events: u32,
    /// Payload bytes; the first event is taken whatever its size (up to `max_payload_bytes`).
    pub bytes: usize,
    /// A larger payload is not read: the event is dead-lettered with its size.
    pub max_payload_bytes: usize,
}

/// One claim: the events to publish, rows that can never be published, and the cursor after it.
#[derive(Debug, Default)]
pub struct Claimed {
    pub events: Vec<Event>,
    pub invalid: Vec<InvalidEvent>,
    /// The cursor this claim started from; going back to it claims the same events again.
    pub from: Cursor,
    pub next: Cursor,
    /// When the claim was sent.
    pub started: Option<Instant>,
}

impl Claimed {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.invalid.is_empty()
    }

    /// Payload bytes held by the claimed events.
    pub fn payload_bytes(&self) -> usize {
        self.events.iter().map(|e| e.payload.len()).sum()
    }

    /// Whether the claim took as many events as it could.
    pub fn is_full(&self, limits: BatchLimits) -> bool {
        self.events.len() + self.invalid.len() >= limits.events as usize
            || self.payload_bytes() >= limits.bytes
    }

    /// Every claimed id, so that the next claim does not take them again before they are recorded.
    pub fn ids(&self) -> Vec<i64> {
        let events = self.events.iter().map(|e| e.id);
        events.chain(self.invalid.iter().map(|e| e.id)).collect()
    }
}

fn reading_cursor(e: tokio_postgres::Error) -> StoreError {
    StoreError::new("reading the claim's cursor", e)
}

/// The lane fence of `sql/queries/claim_steady.sql`, one line per statement that reads or writes
/// events: without lanes to leave out ($7 NULL), each is true.
const FENCE_LINE: &str = "AND ($7::integer[] IS NULL OR outbox.in_lanes(";
/// What a fence line becomes in the steady claim of a session that holds every lane. Planned
/// once, the statement still builds its executor at each call, and the lane expressions were a
/// fifth of that: ~170k of ~810k instructions per claim (callgrind, PostgreSQL 15). It is never
/// given a fence: a session that holds fewer lanes prepares the statement with the fence lines
/// (see `Session::statement_for`).
const NO_FENCE: &str = "AND $7::integer[] IS NULL";

/// The steady claim for a session with (`fenced`) or without a lane fence.
pub fn steady_claim_sql(fenced: bool) -> String {
    if fenced {
        return CLAIM_STEADY_SQL.to_string();
    }
    let unfence = |line: &str| match line.trim_start().starts_with(FENCE_LINE) {
        true => format!(
            "{}{NO_FENCE}",
            &line[..line.len() - line.trim_start().len()]
        ),
        false => line.to_string(),
    };
    let lines: Vec<String> = CLAIM_STEADY_SQL.lines().map(unfence).collect();
    lines.join("\n")
}

/// The steady claim as prepared, and whether for a fenced session.
#[derive(Clone)]
pub(super) struct SteadyClaim {
    statement: Statement,
    fenced: bool,
}

/// The session's planning for the steady claim and for the full claim (see
/// `sql/queries/session_settings.sql`).
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off";
const CUSTOM_PLANS: &str = "SET plan_cache_mode = force_custom_plan; RESET enable_seqscan";

/// Which claim statement reads the next batch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// `sql/queries/claim.sql`, planned afresh at each call.
    Full,
    /// `sql/queries/claim_steady.sql`, planned once per session.
    Steady,
}

impl Path {
    /// The steady claim when the last claim took everything it saw.
    fn for_cursor(cursor: &Cursor) -> Path {
        match cursor.complete {
            true => Path::Steady,
            false => Path::Full,
        }
    }

    /// The metric's name of the statement.
    fn query(self) -> &'static str {
        match self {
            Path::Full => "claim",
            Path::Steady => "claim_steady",
        }
    }
}

/// A claim's parameters (see `sql/queries/claim.sql`).
struct ClaimParams<'a> {
    limits: BatchLimits,
    cursor: &'a Cursor,
    skipped: Vec<i64>,
    fence: Option<&'a [i32]>,
    marked: &'a [i64],
    deleted: &'a [i64],
}

impl Session {
    /// The next events to publish after `cursor`, skipping `in_flight` (claimed, not yet
    /// recorded); rows that can never be published come back separately. Events held back behind
    /// an earlier deferred event of their key are parked by the same statement, and `delivered`
    /// (acknowledged by the broker) are marked by it: one round trip per batch.
    pub async fn claim(
        &self,
        limits: BatchLimits,
        cursor: &Cursor,
        in_flight: &[i64],
        delivered: &[i64],
    ) -> Result<Claimed, StoreError> {
        let (marked, deleted) = self.on_delivery.split(delivered);
        let mut params = ClaimParams {
            limits,
            cursor,
            skipped: in_flight.iter().chain(delivered).copied().collect(),
            fence: self.fence(),
            marked,
            deleted,
        };
        let path = Path::for_cursor(cursor);
        let (claimed, deferred) = self.claim_by(path, &params).await?;
        if !deferred {
            return Ok(claimed);
        }
        // An event is deferred: the steady claim took nothing (and recorded `delivered`).
        (params.marked, params.deleted) = (&[], &[]);
        Ok(self.claim_by(Path::Full, &params).await?.0)
    }

    /// One claim statement; also whether the steady claim found a deferred event (and took
    /// nothing).
    async fn claim_by(
        &self,
        path: Path,
        params: &ClaimParams<'_>,
    ) -> Result<(Claimed, bool), StoreError> {
        let statement = self.statement_for(path).await?;
        let started = Instant::now();
        let limits = params.limits;
        let cursor = params.cursor;
        let events = i64::from(limits.events);
        let bytes = i64::try_from(limits.bytes).unwrap_or(i64::MAX);
        let max_payload = i64::try_from(limits.max_payload_bytes).unwrap_or(i64::MAX);
        let sql: [&(dyn ToSql + Sync); 10] = [
            &events,
            &cursor.floor,
            &cursor.watched_in_progress,
            &params.skipped,
            &bytes,
            &max_payload,
            &params.fence,
            &cursor.watched_from,
            &params.marked,
            &params.deleted,
        ];
        let query = |e: tokio_postgres::Error| StoreError::new("claiming events", e);
        // Row by row, so that a batch's payloads are held once, as events, not also as rows.
        let rows = self
            .client
            .query_raw(&statement, sql)
            .await
            .map_err(query)?;
        let mut rows = std::pin::pin!(rows);
        let mut claimed = Claimed {
            from: cursor.clone(),
            next: cursor.clone(),
            started: Some(started),
            ..Claimed::default()
        };
        let (mut first, mut deferred) = (true, false);
        while let Some(row) = rows.try_next().await.map_err(query)? {
            if first {
                first = false;
                deferred = self.read_cursor_row(&row, path, &mut claimed)?;
            }
            // The one row of an empty claim has no event.
            if row
                .try_get::<_, Option<i64>>("id")
                .map_err(reading_cursor)?
                .is_none()
            {
                continue;
            }
            match Event::from_row(&row, limits.max_payload_bytes)? {
                Ok(event) => claimed.events.push(event),
                Err(bad) => claimed.invalid.push(bad),
            }
        }
        if first {
            return Err(StoreError::Schema(
                "the claim returned no cursor row".into(),
            ));
        }
        telemetry::observe_query(path.query(), started);
        Ok((claimed, deferred))
    }

    /// The statement for `path`, after switching the session's planning when the path changed.
    /// The steady claim is planned once (`force_generic_plan`, without sequential scans), and
    /// prepared afresh each time the relay comes back to it: a plan made while the table was
    /// young or its statistics stale lives at most until the next full claim (a rescan is one
    /// every minute), and afresh when the session gains or loses its lane fence (see
    /// [`steady_claim_sql`]). The full claim is planned at each call (`force_custom_plan`). The
    /// session's other statements look events up by id and plan alike in either mode.
    async fn statement_for(&self, path: Path) -> Result<Statement, StoreError> {
        let current = self.steady_claim().clone();
        let fenced = self.fence().is_some();
        let switch = |sql: &'static str| async move {
            self.client
                .batch_execute(sql)
                .await
                .map_err(|e| StoreError::new("switching the claim's planning", e))
        };
        match (path, current) {
            (Path::Full, None) => Ok(self.statements.claim.clone()),
            (Path::Full, Some(_)) => {
                switch(CUSTOM_PLANS).await?;
                *self.steady_claim() = None;
                Ok(self.statements.claim.clone())
            }
            (Path::Steady, Some(steady)) if steady.fenced == fenced => Ok(steady.statement),
            (Path::Steady, current) => {
                if current.is_none() {
                    switch(GENERIC_PLANS).await?;
                }
                let statement = self
                    .client
                    .prepare(&steady_claim_sql(fenced))
                    .await
                    .map_err(|e| StoreError::new("preparing the steady claim", e))?;
                *self.steady_claim() = Some(SteadyClaim {
                    statement: statement.clone(),
                    fenced,
                });
                Ok(statement)
            }
        }
    }

    fn steady_claim(&self) -> MutexGuard<'_, Option<SteadyClaim>> {
        self.steady_claim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The claim's first row also carries its snapshot and where the next claim reads from; for
    /// the steady claim, whether it found a deferred event.
    fn read_cursor_row(
        &self,
        row: &Row,
        path: Path,
        claimed: &mut Claimed,
    ) -> Result<bool, StoreError> {
        let snapshot = Snapshot::read(
            &row.try_get::<_, String>("next_xmax")
                .map_err(reading_cursor)?,
            &row.try_get::<_, Vec<String>>("next_xip")
                .map_err(reading_cursor)?,
        );
        *self.claimed_snapshot() = snapshot;
        let deferred = match path {
            Path::Steady => row.try_get("deferred").map_err(reading_cursor)?,
            Path::Full => false,
        };
        // Otherwise late commits filled the batch, or more committed than the steady claim took:
        // read on from the same place, with the full claim.
        if row.try_get::<_, bool>("advanced").map_err(reading_cursor)? {
            claimed.next = Cursor {
                floor: row.try_get("next_floor").map_err(reading_cursor)?,
                watched_in_progress: row.try_get("next_xip").map_err(reading_cursor)?,
                watched_from: row.try_get("next_xmax").map_err(reading_cursor)?,
                complete: row.try_get("complete").map_err(reading_cursor)?,
            };
        } else {
            claimed.next.complete = false;
        }
        Ok(deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::{FENCE_LINE, NO_FENCE, Snapshot, steady_claim_sql};

    fn snapshot(xmax: &str, in_progress: &[&str]) -> Snapshot {
        let in_progress: Vec<String> = in_progress.iter().map(|t| t.to_string()).collect();
        Snapshot::read(xmax, &in_progress).expect("a snapshot")
    }

    #[test]
    fn a_snapshot_saw_committed_what_ended_below_its_xmax() {
        let seen = snapshot("105", &["103", "101"]);
        assert!(seen.saw_committed(100), "ended before the snapshot");
        assert!(seen.saw_committed(102), "ended between two in progress");
        assert!(!seen.saw_committed(101), "in progress at the snapshot");
        assert!(!seen.saw_committed(103), "in progress at the snapshot");
        assert!(!seen.saw_committed(105), "not started before the snapshot");
        assert!(!seen.saw_committed(200), "not started before the snapshot");
    }

    #[test]
    fn the_steady_claim_without_a_fence_has_no_lane_expression_left() {
        let fenced = steady_claim_sql(true);
        let unfenced = steady_claim_sql(false);
        let fence_lines = fenced.matches(FENCE_LINE).count();
        assert_eq!(
            fence_lines, 3,
            "the committed, delivered and deleted parts each fence"
        );
        assert!(!unfenced.contains("in_lanes"), "{unfenced}");
        assert_eq!(unfenced.matches(NO_FENCE).count(), fence_lines);
        assert_eq!(unfenced.lines().count(), fenced.lines().count());
    }

    #[test]
    fn a_snapshot_that_does_not_parse_is_none() {
        assert_eq!(Snapshot::read("x", &[]), None);
        assert_eq!(Snapshot::read("5", &["1".into(), "y".into()]), None);
    }
}
