//! Pure parsers of the procfs files the sensor reads, and counter deltas.
//!
//! Every parser takes the file's text and returns a value or a
//! [`ParseError`]; none of them panics on odd input. The sensor reads the
//! files; these functions only interpret them (unit-tested on samples
//! captured on the project's machines, `hostd/tests/data/`).

use std::collections::HashMap;

/// A procfs file did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {file}: {why}")]
pub struct ParseError {
    /// Which file (`/proc/stat`, ...).
    pub file: &'static str,
    /// What was wrong.
    pub why: String,
}

fn perr(file: &'static str, why: impl Into<String>) -> ParseError {
    ParseError {
        file,
        why: why.into(),
    }
}

/// Aggregate CPU times from the `cpu ` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
    /// All ticks (user … steal; guest time is already in user/nice).
    pub total: u64,
}

/// `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_stat(text: &str) -> Result<(CpuTimes, u32), ParseError> {
    const F: &str = "/proc/stat";
    let mut agg = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(label) = it.next() else { continue };
        if label == "cpu" {
            let vals: Vec<u64> = it
                .map(|v| v.parse::<u64>().map_err(|e| perr(F, format!("{v}: {e}"))))
                .collect::<Result<_, _>>()?;
            if vals.len() < 4 {
                return Err(perr(F, "cpu line has fewer than 4 fields"));
            }
            // user nice system idle iowait irq softirq steal [guest guest_nice]
            let idle = vals.get(3).copied().unwrap_or(0) + vals.get(4).copied().unwrap_or(0);
            let total: u64 = vals.iter().take(8).copied().fold(0u64, u64::saturating_add);
            agg = Some(CpuTimes { idle, total });
        } else if let Some(n) = label.strip_prefix("cpu") {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                cores += 1;
            }
        }
    }
    let agg = agg.ok_or_else(|| perr(F, "no aggregate cpu line"))?;
    Ok((agg, cores))
}

/// CPU utilisation in [0, 1] between two samples of [`CpuTimes`]; `None`
/// when no time passed or the counters went backwards.
pub fn cpu_util(prev: CpuTimes, cur: CpuTimes) -> Option<f64> {
    let total = cur.total.checked_sub(prev.total)?;
    let idle = cur.idle.checked_sub(prev.idle)?;
    if total == 0 {
        return None;
    }
    Some((1.0 - idle as f64 / total as f64).clamp(0.0, 1.0))
}

/// `/proc/meminfo` fields the sensor needs, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kb: u64,
    /// `MemAvailable` (falls back to `MemFree + Buffers + Cached`).
    pub available_kb: u64,
}

/// `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const F: &str = "/proc/meminfo";
    let mut fields: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(num) = rest.split_ascii_whitespace().next() else {
            continue;
        };
        if let Ok(v) = num.parse::<u64>() {
            fields.insert(key.trim(), v);
        }
    }
    let total_kb = *fields
        .get("MemTotal")
        .ok_or_else(|| perr(F, "no MemTotal"))?;
    let available_kb = match fields.get("MemAvailable") {
        Some(v) => *v,
        None => {
            let free = fields
                .get("MemFree")
                .ok_or_else(|| perr(F, "neither MemAvailable nor MemFree"))?;
            free + fields.get("Buffers").unwrap_or(&0) + fields.get("Cached").unwrap_or(&0)
        }
    };
    Ok(MemInfo {
        total_kb,
        available_kb: available_kb.min(total_kb),
    })
}

/// `pswpout` (pages swapped out since boot) from `/proc/vmstat`.
pub fn parse_vmstat_pswpout(text: &str) -> Result<u64, ParseError> {
    vmstat_counter(text, "pswpout")?.ok_or_else(|| perr("/proc/vmstat", "no pswpout"))
}

/// `pswpin` (pages swapped in, i.e. read back from swap, since boot) from
/// `/proc/vmstat`; 0 when the line is missing (a `/proc` that reports only
/// swap-out), an error when it is malformed.
pub fn parse_vmstat_pswpin(text: &str) -> Result<u64, ParseError> {
    Ok(vmstat_counter(text, "pswpin")?.unwrap_or(0))
}

/// The counter `name` of `/proc/vmstat` (None: no such line).
fn vmstat_counter(text: &str, name: &str) -> Result<Option<u64>, ParseError> {
    const F: &str = "/proc/vmstat";
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        if it.next() == Some(name) {
            let v = it
                .next()
                .ok_or_else(|| perr(F, format!("{name} without value")))?;
            return v
                .parse()
                .map(Some)
                .map_err(|e| perr(F, format!("{name} {v}: {e}")));
        }
    }
    Ok(None)
}

/// Counters of one interface from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
}

/// `/proc/net/dev`: counters of every interface, by name.
pub fn parse_net_dev(text: &str) -> Result<HashMap<String, NetCounters>, ParseError> {
    const F: &str = "/proc/net/dev";
    let mut out = HashMap::new();
    // Two header lines, then `name: 16 numbers`.
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            return Err(perr(F, format!("line without ':': {line:?}")));
        };
        let vals: Vec<u64> = rest
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>().map_err(|e| perr(F, format!("{v}: {e}"))))
            .collect::<Result<_, _>>()?;
        if vals.len() < 16 {
            return Err(perr(
                F,
                format!("{} fields for {}", vals.len(), name.trim()),
            ));
        }
        out.insert(
            name.trim().to_string(),
            NetCounters {
                rx_bytes: vals[0],
                rx_packets: vals[1],
                tx_bytes: vals[8],
                tx_packets: vals[9],
            },
        );
    }
    Ok(out)
}

/// CPU time of a process from `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcCpu {
    /// `utime`.
    pub utime: u64,
    /// `stime`.
    pub stime: u64,
}

/// `/proc/<pid>/stat` (the command name may contain spaces and parentheses:
/// fields are counted after the last `)`).
pub fn parse_pid_stat(text: &str) -> Result<ProcCpu, ParseError> {
    const F: &str = "/proc/<pid>/stat";
    let close = text.rfind(')').ok_or_else(|| perr(F, "no ')'"))?;
    let rest = text.get(close + 1..).unwrap_or("");
    // After ')': state(3) ppid(4) ... utime(14) stime(15), 1-based overall.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let get = |i: usize| -> Result<u64, ParseError> {
        let v = fields
            .get(i)
            .ok_or_else(|| perr(F, format!("only {} fields after ')'", fields.len())))?;
        v.parse().map_err(|e| perr(F, format!("{v}: {e}")))
    };
    Ok(ProcCpu {
        utime: get(11)?,
        stime: get(12)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn parse_status_rss_kb(text: &str) -> Result<u64, ParseError> {
    const F: &str = "/proc/<pid>/status";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let v = rest
                .split_ascii_whitespace()
                .next()
                .ok_or_else(|| perr(F, "VmRSS without value"))?;
            return v.parse().map_err(|e| perr(F, format!("VmRSS {v}: {e}")));
        }
    }
    Err(perr(F, "no VmRSS"))
}

/// One `/proc/<pid>/task/<tid>/schedstat` sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedStat {
    /// Time spent on the CPU, ns.
    pub run_ns: u64,
    /// Time spent waiting on a run queue, ns.
    pub wait_ns: u64,
    /// Number of time slices run.
    pub timeslices: u64,
}

/// `schedstat`: three numbers on one line.
pub fn parse_schedstat(text: &str) -> Result<SchedStat, ParseError> {
    const F: &str = "schedstat";
    let vals: Vec<u64> = text
        .split_ascii_whitespace()
        .map(|v| v.parse::<u64>().map_err(|e| perr(F, format!("{v}: {e}"))))
        .collect::<Result<_, _>>()?;
    match vals.as_slice() {
        [run, wait, slices, ..] => Ok(SchedStat {
            run_ns: *run,
            wait_ns: *wait,
            timeslices: *slices,
        }),
        _ => Err(perr(F, format!("{} fields, expected 3", vals.len()))),
    }
}

/// Increase of a monotonically growing counter from `prev` to `cur`.
///
/// A counter that went backwards was reset (interface re-created, process
/// restarted, 32-bit wrap): the increase since the reset is `cur`, never a
/// negative or huge number.
pub fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = include_str!("../tests/data/proc_stat.txt");
    const MEMINFO: &str = include_str!("../tests/data/proc_meminfo.txt");
    const VMSTAT: &str = include_str!("../tests/data/proc_vmstat.txt");
    const NETDEV: &str = include_str!("../tests/data/proc_net_dev.txt");
    const PIDSTAT: &str = include_str!("../tests/data/proc_pid_stat.txt");
    const PIDSTATUS: &str = include_str!("../tests/data/proc_pid_status.txt");
    const SCHEDSTAT: &str = include_str!("../tests/data/proc_pid_schedstat.txt");

    #[test]
    fn stat_sample() {
        let (t, cores) = parse_stat(STAT).unwrap();
        assert_eq!(cores, 2);
        // cpu  11380 0 1995 107267 298 0 41 5 0 0
        assert_eq!(t.idle, 107267 + 298);
        assert_eq!(t.total, 11380 + 1995 + 107267 + 298 + 41 + 5);
    }

    #[test]
    fn stat_rejects_garbage() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("cpu 1 2\n").is_err());
        assert!(parse_stat("cpu a b c d\n").is_err());
    }

    #[test]
    fn cpu_util_between_samples() {
        let a = CpuTimes {
            idle: 100,
            total: 200,
        };
        let b = CpuTimes {
            idle: 150,
            total: 300,
        };
        assert_eq!(cpu_util(a, b), Some(0.5));
        assert_eq!(cpu_util(a, a), None);
        assert_eq!(cpu_util(b, a), None);
    }

    #[test]
    fn meminfo_sample() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total_kb, 24684096);
        assert_eq!(m.available_kb, 24288936);
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n")
            .unwrap();
        assert_eq!(old.available_kb, 35);
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
    }

    #[test]
    fn vmstat_sample() {
        assert_eq!(parse_vmstat_pswpout(VMSTAT).unwrap(), 0);
        assert_eq!(parse_vmstat_pswpout("pswpin 3\npswpout 42\n").unwrap(), 42);
        assert_eq!(parse_vmstat_pswpin("pswpin 3\npswpout 42\n").unwrap(), 3);
        assert_eq!(parse_vmstat_pswpin("pswpout 42\n").unwrap(), 0);
        assert!(parse_vmstat_pswpin("pswpin\n").is_err());
        assert!(parse_vmstat_pswpin("pswpin -1\n").is_err());
        assert!(parse_vmstat_pswpout("pswpout x\n").is_err());
        assert!(parse_vmstat_pswpout("nr_free_pages 1\n").is_err());
    }

    #[test]
    fn net_dev_sample() {
        let m = parse_net_dev(NETDEV).unwrap();
        let eth0 = m.get("eth0").unwrap();
        assert_eq!(eth0.rx_bytes, 265259027);
        assert_eq!(eth0.rx_packets, 10893);
        assert_eq!(eth0.tx_bytes, 552206);
        assert_eq!(eth0.tx_packets, 6753);
        assert!(m.contains_key("lo"));
        assert!(parse_net_dev("h1\nh2\neth0: 1 2 3\n").is_err());
    }

    #[test]
    fn pid_stat_sample_and_odd_names() {
        let p = parse_pid_stat(PIDSTAT).unwrap();
        assert_eq!(p, ProcCpu { utime: 0, stime: 3 });
        let odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0 5 0 0";
        assert_eq!(
            parse_pid_stat(odd).unwrap(),
            ProcCpu {
                utime: 11,
                stime: 22
            }
        );
        assert!(parse_pid_stat("7 (x) R 1").is_err());
        assert!(parse_pid_stat("no paren").is_err());
    }

    #[test]
    fn status_rss_sample() {
        let rss = parse_status_rss_kb(PIDSTATUS).unwrap();
        assert!(rss > 0);
        assert_eq!(
            parse_status_rss_kb("Name: x\nVmRSS:\t  1234 kB\n").unwrap(),
            1234
        );
        assert!(parse_status_rss_kb("Name: x\n").is_err());
    }

    #[test]
    fn schedstat_sample() {
        let s = parse_schedstat(SCHEDSTAT).unwrap();
        assert!(s.run_ns > 0);
        assert_eq!(
            parse_schedstat("38890 25910 2\n").unwrap(),
            SchedStat {
                run_ns: 38890,
                wait_ns: 25910,
                timeslices: 2
            }
        );
        assert!(parse_schedstat("1 2").is_err());
        assert!(parse_schedstat("1 -2 3").is_err());
    }

    #[test]
    fn counter_delta_never_negative() {
        assert_eq!(counter_delta(10, 15), 5);
        assert_eq!(counter_delta(15, 15), 0);
        // Reset: the counter restarted from 0 and reached 4.
        assert_eq!(counter_delta(u64::MAX - 1, 4), 4);
        assert_eq!(counter_delta(1000, 3), 3);
    }
}
