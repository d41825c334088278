//! A PgBouncer of the test's own in front of the test PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::db::{admin_url, postgres_addr, unique};
use super::relay::free_port;

/// A PgBouncer of the test's own (`scripts/services.sh pgbouncer` installs the binary) on a free
/// port, in front of the test PostgreSQL; stopped on drop.
pub struct PgBouncer {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl PgBouncer {
    pub async fn start(pool_mode: &str) -> PgBouncer {
        Self::start_with(pool_mode, "").await
    }

    /// With `extra` lines appended to the `[pgbouncer]` section.
    pub async fn start_with(pool_mode: &str, extra: &str) -> PgBouncer {
        let dir = std::env::temp_dir().join(unique("pgbouncer"));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let admin = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        let postgres = postgres_addr();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        // Clients are trusted; the auth file names the user and holds the password PgBouncer
        // logs in to PostgreSQL with.
        std::fs::write(
            dir.join("users.txt"),
            format!(
                "\"{}\" \"{}\"\n",
                admin.username(),
                admin.password().unwrap_or("")
            ),
        )
        .expect("auth file");
        let ini = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
             pool_mode = {pool_mode}\n{extra}\n",
            postgres.ip(),
            postgres.port(),
            addr.port(),
            dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
        let log = std::fs::File::create(dir.join("log")).expect("log file");
        let mut command = Command::new(pgbouncer_binary());
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // PgBouncer refuses to run as root; the tests often do.
        if let Some((uid, gid)) = unprivileged_user() {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let mut pgbouncer = PgBouncer {
            child: command.spawn().expect("start pgbouncer"),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            let exited = pgbouncer.child.try_wait().expect("wait pgbouncer");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "pgbouncer did not listen on {addr}:\n{}",
                pgbouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pgbouncer
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("pgbouncer is not installed: run scripts/services.sh pgbouncer"))
}

/// When running as root: the uid and gid of the `postgres` user (which the PostgreSQL package
/// creates), to run PgBouncer as.
fn unprivileged_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let fields: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user to run pgbouncer as (PgBouncer refuses root)")
        .split(':')
        .collect();
    Some((
        fields[2].parse().expect("uid"),
        fields[3].parse().expect("gid"),
    ))
}
