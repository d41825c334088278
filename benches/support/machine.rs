//! What the machine spends: CPU of the machine, PostgreSQL, the brokers and the bench between two
//! instants, the relay's PostgreSQL backends, and the statistics of the table.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::harness::{own_cpu_secs, proc_cpu_secs, ticks_to_secs};

/// This process's CPU per 1M messages since `start` (from [`own_cpu_secs`]), for `n` messages.
pub fn cpu_per_million_since(start: f64, n: u64) -> f64 {
    (own_cpu_secs() - start) / n as f64 * 1e6
}

/// CPU seconds of the PostgreSQL backends serving the relay with process id `relay_pid` (its
/// session and its pool: they name themselves `outbox-relay <host> pid <pid>`). PostgreSQL runs
/// on this machine, so its backends' /proc entries are readable.
pub async fn relay_backends_cpu_secs(client: &Client, relay_pid: u32) -> Result<f64> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
            &[&format!("outbox-relay % pid {relay_pid}")],
        )
        .await
        .context("listing the relay's PostgreSQL backends")?;
    let mut total = 0.0;
    for row in rows {
        let pid: i32 = row.try_get(0)?;
        let pid = u32::try_from(pid).context("a backend's pid")?;
        total += proc_cpu_secs(pid).with_context(|| format!("reading backend {pid}'s CPU"))?;
    }
    Ok(total)
}

/// CPU seconds of the machine and of the processes that matter, at one instant.
pub struct CpuSnapshot {
    at: Instant,
    machine_busy: f64,
    by_pid: HashMap<u32, (String, f64)>,
    bench: f64,
}

/// CPU used between two snapshots, in seconds, by who.
pub struct CpuUse {
    pub wall: f64,
    pub machine_busy: f64,
    pub postgres: f64,
    /// RabbitMQ (beam.smp), Redis and NATS server processes.
    pub broker: f64,
    pub bench: f64,
}

impl CpuSnapshot {
    pub fn take() -> CpuSnapshot {
        let machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let v: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal
                Some(
                    v.iter().take(8).sum::<f64>()
                        - v.get(3).unwrap_or(&0.0)
                        - v.get(4).unwrap_or(&0.0),
                )
            })
            .map_or(0.0, ticks_to_secs);
        let mut by_pid = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let comm = comm.trim();
                if (comm == "postgres"
                    || comm == "beam.smp"
                    || comm == "redis-server"
                    || comm == "nats-server")
                    && let Some(cpu) = proc_cpu_secs(pid)
                {
                    by_pid.insert(pid, (comm.to_string(), cpu));
                }
            }
        }
        CpuSnapshot {
            at: Instant::now(),
            machine_busy,
            by_pid,
            bench: proc_cpu_secs(std::process::id()).unwrap_or(0.0),
        }
    }

    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let mut postgres = 0.0;
        let mut broker = 0.0;
        for (pid, (comm, cpu)) in &self.by_pid {
            let before = earlier.by_pid.get(pid).map_or(0.0, |(_, c)| *c);
            let used = (cpu - before).max(0.0);
            if comm == "postgres" {
                postgres += used;
            } else {
                broker += used;
            }
        }
        CpuUse {
            wall: self.at.duration_since(earlier.at).as_secs_f64(),
            machine_busy: self.machine_busy - earlier.machine_busy,
            postgres,
            broker,
            bench: self.bench - earlier.bench,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Least-squares slope of (x, y).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The value at quantile `q` (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = proc_meminfo_kib("MemTotal:").map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    format!("{cores} cores, {cpu}, {mem_gib:.0} GiB")
}

fn proc_meminfo_kib(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
