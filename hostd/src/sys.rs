//! Small OS helpers: reading a file inside a network namespace, running a
//! command with a timeout, clock and tick conversions.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// Reads `/proc/thread-self/<rel>` from inside network namespace `ns`
/// (`/run/netns/<ns>`), on a short-lived thread of its own so that no other
/// thread ever changes namespace.
pub async fn read_in_netns(ns: &str, rel: &str) -> std::io::Result<String> {
    let ns_path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| Path::new(d).join(ns))
        .find(|p| p.exists())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("network namespace {ns} not found"),
            )
        })?;
    let rel = rel.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shd-netns".into())
        .spawn(move || {
            let r = (|| {
                let f = std::fs::File::open(&ns_path)?;
                // SAFETY: setns on a valid namespace fd affects only this
                // thread, which ends right after the read.
                let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                std::fs::read_to_string(Path::new("/proc/thread-self").join(&rel))
            })();
            let _ = tx.send(r);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("netns reader thread died"))?
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `program args` with a timeout (killed when it expires); fails when
/// it cannot start, times out or exits non-zero.
pub async fn run_cmd(program: &str, args: &[&str], timeout: Duration) -> Result<CmdOutput, String> {
    let line = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| format!("{line}: timed out after {timeout:?}"))?
        .map_err(|e| format!("{line}: {e}"))?;
    let o = CmdOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    };
    if !out.status.success() {
        return Err(format!("{line}: exit {:?}: {}", o.code, o.stderr));
    }
    Ok(o)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 when unknown).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This host's name (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_cmd_reports_failures() {
        assert!(run_cmd("true", &[], Duration::from_secs(5)).await.is_ok());
        let out = run_cmd("echo", &["hi"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), "hi");
        assert!(run_cmd("false", &[], Duration::from_secs(5)).await.is_err());
        assert!(run_cmd("/nonexistent/x", &[], Duration::from_secs(5))
            .await
            .is_err());
        let e = run_cmd("sleep", &["5"], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn missing_netns_is_an_error() {
        assert!(read_in_netns("shd-does-not-exist", "net/dev")
            .await
            .is_err());
    }
}
