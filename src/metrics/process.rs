//! Process CPU, resident memory and open file descriptors, read from `/proc/self` at each
//! scrape (Linux; elsewhere they are left out).

use std::fmt::Write;

use super::{Metric, ALL, CPU_SECONDS, OPEN_FDS, RSS_BYTES};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, fixed at 100 for user space).
const TICKS_PER_SEC: f64 = 100.0;

/// Appends the process metrics, in Prometheus text, to `out`.
pub(super) fn render(out: &mut String) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let samples = [
        (CPU_SECONDS, cpu_seconds()),
        (RSS_BYTES, rss_bytes().map(|b| b as f64)),
        (OPEN_FDS, fds),
    ];
    for (name, value) in samples {
        let (Some(value), Some(metric)) = (value, find(name)) else {
            continue;
        };
        let _ = writeln!(out, "# HELP {name} {}", metric.help);
        let _ = writeln!(out, "# TYPE {name} {}", metric.kind);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

/// User plus system CPU time, from fields 14 and 15 of `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first here
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_read() {
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
