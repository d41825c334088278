//! `outbox-relay status`: backlog, lag, dead letters and the active replica; with the sinks'
//! configuration at hand, the backlog per sink.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::adopt::{self, Conflict, Installed};
use crate::db::DatabaseUrl;
use crate::outbox::admin::{self, ActiveRelay, LaneOwner, Stats, TopicBacklog};
use crate::outbox::{LANE_COUNT, StoreError};
use crate::route::Routes;

#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    stats: Stats,
    /// The holder of the leader lock (single mode).
    active_relay: Option<ActiveRelay>,
    /// Which relay owns which lanes.
    lanes: Vec<LaneOwner>,
    /// Lanes no relay owns: their events wait.
    unowned_lanes: Vec<i32>,
    /// Per sink, when the sinks' configuration is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    sinks: Option<BTreeMap<String, SinkBacklog>>,
    /// The applications' outbox tables whose rows are captured into outbox.events (OUTBOX_ADOPT).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    adopted: Vec<Installed>,
    /// Evidence that MassTransit's own delivery service runs beside the relay: `run` refuses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<Conflict>,
}

#[derive(Serialize, Default, Debug, PartialEq)]
struct SinkBacklog {
    pending: i64,
    lag_seconds: f64,
}

/// The sinks' names (in configuration order) and the routes to them.
pub struct Routing {
    pub sinks: Vec<String>,
    pub routes: Routes,
}

/// Prints the status as a table for a person, or as JSON.
pub async fn status(
    database: &DatabaseUrl,
    routing: Option<Routing>,
    json: bool,
) -> Result<(), String> {
    let client = super::connect(database).await?;
    let mut status = Status::query(&client, routing.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    status.adopted = adopt::installed(&client).await.map_err(|e| e.to_string())?;
    // A role that may not read the guard's evidence still gets the rest of the status.
    status.conflicts = adopt::conflicts(&client, true).await.unwrap_or_else(|e| {
        eprintln!("outbox-relay: warning: {e}");
        Vec::new()
    });
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        status.print();
    }
    Ok(())
}

impl Status {
    /// Reads the status; the backlog per sink only with the sinks' `routing`.
    async fn query(
        client: &tokio_postgres::Client,
        routing: Option<&Routing>,
    ) -> Result<Status, StoreError> {
        let stats = admin::stats(client).await?;
        let active_relay = admin::active_relay(client).await?;
        let lanes = admin::lane_owners(client).await?;
        let unowned_lanes = (0..LANE_COUNT)
            .filter(|lane| !lanes.iter().any(|o| o.lanes.contains(lane)))
            .collect();
        let sinks = match routing {
            Some(routing) => Some(per_sink(routing, &admin::pending_by_topic(client).await?)),
            None => None,
        };
        Ok(Status {
            stats,
            active_relay,
            lanes,
            unowned_lanes,
            sinks,
            adopted: Vec::new(),
            conflicts: Vec::new(),
        })
    }

    /// Prints the status as a table.
    fn print(&self) {
        println!("pending events   {}", self.stats.pending);
        println!("lag              {:.3} s", self.stats.lag_seconds);
        println!("dead letters     {}", self.stats.dead_letters);
        println!("leader (single)  {}", leader(self.active_relay.as_ref()));
        for owner in &self.lanes {
            println!("{}", lane_owner(owner));
        }
        if !self.unowned_lanes.is_empty() {
            println!(
                "unowned lanes    {} (no relay relays their events): {}",
                self.unowned_lanes.len(),
                ranges(&self.unowned_lanes)
            );
        }
        for table in &self.adopted {
            let capture = if table.enabled {
                "captured into outbox.events"
            } else {
                "capture trigger DISABLED: its rows are not relayed"
            };
            println!(
                "adopted          {} ({}): {capture}",
                table.table, table.framework
            );
        }
        if !self.conflicts.is_empty() {
            println!("CONFLICT         {}", adopt::refusal(&self.conflicts));
        }
        match &self.sinks {
            Some(sinks) => {
                for (name, sink) in sinks {
                    println!(
                        "sink {name:<11} {} pending, lag {:.3} s",
                        sink.pending, sink.lag_seconds
                    );
                }
            }
            None => println!(
                "sinks            not shown: set the sink settings (OUTBOX_SINK, OUTBOX_SINKS, OUTBOX_ROUTES, ...) as for `run` to see the backlog per sink"
            ),
        }
    }
}

/// The holder of the leader lock, as the table names it.
fn leader(active_relay: Option<&ActiveRelay>) -> String {
    match active_relay {
        Some(ActiveRelay {
            application_name,
            client: Some(client),
            backend_pid,
            since: Some(since),
        }) => format!(
            "{application_name} (from {client}, backend pid {backend_pid}, since {})",
            since.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        // PostgreSQL hides the address and start of another role's session.
        Some(relay) => format!(
            "{} (backend pid {}; address and start hidden from this role: GRANT pg_read_all_stats, or run status as the relay's role, to see them)",
            relay.application_name, relay.backend_pid
        ),
        None => "none (lanes mode, or no relay running)".into(),
    }
}

/// One relay of lanes mode and the lanes it owns, as a line of the table.
fn lane_owner(owner: &LaneOwner) -> String {
    // PostgreSQL hides the start of another role's session.
    let since = owner.since.map_or(
        "; start hidden from this role: GRANT pg_read_all_stats, or run status as the relay's role"
            .into(),
        |s| format!(", connected since {}", s.format("%Y-%m-%d %H:%M:%S UTC")),
    );
    format!(
        "lanes {:<10} {} (backend pid {}{since}): {}",
        owner.lanes.len(),
        owner.application_name,
        owner.backend_pid,
        ranges(&owner.lanes)
    )
}

/// Lanes as ranges: `0-15, 32, 40-47`.
fn ranges(lanes: &[i32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = lanes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(", ")
}

/// Adds up the topics' backlogs per sink through the routes; topics without a sink under "none".
fn per_sink(routing: &Routing, topics: &[TopicBacklog]) -> BTreeMap<String, SinkBacklog> {
    let mut sinks: BTreeMap<String, SinkBacklog> = routing
        .sinks
        .iter()
        .map(|name| (name.clone(), SinkBacklog::default()))
        .collect();
    for topic in topics {
        let name = routing
            .routes
            .sink_for(&topic.topic)
            .and_then(|i| routing.sinks.get(i))
            .map_or("none", String::as_str);
        let sink = sinks.entry(name.to_string()).or_default();
        sink.pending += topic.pending;
        sink.lag_seconds = sink.lag_seconds.max(topic.lag_seconds);
    }
    sinks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Pattern;

    #[test]
    fn lanes_print_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn topics_add_up_per_sink_and_unrouted_ones_show_as_none() {
        let routing = Routing {
            sinks: vec!["audit".into(), "billing".into()],
            routes: Routes::new(vec![(Pattern::parse("audit.*").expect("valid"), 0)], None),
        };
        let topic = |topic: &str, pending, lag_seconds| TopicBacklog {
            topic: topic.into(),
            pending,
            lag_seconds,
        };
        let sinks = per_sink(
            &routing,
            &[
                topic("audit.login", 3, 1.5),
                topic("audit.logout", 2, 4.0),
                topic("orders", 7, 0.5),
            ],
        );
        assert_eq!(
            sinks["audit"],
            SinkBacklog {
                pending: 5,
                lag_seconds: 4.0
            }
        );
        assert_eq!(sinks["billing"], SinkBacklog::default());
        assert_eq!(sinks["none"].pending, 7);
    }
}
