//! Latency summaries.

use std::time::Duration;

pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub ops_per_sec: f64,
    pub count: usize,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort();
        let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50: pick(0.50),
            p99: pick(0.99),
            ops_per_sec: samples.len() as f64 / wall.as_secs_f64(),
            count: samples.len(),
        }
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// CPU seconds of process `pid` so far: the larger of its threads' run time in nanoseconds
/// (`/proc/PID/task/*/schedstat`, live threads only) and the kernel's user + system time in
/// clock ticks (`/proc/PID/stat`, 10 ms steps, exited threads included).
#[allow(dead_code)] // not every benchmark measures CPU
pub fn cpu_time(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let from_ticks = ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let nanos: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    from_ticks.max(nanos as f64 / 1e9)
}
