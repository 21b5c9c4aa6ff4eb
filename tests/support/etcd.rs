//! A real etcd cluster (Debian `etcd-server`) on loopback ports, for the
//! cluster tests: each member a child process with its own data directory.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for, ChildGuard, Result, TempDir};

/// One member.
pub struct Member {
    /// Its name.
    pub name: String,
    /// Client URL.
    pub client: String,
    peer: String,
    child: Option<ChildGuard>,
}

/// A running etcd cluster; its members stop on drop.
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<Member>,
    _dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers. Heartbeat
    /// 100 ms and election timeout 1 s are etcd's defaults; the lease TTL
    /// floor follows from them (2 s).
    pub fn start(n: usize) -> Result<Self> {
        let dir = TempDir::new("shoal-etcd")?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("e{i}"),
                client: format!("http://127.0.0.1:{}", free_port()?),
                peer: format!("http://127.0.0.1:{}", free_port()?),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let data = dir.path().join(&m.name);
            let log = std::fs::File::create(dir.path().join(format!("{}.log", m.name)))?;
            m.child = Some(ChildGuard::spawn(
                Command::new("etcd")
                    .args(["--name", &m.name])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--listen-client-urls", &m.client])
                    .args(["--advertise-client-urls", &m.client])
                    .args(["--listen-peer-urls", &m.peer])
                    .args(["--initial-advertise-peer-urls", &m.peer])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "shoal-test"])
                    .stdout(Stdio::null())
                    .stderr(log),
            )?);
        }
        let me = EtcdCluster { members, _dir: dir };
        wait_for("etcd to elect a leader", Duration::from_secs(30), || {
            me.healthy(me.members.len()).then_some(())
        })?;
        Ok(me)
    }

    /// The client URLs, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// At least `n` members answer a linearizable read (so the cluster has
    /// a leader and a quorum).
    pub fn healthy(&self, n: usize) -> bool {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .filter(|m| {
                Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &m.client, "--command-timeout=1s"])
                    .args(["endpoint", "health"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            })
            .count()
            >= n
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.signal("KILL");
            let _ = c.wait();
        }
    }
}

/// A TCP proxy in front of the etcd members, for one node: `freeze` cuts
/// that node off from etcd (bytes stop flowing both ways, as in a network
/// partition, while its switch connections stay up); `thaw` heals it. A new
/// connection goes to the first member that accepts it.
pub struct EtcdProxy {
    /// The URL to give the node (`http://127.0.0.1:PORT`).
    pub url: String,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EtcdProxy {
    /// Listens on a free loopback port and forwards to `cluster`'s members.
    pub fn start(cluster: &EtcdCluster) -> Result<Self> {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let upstreams: Vec<String> = cluster
            .members
            .iter()
            .map(|m| m.client.trim_start_matches("http://").to_string())
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (fz, st) = (frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if fz.load(Ordering::Relaxed) {
                    // Partitioned: the connection is accepted and then
                    // hears nothing (dropped when the proxy stops).
                    let st2 = st.clone();
                    std::thread::spawn(move || {
                        let _keep = down;
                        while !st2.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    });
                    continue;
                }
                let up = upstreams.iter().find_map(|u| {
                    let addr = u.parse().ok()?;
                    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
                });
                let Some(up) = up else { continue };
                let _ = down.set_nonblocking(false);
                for (mut from, mut to) in [
                    (down.try_clone(), up.try_clone()),
                    (up.try_clone(), down.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    let (fz, st) = (fz.clone(), st.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buf = vec![0u8; 64 * 1024];
                        while !st.load(Ordering::Relaxed) {
                            if fz.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(EtcdProxy { url, frozen, stop })
    }

    /// Cuts the node off from etcd.
    pub fn freeze(&self) {
        self.frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Heals the partition.
    pub fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for EtcdProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
