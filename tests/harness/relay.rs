//! `outbox-relay` as a real child process: started with settings, read through its HTTP
//! endpoints and logs, stopped (SIGTERM) or killed, measured from /proc. Every wait has a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::db::unique;
use super::metrics::{http_get, metric_sum};
use super::procfs::{proc_cpu_secs, proc_status_kib};

/// The binary of this package, built for the tests and the bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");

static RELAY_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The binary every relay and `migrate` run: [`BIN`] unless [`use_relay_bin`] named another.
pub fn relay_bin() -> &'static Path {
    RELAY_BIN.get().map_or(Path::new(BIN), PathBuf::as_path)
}

/// Runs `bin` instead of [`BIN`] from now on (the bench's `BENCH_RELAY_BIN`); once, at start.
pub fn use_relay_bin(bin: PathBuf) {
    let _ = RELAY_BIN.set(bin);
}

/// Settings every test relay gets: fast retries and polls so tests finish quickly.
pub fn fast_settings() -> Vec<(&'static str, String)> {
    vec![
        ("OUTBOX_RETRY_BASE_DELAY_MS", "50".into()),
        ("OUTBOX_RETRY_MAX_DELAY_MS", "500".into()),
        ("OUTBOX_POLL_INTERVAL_MS", "200".into()),
        ("OUTBOX_LEADER_POLL_MS", "200".into()),
        ("OUTBOX_SHUTDOWN_TIMEOUT_SECS", "10".into()),
    ]
}

/// Batches of `batch` events that may follow one another in flight (two at most): nothing is
/// sent early while the lanes are due for a check, so they are checked rarely (`fast_settings`
/// checks every 200 ms).
pub fn batches_in_flight(batch: usize) -> [(&'static str, String); 2] {
    [
        ("OUTBOX_BATCH_SIZE", batch.to_string()),
        ("OUTBOX_LEADER_POLL_MS", "30000".into()),
    ]
}

/// Cuts every connection through `proxy` (the relay's to its broker) and waits, at most
/// `within`, until `relay` sees the outage ([`Relay::sees_an_outage`]).
pub async fn cut_until_seen(proxy: &super::Proxy, relay: &Relay, within: Duration) {
    proxy.cut();
    super::eventually("the relay sees the outage", within, || async {
        relay.sees_an_outage().await
    })
    .await;
}

/// A loopback port that nothing listens on, never the same twice in this process: the
/// operating system may hand a port it just gave out again, before the relay it was for has bound
/// it (seen: two relays of concurrent tests got one port, and one exited "Address already in
/// use").
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Sends signal `name` (e.g. `TERM`, `STOP`) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

// Relays still running, so that a watchdog can kill them (see `kill_relays`).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every relay this process started and has not seen exit: a bench that runs out of
/// time leaves none behind.
pub fn kill_relays() {
    let pids = RUNNING.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Where a relay's standard output goes.
pub enum RelayStdout {
    /// A file of its own, read with [`Relay::stdout`] (the tests).
    File,
    /// Nowhere (a bench draining a million events to the stdout sink).
    Null,
    /// A pipe, returned by [`Relay::spawn`] (a bench reading the stdout sink's lines as they come).
    Piped,
}

/// `outbox-relay run` as a child process; its stderr goes to a file.
pub struct Relay {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    dir: PathBuf,
    pub started: Instant,
}

impl Relay {
    /// The relay of a test, on `database_url` with `settings`; its stdout goes to a file.
    pub fn start(database_url: &str, settings: &[(&'static str, String)]) -> Relay {
        Self::spawn(database_url, settings, RelayStdout::File)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .0
    }

    /// Starts `outbox-relay run` with nothing but `PATH`, `RUST_LOG=info`, the database URL, a
    /// free HTTP address and `settings` in its environment.
    pub fn spawn(
        database_url: &str,
        settings: &[(&'static str, String)],
        stdout: RelayStdout,
    ) -> Result<(Relay, Option<ChildStdout>)> {
        let dir = std::env::temp_dir().join(unique("relay"));
        std::fs::create_dir_all(&dir).context("the relay's directory")?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut command = Command::new(relay_bin());
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("OUTBOX_DATABASE_URL", database_url)
            .env("OUTBOX_HTTP_ADDR", http.to_string())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr"))?);
        match stdout {
            RelayStdout::File => command.stdout(std::fs::File::create(dir.join("stdout"))?),
            RelayStdout::Null => command.stdout(Stdio::null()),
            RelayStdout::Piped => command.stdout(Stdio::piped()),
        };
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().context("starting outbox-relay run")?;
        let pid = child.id();
        if let Ok(mut running) = RUNNING.lock() {
            running.push(pid);
        }
        let piped = child.stdout.take();
        let relay = Relay {
            child,
            pid,
            http,
            dir,
            started: Instant::now(),
        };
        Ok((relay, piped))
    }

    /// SIGKILL, and the exit reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.forget();
    }

    fn forget(&self) {
        if let Ok(mut running) = RUNNING.lock() {
            running.retain(|&p| p != self.pid);
        }
    }

    /// The exit status, once the relay exited on its own within `timeout`.
    pub async fn try_exited(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the relay")? {
                self.forget();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "relay still running after {timeout:?}:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (with a deadline) for the relay to exit on its own.
    pub async fn exited(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_exited(timeout).await {
            Ok(status) => status,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// SIGTERM, then waits (with a deadline) for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid, "TERM");
        self.exited(timeout).await
    }

    /// SIGTERM; an error unless it exits 0 within 30 s (then it is SIGKILLed). Its files go.
    pub async fn stop(&mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match self.try_exited(Duration::from_secs(30)).await {
            Ok(status) if status.success() => {
                let _ = std::fs::remove_dir_all(&self.dir);
                Ok(())
            }
            Ok(status) => bail!("the relay exited with {status}:\n{}", self.stderr_tail()),
            Err(_) => {
                self.kill();
                bail!("the relay did not stop within 30 s after SIGTERM")
            }
        }
    }

    /// An error if the relay has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.forget();
            bail!("the relay exited ({status}):\n{}", self.stderr_tail());
        }
        Ok(())
    }

    /// The file its standard output goes to (with [`RelayStdout::File`]).
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The last 15 lines of its log.
    pub fn stderr_tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path).await
    }

    /// The body of `/metrics`, when it answers 200.
    pub async fn metrics(&self) -> Option<String> {
        let (status, body) = self.get("/metrics").await?;
        (status == 200).then_some(body)
    }

    /// The sum over every series of metric `name`; `None` when absent or `/metrics` is silent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        metric_sum(&body, name, "")
    }

    /// `outbox_relay_publish_errors_total{kind="outage"}`, 0 when `/metrics` does not answer.
    pub async fn outages(&self) -> f64 {
        match self.get("/metrics").await {
            Some((_, body)) => metric_sum(
                &body,
                "outbox_relay_publish_errors_total",
                "kind=\"outage\"",
            )
            .unwrap_or(0.0),
            None => 0.0,
        }
    }

    /// Whether the relay saw a broker go away: a publish failed as an outage, or a sink is down
    /// (`/readyz` 503), which is all it sees when the broker went away between two batches.
    pub async fn sees_an_outage(&self) -> bool {
        self.outages().await >= 1.0 || self.get("/readyz").await.map(|r| r.0) == Some(503)
    }

    /// `outbox_relay_delivered_total`, 0 before the first delivery.
    pub async fn delivered(&self) -> Option<u64> {
        let body = self.metrics().await?;
        Some(metric_sum(&body, "outbox_relay_delivered_total", "").unwrap_or(0.0) as u64)
    }

    /// Waits until `/readyz` answers 200 and the relay leads (holds the lock).
    pub async fn wait_leading(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Some((200, _)) = self.get("/readyz").await {
                // Ready means connected; leading (holding the lock) follows within a round trip.
                if let Some(body) = self.metrics().await
                    && metric_sum(&body, "outbox_relay_leader", "") == Some(1.0)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the relay was not ready within {timeout:?}:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the delivered counter every 50 ms until it reaches `n`; samples (seconds since the
    /// start, delivered).
    pub async fn wait_delivered(&mut self, n: u64, timeout: Duration) -> Result<Vec<(f64, u64)>> {
        let deadline = Instant::now() + timeout;
        let mut samples = Vec::new();
        loop {
            self.check_alive()?;
            let delivered = self.delivered().await.unwrap_or(0);
            samples.push((self.started.elapsed().as_secs_f64(), delivered));
            if delivered >= n {
                return Ok(samples);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the relay delivered {delivered} of {n} events within {timeout:?}:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its CPU seconds so far (all threads).
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid).unwrap_or(f64::NAN)
    }

    /// Its peak resident memory so far.
    pub fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.pid, "VmHWM:").map_or(f64::NAN, |k| k as f64 / 1024.0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.forget();
    }
}

/// Waits until `/readyz` answers `status`.
pub async fn wait_ready(relay: &Relay, status: u16, timeout: Duration) {
    super::eventually(&format!("/readyz {status}"), timeout, || async {
        relay.get("/readyz").await.map(|r| r.0) == Some(status)
    })
    .await;
}

/// Runs a short-lived `outbox-relay` command (not `run`) against `database_url`.
pub fn outbox_command(args: &[&str], database_url: &str) -> std::process::Output {
    Command::new(relay_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_DATABASE_URL", database_url)
        .output()
        .expect("run outbox-relay")
}
