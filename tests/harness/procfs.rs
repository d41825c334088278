//! CPU and memory of processes and threads, read from /proc.

use std::process::Command;

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Clock ticks as seconds.
pub fn ticks_to_secs(ticks: f64) -> f64 {
    ticks / clk_tck()
}

/// utime + stime of a process (all its threads), in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// This process's CPU seconds so far.
pub fn own_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id()).unwrap_or(f64::NAN)
}

/// utime + stime of the calling thread, in seconds.
pub fn thread_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/thread-self/stat")
}

fn stat_cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(ticks_to_secs(utime + stime))
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmHWM:`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
