//! CPU time and resident memory of another process (the controller under
//! test), read from Linux's `/proc/PID/stat` and `/proc/PID/status`.

use std::path::PathBuf;

/// Clock ticks per second of `/proc/PID/stat`'s times: Linux's `USER_HZ`,
/// 100 on every architecture (the kernel converts to it for user space).
pub const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) the process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))).ok()?;
    parse_stat_cpu(&text)
}

/// Resident set size, kB (`VmRSS`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).ok()?;
    parse_status_rss(&text)
}

/// utime + stime of a `/proc/PID/stat` line, seconds. The command name
/// (field 2) may hold spaces and parentheses: fields are counted after its
/// last `)`.
pub fn parse_stat_cpu(text: &str) -> Option<f64> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut f = rest.split_ascii_whitespace();
    // After the name: state (3) … utime is field 14, stime 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of a `/proc/PID/status` text, kB.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (shoal (x) ctl) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 566 0 0 20 0 9 0 100 2000000 3000";
        assert_eq!(parse_stat_cpu(stat), Some(18.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_stat_cpu("1 (a) S 1 2"), None);
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   25012 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(25012));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_kb(me).is_some_and(|kb| kb > 0));
        assert!(cpu_seconds(u32::MAX).is_none());
    }
}
