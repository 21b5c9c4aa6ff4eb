//! Small OS helpers: reading a file inside a network namespace, running a
//! command with a timeout, clock and tick conversions.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// The file of network namespace `ns`: a path (anything with a `/`, e.g.
/// `/proc/1/ns/net` for the root namespace) or a name under `/run/netns`.
pub fn netns_path(ns: &str) -> std::io::Result<std::path::PathBuf> {
    let found = if ns.contains('/') {
        Some(std::path::PathBuf::from(ns)).filter(|p| p.exists())
    } else {
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|d| Path::new(d).join(ns))
            .find(|p| p.exists())
    };
    found.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("network namespace {ns} not found"),
        )
    })
}

/// Reads `/proc/thread-self/<rel>` from inside network namespace `ns`
/// (`/run/netns/<ns>`), on a short-lived thread of its own so that no other
/// thread ever changes namespace.
pub async fn read_in_netns(ns: &str, rel: &str) -> std::io::Result<String> {
    let ns_path = netns_path(ns)?;
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

/// A gratuitous ARP frame (broadcast ARP request for `ip` from `mac`
/// about itself), 42 bytes: Ethernet header + ARP.
pub use shoal_common::arp::gratuitous_arp as garp_frame;

/// Parses `aa:bb:cc:dd:ee:ff`: six groups of exactly two hex digits (either
/// case), nothing else.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Sends one gratuitous ARP out of `iface` inside namespace `ns` through a
/// raw `AF_PACKET` socket (on a short-lived thread of its own).
pub async fn send_garp(
    ns: &str,
    iface: &str,
    mac: [u8; 6],
    ip: std::net::Ipv4Addr,
) -> std::io::Result<()> {
    let ns_path = netns_path(ns)?;
    let ifname = std::ffi::CString::new(iface)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad interface name"))?;
    let frame = garp_frame(mac, ip);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shd-garp".into())
        .spawn(move || {
            let r = (|| {
                let f = std::fs::File::open(&ns_path)?;
                // SAFETY: setns on a valid namespace fd affects only this
                // thread, which ends right after sending.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: plain libc calls with valid arguments; the fd is
                // closed below on every path.
                let idx = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
                if idx == 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let proto = (libc::ETH_P_ARP as u16).to_be();
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = proto;
                addr.sll_ifindex = idx as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
                let n = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr() as *const libc::c_void,
                        frame.len(),
                        0,
                        &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                let err = std::io::Error::last_os_error();
                unsafe { libc::close(fd) };
                if n != frame.len() as isize {
                    return Err(err);
                }
                Ok(())
            })();
            let _ = tx.send(r);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("GARP thread died"))?
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

    #[test]
    fn garp_frame_layout() {
        let mac = parse_mac("02:5d:00:00:00:01").unwrap();
        let f = garp_frame(mac, "10.0.0.7".parse().unwrap());
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[10, 0, 0, 7]);
        assert_eq!(&f[38..42], &[10, 0, 0, 7]);
        assert_eq!(parse_mac("02:5d:00:00:00"), None);
        assert_eq!(parse_mac("02:5d:00:00:00:01:02"), None);
        assert_eq!(parse_mac("zz:5d:00:00:00:01"), None);
        assert_eq!(parse_mac("+2:5d:00:00:00:01"), None);
        assert_eq!(parse_mac("2:5d:00:00:00:01"), None);
        assert_eq!(parse_mac("002:5d:00:00:00:01"), None);
        assert_eq!(parse_mac("02:5D:00:00:00:01"), Some(mac));
        assert_eq!(format_mac(mac), "02:5d:00:00:00:01");
    }

    #[tokio::test]
    async fn missing_netns_is_an_error() {
        assert!(read_in_netns("shd-does-not-exist", "net/dev")
            .await
            .is_err());
    }
}

#[cfg(test)]
mod netns_path_tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(netns_path("/proc/self/ns/net").is_ok());
        let e = netns_path("shd-no-such-ns").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(netns_path("/nonexistent/ns").is_err());
    }

    /// Reading through a namespace given by path (this process's own).
    #[tokio::test]
    async fn read_through_a_path() {
        let text = read_in_netns("/proc/self/ns/net", "net/dev").await.unwrap();
        assert!(text.contains("lo:"), "{text}");
    }
}
