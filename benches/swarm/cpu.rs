//! Server CPU time per task: utime + stime of the server process (`/proc/<pid>/stat`),
//! read before and after a measured window.

/// A measured window's starting point: the server's CPU time when it opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuWindow {
    pid: u32,
    start_ticks: u64,
}

impl CpuWindow {
    /// Opens a window on process `pid`; None without a pid or a readable `/proc`.
    pub(crate) fn open(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        Some(CpuWindow {
            pid,
            start_ticks: cpu_ticks(pid)?,
        })
    }

    /// Server CPU ms spent since the window opened, per task of the `tasks` it completed.
    /// A process that spent no CPU at all on a hundred tasks or more is not the server
    /// (a wrapper shell's pid, say): None, with a warning.
    pub(crate) fn ms_per_task(&self, tasks: u64) -> Option<f64> {
        let spent = cpu_ticks(self.pid)?.checked_sub(self.start_ticks)?;
        if spent == 0 && tasks >= 100 {
            eprintln!(
                "bench: process {} spent no CPU on {tasks} tasks: not the server? CPU not reported",
                self.pid
            );
            return None;
        }
        (tasks > 0).then(|| spent as f64 * 1000.0 / clock_ticks_per_sec() / tasks as f64)
    }
}

/// Opens a window on `pid` (if any), runs `window`, and returns its result with the
/// server CPU ms per task, `tasks` being what the result says was completed.
pub(crate) async fn per_task<T, E>(
    pid: Option<u32>,
    window: impl std::future::Future<Output = Result<T, E>>,
    tasks: impl FnOnce(&T) -> u64,
) -> Result<(T, Option<f64>), E> {
    let cpu = CpuWindow::open(pid);
    let out = window.await?;
    let ms = cpu.and_then(|c| c.ms_per_task(tasks(&out)));
    Ok((out, ms))
}

/// utime + stime of process `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 (utime) and 15 (stime) of a stat line. The command name (field 2) is in
/// parentheses and may hold spaces or ')', so fields are counted after the last ')':
/// field 3 (state) is the first there.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the stat fields.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}
