//! Least privilege: the group roles `outbox_writer` and `outbox_relay` that `migrate` provides.
//! Each test creates login roles of its own (roles are cluster-wide, so the names are unique) and
//! drops them at the end.

use std::process::{Command, Output};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::harness::*;

/// A login role of the test's own, member of one group role; dropped with the value.
struct Login {
    name: String,
    password: String,
}

impl Login {
    async fn create(group: &str) -> Login {
        let login = Login {
            name: unique(&format!("{group}_login")),
            password: unique("pw"),
        };
        connect(&admin_url())
            .await
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}'; GRANT {group} TO {};",
                login.name, login.password, login.name
            ))
            .await
            .expect("create login role");
        login
    }

    /// `database_url` with this role's credentials.
    fn url(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url.split_once("://").expect("postgres:// URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}:{}@{host}", self.name, self.password)
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, so the cleanup gets a thread and runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = connect(&admin_url()).await;
                // Its sessions (a relay that has not exited yet) would keep it in use.
                let _ = admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                        &[&name],
                    )
                    .await;
                admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test role {}: {dropped:?}", self.name);
        }
    }
}

fn command(args: &[&str], database_url: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_DATABASE_URL", database_url)
        .env("OUTBOX_SINK", "stdout")
        .output()
        .expect("run outbox-relay")
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_denied(result: Result<u64, tokio_postgres::Error>, what: &str) {
    match result {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

#[tokio::test]
async fn writer_may_add_events_and_nothing_else() {
    let db = TestDb::create().await;
    let writer = Login::create("outbox_writer").await;
    let relay = Login::create("outbox_relay").await;
    let as_writer = connect(&writer.url(&db.url)).await;

    as_writer
        .execute(
            "INSERT INTO outbox.events (topic, key, payload, headers) VALUES ('orders', '1', 'a', '{\"trace\":\"x\"}')",
            &[],
        )
        .await
        .expect("a writer inserts the writer columns");
    as_writer
        .execute(
            "INSERT INTO outbox.events (topic, key, payload, available_at) VALUES ('orders', '2', 'b', now() + interval '1 hour')",
            &[],
        )
        .await
        .expect("a writer schedules an event");
    let enqueued: i64 = as_writer
        .query_one(
            "SELECT outbox.enqueue('orders', '3', '{\"type\":\"OrderPaid\"}'::jsonb)",
            &[],
        )
        .await
        .expect("a writer calls enqueue (jsonb)")
        .get(0);
    let enqueued_bytes: i64 = as_writer
        .query_one(
            "SELECT outbox.enqueue('orders', '4', '\\x00ff'::bytea, '{\"trace\":\"y\"}')",
            &[],
        )
        .await
        .expect("a writer calls enqueue (bytea)")
        .get(0);
    assert!(
        enqueued > 0 && enqueued_bytes > enqueued,
        "enqueue returns the new ids"
    );

    let denied = [
        ("SELECT", "SELECT count(*) FROM outbox.events"),
        (
            "SELECT the pending view",
            "SELECT count(*) FROM outbox.pending",
        ),
        (
            "SELECT the dead letters view",
            "SELECT count(*) FROM outbox.dead_letters",
        ),
        (
            "INSERT ... RETURNING",
            "INSERT INTO outbox.events (topic, payload) VALUES ('t', 'p') RETURNING id",
        ),
        ("UPDATE", "UPDATE outbox.events SET delivered_at = now()"),
        ("DELETE", "DELETE FROM outbox.events"),
        (
            "forging delivery state",
            "INSERT INTO outbox.events (topic, payload, delivered_at) VALUES ('t', 'p', now())",
        ),
        ("TRUNCATE", "TRUNCATE outbox.events"),
        (
            "schema changes",
            "ALTER TABLE outbox.events ADD COLUMN extra text",
        ),
    ];
    for (what, sql) in denied {
        assert_denied(as_writer.execute(sql, &[]).await, what);
    }
    // EXECUTE on enqueue is the writer's alone: PUBLIC no longer has it.
    let as_relay = connect(&relay.url(&db.url)).await;
    assert_denied(
        as_relay
            .execute("SELECT outbox.enqueue('orders', '5', 'x'::bytea)", &[])
            .await,
        "enqueue by a relay login",
    );

    // What the writer added, seen by the owner: four events, defaults filled in.
    let row = db
        .client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE message_id IS NOT NULL AND delivered_at IS NULL), \
             count(*) FILTER (WHERE available_at > now()) FROM outbox.events",
            &[],
        )
        .await
        .expect("count events");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (4, 4, 1)
    );
}

#[tokio::test]
async fn relay_login_runs_run_check_status_and_dead_letters() {
    let db = TestDb::create().await;
    let login = Login::create("outbox_relay").await;
    let url = login.url(&db.url);

    let check = succeeded(&command(&["check"], &url), "check as the relay role");
    assert!(check.contains("outbox schema: version"), "{check}");

    db.insert("orders", Some("1"), b"first", "{}").await;
    db.insert("orders", Some("1"), b"second", "{}").await;
    // An empty topic can never be published: dead-lettered at once (record_failures).
    let dead = db.insert("", Some("2"), b"no topic", "{}").await;

    let mut settings = fast_settings();
    settings.push(("OUTBOX_SINK", "stdout".into()));
    // Not 0, which deletes at delivery: the purge runs as this role too.
    settings.push(("OUTBOX_RETENTION_SECS", "1".into()));
    let mut relay = Relay::start(&url, &settings);
    eventually("two events on stdout", Duration::from_secs(30), || async {
        relay.stdout().lines().count() == 2
    })
    .await;
    eventually(
        "the dead letter recorded",
        Duration::from_secs(30),
        || async { db.count("dead_lettered_at IS NOT NULL").await == 1 },
    )
    .await;
    // Retention deletes delivered events (DELETE ... FOR UPDATE SKIP LOCKED).
    eventually(
        "delivered events purged",
        Duration::from_secs(30),
        || async { db.count("true").await == 1 },
    )
    .await;

    let json = succeeded(
        &command(&["status", "--json"], &url),
        "status as the relay role",
    );
    let status: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    assert_eq!(status["pending"], 0, "{json}");
    assert_eq!(status["dead_letters"], 1, "{json}");
    // Lanes mode: the relay owns every lane.
    let active = &status["lanes"][0];
    assert_eq!(active["lanes"].as_array().map(Vec::len), Some(64), "{json}");
    assert!(
        active["application_name"]
            .as_str()
            .is_some_and(|name| name.starts_with("outbox-relay")),
        "{json}"
    );
    assert!(
        active["since"].is_string(),
        "the relay's own role sees its session: {json}"
    );

    // Another relay login may not see the address and start of that session: status says so.
    let other = Login::create("outbox_relay").await;
    let text = succeeded(
        &command(&["status"], &other.url(&db.url)),
        "status as another relay role",
    );
    assert!(
        text.contains("outbox-relay") && text.contains("hidden from this role"),
        "{text}"
    );

    let list = succeeded(
        &command(&["dead-letters", "list"], &url),
        "dead-letters list as the relay role",
    );
    assert!(list.contains(&dead.to_string()), "{list}");
    let retried = succeeded(
        &command(&["dead-letters", "retry", &dead.to_string()], &url),
        "dead-letters retry as the relay role",
    );
    assert!(retried.contains("1 dead letter(s) put back"), "{retried}");
    // The relay dead-letters it again; then it is discarded for good.
    eventually("dead-lettered again", Duration::from_secs(30), || async {
        db.count("dead_lettered_at IS NOT NULL").await == 1
    })
    .await;
    succeeded(
        &command(&["dead-letters", "discard", "--all"], &url),
        "dead-letters discard as the relay role",
    );
    assert_eq!(db.count("true").await, 0);

    let stopped = relay.terminate(Duration::from_secs(15)).await;
    assert!(stopped.success(), "exit 0 after SIGTERM: {stopped:?}");
    let log = relay.stderr();
    assert!(!log.contains("permission denied"), "{log}");

    // Schema changes stay with the role that runs migrate.
    let as_relay = connect(&url).await;
    assert_denied(
        as_relay
            .execute("ALTER TABLE outbox.events ADD COLUMN extra text", &[])
            .await,
        "ALTER TABLE by the relay role",
    );
    assert_denied(
        as_relay
            .execute("CREATE TABLE outbox.extra (id int)", &[])
            .await,
        "CREATE TABLE by the relay role",
    );
}
