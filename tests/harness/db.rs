//! PostgreSQL: a database of each test's or bench scenario's own (empty, migrated by the real
//! binary, or a copy of a template), and the rows the tests read back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio_postgres::{Client, NoTls};

use super::relay::relay_bin;

/// `TEST_DATABASE_URL`: the server's admin database, where test databases are created.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A name no other test or run uses: `{prefix}_{12 hex digits}`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// `url` with the password left out, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// A PostgreSQL error with its SQLSTATE and message.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A session on `url`; its connection runs on the current runtime.
pub async fn try_connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// [`try_connect`], for tests: panics when PostgreSQL cannot be reached.
pub async fn connect(url: &str) -> Client {
    try_connect(url).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// `outbox-relay migrate` on `url`.
pub fn migrate(url: &str) -> Result<()> {
    let output = Command::new(relay_bin())
        .arg("migrate")
        .env("OUTBOX_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .context("running outbox-relay migrate")?;
    if !output.status.success() {
        bail!(
            "outbox-relay migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The PostgreSQL server of the tests or the bench, reached through its admin database.
#[derive(Clone)]
pub struct Postgres {
    pub admin_url: String,
}

impl Postgres {
    pub fn new(admin_url: &str) -> Postgres {
        Postgres {
            admin_url: admin_url.to_string(),
        }
    }

    /// The URL of database `name` on this server (the admin URL's query kept).
    pub fn url(&self, name: &str) -> String {
        let (base, rest) = self
            .admin_url
            .rsplit_once('/')
            .unwrap_or((&self.admin_url, ""));
        match rest.split_once('?') {
            Some((_, query)) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        }
    }

    pub async fn admin(&self) -> Result<Client> {
        try_connect(&self.admin_url).await
    }

    /// A new database `name`: empty, or a copy of `template`; migrated by `outbox-relay migrate`
    /// when `migrated` (a copy of a migrated template is migrated again: a no-op, as on every
    /// deploy). Its URL.
    pub async fn create(
        &self,
        name: &str,
        template: Option<&str>,
        migrated: bool,
    ) -> Result<String> {
        let admin = self.admin().await?;
        let sql = match template {
            None => format!("CREATE DATABASE {name}"),
            Some(t) => {
                let version: i32 = admin
                    .query_one("SELECT current_setting('server_version_num')::int", &[])
                    .await?
                    .try_get(0)?;
                // FILE_COPY copies the files instead of writing the whole database into the WAL.
                let strategy = if version >= 150000 {
                    " STRATEGY FILE_COPY"
                } else {
                    ""
                };
                format!("CREATE DATABASE {name} TEMPLATE {t}{strategy}")
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                // The template's last session may still be closing.
                Err(e)
                    if Instant::now() < deadline && format!("{e:?}").contains("being accessed") =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(anyhow!("{sql}: {}", pg_error(&e))),
            }
        }
        let url = self.url(name);
        if migrated {
            migrate(&url)?;
        }
        Ok(url)
    }

    /// Drops database `name`, closing its sessions; a failure is only reported.
    pub async fn drop(&self, name: &str) {
        if let Ok(admin) = self.admin().await
            && let Err(e) = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
        {
            eprintln!("cannot drop database {name}: {}", pg_error(&e));
        }
    }

    /// Drops the databases named `{prefix}...` that nobody is connected to: those an interrupted
    /// earlier run left behind.
    pub async fn drop_leftovers(&self, prefix: &str) {
        let Ok(admin) = self.admin().await else {
            return;
        };
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let Ok(rows) = admin
            .query(
                "SELECT datname FROM pg_database d WHERE datname LIKE $1 \
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                &[&pattern],
            )
            .await
        else {
            return;
        };
        for row in rows {
            let Ok(name) = row.try_get::<_, String>(0) else {
                continue;
            };
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

/// A database of the test's own, migrated by the real binary.
pub struct TestDb {
    pub url: String,
    pub client: Client,
}

impl TestDb {
    pub async fn create() -> TestDb {
        Self::make(true).await
    }

    pub async fn create_empty() -> TestDb {
        Self::make(false).await
    }

    async fn make(migrated: bool) -> TestDb {
        let admin = admin_url();
        assert!(
            admin.rsplit_once('/').is_some(),
            "TEST_DATABASE_URL must end with /database"
        );
        let url = Postgres::new(&admin)
            .create(&unique("outbox_test"), None, migrated)
            .await
            .unwrap_or_else(|e| panic!("create test database: {e:#}"));
        let client = connect(&url).await;
        TestDb { url, client }
    }

    /// Inserts one event as a writer would and returns its id.
    pub async fn insert(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: &str,
    ) -> i64 {
        self.client
            .query_one(
                "INSERT INTO outbox.events (topic, key, payload, headers) VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id",
                &[&topic, &key, &payload, &headers],
            )
            .await
            .expect("insert event")
            .get(0)
    }

    /// Inserts one event of key `later` due in an hour (never published during a test); its id.
    pub async fn insert_scheduled(&self) -> i64 {
        self.client
            .query_one(
                "INSERT INTO outbox.events (topic, key, payload, available_at)
                 VALUES ('t', 'later', 'later', now() + interval '1 hour') RETURNING id",
                &[],
            )
            .await
            .expect("insert a scheduled event")
            .get(0)
    }

    pub async fn count(&self, condition: &str) -> i64 {
        self.client
            .query_one(
                &format!("SELECT count(*) FROM outbox.events WHERE {condition}"),
                &[],
            )
            .await
            .expect("count events")
            .get(0)
    }

    /// Every event's message id, by event id.
    pub async fn message_ids(&self) -> BTreeMap<i64, String> {
        self.client
            .query("SELECT id, message_id::text FROM outbox.events", &[])
            .await
            .expect("message ids")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    pub async fn undelivered(&self) -> i64 {
        self.count("delivered_at IS NULL AND dead_lettered_at IS NULL")
            .await
    }

    /// The ids of the events marked delivered, in order.
    pub async fn delivered_ids(&self) -> Vec<i64> {
        self.client
            .query(
                "SELECT id FROM outbox.events WHERE delivered_at IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .expect("delivered events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The reason event `id` was dead-lettered for, once it was.
    pub async fn dead_letter_reason(&self, id: i64) -> Option<String> {
        self.client
            .query_one(
                "SELECT last_error FROM outbox.events WHERE id = $1 AND dead_lettered_at IS NOT NULL",
                &[&id],
            )
            .await
            .ok()
            .and_then(|r| r.get(0))
    }
}

/// Inserts payloads `k{key}:{seq}` (key `k{key}`) for seq in `from..to`, `per_tx` sequence
/// numbers per transaction.
pub async fn insert_keyed_sequence(
    client: &Client,
    topic: &str,
    keys: usize,
    from: u64,
    to: u64,
    per_tx: u64,
) {
    insert_sequence(client, topic, keys, from..to, per_tx, |k, s| {
        format!("k{k}:{s}")
    })
    .await;
}

/// Inserts `payload(key, seq)` (key `k{key}`) for seq in `seqs`, `per_tx` sequence numbers per
/// transaction. The payload is written as SQL text: no single quotes.
pub async fn insert_sequence(
    client: &Client,
    topic: &str,
    keys: usize,
    seqs: std::ops::Range<u64>,
    per_tx: u64,
    payload: impl Fn(usize, u64) -> String,
) {
    let mut seq = seqs.start;
    while seq < seqs.end {
        let end = (seq + per_tx).min(seqs.end);
        let mut sql = String::from("BEGIN;");
        for s in seq..end {
            for k in 0..keys {
                sql.push_str(&format!(
                    "INSERT INTO outbox.events (topic, key, payload) VALUES ('{topic}', 'k{k}', '{}'::bytea);",
                    payload(k, s)
                ));
            }
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("insert batch");
        seq = end;
    }
}

/// The database name at the end of a PostgreSQL URL.
pub fn database_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap_or_default()
}

/// Where the test PostgreSQL listens, from `TEST_DATABASE_URL`.
pub fn postgres_addr() -> SocketAddr {
    let url = admin_url();
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:5432".parse().expect("addr"))
}

/// `url` with its host and port replaced by `proxy`: the same database, reached through the proxy.
pub fn database_url_via(url: &str, proxy: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("postgres:// URL");
    let (authority, path) = rest.split_once('/').expect("URL ends with /database");
    match authority.rsplit_once('@') {
        Some((credentials, _)) => format!("{scheme}://{credentials}@{proxy}/{path}"),
        None => format!("{scheme}://{proxy}/{path}"),
    }
}

/// Terminates the relays' own PostgreSQL sessions in `database` (and only there); returns how many.
pub async fn terminate_relay_backends(client: &Client, database: &str) -> i64 {
    client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name LIKE 'outbox-relay%' AND datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .expect("terminate relay backends")
        .iter()
        .filter(|row| row.get::<_, bool>(0))
        .count() as i64
}
