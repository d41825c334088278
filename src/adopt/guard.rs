//! The guard against a second deliverer: MassTransit's own delivery service left running on the
//! adopted tables would deliver the same messages as the relay, out of order. sql/adopt/masstransit.sql
//! records who else deletes bus outbox messages; `run` refuses to relay, and stops, while such
//! evidence exists, and `status` shows it.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::{AdoptError, describe};

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    /// The MassTransit table it was seen on.
    pub table: String,
    /// `deleted`: bus outbox messages deleted by someone other than the relay (`who` says whom);
    /// `marked`: OutboxState rows with "Delivered" or "LastSequenceNumber" set, which only
    /// MassTransit's delivery service writes.
    pub evidence: String,
    pub rows: i64,
    pub detected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The deleting session (`deleted` only): login role, application_name, client address.
    pub usename: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
}

/// The evidence recorded so far; with `states`, also the OutboxState rows MassTransit's delivery
/// service marked (a scan of OutboxState: at start, not at every check). Empty when MassTransit is
/// not adopted in this database.
pub async fn conflicts(
    client: &impl GenericClient,
    states: bool,
) -> Result<Vec<Conflict>, AdoptError> {
    let read = |e: tokio_postgres::Error| AdoptError::Guard(describe(&e));
    let installed: bool = client
        .query_one(include_str!("../../sql/adopt/conflicts_installed.sql"), &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(read)?;
    if !installed {
        return Ok(Vec::new());
    }
    let rows = client
        .query(include_str!("../../sql/adopt/conflicts.sql"), &[&states])
        .await
        .map_err(read)?;
    rows.iter()
        .map(|row| {
            Ok(Conflict {
                table: row.try_get("table_name").map_err(read)?,
                evidence: row.try_get("evidence").map_err(read)?,
                rows: row.try_get("rows").map_err(read)?,
                detected_at: row.try_get("detected_at").map_err(read)?,
                last_seen: row.try_get("last_seen").map_err(read)?,
                usename: row.try_get("usename").map_err(read)?,
                application_name: row.try_get("application_name").map_err(read)?,
                client_addr: row.try_get("client_addr").map_err(read)?,
            })
        })
        .collect()
}

impl Conflict {
    /// What was seen, in a sentence.
    pub fn seen(&self) -> String {
        let when = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match self.evidence.as_str() {
            "deleted" => format!(
                "{} bus outbox message(s) of {} deleted by someone other than the relay: role {}, application_name {:?}, from {}, first at {}, last at {}",
                self.rows,
                self.table,
                self.usename.as_deref().unwrap_or("?"),
                self.application_name.as_deref().unwrap_or(""),
                self.client_addr.as_deref().unwrap_or("?"),
                when(&self.detected_at),
                when(&self.last_seen),
            ),
            _ => format!(
                "{} row(s) of {} with \"Delivered\" or \"LastSequenceNumber\" set (only MassTransit's delivery service writes them), between {} and {}",
                self.rows,
                self.table,
                when(&self.detected_at),
                when(&self.last_seen),
            ),
        }
    }

    /// The SQL that clears this evidence, once MassTransit's delivery service is off.
    fn clear(&self) -> String {
        match self.evidence.as_str() {
            "deleted" => format!(
                "DELETE FROM outbox.adoption_conflicts WHERE table_name = '{}';",
                self.table.replace('\'', "''")
            ),
            _ => {
                let marked = "\"Delivered\" IS NOT NULL OR \"LastSequenceNumber\" IS NOT NULL";
                let messages = self.table.replace("\"OutboxState\"", "\"OutboxMessage\"");
                format!(
                    "DELETE FROM {state} s WHERE ({marked}) AND NOT EXISTS (SELECT 1 FROM {messages} m WHERE m.\"OutboxId\" = s.\"OutboxId\"); UPDATE {state} SET \"Delivered\" = NULL, \"LastSequenceNumber\" = NULL WHERE {marked};",
                    state = self.table
                )
            }
        }
    }
}

/// Why the relay does not relay: what was seen, what to do, how to clear it.
pub fn refusal(conflicts: &[Conflict]) -> String {
    let seen: Vec<String> = conflicts.iter().map(Conflict::seen).collect();
    let clear: Vec<String> = conflicts.iter().map(Conflict::clear).collect();
    format!(
        "MassTransit's own delivery service is evidently still running on the adopted tables: {}. Two deliverers send the same messages twice and out of order, so the relay does not relay. Turn it off in every instance of the application (UseBusOutbox(x => x.DisableDeliveryService()) in AddEntityFrameworkOutbox), then clear the evidence as the role that ran `outbox-relay migrate`: {}",
        seen.join("; "),
        clear.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    #[test]
    fn the_refusal_says_what_was_seen_what_to_do_and_how_to_clear_it() {
        let deleted = Conflict {
            table: "public.\"OutboxMessage\"".into(),
            evidence: "deleted".into(),
            rows: 3,
            detected_at: at("2026-12-06T10:00:00Z"),
            last_seen: at("2026-12-06T10:00:05Z"),
            usename: Some("shop".into()),
            application_name: Some("Shop.Api".into()),
            client_addr: Some("10.0.0.7".into()),
        };
        let marked = Conflict {
            table: "public.\"OutboxState\"".into(),
            evidence: "marked".into(),
            usename: None,
            application_name: None,
            client_addr: None,
            ..deleted.clone()
        };
        let text = refusal(&[deleted, marked]);
        for part in [
            "3 bus outbox message(s) of public.\"OutboxMessage\" deleted by someone other than the relay: role shop, application_name \"Shop.Api\", from 10.0.0.7, first at 2026-12-06 10:00:00 UTC, last at 2026-12-06 10:00:05 UTC",
            "3 row(s) of public.\"OutboxState\" with \"Delivered\"",
            "UseBusOutbox(x => x.DisableDeliveryService())",
            "DELETE FROM outbox.adoption_conflicts WHERE table_name = 'public.\"OutboxMessage\"';",
            "NOT EXISTS (SELECT 1 FROM public.\"OutboxMessage\" m WHERE",
            "UPDATE public.\"OutboxState\" SET \"Delivered\" = NULL, \"LastSequenceNumber\" = NULL",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}
