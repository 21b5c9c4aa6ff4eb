//! Testbed backend: a network namespace standing for a VM.
//!
//! Migration sends the VMPatrol pre-copy stream for real over TCP from the
//! source dom0 to the destination dom0 (round `i` carries `M·(R/L)^i` MiB,
//! paced at `L`), then the destination moves the VM's port(s) from the
//! source bridge to its own bridge in one OVSDB transaction and sends a
//! gratuitous ARP from the VM's namespace.
//!
//! Stream protocol: the source sends one JSON line [`StreamHeader`], then
//! exactly `total_bytes` bytes, then half-closes. The destination answers
//! one JSON line [`StreamAck`] after the switch-over (or on failure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_common::proto::{
    BackendKind, MigrationProgress, MigrationResult, MigrationSpec, VmBackendSpec, VmInventory,
    VmState,
};
use shoal_common::vmpatrol::{predict, ModelParams, DEFAULT_MIN_PROGRESS_MB};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::backend::{Backend, BoxFuture};
use crate::config::Config;
use crate::plan::VmPlan;
use crate::scenario::{Sample, Scenario};
use crate::state::{lock, Hostd, Vm};
use crate::sys::run_cmd;
use crate::vm_runtime::VmRuntime;

const MIB: f64 = 1048576.0;
const CHUNK: usize = 64 * 1024;
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Runtime of a namespace VM: its scenario.
pub struct NetnsRuntime {
    /// The scenario, if one is configured.
    pub scenario: Option<Scenario>,
    /// Unix ms of the scenario's `t = 0`.
    pub epoch_unix_ms: u64,
}

impl VmRuntime for NetnsRuntime {
    fn kind(&self) -> BackendKind {
        BackendKind::Netns
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn fill_inventory(&self, inv: &mut VmInventory) {
        if let VmBackendSpec::Netns {
            scenario_epoch_unix_ms,
            ..
        } = &mut inv.spec
        {
            *scenario_epoch_unix_ms = Some(self.epoch_unix_ms);
        }
    }
}

/// The namespace backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsBackend;

impl Backend for NetnsBackend {
    fn start<'a>(
        &'a self,
        _cfg: &'a Config,
        inv: &'a VmInventory,
        plan: VmPlan,
    ) -> BoxFuture<'a, Result<Box<dyn VmRuntime>, String>> {
        Box::pin(async move {
            NetnsRuntime::from_plan(inv, plan).map(|r| Box::new(r) as Box<dyn VmRuntime>)
        })
    }

    fn prepare_incoming<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        inv: &'a VmInventory,
        plan: VmPlan,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>> {
        Box::pin(async move {
            let rt = NetnsRuntime::from_plan(inv, plan)?;
            prepare_incoming(hostd, inv, rt, spec, cmd_id).await
        })
    }

    fn migrate_out<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        vm: &'a Arc<Vm>,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>> {
        Box::pin(migrate_out(hostd, vm, spec, cmd_id))
    }

    fn resize_memory<'a>(
        &'a self,
        _vm: &'a Vm,
        target_mb: u64,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { Ok(target_mb) })
    }

    fn vf_attach<'a>(
        &'a self,
        _hostd: &'a Hostd,
        vm: &'a Vm,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match vm.snapshot().inv.spec {
                VmBackendSpec::Netns {
                    namespace,
                    vf_iface: Some(vf),
                    ..
                } => {
                    set_link(&namespace, &vf, true).await?;
                    Ok(vf)
                }
                _ => Err("VM has no VF stand-in configured".into()),
            }
        })
    }

    fn vf_detach<'a>(&'a self, vm: &'a Vm, device: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match vm.snapshot().inv.spec {
                VmBackendSpec::Netns { namespace, .. } => set_link(&namespace, device, false).await,
                _ => Err("VM has no VF stand-in configured".into()),
            }
        })
    }
}

impl NetnsRuntime {
    /// A runtime with the given scenario and epoch.
    pub fn new(scenario: Option<Scenario>, epoch_unix_ms: u64) -> Self {
        NetnsRuntime {
            scenario,
            epoch_unix_ms,
        }
    }

    /// The runtime of `inv` from its checked plan (scenario read by
    /// [`crate::plan`]); the epoch is the one in `inv`, else now.
    pub fn from_plan(inv: &VmInventory, plan: VmPlan) -> Result<Self, String> {
        let (
            VmBackendSpec::Netns {
                scenario_epoch_unix_ms,
                ..
            },
            VmPlan::Netns { scenario },
        ) = (&inv.spec, plan)
        else {
            return Err(format!("internal: VM {} is not a netns VM", inv.name));
        };
        Ok(NetnsRuntime::new(
            scenario,
            scenario_epoch_unix_ms.unwrap_or_else(crate::sys::unix_ms),
        ))
    }

    /// Scenario values now.
    pub fn sample_now(&self) -> Option<Sample> {
        let t = crate::sys::unix_ms().saturating_sub(self.epoch_unix_ms) as f64 / 1000.0;
        self.scenario.as_ref().map(|s| s.at(t))
    }
}

/// First line of the pre-copy stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// VM name.
    pub vm: String,
    /// Bytes that follow.
    pub total_bytes: u64,
    /// The VM's memory `M`, bytes.
    pub memory_bytes: u64,
    /// Rounds (pre-copy rounds + the stop-and-copy).
    pub rounds: u32,
}

/// The destination's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAck {
    /// True when the VM now runs on the destination.
    pub ok: bool,
    /// Bytes received.
    pub received: u64,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Round sizes in bytes: `M·(R/L)^i` MiB for `i = 0..=n` (VMPatrol model).
pub fn round_bytes(
    memory_mb: f64,
    dirty_mbps: f64,
    bandwidth_mbps: f64,
    downtime_s: f64,
) -> Result<Vec<u64>, String> {
    let params = ModelParams {
        memory_mb,
        dirty_mbps,
        downtime_goal_s: downtime_s,
        min_progress_mb: DEFAULT_MIN_PROGRESS_MB,
    };
    let p = predict(&params, bandwidth_mbps).map_err(|e| e.to_string())?;
    Ok((0..=p.rounds)
        .map(|i| (p.round_mb(&params, i) * MIB).round() as u64)
        .filter(|b| *b > 0)
        .collect())
}

/// Source side. On error the VM keeps running here.
pub async fn migrate_out(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    spec: &MigrationSpec,
    cmd_id: &str,
) -> Result<MigrationResult, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.deadline_s);
    let inv = vm.snapshot().inv;
    let Some(rt) = vm.runtime.downcast::<NetnsRuntime>() else {
        return Err("internal: not a netns VM".into());
    };
    let dirty = rt.sample_now().map(|s| s.dirty_mbps).unwrap_or(0.0);
    let l_mbps = spec.max_bandwidth_bytes_per_s as f64 / MIB;
    let rounds = round_bytes(
        inv.memory_mb as f64,
        dirty,
        l_mbps,
        spec.downtime_limit_ms as f64 / 1000.0,
    )?;
    let total: u64 = rounds.iter().sum();
    tracing::info!(vm = %vm.name, dest = %spec.destination_addr, rounds = rounds.len(), total, dirty, l_mbps, "pre-copy stream starts");

    // The destination may still be setting up its listener: retry a
    // refused connection for up to 10 s (within the deadline).
    let connect_until = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let mut conn = loop {
        let connect = TcpStream::connect(spec.destination_addr.as_str());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => break c,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < connect_until =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "connect {}: {e}; VM keeps running on the source",
                    spec.destination_addr
                ))
            }
            Err(_) => {
                return Err(format!(
                    "connect {}: timed out; VM keeps running on the source",
                    spec.destination_addr
                ))
            }
        }
    };
    let _ = conn.set_nodelay(true);
    let header = StreamHeader {
        vm: vm.name.clone(),
        total_bytes: total,
        memory_bytes: inv.memory_mb << 20,
        rounds: rounds.len() as u32,
    };
    let mut line = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    line.push(b'\n');
    conn.write_all(&line)
        .await
        .map_err(|e| format!("send header: {e}"))?;

    let chunk = vec![0xA5u8; CHUNK];
    let stream_start = Instant::now();
    let rate = spec.max_bandwidth_bytes_per_s.max(1) as f64;
    let mut sent: u64 = 0;
    let mut last_progress = Instant::now();
    let mut last_round_start = stream_start;
    let n = rounds.len();
    for (i, bytes) in rounds.iter().enumerate() {
        last_round_start = Instant::now();
        let phase = if i + 1 == n {
            "stop_and_copy"
        } else {
            "precopy"
        };
        let mut left = *bytes;
        while left > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "deadline of {} s exceeded after {sent} of {total} bytes; stream aborted, VM keeps running on the source",
                    spec.deadline_s
                ));
            }
            let k = left.min(CHUNK as u64) as usize;
            conn.write_all(chunk.get(..k).unwrap_or(&chunk))
                .await
                .map_err(|e| format!("pre-copy stream broke after {sent} bytes: {e}; VM keeps running on the source"))?;
            sent += k as u64;
            left -= k as u64;
            // Pace: never ahead of sent / L.
            let due = stream_start + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            if last_progress.elapsed() >= Duration::from_millis(200) {
                last_progress = Instant::now();
                let p = MigrationProgress {
                    phase: phase.into(),
                    transferred_bytes: sent,
                    remaining_bytes: left,
                    total_bytes: inv.memory_mb << 20,
                    dirty_rate_bytes_per_s: dirty * MIB,
                    iterations: i as u64 + 1,
                    elapsed_ms: start.elapsed().as_millis() as u64,
                };
                hostd.update_command(cmd_id, |s| s.progress = Some(p));
            }
        }
    }
    conn.shutdown()
        .await
        .map_err(|e| format!("closing the stream: {e}"))?;
    hostd.update_command(cmd_id, |s| {
        if let Some(p) = &mut s.progress {
            p.phase = "switchover".into();
            p.transferred_bytes = sent;
            p.remaining_bytes = 0;
        }
    });
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(10));
    let mut rd = BufReader::new(conn);
    let mut ack_line = String::new();
    tokio::time::timeout(wait, (&mut rd).take(4096).read_line(&mut ack_line))
        .await
        .map_err(|_| {
            "no answer from the destination after the stream; VM keeps running on the source"
                .to_string()
        })?
        .map_err(|e| format!("reading the destination's answer: {e}"))?;
    let ack: StreamAck = serde_json::from_str(ack_line.trim()).map_err(|e| {
        format!(
            "bad answer from the destination ({e}): {:?}",
            ack_line.trim()
        )
    })?;
    if !ack.ok {
        return Err(format!(
            "destination refused: {}; VM keeps running on the source",
            ack.error.unwrap_or_default()
        ));
    }
    Ok(MigrationResult {
        total_time_ms: start.elapsed().as_millis() as u64,
        downtime_ms: last_round_start.elapsed().as_millis() as u64,
        transferred_bytes: sent,
        memory_bytes: inv.memory_mb << 20,
        max_dirty_rate_bytes_per_s: dirty * MIB,
        // Until the destination had everything (the answer comes after the
        // last byte arrived), not until the last write: socket buffers hide
        // the tail of the stream from the writer.
        achieved_bandwidth_bytes_per_s: sent as f64
            / stream_start.elapsed().as_secs_f64().max(1e-3),
        iterations: n as u64,
    })
}

/// Moves `ports` onto `bridge` (from wherever they are) in one transaction.
pub async fn move_ports(bridge: &str, ports: &[&str]) -> Result<(), String> {
    let mut args: Vec<String> = Vec::new();
    for p in ports {
        if !args.is_empty() {
            args.push("--".into());
        }
        args.extend(["--if-exists", "del-port", p, "--", "add-port", bridge, p].map(String::from));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cmd("ovs-vsctl", &refs, CMD_TIMEOUT).await.map(|_| ())
}

/// Sends a gratuitous ARP for `ip` (MAC `mac`) out of `iface` inside
/// namespace `ns`: a raw frame, so that the switches relearn the VM at once.
pub async fn gratuitous_arp(ns: &str, iface: &str, mac: &str, ip: &str) -> Result<(), String> {
    let mac = crate::sys::parse_mac(mac).ok_or_else(|| format!("bad MAC {mac}"))?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("bad IP {ip}: {e}"))?;
    crate::sys::send_garp(ns, iface, mac, ip)
        .await
        .map_err(|e| format!("gratuitous ARP from {ns}/{iface}: {e}"))
}

/// The `ip` arguments that set `iface` in namespace `ns` up or down. The
/// names were checked ([`crate::config::validate_vm`]: no leading `-`, no
/// spaces); `dev` makes `iface` a device name even when it reads like a
/// keyword (`up`, `name`, ...).
pub fn set_link_args<'a>(ns: &'a str, iface: &'a str, up: bool) -> [&'a str; 7] {
    [
        "-n",
        ns,
        "link",
        "set",
        "dev",
        iface,
        if up { "up" } else { "down" },
    ]
}

/// Sets an interface inside a namespace up or down (the VF stand-in).
pub async fn set_link(ns: &str, iface: &str, up: bool) -> Result<(), String> {
    run_cmd("ip", &set_link_args(ns, iface, up), CMD_TIMEOUT)
        .await
        .map(|_| ())
}

async fn read_header(rd: &mut BufReader<TcpStream>) -> Result<StreamHeader, String> {
    let mut line = String::new();
    (&mut *rd)
        .take(4096)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("reading the stream header: {e}"))?;
    serde_json::from_str(line.trim()).map_err(|e| format!("bad stream header ({e})"))
}

/// Destination side: receive the stream, switch the port(s) over, send the
/// gratuitous ARP, answer the source. `rt` is the VM's runtime, built from
/// its checked plan.
pub async fn prepare_incoming(
    hostd: &Arc<Hostd>,
    inv: &VmInventory,
    rt: NetnsRuntime,
    spec: &MigrationSpec,
    cmd_id: &str,
) -> Result<MigrationResult, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.deadline_s);
    let VmBackendSpec::Netns {
        namespace,
        iface,
        port,
        vf_port,
        ..
    } = &inv.spec
    else {
        return Err("internal: not a netns VM".into());
    };
    let bridge = hostd
        .cfg
        .bridge
        .clone()
        .ok_or_else(|| "this host has no bridge configured".to_string())?;
    let listener = TcpListener::bind(spec.destination_addr.as_str())
        .await
        .map_err(|e| format!("listen on {}: {e}", spec.destination_addr))?;
    let vm = Arc::new(Vm::new(inv.clone(), Box::new(rt), VmState::Incoming));
    {
        let mut s = lock(&vm.shared);
        s.busy = Some(cmd_id.to_string());
        s.migrated_in = true;
    }
    hostd.add_vm(vm.clone());
    hostd.update_command(cmd_id, |s| {
        s.progress = Some(MigrationProgress {
            phase: "waiting".into(),
            ..Default::default()
        })
    });

    let left = |d: Instant| d.saturating_duration_since(Instant::now());
    let outcome: Result<(u64, u64, Duration, BufReader<TcpStream>), String> = async {
        let (sock, peer) = tokio::time::timeout(left(deadline), listener.accept())
            .await
            .map_err(|_| format!("no incoming stream within {} s", spec.deadline_s))?
            .map_err(|e| format!("accept: {e}"))?;
        tracing::info!(vm = %inv.name, %peer, "pre-copy stream arriving");
        let mut rd = BufReader::new(sock);
        let header = tokio::time::timeout(left(deadline), read_header(&mut rd))
            .await
            .map_err(|_| "stream header timed out".to_string())??;
        if header.vm != inv.name {
            return Err(format!(
                "stream is for VM {}, expected {}",
                header.vm, inv.name
            ));
        }
        let mut buf = vec![0u8; CHUNK];
        let mut got: u64 = 0;
        let mut last_progress = Instant::now();
        let recv_start = Instant::now();
        while got < header.total_bytes {
            let n = tokio::time::timeout(left(deadline), rd.read(&mut buf))
                .await
                .map_err(|_| format!("deadline: received {got} of {} bytes", header.total_bytes))?
                .map_err(|e| format!("stream read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "stream ended after {got} of {} bytes",
                    header.total_bytes
                ));
            }
            got += n as u64;
            if last_progress.elapsed() >= Duration::from_millis(200) {
                last_progress = Instant::now();
                let p = MigrationProgress {
                    phase: "receiving".into(),
                    transferred_bytes: got,
                    remaining_bytes: header.total_bytes.saturating_sub(got),
                    total_bytes: header.memory_bytes,
                    elapsed_ms: start.elapsed().as_millis() as u64,
                    ..Default::default()
                };
                hostd.update_command(cmd_id, |s| s.progress = Some(p));
            }
        }
        Ok((got, header.memory_bytes, recv_start.elapsed(), rd))
    }
    .await;

    let (got, memory_bytes, recv_time, mut rd) = match outcome {
        Ok(v) => v,
        Err(e) => {
            hostd.remove_vm(&inv.name);
            return Err(e);
        }
    };
    // Switch-over: the port(s) move here, then the VM announces itself.
    let switch_start = Instant::now();
    let mut ports = vec![port.as_str()];
    if let Some(p) = vf_port {
        ports.push(p.as_str());
    }
    let switched = async {
        move_ports(&bridge, &ports).await?;
        if let Some(ip) = &inv.ip {
            if let Err(e) = gratuitous_arp(namespace, iface, &inv.mac, ip).await {
                // The port moved: the VM is here. A missing GARP only delays
                // relearning until the VM's next frame.
                tracing::warn!(vm = %inv.name, error = %e, "gratuitous ARP failed");
            }
        }
        Ok::<(), String>(())
    }
    .await;
    let ack = match &switched {
        Ok(()) => StreamAck {
            ok: true,
            received: got,
            error: None,
        },
        Err(e) => StreamAck {
            ok: false,
            received: got,
            error: Some(e.clone()),
        },
    };
    let mut line = serde_json::to_vec(&ack).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = rd.get_mut().write_all(&line).await {
        tracing::warn!(vm = %inv.name, error = %e, "answering the source");
    }
    let _ = rd.get_mut().shutdown().await;
    if let Err(e) = switched {
        hostd.remove_vm(&inv.name);
        return Err(format!("switch-over failed: {e}"));
    }
    lock(&vm.shared).state = VmState::Running;
    hostd.inventory_changed();
    tracing::info!(vm = %inv.name, bytes = got, "VM switched over to this host");
    Ok(MigrationResult {
        total_time_ms: start.elapsed().as_millis() as u64,
        downtime_ms: switch_start.elapsed().as_millis() as u64,
        transferred_bytes: got,
        memory_bytes,
        max_dirty_rate_bytes_per_s: 0.0,
        achieved_bandwidth_bytes_per_s: got as f64 / recv_time.as_secs_f64().max(1e-3),
        iterations: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_follow_the_model() {
        // M = 64 MiB, R = 4 MiB/s, L = 16 MiB/s, T = 0.3 s: R/L = 0.25,
        // T·L/M = 0.075 → n = ⌈log_0.25 0.075⌉ = ⌈1.87⌉ = 2;
        // X·R/(M(L−R)) = 4/768 → ⌈3.78⌉ = 4; n = 2: 64, 16, 4 MiB.
        let r = round_bytes(64.0, 4.0, 16.0, 0.3).unwrap();
        assert_eq!(r, vec![64 << 20, 16 << 20, 4 << 20]);
        // R = 0: one copy.
        assert_eq!(round_bytes(64.0, 0.0, 16.0, 0.3).unwrap(), vec![64 << 20]);
        // L <= R never converges.
        assert!(round_bytes(64.0, 20.0, 16.0, 0.3).is_err());
    }

    #[test]
    fn ip_takes_names_as_device_names() {
        assert_eq!(
            set_link_args("ns1", "up", true),
            ["-n", "ns1", "link", "set", "dev", "up", "up"]
        );
        assert_eq!(set_link_args("ns1", "vf0", false)[6], "down");
    }

    #[test]
    fn header_and_ack_json() {
        let h = StreamHeader {
            vm: "v".into(),
            total_bytes: 10,
            memory_bytes: 8,
            rounds: 2,
        };
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<StreamHeader>(&s).unwrap(), h);
        let a: StreamAck =
            serde_json::from_str(r#"{"ok":false,"received":3,"error":"x"}"#).unwrap();
        assert!(!a.ok);
    }
}
