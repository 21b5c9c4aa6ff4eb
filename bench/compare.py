#!/usr/bin/python3
"""Shoal vs. Faucet side by side on the ofswarm switch emulator.

Called by bench/compare.sh (which makes the virtualenv and the release
build); usable alone:

    bench/compare.py --ofswarm target/release/ofswarm \
        --shoal target/release/shoal-controller --venv target/bench-venv \
        --work target/bench-compare --out docs/performance.md

For every measurement the controller is started afresh on free ports,
pinned to CPU 0 (ofswarm to CPU 1), ofswarm runs, the controller is
stopped, and ofswarm's --json is collected. Then docs/performance.md is
generated from the results. Only processes this script started are ever
signalled.
"""

import argparse
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# Faucet's default datapath cookie (faucet/dp.py); written into faucet.yaml
# and given to ofswarm as the cookie of its load PACKET_INs.
FAUCET_COOKIE = 1524372928
FAUCET_VLAN = 100
# Shoal's MAC-flood limits, lifted to their maxima (defaults 64, 8192, 65536).
SHOAL_MAX_MACS_PER_PORT = 1 << 20
SHOAL_MAX_ENDPOINTS = 1 << 24
SHOAL_MAX_PAIR_FLOWS = 1 << 24
# Pairs Shoal's traffic matrix tracks at most (default 65536), lifted for
# the statistics runs (1,000 switches × 1,000 pair flows).
SHOAL_MAX_MATRIX_PAIRS = 1 << 24
# Seconds of load and of warm-up of every ofswarm run.
DURATION = 10
WARMUP = 5
# Milliseconds between two switches' connections: os-ken (Faucet) listens
# with a backlog of 50 and loses some of 256 simultaneous connections
# (ofswarm does not reconnect); 256 switches connect over 5 s.
STAGGER_MS = 20
# Faucet configures a datapath in seconds (quadratic in its ports) and
# ignores PACKET_INs until it is running: its warm-up is longer, and the
# script checks (Prometheus dp_status) that every datapath was running
# before the load began.
FAUCET_WARMUP = 45
CONNECT_TIMEOUT = 90

CHILDREN = []  # every subprocess.Popen this script started


def die(msg):
    print(f"compare: error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg):
    print(f"compare: {msg}", flush=True)


def free_port():
    """A TCP port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def port_listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start(cmd, env=None, log_path=None, cpu=None):
    """Starts `cmd` in its own session (pinned to `cpu` with taskset)."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    p = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    CHILDREN.append(p)
    return p


def stop(p, grace=5.0):
    """SIGTERM to the process group of a child we started, then SIGKILL."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def stop_all(*_):
    for p in CHILDREN:
        stop(p, grace=2.0)


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def start_osken(binary, d, of_port, ssl_port, env, console):
    """Starts faucet or gauge (os-ken apps) on CPU 0 with our own os-ken
    config in `d` (pip as root writes one to /etc/faucet: never read)."""
    osken_conf = os.path.join(d, "osken.conf")
    with open(osken_conf, "w") as f:
        f.write("[DEFAULT]\necho_request_interval=3\nmaximum_unreplied_echo_requests=5\n")
    return start(
        [binary,
         "--ryu-config-file", osken_conf,
         "--ryu-ofp-listen-host", "127.0.0.1",
         "--ryu-ofp-tcp-listen-port", str(of_port),
         "--ryu-ofp-ssl-listen-port", str(ssl_port)],
        env=env, log_path=console, cpu=0)


def wait_listening(p, port, what, log_path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            tail = read_tail(log_path)
            die(f"{what} exited with status {p.returncode} before listening on "
                f"port {port}; last lines of {log_path}:\n{tail}")
        if port_listening(port):
            return
        time.sleep(0.2)
    tail = read_tail(log_path)
    die(f"{what} did not listen on port {port} within {timeout:.0f} s; "
        f"last lines of {log_path}:\n{tail}")


def read_tail(path, n=20):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(cannot read: {e})"


# ---------------------------------------------------------------- controllers


class Shoal:
    name = "Shoal"

    def __init__(self, binary, work):
        self.binary = binary
        self.work = work

    def start(self, tag, switches, hosts, monitor_interval=None):
        d = os.path.join(self.work, f"shoal-{tag}")
        os.makedirs(os.path.join(d, "hosts"), exist_ok=True)
        of_port, api_port = free_ports(2)
        token = os.path.join(d, "reader.token")
        with open(token, "w") as f:
            f.write("compare-reader-token-" + os.urandom(12).hex() + "\n")
        os.chmod(token, 0o600)
        cfg = os.path.join(d, "shoal.toml")
        with open(cfg, "w") as f:
            f.write(
                f'db = ":memory:"\n'
                f'log_filter = "warn"\n'
                f"[auth]\n"
                f'host_tokens_dir = "{os.path.join(d, "hosts")}"\n'
                f'operators = [ {{ name = "bench", role = "read", token_file = "{token}" }} ]\n'
                # MAC-flood limits lifted (as Faucet's max_hosts): fresh
                # sources are all new endpoints and new pairs.
                f"[forwarding]\n"
                f"max_macs_per_port = {SHOAL_MAX_MACS_PER_PORT}\n"
                f"max_endpoints = {SHOAL_MAX_ENDPOINTS}\n"
                f"max_pair_flows = {SHOAL_MAX_PAIR_FLOWS}\n"
            )
            if monitor_interval is not None:
                f.write(
                    f"[monitor]\n"
                    f"interval_s = {float(monitor_interval)}\n"
                    f"max_matrix_pairs = {SHOAL_MAX_MATRIX_PAIRS}\n"
                )
        self.log_path = os.path.join(d, "shoal.log")
        self.proc = start(
            [self.binary, "run", "--config", cfg,
             "--of-listen", f"127.0.0.1:{of_port}",
             "--api-listen", f"127.0.0.1:{api_port}"],
            log_path=self.log_path, cpu=0)
        wait_listening(self.proc, of_port, "shoal-controller", self.log_path)
        self.of_port = of_port
        self.api_port = api_port
        self.token = token
        self.config = cfg
        return of_port, []

    warmup = WARMUP

    def ready(self):
        """Datapaths ready, or None when ofswarm's handshake is enough."""
        return None

    def stop(self):
        stop(self.proc)


class Faucet:
    name = "Faucet"

    def __init__(self, venv, work):
        self.bin = os.path.join(venv, "bin", "faucet")
        self.venv_bin = os.path.join(venv, "bin")
        self.work = work

    def start(self, tag, switches, hosts):
        d = os.path.join(self.work, f"faucet-{tag}")
        os.makedirs(d, exist_ok=True)
        of_port, prom_port, ssl_port = free_ports(3)
        cfg = os.path.join(d, "faucet.yaml")
        write_faucet_yaml(cfg, switches, hosts)
        self.log_path = os.path.join(d, "faucet.log")
        self.console = os.path.join(d, "faucet.console")
        env = dict(os.environ)
        env.update({
            # faucet execs osken-manager from $PATH (the venv's).
            "PATH": self.venv_bin + ":" + env.get("PATH", "/usr/bin:/bin"),
            "FAUCET_CONFIG": cfg,
            "FAUCET_LOG": self.log_path,
            "FAUCET_EXCEPTION_LOG": os.path.join(d, "faucet_exception.log"),
            "FAUCET_PROMETHEUS_PORT": str(prom_port),
            "FAUCET_PROMETHEUS_ADDR": "127.0.0.1",
        })
        self.proc = start_osken(self.bin, d, of_port, ssl_port, env, self.console)
        wait_listening(self.proc, of_port, "faucet", self.console)
        self.dir = d
        self.prom_port = prom_port
        return of_port, ["--pin-cookie", str(FAUCET_COOKIE), "--pin-vlan", str(FAUCET_VLAN)]

    warmup = FAUCET_WARMUP

    def ready(self):
        """Datapaths Faucet reports running (Prometheus dp_status 1)."""
        try:
            # A long timeout: closing early breaks Faucet's write (a
            # BrokenPipe traceback in its console log).
            with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/metrics",
                                        timeout=30) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return 0
        return len(re.findall(r"^dp_status\{[^}]*\} 1\.0$", text, re.M))

    def stop(self):
        stop(self.proc)


def write_faucet_yaml(path, switches, hosts):
    """One Faucet datapath per emulated switch (dpid 1..S, ofswarm's
    default --dpid-base 1), host ports 1..H untagged in one VLAN; no
    stacking (grid switches are independent)."""
    lines = [
        "vlans:",
        f"  bench:",
        f"    vid: {FAUCET_VLAN}",
        "    max_hosts: 0",  # 0: no limit (fresh sources are all new hosts)
        "dps:",
    ]
    for i in range(switches):
        dpid = 1 + i
        lines += [
            f"  sw{dpid}:",
            f"    dp_id: {dpid}",
            "    hardware: Open vSwitch",
            f"    cookie: {FAUCET_COOKIE}",
            # Faucet's default ignores every 10th learning PACKET_IN of a
            # second; a window-based load would stall on those for 2 s.
            "    ignore_learn_ins: 0",
            "    interfaces:",
        ]
        for p in range(1, hosts + 1):
            lines += [
                f"      {p}:",
                f"        native_vlan: bench",
                "        max_hosts: 0",
            ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# -------------------------------------------------------------------- ofswarm


def run_ofswarm(ctl, ofswarm, port, switches, topo, mode, window, answer, fresh, extra,
                json_path, log_path):
    cmd = [ofswarm, "--controller", f"127.0.0.1:{port}", "--topo", topo,
           "--mode", mode, "--window", str(window), "--duration", str(DURATION),
           "--warmup", str(ctl.warmup), "--connect-stagger-ms", str(STAGGER_MS),
           "--connect-timeout", str(CONNECT_TIMEOUT), "--answer", answer]
    if fresh:
        cmd.append("--fresh-src")
    cmd += extra + ["--json", json_path]
    shown = "ofswarm " + " ".join(
        "127.0.0.1:PORT" if c == f"127.0.0.1:{port}" else c for c in cmd[1:]
    ).replace(f" --json {json_path}", " --json out.json")
    log(f"  {shown}")
    t0 = time.monotonic()
    p = start(cmd, log_path=log_path, cpu=1)
    # The load begins one second before ofswarm's first per-second line.
    ready_s = None
    while p.poll() is None and ctl.ready() is not None:
        started = load_started(log_path)
        n = ctl.ready()
        if n >= switches:
            # Polled each second: ready at most ~1 s into the load.
            ready_s = time.monotonic() - t0
            log(f"  {ctl.name}: all {switches} datapaths running after {ready_s:.1f} s")
            break
        if started:
            stop(p)
            die(f"{ctl.name} was not ready when the load began ({n} of {switches} "
                f"datapaths running); raise FAUCET_WARMUP in {__file__}")
        time.sleep(1.0)
    rc = p.wait()
    if rc != 0:
        die(f"ofswarm failed (status {rc}); output {log_path}:\n{read_tail(log_path)}")
    try:
        with open(json_path) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read ofswarm's results {json_path}: {e}")
    for k in ("switches", "handshakes", "responses", "packet_ins", "responses_per_s",
              "flow_mods", "packet_outs", "timeouts", "errors_sent", "errors_received"):
        if not isinstance(r.get(k), (int, float)):
            die(f"{json_path}: field {k} missing or not a number")
    if r["handshakes"] != r["switches"]:
        die(f"{json_path}: only {r['handshakes']} of {r['switches']} switches completed the handshake")
    r["command"] = shown
    r["ready_s"] = ready_s
    return r


def run_capped(cmd, log_path, cap, ctl):
    """Runs ofswarm on CPU 1 for at most `cap` s, then stops the controller;
    its exit status, or None when it hit the cap."""
    try:
        p = start(cmd, log_path=log_path, cpu=1)
        try:
            return p.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            stop(p)
            return None
    finally:
        ctl.stop()


def load_started(log_path):
    try:
        with open(log_path, "rb") as f:
            return re.search(rb"^\s+1 s\s", f.read(), re.M) is not None
    except OSError:
        return False


def measure(ctl, ofswarm, work, tag, topo, mode, window, answer, fresh):
    s, h = (int(x) for x in topo.split(":")[1].split("x"))
    log(f"{ctl.name}: {tag} ({topo}, {mode}, answer {answer}{', fresh sources' if fresh else ''})")
    port, extra = ctl.start(tag, s, h)
    try:
        j = os.path.join(work, f"{ctl.name.lower()}-{tag}.json")
        r = run_ofswarm(ctl, ofswarm, port, s, topo, mode, window, answer, fresh, extra, j,
                        os.path.join(work, f"{ctl.name.lower()}-{tag}.ofswarm.log"))
    finally:
        ctl.stop()
    r["controller_log"] = ctl.log_path
    if mode == "throughput":
        log(f"  -> {r['responses_per_s']:.0f} responses/s ({r['responses_by_flow_mod']} by FLOW_MOD, "
            f"{r['responses_by_packet_out']} by PACKET_OUT, {r['timeouts']} timeouts)")
    else:
        log(f"  -> p50 {r.get('latency_p50_us')} us, p99 {r.get('latency_p99_us')} us, "
            f"p99.9 {r.get('latency_p999_us')} us ({r.get('latency_samples')} samples)")
    return r


# ----------------------------------------------------------- statistics polling

# Poll intervals Δ (s) of the statistics runs, and the runs: (switches, pair
# flows per switch, controllers measured). Every switch of grid:SxH has
# H·(H-1) pairs, H = ceil(sqrt(F)) + 1.
STATS_INTERVALS = (10, 1)
STATS_SIZES = [
    (100, 100, ("shoal", "gauge")),
    (100, 1000, ("shoal", "gauge")),
    (1000, 100, ("shoal", "gauge")),
    (1000, 1000, ("shoal",)),
    (100, 10000, ("shoal",)),
]
# Sizes of the issue not measured for a controller, and why (the doc says so).
STATS_NOT_RUN = {
    ("gauge", 1000, 1000): "1,000 datapaths × 1,000 flows is 1 M flow entries per "
    "poll; at Gauge's rate at the smaller sizes (see its entries/s) one cycle would take "
    "far longer than Δ, and the run would not fit the script's time budget",
    ("gauge", 100, 10000): "1 M flow entries per poll, as above",
}
# Longest an ofswarm statistics run may take (connect, warm-up, pair-flow
# set-up, measurement); a Gauge run over it is stopped and reported.
STATS_RUN_CAP_S = 360
STATS_SETUP_TIMEOUT = 180
STATS_TOLERANCE = 0.01


def stats_duration(interval):
    """Seconds of measurement: several poll cycles."""
    return max(30, 4 * interval)


def stats_hosts(flows):
    """Hosts per switch giving at least `flows` pairs: H·(H-1) ≥ F."""
    h = math.isqrt(flows - 1) + 1 if flows > 1 else 1
    h += 1
    if h > 254:
        die(f"{flows} pair flows per switch need {h} hosts (at most 254)")
    assert h * (h - 1) >= flows
    return h


class Gauge:
    name = "Gauge"

    def __init__(self, venv, work):
        self.bin = os.path.join(venv, "bin", "gauge")
        self.venv_bin = os.path.join(venv, "bin")
        self.work = work

    def start(self, tag, switches, hosts, interval):
        d = os.path.join(self.work, f"gauge-{tag}")
        os.makedirs(d, exist_ok=True)
        of_port, prom_port, ssl_port = free_ports(3)
        faucet_cfg = os.path.join(d, "faucet.yaml")
        # Gauge reads the datapaths from a Faucet configuration.
        write_faucet_yaml(faucet_cfg, switches, hosts)
        cfg = os.path.join(d, "gauge.yaml")
        with open(cfg, "w") as f:
            f.write(
                "faucet_configs:\n"
                f"  - '{faucet_cfg}'\n"
                "watchers:\n"
                "  flow_table_poller:\n"
                "    type: 'flow_table'\n"
                "    all_dps: true\n"
                f"    interval: {int(interval)}\n"
                "    db: 'prometheus'\n"
                "  port_stats_poller:\n"
                "    type: 'port_stats'\n"
                "    all_dps: true\n"
                f"    interval: {int(interval)}\n"
                "    db: 'prometheus'\n"
                "dbs:\n"
                "  prometheus:\n"
                "    type: 'prometheus'\n"
                "    prometheus_addr: '127.0.0.1'\n"
                f"    prometheus_port: {prom_port}\n"
            )
        self.log_path = os.path.join(d, "gauge.log")
        self.console = os.path.join(d, "gauge.console")
        env = dict(os.environ)
        env.update({
            # gauge execs osken-manager from $PATH (the venv's); the same
            # process (pid) throughout.
            "PATH": self.venv_bin + ":" + env.get("PATH", "/usr/bin:/bin"),
            "GAUGE_CONFIG": cfg,
            "GAUGE_LOG": self.log_path,
            "GAUGE_EXCEPTION_LOG": os.path.join(d, "gauge_exception.log"),
            "GAUGE_PROMETHEUS_ADDR": "127.0.0.1",
        })
        self.proc = start_osken(self.bin, d, of_port, ssl_port, env, self.console)
        wait_listening(self.proc, of_port, "gauge", self.console, timeout=120.0)
        self.dir = d
        self.config = cfg
        self.prom_port = prom_port
        return of_port

    def stop(self):
        stop(self.proc)


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def measure_stats(ctl, ofswarm, work, switches, flows, interval):
    """One statistics run; returns the row, or a dict with `failed`."""
    hosts = stats_hosts(flows)
    topo = f"grid:{switches}x{hosts}"
    duration = stats_duration(interval)
    tag = f"stats-{switches}x{flows}-d{interval}"
    key = f"{ctl.name.lower()}-{tag}"
    log(f"{ctl.name}: {tag} ({topo}, {flows} pair flows per switch, Δ = {interval} s, "
        f"{duration} s measured)")
    if ctl.name == "Shoal":
        port, _ = ctl.start(tag, switches, hosts, monitor_interval=interval)
    else:
        port = ctl.start(tag, switches, hosts, interval)
    pid = ctl.proc.pid
    json_path = os.path.join(work, f"{key}.json")
    log_path = os.path.join(work, f"{key}.ofswarm.log")
    cmd = [ofswarm, "--controller", f"127.0.0.1:{port}", "--topo", topo, "--mode", "stats",
           "--flows", str(flows), "--duration", str(duration), "--warmup", str(WARMUP),
           "--connect-stagger-ms", str(STAGGER_MS if ctl.name == "Gauge" else 0),
           "--connect-timeout", str(CONNECT_TIMEOUT if switches <= 256 else 180),
           "--setup-timeout", str(STATS_SETUP_TIMEOUT), "--cpu-pid", str(pid), "--quiet"]
    if ctl.name == "Shoal":
        cmd += ["--api", f"http://127.0.0.1:{ctl.api_port}", "--token-file", ctl.token,
                "--tolerance", str(STATS_TOLERANCE)]
    else:
        cmd += ["--preinstall"]
    shown = ("ofswarm " + " ".join(cmd[1:])).replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    if ctl.name == "Shoal":
        shown = shown.replace(f"127.0.0.1:{ctl.api_port}", "127.0.0.1:API").replace(
            ctl.token, "reader.token")
    shown = shown.replace(f"--cpu-pid {pid}", "--cpu-pid PID")
    cmd += ["--json", json_path]
    log(f"  {shown}")
    row = {"controller": ctl.name, "switches": switches, "flows": flows, "hosts": hosts,
           "interval_s": interval, "duration_s": duration, "command": shown,
           "controller_log": ctl.log_path, "process": process_name(pid)}
    rc = run_capped(cmd, log_path, STATS_RUN_CAP_S, ctl)
    if rc is None:
        row["failed"] = f"not finished within the {STATS_RUN_CAP_S} s cap"
    elif rc != 0:
        # The last line (ofswarm's own error), without log colours.
        last = re.sub(r"\x1b\[[0-9;]*m", "", read_tail(log_path, 1)).strip()
        row["failed"] = f"ofswarm failed (status {rc}): {last}"
    if "failed" in row:
        msg = f"{ctl.name} {tag}: {row['failed']}"
        # Shoal must finish the sizes measured for both; a failure at a
        # size only Shoal runs (or of Gauge) is recorded in the doc.
        if ctl.name == "Shoal" and any(
                (sw, fl) == (switches, flows) and "gauge" in c for sw, fl, c in STATS_SIZES):
            die(msg + f"; output {log_path}:\n{read_tail(log_path)}")
        log(f"  ERROR: {msg} (recorded in the doc)")
        return key, row
    try:
        with open(json_path) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read ofswarm's results {json_path}: {e}")
    st, c = r.get("stats"), r.get("controller")
    if not isinstance(st, dict) or not isinstance(c, dict):
        die(f"{json_path}: no stats or controller section (is --cpu-pid {pid} alive?)")
    for k in ("flow_stats_requests", "flow_entries_served", "flow_entries_per_s",
              "polls_per_switch_per_s", "pairs", "setup_s"):
        if not isinstance(st.get(k), (int, float)):
            die(f"{json_path}: stats.{k} missing or not a number")
    for k in ("cpu_s", "cores", "rss_kb"):
        if not isinstance(c.get(k), (int, float)):
            die(f"{json_path}: controller.{k} missing or not a number")
    if r["handshakes"] != r["switches"]:
        die(f"{json_path}: only {r['handshakes']} of {r['switches']} switches completed the handshake")
    if st["pairs"] != switches * flows:
        die(f"{json_path}: {st['pairs']} pairs planned, expected {switches * flows}")
    cycles = r["duration_s"] / interval
    entries = st["flow_entries_served"]
    row.update({
        "measured_s": r["duration_s"],
        "setup_s": st["setup_s"],
        "requests": st["flow_stats_requests"],
        "entries": entries,
        "entries_per_s": st["flow_entries_per_s"],
        "polls_per_switch_per_s": st["polls_per_switch_per_s"],
        "cpu_s": c["cpu_s"],
        "cores": c["cores"],
        "rss_kb": c["rss_kb"],
        "cpu_per_cycle": c["cpu_s"] / cycles,
        "cpu_per_1000": c["cpu_s"] / entries * 1000 if entries else None,
        "errors_sent": r["errors_sent"],
        "lambda": st.get("lambda"),
    })
    if entries == 0:
        log(f"  ERROR: {ctl.name} {tag}: no flow stats request was answered in the window")
    lam = row["lambda"]
    lam_s = ""
    if lam:
        if lam.get("error"):
            lam_s = f", λ check failed: {lam['error']}"
        else:
            lam_s = (f", λ {lam['within_tolerance']}/{lam['pairs']} within "
                     f"{lam['tolerance'] * 100:g} %, max error {lam['max_rel_err'] * 100:.3f} %")
    log(f"  -> {row['polls_per_switch_per_s']:.3f} polls/switch/s (1/Δ = {1 / interval:g}), "
        f"{row['entries_per_s']:.0f} entries/s, {row['cpu_s']:.2f} CPU-s "
        f"({row['cores']:.2f} cores), RSS {row['rss_kb'] / 1024:.0f} MiB{lam_s}")
    return key, row


def run_stats(shoal, gauge, ofswarm, work):
    results = {}
    for interval in STATS_INTERVALS:
        for switches, flows, ctls in STATS_SIZES:
            for ctl in (shoal, gauge):
                if ctl.name.lower() not in ctls:
                    continue
                key, row = measure_stats(ctl, ofswarm, work, switches, flows, interval)
                results[key] = row
    return results


def gauge_log_problems(stats):
    dirs = [os.path.dirname(row["controller_log"]) for row in stats.values()
            if row["controller"] == "Gauge"]
    return count_log_problems(dirs, "gauge")


STATS_BEGIN = "<!-- statistics polling: generated by bench/compare.py -->"
STATS_END = "<!-- end of statistics polling -->"


def num(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v).replace(",", " ")


def section_head(w, marker, title, name, only, started, elapsed, load_start, load_end):
    """The marker, title and 'Measured …' line of a section `--only name` rewrites."""
    w(marker)
    w(f"## {title}")
    w("")
    how = (f"`sudo bench/compare.sh --only {name}` (this section only; the sections above are "
           "from the last full run)" if only == name else "the same run as above")
    w(f"Measured {started} UTC by {how}, {elapsed / 60:.0f} min; load average {load_start} "
      f"at the start and {load_end} at the end (the machine was shared).")
    w("")


def stats_markdown(stats, gauge_problems, root, load_start, load_end, started, elapsed,
                   only):
    out = []
    w = out.append
    section_head(w, STATS_BEGIN, "Statistics polling: Shoal and Gauge", "stats", only, started,
                 elapsed, load_start, load_end)
    w("ofswarm's `stats` mode (`-m stats -t grid:SxH --flows F`): every switch carries F "
      "pair flows (first-hop, match eth_src + eth_dst) with known byte rates (100 kB/s to "
      "1 MB/s, fixed per pair) and answers the controller's FLOW (and PORT) stats requests "
      "from its flow table; ofswarm counts the FLOW stats requests and the flow entries it "
      "served during the measurement and reads the controller's CPU time and RSS from "
      "`/proc/PID` (`--cpu-pid`; for Gauge its single Python process).")
    w("")
    w("- **Shoal** installs the pair flows itself (ofswarm sends one PACKET_IN per pair, "
      "counted as installed when its FLOW_MOD ADD arrives), polls every Δ "
      "(`[monitor] interval_s = Δ`, `max_matrix_pairs = "
      f"{SHOAL_MAX_MATRIX_PAIRS}`, the forwarding limits lifted as above) and computes "
      "the traffic matrix λ; at the end ofswarm reads `GET /api/v1/traffic-matrix` (a reader "
      f"token) and compares every pair with the configured rate (`--tolerance {STATS_TOLERANCE}`).")
    w("- **Gauge** (Faucet 1.10's poller) installs no flows: ofswarm's `--preinstall` makes "
      "each switch add its F pair flows itself at handshake completion (table 0, priority "
      "200, in_port + eth_src + eth_dst, output to the destination). Gauge's configuration: "
      "a `faucet.yaml` listing the datapaths (as for Faucet above), watchers `flow_table` and "
      "`port_stats` for all datapaths with `interval: Δ`, Prometheus database. Gauge keeps "
      "no traffic matrix, so there is no λ to check.")
    w(f"- Each run: controller on CPU 0, ofswarm on CPU 1, {WARMUP} s warm-up, the pair flows "
      "set up, then max(30, 4Δ) s measured. CPU per poll cycle = CPU-s ÷ (measured s ÷ Δ); "
      "CPU per 1,000 entries = CPU-s ÷ flow entries served × 1,000 (includes the port stats "
      "and everything else the controller did in the window). Polls per switch per s: FLOW "
      "stats requests ÷ switches ÷ measured s; a controller keeping up polls 1/Δ.")
    w("")
    w("| S × F | Δ | controller | polls/switch/s (1/Δ) | flow entries/s | CPU-s | cores | "
      "CPU-s per cycle | CPU-ms per 1,000 entries | RSS | pair-flow set-up | λ within 1 % | "
      "λ max / median error |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for interval in STATS_INTERVALS:
        for switches, flows, _ctls in STATS_SIZES:
            for name in ("shoal", "gauge"):
                row = stats.get(f"{name}-stats-{switches}x{flows}-d{interval}")
                size = f"{switches:,} × {flows:,}".replace(",", " ")
                if row is None:
                    continue
                if "failed" in row:
                    w(f"| {size} | {interval} s | {row['controller']} | failed: "
                      f"{row['failed'].replace('|', '/')} |||||||||")
                    continue
                lam = row.get("lambda")
                if lam is None:
                    lw, le = "-", "-"
                elif lam.get("error"):
                    lw, le = f"check failed: {lam['error'].replace('|', '/')[:120]}", "-"
                else:
                    lw = (f"{lam['within_tolerance']:,} / {lam['pairs']:,}".replace(",", " ")
                          + (f" ({lam['missing']} missing)" if lam["missing"] else ""))
                    le = f"{lam['max_rel_err'] * 100:.3f} % / {lam['median_rel_err'] * 100:.4f} %"
                setup = ("preinstalled" if row["controller"] == "Gauge"
                         else f"{row['setup_s']:.1f} s")
                w(f"| {size} | {interval} s | {row['controller']} | "
                  f"{row['polls_per_switch_per_s']:.3f} ({1 / interval:g}) | "
                  f"{num(row['entries_per_s'])} | {row['cpu_s']:.2f} | {row['cores']:.2f} | "
                  f"{row['cpu_per_cycle']:.3f} | "
                  f"{num(row['cpu_per_1000'] and row['cpu_per_1000'] * 1000, '{:,.2f}')} | "
                  f"{row['rss_kb'] / 1024:,.0f} MiB | {setup} | {lw} | {le} |")
    w("")
    w("Not run:")
    w("")
    for (name, s, f), why in STATS_NOT_RUN.items():
        w(f"- {s:,} × {f:,} ".replace(",", " ") + f"for {name.capitalize()}: {why}.")
    failed = [r for r in stats.values() if "failed" in r]
    for r in failed:
        w(f"- {r['switches']} × {r['flows']}, Δ = {r['interval_s']} s, {r['controller']}: "
          f"{r['failed']} (`{r['command']}`).")
    w("")
    if gauge_problems:
        w("Error and warning lines of Gauge's logs over all its runs (numbers replaced by N), "
          "most frequent first:")
        w("")
        w("| lines | message |")
        w("|---|---|")
        for msg, n in sorted(gauge_problems.items(), key=lambda x: -x[1])[:10]:
            w(f"| {n} | `{msg.replace('|', '/')}` |")
    else:
        w("Gauge's logs had no error or warning lines.")
    w("")
    w("| run | ofswarm command |")
    w("|---|---|")
    for k, r in stats.items():
        w(f"| {r['controller']}, {r['switches']} × {r['flows']}, Δ = {r['interval_s']} s | "
          f"`{r['command']}` |")
    w("")
    bottlenecks = os.path.join(root, "bench", "bottlenecks.md")
    if os.path.isfile(bottlenecks):
        w("## Bottlenecks found and fixed")
        w("")
        with open(bottlenecks) as f:
            w(f.read().rstrip("\n"))
        w("")
    w(STATS_END)
    return "\n".join(out)


# ------------------------------------------------------- topology and churn

TOPO_BEGIN = "<!-- topology and churn: generated by bench/compare.py -->"
TOPO_END = "<!-- end of topology and churn -->"
# Idle runs (no load): LLDP discovery and memory. (topology, seconds).
TOPO_IDLE = [("fattree:8", 15), ("fattree:16", 20), ("grid:1000x1", 15), ("grid:1000x32", 15)]
# Churn runs: (topology, events, most host pairs traced per round).
CHURN_RUNS = [("fattree:4", 12, 240), ("fattree:16", 12, 1024)]
TOPO_RUN_CAP_S = 900
# Shoal's default LLDP interval (topology.lldp_interval_s).
SHOAL_LLDP_INTERVAL_S = 2.0


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_topo_ofswarm(shoal, ofswarm, work, tag, args, cap):
    """Starts Shoal afresh, runs ofswarm with its API; returns (json, command, base RSS)."""
    port, _ = shoal.start(tag, 0, 0)
    pid = shoal.proc.pid
    time.sleep(1.0)
    base = rss_kb(pid)
    json_path = os.path.join(work, f"shoal-{tag}.json")
    log_path = os.path.join(work, f"shoal-{tag}.ofswarm.log")
    cmd = [ofswarm, "--controller", f"127.0.0.1:{port}", "--connect-timeout", "180",
           "--api", f"http://127.0.0.1:{shoal.api_port}", "--token-file", shoal.token,
           "--cpu-pid", str(pid)] + args
    shown = ("ofswarm " + " ".join(cmd[1:])).replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    shown = shown.replace(f"127.0.0.1:{shoal.api_port}", "127.0.0.1:API").replace(
        shoal.token, "reader.token").replace(f"--cpu-pid {pid}", "--cpu-pid PID")
    log(f"  {shown}")
    rc = run_capped(cmd + ["--json", json_path], log_path, cap, shoal)
    if rc != 0:
        why = "not finished within the cap" if rc is None else f"status {rc}"
        die(f"ofswarm {tag} failed ({why}); output {log_path}:\n{read_tail(log_path)}")
    try:
        with open(json_path) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read ofswarm's results {json_path}: {e}")
    if r.get("handshakes") != r.get("switches"):
        die(f"{json_path}: only {r.get('handshakes')} of {r.get('switches')} switches "
            f"completed the handshake")
    return r, shown, base


def run_topology(shoal, ofswarm, work):
    idle, churn = {}, {}
    for topo, secs in TOPO_IDLE:
        tag = "idle-" + topo.replace(":", "-")
        log(f"Shoal: {tag}")
        r, shown, base = run_topo_ofswarm(
            shoal, ofswarm, work, tag,
            ["--topo", topo, "--mode", "idle", "--duration", str(secs),
             "--warmup", str(WARMUP), "--quiet"], TOPO_RUN_CAP_S)
        c = r.get("controller") or {}
        row = {"topo": topo, "command": shown, "switches": r["switches"], "hosts": r["hosts"],
               "links": r.get("links_expected", 0), "discovery_s": r.get("discovery_s"),
               "endpoints": r.get("endpoints_listed"), "base_rss_kb": base,
               "rss_kb": c.get("rss_kb")}
        log(f"  -> discovery {row['discovery_s']} s, {row['endpoints']} endpoints, "
            f"RSS {row['rss_kb']} kB (fresh {base} kB)")
        idle[topo] = row
    for topo, events, pairs in CHURN_RUNS:
        tag = "churn-" + topo.replace(":", "-")
        log(f"Shoal: {tag}")
        r, shown, _ = run_topo_ofswarm(
            shoal, ofswarm, work, tag,
            ["--topo", topo, "--mode", "churn", "--events", str(events),
             "--trace-pairs", str(pairs), "--duration", str(TOPO_RUN_CAP_S - 60),
             "--warmup", str(WARMUP), "--converge-timeout", "30"], TOPO_RUN_CAP_S)
        ch = r.get("churn")
        if not isinstance(ch, dict):
            die(f"ofswarm {tag}: no churn results")
        ch["command"] = shown
        ch["switches"], ch["hosts"] = r["switches"], r["hosts"]
        log(f"  -> {len(ch['events'])} events, {ch['converged']} converged, "
            f"{ch['loops']} looping traces, max {ch.get('converge_max_s')} s")
        churn[topo] = ch
    return {"idle": idle, "churn": churn}


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else None


def topology_markdown(topo, load_start, load_end, started, elapsed, only):
    idle, churn = topo["idle"], topo["churn"]
    out = []
    w = out.append
    section_head(w, TOPO_BEGIN, "Topology: discovery, memory and forwarding under churn (Shoal)",
                 "topology", only, started, elapsed, load_start, load_end)
    w("Shoal only: Faucet does not discover links (its stack links are configured, LLDP "
      "only checks them) and routes a looped fabric only as a configured stack, so there "
      "is no like-for-like run. Each run starts Shoal afresh with its default topology "
      f"settings (LLDP every {SHOAL_LLDP_INTERVAL_S:g} s, ports confirmed as edge ports "
      "after 2.5 s).")
    w("")
    w("### LLDP discovery")
    w("")
    w("Seconds from the last switch's handshake until `GET /api/v1/links` listed every "
      "directed link (ofswarm's `discovery_s`, polled every 100 ms).")
    w("")
    w("| topology | switches | hosts | directed links | all listed after | LLDP intervals | hosts listed at the end |")
    w("|---|---|---|---|---|---|---|")
    for t, r in idle.items():
        if not r["links"]:
            continue
        d = r["discovery_s"]
        w(f"| `{t}` | {r['switches']} | {r['hosts']} | {r['links']} | "
          + ("never" if d is None else f"{d:.2f} s")
          + " | " + ("-" if d is None else f"{d / SHOAL_LLDP_INTERVAL_S:.2f}")
          + f" | {num(r['endpoints'])} |")
    w("")
    w("### Memory")
    w("")
    a, b = idle.get("grid:1000x1"), idle.get("grid:1000x32")
    rows = []
    if a and b and a["rss_kb"] and b["rss_kb"] and a["endpoints"] and b["endpoints"]:
        per_ep = (b["rss_kb"] - a["rss_kb"]) * 1024 / max(1, b["endpoints"] - a["endpoints"])
        per_sw = ((a["rss_kb"] - a["base_rss_kb"]) * 1024 - per_ep * a["endpoints"]) / a["switches"]
        rows.append(("per switch (connection, ports, flows it was sent)",
                     f"{per_sw / 1024:.1f} KiB",
                     "(RSS with `grid:1000x1` − fresh RSS − its 1 000 hosts) / 1 000 switches"))
        rows.append(("per endpoint (a learnt host)", f"{per_ep:.0f} B",
                     f"(RSS `grid:1000x32` − RSS `grid:1000x1`) / "
                     f"{num(b['endpoints'] - a['endpoints'])} more hosts listed (an upper "
                     f"bound: RSS also keeps memory freed after the hosts' ARP bursts)"))
    f = idle.get("fattree:16")
    if f and f["rss_kb"] and f["base_rss_kb"]:
        rows.append(("k = 16 fat tree, whole", f"{(f['rss_kb'] - f['base_rss_kb']) / 1024:.1f} MiB",
                     f"RSS − fresh RSS ({f['base_rss_kb'] / 1024:.0f} MiB); 320 switches, "
                     f"{num(f['links'])} directed links, {num(f['endpoints'])} hosts"))
    if rows:
        w("| what | memory | how |")
        w("|---|---|---|")
        for what, v, how in rows:
            w(f"| {what} | {v} | {how} |")
        w("")
        w("Per tracked pair: see the statistics table (RSS of 1,000 × 1,000 against 1,000 × "
          "100 pair flows).")
    else:
        w("Not measured (a run failed).")
    w("")
    w("### Forwarding under churn")
    w("")
    w("ofswarm's churn mode (`-m churn`, see `bench/ofswarm/README.md`): cables cut and "
      "mended (PORT_STATUS both ends), hosts moving to a free port of another edge switch "
      "(a gratuitous ARP there), switches dropping their connection for 0.5 s (flows "
      "kept). After each event ofswarm waits until the switch is back and "
      "`GET /api/v1/links` lists exactly the links that are up (*settled*), then traces "
      "host pairs through the emulated flow tables every 200 ms until a round is all "
      "right: each trace delivered once, only at the destination's current port, through "
      "the switches of a shortest path of the network as it is now (*converged*, from the "
      "event).")
    w("")
    w("| topology | pairs per round | events | converged | looping traces | misdelivered traces (before converging) | kind | settled, median | converged, median | converged, max |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for t, c in churn.items():
        kinds = {}
        for e in c["events"]:
            kinds.setdefault(e["event"]["kind"], []).append(e)
        first = True
        for k in ("link_down", "link_up", "host_move", "reconnect"):
            es = kinds.get(k, [])
            if not es:
                continue
            st = [e["settled_s"] for e in es if e.get("settled_s") is not None]
            cv = [e["converged_s"] for e in es if e.get("converged_s") is not None]
            head = (f"| `{t}` | {c['baseline']['traces']} | {len(c['events'])} | "
                    f"{c['converged']} | {c['loops']} | {c['misdelivered']} "
                    if first else "| | | | | | ")
            first = False
            fmt = lambda v: "-" if v is None else f"{v:.2f} s"
            w(head + f"| {k} ({len(es)}) | {fmt(median(st))} | {fmt(median(cv))} | "
              f"{fmt(max(cv) if cv else None)} |")
    w("")
    w("| run | ofswarm command |")
    w("|---|---|")
    for t, r in idle.items():
        w(f"| idle, `{t}` | `{r['command']}` |")
    for t, c in churn.items():
        w(f"| churn, `{t}` | `{c['command']}` |")
    w("")
    w(TOPO_END)
    return "\n".join(out)


def splice_section(path, block, begin, end):
    """--only: replaces the section between `begin` and `end` of an existing
    doc, or inserts it before '## Commands'."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        die(f"--only needs the existing {path}: {e}")
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    elif "\n## Commands\n" in text:
        a = text.index("\n## Commands\n") + 1
        text = text[:a] + block + "\n\n" + text[a:]
    else:
        die(f"{path}: no place for the section (neither its markers nor '## Commands')")
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------- machine


def cmd_out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine(venv):
    lscpu = cmd_out(["lscpu"])
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    mhz = re.search(r"^CPU max MHz:\s*(.+)$", lscpu, re.M)
    free = cmd_out(["free", "-g"]).splitlines()
    mem = next((l.split()[1] for l in free if l.startswith("Mem:")), "?")
    return {
        "cpu": model.group(1).strip() if model else "?",
        "cpu_max_mhz": mhz.group(1).strip() if mhz else None,
        "nproc": cmd_out(["nproc"]),
        "mem_gib": mem,
        "kernel": cmd_out(["uname", "-sr"]),
        "os": cmd_out(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "rustc": cmd_out(["rustc", "--version"]),
        "faucet": cmd_out([os.path.join(venv, "bin", "faucet"), "--version"]).splitlines()[-1:]
        or ["?"],
        "python": cmd_out([os.path.join(venv, "bin", "python"), "--version"]),
        "commit": cmd_out(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "describe", "--always", "--dirty"]) or "?",
        "loadavg_end": loadavg(),
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ------------------------------------------------------------------ markdown


def fmt_rate(r):
    return f"{r['responses_per_s']:,.0f}".replace(",", " ")


def per_pin(r, k):
    return f"{r[k] / r['packet_ins']:.2f}" if r["packet_ins"] else "-"


def write_markdown(path, m, results, started, elapsed, problems, stats_block, topo_block):
    R = results
    out = []
    w = out.append
    w("# Performance: Shoal and Faucet on the ofswarm emulator")
    w("")
    w("<!-- Generated by bench/compare.sh (bench/compare.py); a rerun overwrites this file. -->")
    w("")
    w(f"Measured {started} UTC by `sudo bench/compare.sh` (total {elapsed:.0f} s).")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| CPU | {m['cpu']}" + (f" (max {m['cpu_max_mhz']} MHz)" if m['cpu_max_mhz'] else "") + " |")
    w(f"| `nproc` | {m['nproc']} |")
    w(f"| memory (`free -g`) | {m['mem_gib']} GiB |")
    w(f"| OS, kernel | {m['os']}, {m['kernel']} |")
    w(f"| Rust | {m['rustc']} (release build, `cargo build --release --locked`) |")
    w(f"| Shoal commit | `{m.get('commit', '?')}` |")
    w(f"| Faucet | {m['faucet'][0]} (pip, in a virtualenv; {m['python']}) |")
    w("")
    w("Every controller ran pinned to CPU 0 and ofswarm to CPU 1 (`taskset -c`); "
      "each measurement started the controller afresh (its own free ports), "
      f"ran ofswarm ({WARMUP} s warm-up for Shoal, {FAUCET_WARMUP} s for Faucet, "
      f"{DURATION} s load) and stopped it. "
      "Both controllers ran against the same ofswarm binary in the same run.")
    w("")
    w(f"The machine was not idle: load average {m['loadavg_start']} at the start and "
      f"{m['loadavg_end']} at the end (`/proc/loadavg`: 1, 5, 15 min); other builds and "
      "tests shared its cores, so the numbers vary between reruns.")
    w("")
    w(f"Faucet configures each datapath for seconds after it connects (its per-port VLAN "
      f"set-up is quadratic in the ports) and ignores PACKET_INs until the datapath is "
      f"running, so its warm-up is {FAUCET_WARMUP} s and the script checks, from Faucet's "
      "Prometheus `dp_status`, that every datapath was running before the load began "
      "(\"Faucet running after\" below: seconds from ofswarm's start).")
    w("")
    w("## Flow setups per second (throughput)")
    w("")
    w("ofswarm keeps `--window` PACKET_INs outstanding per switch and counts the answers "
      "(see \"What the columns count\" below). The windows differ with the number of "
      "switches (64 × 16 = 1024 and 1 × 256 = 256 outstanding) so that Faucet's queue stays "
      "under ofswarm's 2 s answer timeout.")
    w("")
    w("| switches × hosts | window | " + " | ".join(c[1] for c in COLUMNS) + " |")
    w("|---|---|" + "---|" * len(COLUMNS))
    for key in ("t16", "t256"):
        first = R[f"{COLUMNS[0][0]}-{key}"]
        cells = [f"{fmt_rate(R[f'{c[0]}-{key}'])} /s" for c in COLUMNS]
        w(f"| {first['switches']} × {first['hosts'] // first['switches']} | {first['window']} | "
          + " | ".join(cells) + " |")
    w("")
    w("Details. Timeouts: PACKET_INs unanswered after 2 s (dropped from the window). "
      "FLOW_MODs and PACKET_OUTs per PACKET_IN: all the controller sent during the whole run "
      "(including the handshake's and warm-up's flows) over the load PACKET_INs sent. ERRORs: "
      "sent by the switches for controller messages they refused.")
    w("")
    w("| run | PACKET_INs | answered | by FLOW_MOD | by PACKET_OUT | timeouts | FLOW_MODs / PACKET_IN | PACKET_OUTs / PACKET_IN | ERRORs sent by switches | Faucet running after |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for k, label in RUN_LABELS:
        if k.endswith("-l16"):
            continue
        r = R[k]
        w(f"| {label} | {r['packet_ins']} | {r['responses']} | {r['responses_by_flow_mod']} | "
          f"{r['responses_by_packet_out']} | {r['timeouts']} | {per_pin(r, 'flow_mods')} | "
          f"{per_pin(r, 'packet_outs')} | {r['errors_sent']} | "
          + ("-" if r.get("ready_s") is None else f"{r['ready_s']:.0f} s") + " |")
    w("")
    w("## Latency PACKET_IN → FLOW_MOD (16 switches)")
    w("")
    w("One PACKET_IN outstanding per switch; the time from sending it to the first FLOW_MOD "
      "that answers it.")
    w("")
    w("| | " + " | ".join(c[1] for c in COLUMNS) + " |")
    w("|---|" + "---|" * len(COLUMNS))

    def us(r, k):
        v = r.get(k)
        return "-" if v is None else f"{v:,} µs".replace(",", " ")

    for k, label in (("latency_p50_us", "p50"), ("latency_p99_us", "p99"),
                     ("latency_p999_us", "p99.9")):
        w(f"| {label} | " + " | ".join(us(R[f"{c[0]}-l16"], k) for c in COLUMNS) + " |")
    w("| samples | " + " | ".join(str(R[f"{c[0]}-l16"]["latency_samples"]) for c in COLUMNS)
      + " |")
    w("")
    w("Prefer the `src` columns: under `any`, Faucet's two FLOW_MODs per learnt host "
      "(eth_src and eth_dst tables) and Shoal's FLOW_MOD + PACKET_OUT can answer the next "
      "PACKET_IN as soon as it is sent, and a late answer to a timed-out PACKET_IN answers "
      "a new one.")
    w("")
    w("## What the columns count")
    w("")
    w("- **`pair`** (ofswarm's default, Shoal-specific): a load PACKET_IN is answered by a "
      "FLOW_MOD `ADD` on its switch whose match has exactly its Ethernet source and destination "
      "(Shoal's first-hop pair flow), or by a PACKET_OUT carrying its sequence number. One "
      "answer = one flow setup of that pair. The source is one of the switch's hosts, learnt "
      "during the warm-up; pairs rotate over every local host × every host of the switch.")
    w("- **`any`** (cbench's rule, `--answer any`): every FLOW_MOD (any command) or PACKET_OUT "
      "the switch receives during the load answers its oldest outstanding PACKET_IN, whatever "
      "it carries. This counts controller messages, not setups: a controller that sends two "
      "FLOW_MODs for one PACKET_IN is credited with two answers (the window refills twice as "
      "fast). The FLOW_MODs / PACKET_OUTs per PACKET_IN columns above show how many messages "
      "each controller sends per PACKET_IN.")
    w("- **`src`** (a learning switch's rule, `--answer src`): a FLOW_MOD `ADD` on the switch "
      "whose match has the PACKET_IN's source MAC as `eth_src` or `eth_dst` (Faucet's eth_src- "
      "or eth_dst-table entry for the host it learnt; Shoal's pair flow) answers the oldest "
      "outstanding PACKET_IN from that source, or a PACKET_OUT carrying its sequence number. "
      "With fresh sources one answer = one new host learnt and its flow installed: this is "
      "the flow-setup rate to compare.")
    w("- **fresh src** (`--fresh-src`, cbench's `-M`): every load PACKET_IN comes from a source "
      "MAC never used before (`06:ii:ii:nn:nn:nn`, `i` the switch index, `n` a counter) on a host "
      "port, to one of the switch's hosts, so a learning switch always has a new host to learn. "
      "Faucet ignores PACKET_INs from hosts it has already learnt at that port, so without it "
      "Faucet would answer almost nothing after the first round.")
    w("- The load PACKET_INs are shaped as each controller's own pipeline would produce them "
      "in Open vSwitch: for Shoal a table miss (reason `NO_MATCH`, cookie all ones, untagged); "
      f"for Faucet its explicit learning flow (reason `ACTION`, `--pin-cookie {FAUCET_COOKIE}`, "
      f"Faucet's datapath cookie, which Faucet checks) with the frame tagged with the port's "
      f"native VLAN {FAUCET_VLAN} (`--pin-vlan {FAUCET_VLAN}`; Faucet learns only from "
      "VLAN-tagged PACKET_INs, its VLAN table pushes the tag before the eth_src table).")
    w("- Faucet configuration: one datapath per emulated switch (`dp_id` = ofswarm's dpid), "
      f"every host port `native_vlan` {FAUCET_VLAN}, `max_hosts: 0` (no limit) on ports and "
      "the VLAN (its defaults, 255/256, would ban learning after that many fresh sources) and "
      "`ignore_learn_ins: 0` (its default drops every 10th learning PACKET_IN of a second, "
      "which would stall the window for 2 s each). No stacking (the grid's switches are "
      "independent).")
    w("- Shoal configuration: its defaults (`db = \":memory:\"`) except the MAC-flood limits, "
      f"lifted like Faucet's: `max_macs_per_port = {SHOAL_MAX_MACS_PER_PORT}`, "
      f"`max_endpoints = {SHOAL_MAX_ENDPOINTS}`, `max_pair_flows = {SHOAL_MAX_PAIR_FLOWS}` "
      "(defaults 64, 8192, 65536: beyond them fresh sources are dropped without a flow).")
    w("- Latency: one PACKET_IN outstanding per switch; a sample is the time to the first "
      "FLOW_MOD answering it under the column's rule (`any`: any FLOW_MOD of that switch). "
      "Host pairs are reused at most every 600 ms (Shoal's 500 ms re-install hold-off).")
    w("")
    w("## Faucet's log")
    w("")
    if problems:
        w("Error and warning lines of Faucet's logs over all its runs (numbers replaced by N), "
          "most frequent first:")
        w("")
        w("| lines | message |")
        w("|---|---|")
        for msg, n in sorted(problems.items(), key=lambda x: -x[1])[:15]:
            w(f"| {n} | `{msg.replace('|', '/')}` |")
        w("")
        w(FAUCET_LOG_NOTE)
    else:
        w("No error or warning lines.")
    w("")
    w(stats_block)
    w("")
    w(topo_block)
    w("")
    w("## Commands")
    w("")
    w("`PORT` is a free port picked per run; the controller's own command lines are in "
      "`bench/compare.py`.")
    w("")
    w("| run | ofswarm command |")
    w("|---|---|")
    for k, label in RUN_LABELS:
        w(f"| {label} | `{R[k]['command']}` |")
    w("")
    w("## How to reproduce")
    w("")
    w("On a Debian 12 machine with Rust installed, as root, from the repository:")
    w("")
    w("```sh")
    w("sudo bench/compare.sh               # everything")
    w("sudo bench/compare.sh --only stats  # only the statistics polling section")
    w("sudo bench/compare.sh --only topology  # only the topology and churn section")
    w("sudo bench/compare.sh --only liveloop  # only the live loop (bench/liveloop.sh)")
    w("```")
    w("")
    w("It installs `python3-venv` if missing, creates a virtualenv under "
      "`target/bench-venv` with `pip install 'faucet==1.10.*'`, builds `ofswarm` and "
      "`shoal-controller` with `cargo build --release --locked`, runs every measurement above "
      f"(about {elapsed / 60:.0f} minutes here) and rewrites this file. Logs and ofswarm's JSON results stay in "
      "`target/bench-compare/`.")
    text = "\n".join(out) + "\n"
    live = live_loop_block(path)
    if live and "\n## Commands\n" in text:
        i = text.index("\n## Commands\n") + 1
        text = text[:i] + live + "\n\n" + text[i:]
    with open(path, "w") as f:
        f.write(text)


LIVE_BEGIN = "<!-- live loop: generated by bench/liveloop.sh -->"
LIVE_END = "<!-- end of live loop -->"


def live_loop_block(path):
    """The live-loop section bench/liveloop.sh wrote into `path` (kept when
    this script rewrites the file), or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if LIVE_BEGIN not in text or LIVE_END not in text:
        return None
    return text[text.index(LIVE_BEGIN):text.index(LIVE_END) + len(LIVE_END)]


FAUCET_LOG_NOTE = (
    "`send_flow_msgs: DP not up` is Faucet's own: it has flows for a datapath whose cold "
    "start has not finished (while it configures the others) and drops them; it is no "
    "reply to anything ofswarm sent. `datapath down` is logged when the run ends and "
    "ofswarm disconnects. The switches refused no controller message (ERRORs column "
    "above); before ofswarm kept SET_ASYNC, Faucet logged an `OFPBRC_BAD_TYPE` error for "
    "it on every connection.")

# Table columns: (controller-rule key, heading). Each is measured for every
# run of RUNS; the key of a measurement is "<controller>-<rule>-<run>".
COLUMNS = [
    ("shoal-any", "Shoal, `any` + fresh src"),
    ("faucet-any", "Faucet, `any` + fresh src"),
    ("shoal-src", "Shoal, `src` + fresh src"),
    ("faucet-src", "Faucet, `src` + fresh src"),
    ("shoal-pair", "Shoal, `pair`"),
]

# run -> (topology, mode, window, description)
RUNS = {
    "t16": ("grid:16x64", "throughput", 64, "16 switches, throughput"),
    "t256": ("grid:256x16", "throughput", 1, "256 switches, throughput"),
    "l16": ("grid:16x64", "latency", 1, "16 switches, latency"),
}

# (key, label) of every run, in the order they are made.
RUN_LABELS = [
    (f"{c}-{run}", f"{h}, {RUNS[run][3]}") for run in RUNS for c, h in COLUMNS
]


def faucet_log_problems(results):
    """Error/warning lines of Faucet's logs, counted by message."""
    dirs = [os.path.dirname(r["controller_log"]) for k, r in results.items()
            if k.startswith("faucet")]
    return count_log_problems(dirs, "faucet")


def count_log_problems(dirs, name):
    """Error and warning lines of `name`.log, `name`_exception.log and
    `name`.console in `dirs`, with numbers, xids and data blanked: {message: count}."""
    seen = {}
    for d in dirs:
        for f_name in (f"{name}.log", f"{name}_exception.log", f"{name}.console"):
            p = os.path.join(d, f_name)
            if not os.path.exists(p):
                continue
            with open(p, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if re.search(r"ERROR|WARNING|Traceback|error", line):
                        msg = re.sub(r"^\S+ \S+ \S+ ", "", line)
                        msg = re.sub(r"\(0x[0-9a-f]+\)|xid=0x[0-9a-f]+,?", "", msg)
                        msg = re.sub(r"bytearray\(b'.*?'\)", "bytearray(...)", msg)
                        msg = re.sub(r"\d+", "N", re.sub(r"\s+", " ", msg))[:200]
                        seen[msg] = seen.get(msg, 0) + 1
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ofswarm", required=True)
    ap.add_argument("--shoal", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", choices=("all", "stats", "topology"), default="all",
                    help="stats / topology: only those runs, spliced into the existing --out")
    a = ap.parse_args()
    for p, what in ((a.ofswarm, "ofswarm"), (a.shoal, "shoal-controller"),
                    (os.path.join(a.venv, "bin", "faucet"), "faucet"),
                    (os.path.join(a.venv, "bin", "gauge"), "gauge")):
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            die(f"{what} is not an executable file: {p}")
    if shutil.which("taskset") is None:
        die("taskset not found (util-linux)")
    if (os.cpu_count() or 1) < 2:
        die("needs at least 2 CPUs (controller on CPU 0, ofswarm on CPU 1)")
    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        die(f"no directory for {a.out}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if a.only != "all" and not os.path.isfile(a.out):
        die(f"--only {a.only} replaces a section of {a.out}, which does not exist")
    if os.path.isdir(a.work):
        shutil.rmtree(a.work)
    os.makedirs(a.work)
    t0 = time.monotonic()
    loadavg_start = loadavg()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    shoal, faucet = Shoal(a.shoal, a.work), Faucet(a.venv, a.work)
    gauge = Gauge(a.venv, a.work)
    results = {}
    stats = {}
    topo = {"idle": {}, "churn": {}}
    try:
        for key, _label in (RUN_LABELS if a.only == "all" else []):
            name, answer, run = key.split("-")
            topo, mode, window, _ = RUNS[run]
            ctl = shoal if name == "shoal" else faucet
            results[key] = measure(ctl, a.ofswarm, a.work, f"{run}-{answer}", topo, mode,
                                   window, answer, answer != "pair")
        if a.only in ("all", "stats"):
            stats = run_stats(shoal, gauge, a.ofswarm, a.work)
        t_topo = time.monotonic()
        load_topo = loadavg()
        if a.only in ("all", "topology"):
            topo = run_topology(shoal, a.ofswarm, a.work)
    finally:
        stop_all()
    problems = faucet_log_problems(results)
    if problems:
        log("Faucet log lines with errors/warnings (count, message):")
        for msg, n in sorted(problems.items(), key=lambda x: -x[1])[:20]:
            log(f"  {n:6d}  {msg}")
    gproblems = gauge_log_problems(stats)
    if gproblems:
        log("Gauge log lines with errors/warnings (count, message):")
        for msg, n in sorted(gproblems.items(), key=lambda x: -x[1])[:20]:
            log(f"  {n:6d}  {msg}")
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump({"flow_setup": results, "stats": stats, "topology": topo}, f, indent=1)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    block = "" if a.only == "topology" else stats_markdown(
        stats, gproblems, root, loadavg_start, loadavg(), started, time.monotonic() - t0,
        a.only)
    tblock = topology_markdown(topo, load_topo, loadavg(), started,
                               time.monotonic() - t_topo, a.only)
    if a.only == "stats":
        splice_section(a.out, block, STATS_BEGIN, STATS_END)
    elif a.only == "topology":
        splice_section(a.out, tblock, TOPO_BEGIN, TOPO_END)
    else:
        m = machine(a.venv)
        m["loadavg_start"] = loadavg_start
        write_markdown(a.out, m, results, started, time.monotonic() - t0, problems, block,
                       tblock)
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
