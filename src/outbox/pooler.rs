//! Refuses a transaction- or statement-pooling proxy (PgBouncer `pool_mode = transaction` or
//! `statement`) between the relay and PostgreSQL.
//!
//! Such a pool hands a client a different server session from one transaction to the next. The
//! relay's leader lock (a session advisory lock), LISTEN and named prepared statements all live in
//! the session, so behind such a pool they silently break: several replicas become "the active
//! relay" at once. A direct connection, session pooling or a plain TCP proxy keep one server
//! session per client connection and are fine.
//!
//! The probe looks for proof instead of guessing. Connection A records its server process and sets
//! a random token in a session setting; connection B then holds a transaction open, and A queries
//! three more times (during B's transaction, and twice after it). A pinned session sees its own
//! process and token every time and B never sees A's token; any other sight proves a pool. The
//! steps force such a sight from PgBouncer in both of its orders: reusing the server released
//! last (the default), B gets A's server and sees the token (or, with a reset after each
//! transaction, A is pushed onto another server while B holds its one); handing out the least
//! recently used one (`server_round_robin`), B gets A's server when it is the only idle one, and
//! otherwise A's two queries after B's release take two different idle servers. Only the simple
//! query protocol is used, since named prepared statements are what such a pool breaks.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::db::DatabaseUrl;
use crate::db::describe;
use crate::retry::RetryPolicy;
use crate::shutdown::Shutdown;

const MARK_SQL: &str = include_str!("../../sql/queries/pooler_mark.sql");
const OBSERVE_SQL: &str = include_str!("../../sql/queries/pooler_observe.sql");

/// Longest wait for one probe step; a pool with no free server would otherwise hang the probe.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one query saw of the server session it ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sight {
    /// `pg_backend_pid()`: the server process.
    pub pid: String,
    /// The probe's session setting, `None` when this session never set it.
    pub token: Option<String>,
}

/// Whether the relay's connection keeps one server session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Direct connection, session pooling or a plain TCP proxy.
    Pinned,
    /// Transaction or statement pooling, with what showed it.
    Pooled(String),
}

/// Judges the probe's sights: `mark` is A's first, `held` what B saw inside its open transaction,
/// `later` A's following ones. Every rule is a proof, not a hint: a pinned session keeps its
/// process and its settings, and no other connection can run on it.
pub fn judge(mark: &Sight, held: Option<&Sight>, later: &[Sight]) -> Verdict {
    if let Some(held) = held
        && held.token.is_some()
        && held.token == mark.token
    {
        return Verdict::Pooled(format!(
            "a second connection ran on the first one's server session (process {})",
            held.pid
        ));
    }
    for sight in later {
        if sight.pid != mark.pid {
            return Verdict::Pooled(format!(
                "one connection's transactions ran on server processes {} and {}",
                mark.pid, sight.pid
            ));
        }
        if sight.token != mark.token {
            return Verdict::Pooled(
                "a session setting made on the connection was gone in its next transaction".into(),
            );
        }
    }
    Verdict::Pinned
}

/// Why `run` and `check` stop behind a transaction- or statement-pooling proxy: a fault of the
/// database URL setting, which the caller reports as such.
#[derive(Debug, thiserror::Error)]
#[error(
    "leads through a transaction- or statement-pooling proxy (such as PgBouncer with \
     pool_mode = transaction): {evidence}. The relay needs a PostgreSQL session of its \
     own: its leader lock (a session advisory lock), LISTEN and prepared statements \
     silently break behind such a pool, and several replicas would all act as the active \
     relay. Connect the relay directly to PostgreSQL, or through a pool with \
     pool_mode = session; writers may stay on the transaction pool"
)]
pub struct Pooled {
    /// What the probe saw that proves the pool.
    pub evidence: String,
}

/// Runs the probe once. `Err` is an outage or a timeout (worth retrying), never a verdict.
pub async fn probe(database: &DatabaseUrl) -> Result<Verdict, String> {
    let first = connect(database).await?;
    let mark = sight(&first, MARK_SQL, "set a session setting").await?;
    let second = connect(database).await?;
    let held = match step(second.simple_query(&format!("BEGIN; {OBSERVE_SQL}"))).await? {
        Ok(messages) => parse(&messages)?,
        // PostgreSQL never answers a well-formed query with a protocol violation; a pool does,
        // e.g. PgBouncer's "transaction blocks not allowed in statement pooling mode".
        Err(e) if e.code() == Some(&SqlState::PROTOCOL_VIOLATION) => {
            return Ok(Verdict::Pooled(format!(
                "it refused to keep a transaction open ({})",
                describe(&e)
            )));
        }
        Err(e) => {
            return Err(format!(
                "pooler probe: hold a transaction: {}",
                describe(&e)
            ));
        }
    };
    // Decided already: and A's next query might wait for the server B holds.
    if let verdict @ Verdict::Pooled(_) = judge(&mark, Some(&held), &[]) {
        return Ok(verdict);
    }
    let during = sight(
        &first,
        OBSERVE_SQL,
        "query while another transaction is open",
    )
    .await?;
    step(second.batch_execute("ROLLBACK"))
        .await?
        .map_err(|e| format!("pooler probe: end the transaction: {}", describe(&e)))?;
    drop(second);
    let after = sight(&first, OBSERVE_SQL, "query again").await?;
    let again = sight(&first, OBSERVE_SQL, "query once more").await?;
    Ok(judge(&mark, Some(&held), &[during, after, again]))
}

/// Probes until PostgreSQL answers, retrying an outage with backoff as `run` does everywhere.
/// `Ok(false)` when a stop was requested first.
pub async fn refuse_pooled(
    database: &DatabaseUrl,
    retry: &RetryPolicy,
    shutdown: &Shutdown,
) -> Result<bool, Pooled> {
    let mut backoff = retry.backoff();
    loop {
        let outcome = tokio::select! {
            outcome = probe(database) => outcome,
            () = shutdown.wait() => return Ok(false),
        };
        match outcome {
            Ok(Verdict::Pinned) => return Ok(true),
            Ok(Verdict::Pooled(evidence)) => return Err(Pooled { evidence }),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                    "cannot check the PostgreSQL connection for a transaction pool yet");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => return Ok(false),
                }
            }
        }
    }
}

async fn connect(database: &DatabaseUrl) -> Result<Client, String> {
    step(database.connect_client()).await?
}

async fn sight(client: &Client, sql: &str, what: &str) -> Result<Sight, String> {
    let messages = step(client.simple_query(sql))
        .await?
        .map_err(|e| format!("pooler probe: {what}: {}", describe(&e)))?;
    parse(&messages)
}

/// The first row of a probe query.
fn parse(messages: &[SimpleQueryMessage]) -> Result<Sight, String> {
    messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(Sight {
                pid: row.get(0).unwrap_or_default().to_string(),
                token: row.get(1).map(str::to_string),
            }),
            _ => None,
        })
        .ok_or_else(|| "pooler probe: the query returned no row".to_string())
}

async fn step<T>(future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| {
            format!(
                "pooler probe: PostgreSQL did not answer within {}s",
                STEP_TIMEOUT.as_secs()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::{Sight, Verdict, judge};

    fn sight(pid: &str, token: Option<&str>) -> Sight {
        Sight {
            pid: pid.into(),
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn a_pinned_session_keeps_its_process_and_setting_and_is_not_shared() {
        let mark = sight("10", Some("t"));
        let held = sight("11", None);
        let later = [sight("10", Some("t")), sight("10", Some("t"))];
        assert_eq!(judge(&mark, Some(&held), &later), Verdict::Pinned);
    }

    #[test]
    fn another_connection_on_the_same_session_is_a_pool() {
        let mark = sight("10", Some("t"));
        let verdict = judge(&mark, Some(&sight("10", Some("t"))), &[]);
        assert!(matches!(verdict, Verdict::Pooled(e) if e.contains("second connection")));
    }

    #[test]
    fn the_same_process_number_on_another_server_is_not_proof() {
        // Behind a TCP load balancer B may reach another server whose process has the same pid;
        // only the token proves a shared session.
        let mark = sight("10", Some("t"));
        let later = [sight("10", Some("t"))];
        assert_eq!(
            judge(&mark, Some(&sight("10", None)), &later),
            Verdict::Pinned
        );
    }

    #[test]
    fn a_connection_moving_to_another_process_is_a_pool() {
        let mark = sight("10", Some("t"));
        let verdict = judge(&mark, Some(&sight("11", None)), &[sight("12", None)]);
        assert!(matches!(verdict, Verdict::Pooled(e) if e.contains("10 and 12")));
    }

    #[test]
    fn a_lost_setting_is_a_pool() {
        // E.g. a pool that resets each server connection after every transaction.
        let mark = sight("10", Some("t"));
        let verdict = judge(&mark, None, &[sight("10", None)]);
        assert!(matches!(verdict, Verdict::Pooled(e) if e.contains("setting")));
    }
}
