//! OVS-queue reservations survive neither a lost OVSDB connection nor a
//! controller crash: the orchestrator reserves a queue on a PRIVATE Open
//! vSwitch (its own `ovsdb-server` and `ovs-vswitchd` in a namespace)
//! through a unix-socket proxy the test controls. The proxy lets the
//! reservation's transaction reach the server (it commits), then cuts the
//! connection before the reply and refuses new connections: the OVSDB is
//! "down" with a Shoal QoS in it. The orchestrator is then dropped without
//! any cleanup (what `kill -9` leaves: the knowledge store on disk and the
//! rows in OVSDB), the proxy lets connections through again, and a new
//! orchestrator is started on the same store. It must remove every
//! Shoal-marked QoS and Queue row and close every reservation row of the
//! store, and record the migration as failed.
//!
//! ```text
//!   switch 0xa1 --port 2 "srcr-p2"-- switch 0xb1     (scripted topology)
//!   h1 (bridge 0xa1, VM v1)          h2 (bridge 0xb1)
//!   the queue goes on srcr-p2, a port of the private OVS's bridge srcr-br
//! ```

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ofp::{Message, PortDesc, SwitchFeatures};
use shoal_common::proto::{
    self, BackendKind, CommandStatus, HostMetrics, Registration, Report, VmBackendSpec, VmInventory,
};
use shoal_controller::config::Config;
use shoal_controller::execute::handles::{
    BoxFuture, Handles, HostdClient, HostdError, SwitchLink, Switches,
};
use shoal_controller::execute::orchestrator::{
    MigState, MigrationRequest, OrchConfig, Orchestrator,
};
use shoal_controller::knowledge::clock::SystemClock;
use shoal_controller::knowledge::state::Knowledge;
use shoal_controller::knowledge::store::{SqliteStore, Store};
use shoal_controller::monitor::openflow::OfError;
use shoal_controller::monitor::topology::PortRef;
use support::{e2e_lock, is_root, PrivateOvs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const A: u64 = 0xa1;
const B: u64 = 0xb1;
const NAME: &str = "srcr";
const PORT: &str = "srcr-p2";

/// Proxy modes.
const PASS: u8 = 0;
/// Pass, but cut the connection that carries a reservation right after
/// the server answered it (the answer is not passed on); then `DOWN`.
const CUT_RESERVE: u8 = 1;
/// Refuse every connection.
const DOWN: u8 = 2;

/// A unix-socket proxy in front of the private `ovsdb-server`.
async fn proxy(listener: UnixListener, server: PathBuf, mode: Arc<AtomicU8>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        if mode.load(Ordering::SeqCst) == DOWN {
            drop(client);
            continue;
        }
        let Ok(upstream) = UnixStream::connect(&server).await else {
            continue;
        };
        tokio::spawn(pipe(client, upstream, mode.clone()));
    }
}

async fn pipe(mut client: UnixStream, mut server: UnixStream, mode: Arc<AtomicU8>) {
    let mut cb = vec![0u8; 64 * 1024];
    let mut sb = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut cb) => {
                let Ok(n) = r else { return };
                if n == 0 || server.write_all(&cb[..n]).await.is_err() {
                    return;
                }
                let text = String::from_utf8_lossy(&cb[..n]);
                if mode.load(Ordering::SeqCst) == CUT_RESERVE && text.contains("shoal: reserve") {
                    // Let the server commit and answer, then "die".
                    let _ = tokio::time::timeout(Duration::from_secs(5), server.read(&mut sb)).await;
                    mode.store(DOWN, Ordering::SeqCst);
                    return;
                }
            }
            r = server.read(&mut sb) => {
                let Ok(n) = r else { return };
                if n == 0 || client.write_all(&sb[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Switches that take every message (the OVS queue is what is tested).
struct AcceptAll;

struct AcceptLink;

impl SwitchLink for AcceptLink {
    fn send(&self, _msg: Message) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(async { Ok(()) })
    }
    fn send_batch(&self, _msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(async { Ok(()) })
    }
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Switches for AcceptAll {
    fn switch(&self, _dpid: u64) -> Option<Box<dyn SwitchLink>> {
        Some(Box::new(AcceptLink))
    }
}

/// Host daemons that take every command (none is expected here).
#[derive(Default)]
struct Hostds(std::sync::Mutex<Vec<String>>);

impl HostdClient for Hostds {
    fn put_command<'a>(
        &'a self,
        _api: &'a str,
        id: &'a str,
        _cmd: &'a proto::Command,
    ) -> BoxFuture<'a, Result<(), HostdError>> {
        Box::pin(async move {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id.to_string());
            Ok(())
        })
    }
    fn command_status<'a>(
        &'a self,
        _api: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
        Box::pin(async { Ok(None) })
    }
}

fn port_desc(n: u32, name: &str) -> PortDesc {
    PortDesc {
        port_no: n,
        hw_addr: ofp::MacAddr([2, 0x5c, 0, 0, 0, n as u8]),
        name: name.into(),
        config: 0,
        state: 0,
        curr: 0,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 100_000,
        max_speed: 100_000,
    }
}

fn vm_inventory() -> VmInventory {
    VmInventory {
        environment: None,
        environment_head: false,
        name: "v1".into(),
        mac: "02:5c:00:00:01:01".into(),
        ip: None,
        vcpus: 1,
        memory_mb: 16,
        max_memory_mb: 32,
        spec: VmBackendSpec::Netns {
            namespace: "v1".into(),
            iface: "eth0".into(),
            port: "v1-p".into(),
            vf_iface: None,
            vf_port: None,
            scenario: None,
            scenario_epoch_unix_ms: None,
        },
    }
}

fn registration(id: &str, dpid: u64, dom0: &str, vms: Vec<VmInventory>) -> Registration {
    Registration {
        domain: None,
        host_id: id.into(),
        api_url: format!("http://127.0.0.1:1/{id}"),
        dom0_addr: dom0.into(),
        cores: 4,
        memory_mb: 4096,
        nic: "eth0".into(),
        nic_bps: 100_000_000,
        vf_count: 0,
        bridge: Some(proto::BridgeAttachment {
            name: format!("br-{id}"),
            datapath_id: dpid,
        }),
        interval_s: 10.0,
        vms,
        hostd_version: "test".into(),
    }
}

fn report() -> Report {
    Report {
        host_id: "h1".into(),
        seq: 1,
        at_unix_ms: 10_000,
        interval_s: 10.0,
        host: HostMetrics::default(),
        vms: vec![proto::VmMetrics {
            name: "v1".into(),
            backend: BackendKind::Netns,
            state: proto::VmState::Running,
            cpu_cores: 0.1,
            cpu_util: 0.1,
            gotten_ms: None,
            wait_ms: None,
            blocked_ms: None,
            memory_mb: 16,
            max_memory_mb: 32,
            used_memory_mb: 10,
            tx_bytes_per_s: 1.0,
            rx_bytes_per_s: 1.0,
            tx_packets_per_s: 1.0,
            rx_packets_per_s: 1.0,
            dirty_rate_mbps: Some(0.5),
            vf_attached: false,
        }],
        events: vec![],
    }
}

/// A controller's knowledge: the two scripted switches with their link,
/// the two hosts and the VM.
fn knowledge(
    settings: &shoal_controller::config::Settings,
    store: Arc<dyn Store>,
) -> Arc<Knowledge> {
    let k = Arc::new(Knowledge::new(
        &settings.knowledge_config(),
        settings.hypervisors.clone(),
        Some(store),
    ));
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:6653".parse().expect("addr");
    {
        let mut t = k.topo.write().expect("topology");
        for (dpid, ports) in [
            (A, vec![port_desc(1, "srcr-a1"), port_desc(2, PORT)]),
            (B, vec![port_desc(1, "srcr-b1"), port_desc(2, "srcr-b2")]),
        ] {
            let f = SwitchFeatures {
                datapath_id: dpid,
                n_buffers: 0,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: 0,
            };
            // Connected a while ago: settled, so a migration may start at
            // once (the orchestrator waits for a just-connected bridge).
            let since = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            t.switch_connected(dpid, dpid, peer, f, ports, since);
        }
        let (a2, b1) = (PortRef { dpid: A, port: 2 }, PortRef { dpid: B, port: 1 });
        t.lldp_seen(a2, b1, now);
        t.lldp_seen(b1, a2, now);
        assert_eq!(
            t.path(A, B),
            Some(vec![(A, Some(2)), (B, None)]),
            "the scripted path"
        );
    }
    {
        let mut h = k.hosts_write().expect("hosts");
        h.register(
            "h1",
            registration("h1", A, "10.92.0.1", vec![vm_inventory()]),
            0,
        )
        .expect("h1");
        h.register("h2", registration("h2", B, "10.92.0.2", vec![]), 0)
            .expect("h2");
        h.report("h1", report(), 1).expect("report");
    }
    k
}

/// The Shoal-marked rows (`external_ids:shoal-migration`) of `table` in
/// the private OVS.
fn marked(ovs: &PrivateOvs, table: &str) -> Vec<String> {
    let out = ovs
        .ovs()
        .run(
            "ovs-vsctl",
            &["--no-wait", "--columns=_uuid,external_ids", "list", table],
        )
        .unwrap_or_else(|e| panic!("ovs-vsctl list {table}: {e}"));
    out.split("\n\n")
        .filter(|row| row.contains("shoal-migration"))
        .map(|row| row.trim().to_string())
        .collect()
}

async fn orchestrator(
    settings: &shoal_controller::config::Settings,
    db: &Path,
    hostds: Arc<Hostds>,
) -> (Arc<Knowledge>, Arc<dyn Store>, Arc<Orchestrator>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).expect("store"));
    let k = knowledge(settings, store.clone());
    let orch = Orchestrator::with_handles(
        OrchConfig::from_settings(settings),
        Handles {
            fabric: k.clone(),
            switches: Arc::new(AcceptAll),
            hostd: hostds,
            store: Some(store.clone()),
            clock: Arc::new(SystemClock),
        },
    )
    .await;
    orch.restore();
    (k, store, orch)
}

/// The test bed: the private OVS with its bridge and port, a directory for
/// the store and the proxy socket, the settings (queue reservations
/// through the proxy).
struct Bed {
    ovs: PrivateOvs,
    dir: support::TempDir,
    server: PathBuf,
    sock: PathBuf,
    db: PathBuf,
    settings: shoal_controller::config::Settings,
}

fn bed() -> Bed {
    assert!(is_root(), "needs root (namespaces, OVS)");
    let ovs = PrivateOvs::start(NAME, 23).expect("private OVS");
    ovs.ovs()
        .run(
            "ovs-vsctl",
            &[
                "add-br",
                "srcr-br",
                "--",
                "set",
                "bridge",
                "srcr-br",
                "datapath_type=netdev",
                "--",
                "add-port",
                "srcr-br",
                PORT,
                "--",
                "set",
                "interface",
                PORT,
                "type=internal",
            ],
        )
        .expect("bridge and port");
    let server = std::env::temp_dir()
        .join(format!("shoal-ovs-{NAME}"))
        .join("db.sock");
    let dir = support::TempDir::new("srcr").expect("dir");
    let sock = dir.path().join("ovsdb-proxy.sock");
    let db = dir.path().join("shoal.db");
    let settings = Config::from_toml(&format!(
        "[execute]\nreservation = \"queue\"\novsdb = \"unix:{}\"\n",
        sock.display()
    ))
    .and_then(|c| c.validate())
    .expect("settings");

    Bed {
        ovs,
        dir,
        server,
        sock,
        db,
        settings,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn request() -> MigrationRequest {
    MigrationRequest {
        vm: "v1".into(),
        destination: "h2".into(),
        deadline_s: Some(60.0),
        reserve: Some(true),
    }
}

#[test]
fn ovsdb_connection_killed_mid_reservation_then_restart_leaves_nothing() {
    let _lock = e2e_lock().expect("e2e lock");
    let Bed {
        ovs,
        dir: _dir,
        server,
        sock,
        db,
        settings,
    } = bed();
    runtime().block_on(async {
        let mode = Arc::new(AtomicU8::new(CUT_RESERVE));
        let listener = UnixListener::bind(&sock).expect("proxy socket");
        tokio::spawn(proxy(listener, server.clone(), mode.clone()));

        // 1. The reservation commits, its answer is lost, OVSDB is down.
        let hostds = Arc::new(Hostds::default());
        let (k, store, orch) = orchestrator(&settings, &db, hostds.clone()).await;
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        orch.tick().await;
        assert_eq!(
            mode.load(Ordering::SeqCst),
            DOWN,
            "the proxy cut the reservation"
        );
        let first = orch.get(&m.id).expect("known");
        assert_ne!(first.state, MigState::Running, "{first:?}");
        let left = marked(&ovs, "qos");
        eprintln!(
            "before the crash: migration {} ({:?}); Shoal QoS rows in OVSDB: {}; live records: {}",
            first.state.as_str(),
            first.error,
            left.len(),
            store.live_reservations(None).map(|v| v.len()).unwrap_or(0)
        );
        assert!(!left.is_empty(), "the reservation committed before the cut");
        assert!(
            hostds
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "no host commanded"
        );
        // 2. kill -9: nothing more runs; what is left is the store on
        // disk and the rows in OVSDB.
        drop((orch, k, store));

        // 3. OVSDB back, the controller restarts on the same store.
        mode.store(PASS, Ordering::SeqCst);
        let (k, store, orch) = orchestrator(&settings, &db, hostds.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            orch.tick().await;
            let qos = marked(&ovs, "qos");
            let queues = marked(&ovs, "queue");
            let live = store.live_reservations(None).expect("store");
            if qos.is_empty() && queues.is_empty() && live.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after the restart Shoal-marked rows or reservation records remain:\n\
                 QoS: {qos:?}\nQueue: {queues:?}\nstore: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let after = orch.get(&m.id).expect("known after the restart");
        eprintln!(
            "after the restart: migration {} ({:?}); nothing left",
            after.state.as_str(),
            after.error
        );
        assert!(
            matches!(after.state, MigState::Failed | MigState::Queued),
            "{after:?}"
        );
        assert!(
            hostds
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "no host commanded"
        );
        drop((orch, k));
    });
}

/// The OVSDB connection dies mid-reservation and stays down a while: the
/// reservation's record is kept (not dropped) and retried; once OVSDB
/// answers again the orchestrator connects again by itself and removes
/// the rows, without a restart.
#[test]
fn ovsdb_connection_killed_mid_reservation_is_retried_after_reconnecting() {
    let _lock = e2e_lock().expect("e2e lock");
    let Bed {
        ovs,
        dir: _dir,
        server,
        sock,
        db,
        settings,
    } = bed();
    runtime().block_on(async {
        let mode = Arc::new(AtomicU8::new(CUT_RESERVE));
        let listener = UnixListener::bind(&sock).expect("proxy socket");
        tokio::spawn(proxy(listener, server.clone(), mode.clone()));
        let hostds = Arc::new(Hostds::default());
        let (k, store, orch) = orchestrator(&settings, &db, hostds.clone()).await;
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        orch.tick().await;
        assert_eq!(
            mode.load(Ordering::SeqCst),
            DOWN,
            "the proxy cut the reservation"
        );
        // OVSDB stays unreachable for a while: nothing can be removed,
        // and the record is not given up.
        for _ in 0..5 {
            orch.tick().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !marked(&ovs, "qos").is_empty(),
            "rows left while OVSDB is down"
        );
        let live = store.live_reservations(None).expect("store");
        assert!(
            live.iter()
                .any(|r| r.kind == "queue" && r.migration == m.id),
            "the reservation's record was given up while OVSDB was down: {live:?}"
        );
        // OVSDB is back: the same orchestrator connects again and retries.
        mode.store(PASS, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            orch.tick().await;
            let qos = marked(&ovs, "qos");
            let queues = marked(&ovs, "queue");
            let live = store.live_reservations(None).expect("store");
            if qos.is_empty() && queues.is_empty() && live.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "OVSDB answers again, but Shoal-marked rows or records remain:\n\
                 QoS: {qos:?}\nQueue: {queues:?}\nstore: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let after = orch.get(&m.id).expect("known");
        assert_eq!(after.state, MigState::Failed, "{after:?}");
        assert!(
            hostds
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "no host commanded"
        );
        drop((orch, k));
    });
}
