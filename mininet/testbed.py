#!/usr/bin/env python3
"""Shoal's Mininet data-center testbed: one scenario file, one command.

    /usr/bin/python3 mininet/testbed.py --scenario mininet/scenarios/smoke.json --out out/smoke

starts the real shoal-controller (OpenFlow on 127.0.0.1:6653, or a free port
when that one is taken), builds the 3-tier data center of dc.py on Open
vSwitch (userspace datapath), runs one shoal-hostd per hypervisor inside its
dom0 (netns backend, the VMs are Mininet hosts), then plays the scenario's
timeline (iperf3 flows, pings, migrations, policy changes) while it samples
the controller's and the host daemons' APIs. Into ``--out`` it writes CSV
time series, PNG plots and summary.json, and prints where they are.

Everything it creates is named ``t*`` / ``/tmp/shoal-tb-*`` and removed on
exit, on Ctrl-C and on errors (see cleanup.py for leftovers of a crash).
Run as root. The scenario format is documented in docs/testbed.md.
"""

import argparse
import csv
import faulthandler
import fcntl
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mininet.log import setLogLevel  # noqa: E402

import calibrate  # noqa: E402
import dc  # noqa: E402
import scenario as scn  # noqa: E402
import shoalnet  # noqa: E402

LOCK_PATH = '/tmp/shoal-tb.lock'
MIGRATION_COOKIE, MIGRATION_COOKIE_MASK = 0x5348100000000000, 0xfffff00000000000
HOSTD_PORT = 7070
MIGRATION_PORT0 = 4444
# In hostd mode (no orchestrator in the controller) the testbed picks L for
# the deadline itself, with this share of the deadline as the model's target
# (connection setup, pacing granularity and the final switch-over are not in
# the model).
HOSTD_MODE_DEADLINE_SHARE = 0.85
UDP_PAYLOAD_BYTES = 1400
# Nice of the testbed and everything it starts (see Testbed.start).
TESTBED_NICE = -5
ACTIVE_MIGRATION_STATES = ('queued', 'reserving', 'running', 'verifying', 'accepted')
FINAL_MIGRATION_STATES = ('done', 'failed', 'cancelled', 'succeeded')


class TestbedError(RuntimeError):
    """The testbed could not be set up or an action failed."""


class State:
    """Objects this run created, persisted so that cleanup.py can remove
    them after a crash (only when the owning process is gone)."""

    def __init__(self, path):
        self.path = path
        self.data = {'pid': os.getpid(), 'bridges': [], 'links': [], 'netns': [], 'pids': []}
        self.lock = threading.Lock()
        self._save()

    def add(self, kind, items):
        with self.lock:
            for i in items:
                if i not in self.data[kind]:
                    self.data[kind].append(i)
            self._save()

    def remove(self, kind, item):
        with self.lock:
            if item in self.data[kind]:
                self.data[kind].remove(item)
            self._save()

    def _save(self):
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ovs(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ''


def reservations_on(bridge):
    """What Shoal reserved on one bridge right now: OpenFlow meters, flows in
    the migration cookie range, ports with an OVS QoS (queues)."""
    meters = [line.strip() for line in
              ovs('ovs-ofctl', '-O', 'OpenFlow13', 'dump-meters', bridge).splitlines()
              if line.strip().startswith('meter=')]
    flows = []
    for line in ovs('ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge).splitlines():
        m = re.search(r'cookie=0x([0-9a-f]+)', line)
        if m and int(m.group(1), 16) & MIGRATION_COOKIE_MASK == MIGRATION_COOKIE:
            flows.append(line.strip())
    qos = []
    for port in ovs('ovs-vsctl', 'list-ports', bridge).split():
        q = ovs('ovs-vsctl', 'get', 'port', port, 'qos').strip()
        if q and q != '[]':
            qos.append(port)
    return {'meters': meters, 'flows': flows, 'qos_ports': qos}


class ProcEmulator(threading.Thread):
    """The host NIC counters each hostd reads (its ``proc_root``).

    A hypervisor's NIC is its bridge's uplink port (``thN-up``), which lives
    in the root network namespace (userspace OVS ports must), while hostd
    runs in the dom0 namespace and reads ``<proc_root>/net/dev`` of its own.
    So each hostd gets a small procfs tree written here four times a second:
    ``net/dev`` with the real counters of its uplink port, and idle
    ``stat``/``meminfo``/``vmstat`` (hostd's ``host_metrics = "vms"`` takes
    the host's CPU and memory from its VMs, ``cores``/``memory_mb`` set the
    capacities: all hypervisors share this one machine).
    """

    def __init__(self, tb):
        super().__init__(daemon=True)
        self.tb = tb
        self.stop_ev = threading.Event()
        self.idle = 0.0
        self.last = time.time()
        for h in tb.dc.hyps:
            os.makedirs(os.path.join(self.root(h), 'net'), exist_ok=True)
            self.write(h, self.read_dev())

    def root(self, h):
        return os.path.join(self.tb.run_dir, 'proc-%s' % h)

    @staticmethod
    def read_dev():
        try:
            with open('/proc/net/dev') as f:
                return f.read().splitlines()
        except OSError:
            return []

    def write(self, h, dev_lines):
        cores = self.tb.sc['topology']['host_cores']
        mem_kb = int(self.tb.sc['topology']['host_memory_mb'] * 1024)
        idle = int(self.idle)
        lines = ['cpu  0 0 0 %d 0 0 0 0 0 0' % (idle * cores)]
        lines += ['cpu%d 0 0 0 %d 0 0 0 0 0 0' % (c, idle) for c in range(cores)]
        up = self.tb.dc.dom0_info[h]['uplink']
        dev = dev_lines[:2] + [ln for ln in dev_lines[2:] if ln.strip().startswith(up + ':')]
        files = {
            'stat': '\n'.join(lines) + '\n',
            'meminfo': 'MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\n'
                       % (mem_kb, mem_kb, mem_kb),
            'vmstat': 'pswpout 0\n',
            'net/dev': '\n'.join(dev) + '\n',
        }
        for name, text in files.items():
            path = os.path.join(self.root(h), name)
            with open(path + '.tmp', 'w') as f:
                f.write(text)
            os.replace(path + '.tmp', path)

    def run(self):
        while not self.stop_ev.wait(0.25):
            now = time.time()
            self.idle += (now - self.last) * 100
            self.last = now
            dev = self.read_dev()
            for h in self.tb.dc.hyps:
                try:
                    self.write(h, dev)
                except OSError:
                    pass


class CpuSampler(threading.Thread):
    """Once a second: how much CPU ovs-vswitchd (the whole process and its
    busiest thread, the userspace datapath's forwarding thread), the
    controller and the host daemons used since the last sample, and how busy
    the whole machine was (share of all cores). A datapath thread near a
    whole core means the switches, not the links, limit the traffic."""

    def __init__(self, tb, step=1.0):
        super().__init__(daemon=True)
        self.tb, self.step = tb, step
        self.stop_ev = threading.Event()

    @staticmethod
    def machine_ticks():
        try:
            with open('/proc/stat') as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
        except (OSError, ValueError, IndexError):
            return None, None

    def run(self):
        hz = calibrate.CpuMeter.HZ
        ovs_pid = calibrate.ovs_pid()
        prev = None
        prev_drops = None
        while not self.stop_ev.wait(self.step):
            now = time.monotonic()
            ours = [p.pid for name, p in list(self.tb.procs)
                    if name == 'controller' or name.startswith('hostd-')]
            ovs_total, ovs_threads = calibrate.cpu_ticks(ovs_pid) if ovs_pid else (None, {})
            shoal = sum(calibrate.cpu_ticks(p)[0] or 0 for p in ours)
            m_all, m_idle = self.machine_ticks()
            cur = (now, ovs_total, ovs_threads, shoal, m_all, m_idle)
            if prev is not None and ovs_total is not None and prev[1] is not None:
                dt = max(1e-3, now - prev[0])
                busiest = max([ovs_threads[k] - prev[2].get(k, ovs_threads[k])
                               for k in ovs_threads] or [0])
                d_all = (m_all - prev[4]) if m_all is not None and prev[4] is not None else 0
                row = {'t_s': round(self.tb.now(), 3),
                       'ovs_cores': round((ovs_total - prev[1]) / hz / dt, 3),
                       'ovs_thread': round(busiest / hz / dt, 3),
                       'shoal_cores': round(max(0, shoal - prev[3]) / hz / dt, 3),
                       'machine_busy': (round(1 - (m_idle - prev[5]) / d_all, 3)
                                        if d_all > 0 else None)}
                backlog, drops = calibrate.packet_socket_backlog(ovs_pid)
                row['ovs_rx_backlog_kb'] = None if backlog is None else round(backlog / 1024, 1)
                row['ovs_rx_drops'] = (drops - prev_drops if drops is not None
                                       and prev_drops is not None else None)
                prev_drops = drops
                with self.tb.data_lock:
                    self.tb.rows['cpu'].append(row)
            prev = cur


class LineReader(threading.Thread):
    """Reads a child's output line by line, stamping each line on arrival."""

    def __init__(self, proc, sink, log_path):
        super().__init__(daemon=True)
        self.proc, self.sink, self.log_path = proc, sink, log_path

    def run(self):
        with open(self.log_path, 'a') as log:
            for raw in iter(self.proc.stdout.readline, b''):
                line = raw.decode(errors='replace').rstrip('\n')
                log.write(line + '\n')
                log.flush()
                self.sink(time.time(), line)


IPERF_LINE = re.compile(r'\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+([\d.]+)\s+(\w?)Bytes\s+'
                        r'([\d.]+)\s+(\w?)bits/sec')
# UDP receiver totals: "... 0.029 ms  3/8929 (0.034%)  receiver".
IPERF_UDP_TOTAL = re.compile(r'([\d.]+)\s+ms\s+(\d+)/(\d+)\s')
BYTE_UNIT = {'': 1.0, 'K': 2.0 ** 10, 'M': 2.0 ** 20, 'G': 2.0 ** 30}
PING_LINE = re.compile(r'\[([\d.]+)\].*icmp_seq=(\d+).*time=([\d.]+) ms')
UNIT = {'': 1e-6, 'K': 1e-3, 'M': 1.0, 'G': 1e3}


class Testbed:
    """One testbed run: ``with Testbed(sc, out) as tb: tb.run_timeline()``."""

    def __init__(self, sc, out, bin_dir=None, quiet=False):
        self.sc = sc
        self.out = os.path.abspath(out)
        self.bin_dir = bin_dir
        self.quiet = quiet
        self.started = time.time()
        self.t0 = None
        self.procs = []          # (name, Popen) of everything we started
        self.threads = []
        self.lock_file = None
        self.ctl = None
        self.dc = None
        self.emu = None
        self.stop_ev = threading.Event()
        self.data_lock = threading.Lock()
        self.rows = {k: [] for k in ('throughput', 'ping', 'lambda', 'hosts', 'migrations',
                                     'reservations', 'vf', 'events', 'decisions', 'cpu',
                                     'ports')}
        self.flow_totals = {}    # label -> the iperf3 receiver's end-of-run totals
        self.migrations = []
        self.mode = None
        self.checks = {}
        self.next_cmd = 1
        self.token = None        # the operator's (read+write) token
        self.ctl_token = None    # what the controller (and the testbed) present to hostd
        self.auth_tables = {}
        self.run_dir = '/tmp/shoal-tb-%d' % os.getpid()
        self.api = None
        self.of_port = None
        self.decisions_seen = set()

    # ---- logging ---------------------------------------------------------
    def log(self, msg):
        if not self.quiet:
            if self.t0:
                print('[testbed t=%6.1fs] %s' % (time.time() - self.t0, msg), flush=True)
            else:
                print('[testbed setup %4.1fs] %s' % (time.time() - self.started, msg), flush=True)

    def now(self):
        return time.time() - self.t0 if self.t0 else 0.0

    def event(self, kind, detail):
        with self.data_lock:
            self.rows['events'].append({'t_s': round(self.now(), 3), 'kind': kind,
                                        'detail': detail})

    # ---- setup -----------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if os.geteuid() != 0:
            raise TestbedError('the testbed needs root (Mininet, OVS, namespaces)')
        self.lock_file = open(LOCK_PATH, 'w')
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.log('another testbed is running; waiting for it to finish')
            fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        os.makedirs(self.out, exist_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(self.run_dir)
        self.state = State(os.path.join(self.run_dir, 'state.json'))
        subprocess.run([os.path.join(shoalnet.ROOT, 'ovs-scripts', 'start-ovs.sh')], check=True)
        self.ovs_prio = calibrate.boost(calibrate.ovs_pid())
        # The emulated hosts (Mininet shells, iperf3, ping, controller, host
        # daemons) are spawned from here and inherit this priority: on a real
        # data center they have CPUs of their own, so a job beside the
        # testbed must not slow them either.
        try:
            self.own_nice = os.getpriority(os.PRIO_PROCESS, 0)
            if self.own_nice > TESTBED_NICE:
                os.setpriority(os.PRIO_PROCESS, 0, TESTBED_NICE)
        except OSError:
            self.own_nice = None
        self.dc = dc.DataCenter(self.sc['topology'], 'tb-%d' % os.getpid())
        self.dc.clients = self.sc.get('clients', {})
        self.dc.check_free()
        # Credentials: an operator token, the controller's token for the host
        # daemons, one token per host (files readable by root only).
        self.auth_tables = shoalnet.operator_auth(self.run_dir, self.dc.hyps)
        self.token = shoalnet.OPERATOR_TOKEN
        self.pki = None
        if self.sc['controller']['tls']:
            # TLS on every channel: OpenFlow (ssl: with ovs-pki certificates),
            # the controller's and the host daemons' APIs (HTTPS).
            ips = ['127.0.0.1'] + [i[k] for i in self.dc.dom0_info.values()
                                   for k in ('mgmt_root_ip', 'mgmt_ip')]
            self.pki = shoalnet.Pki(os.path.join(self.run_dir, 'tls'), ips)
            self.pki.ovs_set_ssl()
            shoalnet.set_tls(self.pki.ca)
        self.ctl_token = shoalnet.read_token(os.path.join(self.run_dir, 'controller.token'))
        self.dc.write_description(os.path.join(self.out, 'topology.json'))
        with open(os.path.join(self.out, 'scenario.json'), 'w') as f:
            json.dump(self.sc, f, indent=2)
        self.start_controller()
        p = self.sc['topology']
        n_sw = len(self.dc.all_switches())
        self.log('building the data center: %d core, %d aggregation, %d ToR switches, '
                 '%d hypervisors, %d VMs (links %g Mbit/s)'
                 % (len(self.dc.cores), len(self.dc.aggs), len(self.dc.tors), len(self.dc.hyps),
                    len(self.dc.vm_info), p['link_mbps']))
        setLogLevel('warning')
        n_links = self.dc.n_directed_links()
        # Discovery time: the controller's link count is watched from before
        # the switches start (the build goes on while they are discovered).
        found = {}

        def watch_links():
            while 'stop' not in found:
                if self.count('/api/v1/links') == n_links:
                    found['t'] = time.time()
                    return
                time.sleep(0.2)
        watcher = threading.Thread(target=watch_links, daemon=True)
        watcher.start()
        t_build = time.time()
        try:
            self.dc.build(self.of_port, self.state, 'ssl' if self.pki else 'tcp')
        except BaseException:
            found['stop'] = True
            raise
        self.checks['build_s'] = round(time.time() - t_build, 2)
        self.state.add('links', [self.dc.dom0_info[h]['mgmt_root'] for h in self.dc.hyps])
        self.log('waiting for the controller to connect %d switches and find %d directed links'
                 % (n_sw, n_links))
        try:
            dc.wait(lambda: self.count('/api/v1/links') == n_links, 90, 'the links')
        except TimeoutError:
            found['stop'] = True
            raise TestbedError('the controller found %s of %d directed links (see %s)'
                               % (self.count('/api/v1/links'), n_links, self.ctl_log))
        # Discovery: from the switches' start to the controller knowing every
        # directed link (connections, port confirmation, LLDP).
        watcher.join(timeout=1)
        t_found = found.get('t') or time.time()
        self.checks['discovery_s'] = round(t_found - self.dc.switches_started_at, 2)
        self.log('all %d directed links found %.1f s after the switches started'
                 % (n_links, self.checks['discovery_s']))
        self.checks['switches_connected'] = self.count('/api/v1/switches')
        self.checks['transport'] = self.transport(n_sw)
        self.checks['directed_links'] = self.count('/api/v1/links')
        self.checks['directed_links_expected'] = n_links
        time.sleep(self.sc['controller']['port_confirm_s'] + 0.5)
        self.learn()
        # Let the learning pings leave the controller's λ window before the
        # host daemons (and with them the VMs) appear to the live loop.
        ctl = self.sc['controller']
        time.sleep(ctl['window_intervals'] * ctl['interval_s'] + ctl['interval_s'])
        self.emu = ProcEmulator(self)
        self.emu.start()
        self.start_hostds()

    def transport(self, n_switches, timeout=20):
        """How the testbed's switches reach the controller, as Open vSwitch
        reports it: {'ssl': n, 'tcp': n} of connected controller targets on
        this run's OpenFlow port, and the API scheme. Open vSwitch refreshes
        `is_connected` every few seconds: waits (up to ``timeout``) until
        ``n_switches`` are shown connected."""
        deadline = time.time() + timeout
        while True:
            out = {'ssl': 0, 'tcp': 0, 'api': shoalnet.SCHEME}
            r = subprocess.run(['ovs-vsctl', '--format=csv', '--data=bare', '--no-headings',
                                '--columns=target,is_connected', 'list', 'Controller'],
                               stdout=subprocess.PIPE, text=True)
            for line in r.stdout.splitlines():
                target, _, connected = line.partition(',')
                proto = target.split(':')[0]
                if (target.endswith(':%d' % self.of_port) and connected.strip() == 'true'
                        and proto in out):
                    out[proto] += 1
            if out['ssl'] + out['tcp'] >= n_switches or time.time() > deadline:
                return out
            time.sleep(1)

    def count(self, path):
        v = shoalnet.api_get(self.api, path)
        return len(v) if isinstance(v, list) else None

    def start_controller(self):
        ctl = self.sc['controller']
        self.of_port = ctl['of_port']
        if not port_free(self.of_port):
            port = free_port()
            self.log('OpenFlow port %d is taken; using %d' % (self.of_port, port))
            self.of_port = port
        api_port = free_port()
        self.api = '127.0.0.1:%d' % api_port
        db = os.path.join(self.out, 'shoal.db')
        for suffix in ('', '-wal', '-shm'):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        p = self.sc['topology']
        tables = {
            'of_listen': '127.0.0.1:%d' % self.of_port,
            'api_listen': '0.0.0.0:%d' % api_port,
            'db': db,
            'topology': {'lldp_interval_s': float(ctl['lldp_interval_s']),
                         'port_confirm_s': float(ctl['port_confirm_s']),
                         'link_capacity_bps': min(p['link_mbps'], p['host_link_mbps']) * 1e6},
            'monitor': {'interval_s': float(ctl['interval_s']),
                        'window_intervals': ctl['window_intervals']},
        }
        if self.controller_has('execute'):
            # An unreserved migration is capped at the hypervisor's NIC.
            tables['execute'] = {'reservation': 'meter',
                                 'max_bandwidth_bytes_per_s': p['host_link_mbps'] * 1e6 / 8}
        groups = scn.controller_groups(self.sc)
        if groups:
            # VIOLIN's domains and environments ([groups]).
            tables['groups'] = groups
        tables.update(self.auth_tables)
        if self.pki:
            tables.update(self.pki.controller_tables())
        cfg = scn.to_toml(scn.merge(tables, ctl['config']))
        self.ctl_cfg = os.path.join(self.out, 'controller.toml')
        with open(self.ctl_cfg, 'w') as f:
            f.write(cfg)
        args = [shoalnet.controller_binary(self.bin_dir), 'run', '--config', self.ctl_cfg]
        if ctl['policy']:
            args += ['--policy', ctl['policy']]
        if ctl['dry_run']:
            args += ['--dry-run']
        args += ctl['args']
        self.ctl_args = args
        self.spawn_controller('controller.log')
        # Where to watch the run: the dashboard (sign in with the operator
        # token) and the API, also in controller.json for tools.
        info = {'api': self.api, 'scheme': shoalnet.SCHEME,
                'dashboard': '%s://%s/' % (shoalnet.SCHEME, self.api),
                'operator_token_file': os.path.join(self.run_dir, 'operator.token'),
                'ca_file': self.pki.ca if self.pki else None}
        with open(os.path.join(self.out, 'controller.json'), 'w') as f:
            json.dump(info, f, indent=2)
        self.log('dashboard: %s (sign in with the token in %s)'
                 % (info['dashboard'], info['operator_token_file']))

    def spawn_controller(self, log_name):
        """Starts the controller (``self.ctl_args``), logging to OUT/log_name,
        and waits for its API."""
        self.ctl_log = os.path.join(self.out, log_name)
        log = open(self.ctl_log, 'w')
        self.ctl = subprocess.Popen(self.ctl_args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(('controller', self.ctl))
        self.state.add('pids', [self.ctl.pid])
        self.log('controller: %s (OpenFlow 127.0.0.1:%d, API %s, log %s)'
                 % (self.ctl_args[0], self.of_port, self.api, self.ctl_log))
        try:
            dc.wait(lambda: self.ctl.poll() is not None or shoalnet.api_get(self.api, '/healthz'),
                    30, 'the controller API')
        except TimeoutError:
            raise TestbedError('the controller API did not come up (see %s)' % self.ctl_log)
        if self.ctl.poll() is not None:
            raise TestbedError('the controller exited with %s (see %s)'
                               % (self.ctl.returncode, self.ctl_log))

    def restart_controller(self, n):
        """Stops the controller (SIGTERM, then SIGKILL after 15 s) and starts
        it again with the same configuration and database; its log is
        OUT/controller-<n+1>.log."""
        old = self.ctl
        old.terminate()
        try:
            old.wait(timeout=15)
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait()
        self.procs = [(name, p) for name, p in self.procs if p is not old]
        self.state.remove('pids', old.pid)
        self.event('controller', 'restart %d' % n)
        self.spawn_controller('controller-%d.log' % (n + 1))

    def hold(self):
        """Keeps the data center up for a program that drives it (the
        operator test, tests/e2e_operator.rs): writes OUT/ready.json (the
        API, the operator's token file, hypervisors, VMs, directed links),
        then waits until the file OUT/stop appears, at most duration_s.
        Whenever OUT/restart-controller appears, the controller is restarted
        on the same database; the file is removed once it answers again and
        OUT/controller-restarts holds the number of restarts so far."""
        def write(name, obj):
            tmp = os.path.join(self.out, '.%s.tmp' % name)
            with open(tmp, 'w') as f:
                json.dump(obj, f, indent=2)
            os.replace(tmp, os.path.join(self.out, name))
        write('ready.json', {
            'api': self.api, 'scheme': shoalnet.SCHEME,
            'operator_token_file': os.path.join(self.run_dir, 'operator.token'),
            'operator': self.auth_tables['auth']['operators'][0]['name'],
            'hypervisors': self.dc.hyps, 'vms_of': self.dc.vms_of,
            'directed_links': self.dc.n_directed_links()})
        self.log('held: the data center is up; %s ends the run'
                 % os.path.join(self.out, 'stop'))
        stop = os.path.join(self.out, 'stop')
        restart = os.path.join(self.out, 'restart-controller')
        deadline = time.time() + self.sc['duration_s']
        restarts = 0
        while not os.path.exists(stop):
            if time.time() > deadline:
                raise TestbedError('held for duration_s (%g s) and %s never appeared'
                                   % (self.sc['duration_s'], stop))
            if os.path.exists(restart):
                restarts += 1
                self.log('restarting the controller (%d)' % restarts)
                self.restart_controller(restarts)
                os.remove(restart)
                write('controller-restarts', restarts)
            self.check_alive()
            time.sleep(0.2)
        self.log('held run stopped')

    def controller_has(self, table):
        """Whether this controller build knows a config table (older builds
        refuse unknown tables)."""
        if not hasattr(self, '_ctl_help'):
            r = subprocess.run([shoalnet.controller_binary(self.bin_dir), 'run', '--help'],
                               capture_output=True, text=True)
            self._ctl_help = r.stdout
        return {'execute': '--policy' in self._ctl_help}.get(table, True)

    def learn(self):
        """Every dom0 and VM sends a few pings so that the controller learns
        all endpoints; each VM pings a VM in another pod (the cross-pod check)."""
        d = self.dc
        hyps = d.hyps
        pods = sorted(set(d.pod_of[h] for h in hyps))
        jobs = []
        for i, h in enumerate(hyps):
            other = [x for x in hyps if d.pod_of[x] != d.pod_of[h]] or [x for x in hyps if x != h]
            peer = other[i % len(other)] if other else h
            jobs.append((d.dom0_info[h]['name'], d.dom0_info[peer]['data_ip'], False))
            for j, vm in enumerate(d.vms_of[h]):
                target_vms = d.vms_of[peer]
                tgt = target_vms[j % len(target_vms)]
                jobs.append((vm, d.vm_info[tgt]['ip'], len(pods) > 1 and
                             d.pod_of[peer] != d.pod_of[h]))
        first_vm = d.vms_of[hyps[0]][0]
        for name in sorted(d.clients):
            jobs.append((name, d.vm_info[first_vm]['ip'], False))
        self.log('learning endpoints: %d hosts ping across the fabric' % len(jobs))
        results = {}
        for attempt in range(2):
            procs = [(n, ip, cross, d.node(n).popen('ping -c 5 -i 0.2 -W 1 -q %s' % ip,
                                                    stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT))
                     for n, ip, cross in jobs]
            for n, ip, cross, p in procs:
                out = p.communicate(timeout=20)[0].decode(errors='replace')
                m = re.search(r'(\d+) packets transmitted, (\d+) received', out)
                results[(n, ip)] = (cross, int(m.group(1)) if m else 5, int(m.group(2)) if m else 0)
            if attempt == 0:
                # The first pings of a pair reach the controller before its
                # flows are in; measure loss on the second round.
                continue
        sent = sum(r[1] for r in results.values() if r[0])
        got = sum(r[2] for r in results.values() if r[0])
        self.checks['cross_pod_pings_sent'] = sent
        self.checks['cross_pod_pings_received'] = got
        self.checks['cross_pod_ping_loss'] = round(1 - got / sent, 4) if sent else None
        self.checks['unreachable'] = ['%s->%s' % k for k, r in results.items() if r[2] == 0]
        self.log('cross-pod pings: %d/%d answered' % (got, sent))

    def hostd_api(self, h):
        return '%s:%d' % (self.dc.dom0_info[h]['mgmt_ip'], HOSTD_PORT)

    def hostd_call(self, h, method, path, body=None, timeout=3):
        return shoalnet.http(self.hostd_api(h), method, path, body, self.ctl_token, timeout)

    def start_hostds(self):
        d = self.dc
        hostd = shoalnet.binary('shoal-hostd', self.bin_dir)
        hd = self.sc['hostd']
        api_port = int(self.api.split(':')[1])
        self.t0 = time.time()
        self.event('hostd', 'host daemons start (scenario epoch)')
        for h in d.hyps:
            info = d.dom0_info[h]
            vms = []
            for vm in d.vms_of[h]:
                v = d.vm_info[vm]
                spec = self.sc['vms'][vm]
                series = os.path.join(self.run_dir, '%s.series.json' % vm)
                with open(series, 'w') as f:
                    json.dump(spec['series'], f)
                lines = ['[[vm]]', 'name = "%s"' % vm, 'mac = "%s"' % v['mac'],
                         'ip = "%s"' % v['ip'], 'vcpus = %d' % spec['vcpus'],
                         'memory_mb = %d' % spec['memory_mb'], 'backend = "netns"',
                         'namespace = "%s"' % vm, 'iface = "%s"' % v['iface'],
                         'port = "%s"' % v['port'],
                         # relative to scenario_dir (hostd confines it there)
                         'scenario = "%s"' % os.path.basename(series)]
                if self.sc['topology']['vf_per_host'] > 0:
                    lines += ['vf_iface = "%s"' % v['vf_iface'], 'vf_port = "%s"' % v['vf_port']]
                vms.append('\n'.join(lines))
            cfg = '\n'.join([
                'host_id = "%s"' % h,
                'controller = "%s://%s:%d"' % (shoalnet.SCHEME, info['mgmt_root_ip'], api_port),
                'listen = "%s:%d"' % (info['mgmt_ip'], HOSTD_PORT),
                'api_url = "%s://%s:%d"' % (shoalnet.SCHEME, info['mgmt_ip'], HOSTD_PORT),
                'dom0_addr = "%s"' % info['data_ip'],
                'token_file = "%s"' % os.path.join(self.run_dir, 'hosts', '%s.token' % h),
                'controller_token_file = "%s"' % os.path.join(self.run_dir, 'controller.token'),
                'interval_s = %s' % float(hd['interval_s']),
                'uplink = "%s"' % info['uplink'],
                'nic_bps = %d' % int(self.sc['topology']['host_link_mbps'] * 1e6),
                'bridge = "%s"' % h,
                'vf_count = %d' % self.sc['topology']['vf_per_host'],
                'run_dir = "%s"' % os.path.join(self.run_dir, 'hostd-%s' % h),
                'scenario_dir = "%s"' % self.run_dir,
                'proc_root = "%s"' % self.emu.root(h),
                'host_metrics = "vms"',
                'cores = %d' % self.sc['topology']['host_cores'],
                'memory_mb = %d' % self.sc['topology']['host_memory_mb'],
                'dirty_rate_period_s = 0',
                'http_timeout_s = 3'] + (self.pki.hostd_lines() if self.pki else [])
                + [''] + vms) + '\n'
            path = os.path.join(self.out, 'hostd-%s.toml' % h)
            with open(path, 'w') as f:
                f.write(cfg)
            log = open(os.path.join(self.out, 'hostd-%s.log' % h), 'w')
            # `ip netns exec` rather than Mininet's popen: Mininet hosts have
            # a private mount namespace, so the /run/netns names made after
            # they started would be invisible to hostd; `ip netns exec`
            # makes a slave mount namespace that sees them.
            p = subprocess.Popen(['ip', 'netns', 'exec', info['name'], hostd, '-c', path],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, RUST_LOG='info', NO_COLOR='1'))
            self.procs.append(('hostd-%s' % h, p))
            self.state.add('pids', [p.pid])
        self.log('waiting for %d host daemons to register and report' % len(d.hyps))

        def registered():
            v = shoalnet.api_get(self.api, '/api/v1/hosts')
            if not isinstance(v, list):
                return False
            ok = [x for x in v if x.get('metrics')]
            return len(ok) >= len(d.hyps)
        try:
            dc.wait(registered, 40, 'host registrations')
        except TimeoutError:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise TestbedError('%s exited with %s (see its log in %s)'
                                       % (name, p.returncode, self.out))
            raise TestbedError('host daemons did not register (see hostd-*.log in %s)'
                               % self.out)
        hosts = shoalnet.api_get(self.api, '/api/v1/hosts')
        self.checks['hosts_registered'] = sorted(x['id'] for x in hosts)
        self.checks['vms_registered'] = len(shoalnet.api_get(self.api, '/api/v1/vms') or [])
        code, _ = shoalnet.http(self.api, 'GET', '/api/v1/migrations', token=self.token)
        self.mode = 'controller' if code == 200 else 'hostd'
        self.checks['migration_driver'] = self.mode
        self.log('%d hosts and %d VMs registered; migrations driven by the %s'
                 % (len(hosts), self.checks['vms_registered'],
                    'controller (POST /api/v1/migrations)' if self.mode == 'controller' else
                    "host daemons' API (the controller has no /api/v1/migrations)"))

    # ---- the timeline ----------------------------------------------------
    def run_timeline(self, extra=None):
        """Plays traffic, pings and actions until duration_s (seconds since
        the host daemons started), sampling every sample_s. ``extra`` is an
        optional list of (at_s, callable) the experiment adds."""
        sc = self.sc
        events = []
        for f in sc['traffic']:
            events.append((max(0.0, f['start_s'] - 1.0), 'server', f))
            events.append((f['start_s'], 'client', f))
        for p in sc['pings']:
            events.append((p['start_s'], 'ping', p))
        for a in sc['actions']:
            events.append((a['at_s'], 'action', a))
        for at, fn in extra or []:
            events.append((at, 'call', fn))
        events.sort(key=lambda e: e[0])
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        self.threads.append(sampler)
        cpu = CpuSampler(self)
        cpu.start()
        self.threads.append(cpu)
        next_progress = 0.0
        for at, kind, obj in events:
            while self.now() < at:
                self.check_alive()
                if self.now() >= next_progress:
                    next_progress = self.now() + 10
                    self.progress()
                time.sleep(min(0.2, max(0.0, at - self.now())))
            if kind == 'server':
                self.start_server(obj)
            elif kind == 'client':
                self.start_client(obj)
            elif kind == 'ping':
                self.start_ping(obj)
            elif kind == 'action':
                self.do_action(obj)
            else:
                obj(self)
        while self.now() < sc['duration_s']:
            self.check_alive()
            if self.now() >= next_progress:
                next_progress = self.now() + 10
                self.progress()
            time.sleep(0.2)
        self.wait_migrations(60)
        self.stop_ev.set()
        cpu.stop_ev.set()
        sampler.join(timeout=10)
        self.log('timeline done')

    def check_alive(self):
        for name, p in self.procs:
            if name in ('controller',) or name.startswith('hostd-'):
                if p.poll() is not None:
                    raise TestbedError('%s exited with %s (see %s)' % (name, p.returncode,
                                                                       self.out))

    def progress(self):
        with self.data_lock:
            last = {}
            for r in self.rows['throughput']:
                last[r['flow']] = r['mbps']
            act = [m for m in self.migrations if m['state'] not in FINAL_MIGRATION_STATES]
        parts = ['%s %.1f Mbit/s' % (k, v) for k, v in sorted(last.items())]
        if act:
            parts.append('migrating: ' + ', '.join('%s (%s)' % (m['vm'], m['state']) for m in act))
        self.log('; '.join(parts) if parts else 'running')

    def start_server(self, f):
        node = self.dc.node(f['dst'])
        p = node.popen('stdbuf -oL iperf3 -s -1 -i 1 --forceflush -p %d' % f['port'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(('iperf3-server-%s' % f['label'], p))
        state = {'sep': False}

        def sink(ts, line, f=f, state=state):
            if line.startswith('- - -'):
                state['sep'] = True
            m = IPERF_LINE.search(line)
            if m and state['sep'] and 'receiver' in line:
                self.record_total(f, m, line)
            if m and not state['sep']:
                mbps = float(m.group(5)) * UNIT.get(m.group(6), 1.0)
                with self.data_lock:
                    self.rows['throughput'].append({
                        't_s': round(ts - self.t0, 3), 'flow': f['label'], 'src': f['src'],
                        'dst': f['dst'], 'proto': f['proto'], 'mbps': round(mbps, 4)})
        r = LineReader(p, sink, os.path.join(self.out, 'iperf3-%s-server.log'
                                              % f['label'].replace('>', '-')))
        r.start()
        self.threads.append(r)

    def record_total(self, f, m, line):
        """The receiver's totals over the whole flow (its last line): bytes
        received and, for UDP, datagrams lost of those sent. A rate taken
        from these is stable where per-second samples are not (iperf3 catches
        up in bursts after it was held back)."""
        t0, t1 = float(m.group(1)), float(m.group(2))
        tot = {'interval_s': round(t1 - t0, 3),
               'received_bytes': int(float(m.group(3)) * BYTE_UNIT.get(m.group(4), 1.0))}
        u = IPERF_UDP_TOTAL.search(line[m.end():])
        if u and f['proto'] == 'udp':
            lost, sent = int(u.group(2)), int(u.group(3))
            tot.update({'datagrams_sent': sent, 'datagrams_lost': lost,
                        'received_bytes': (sent - lost) * UDP_PAYLOAD_BYTES,
                        'sent_bytes': sent * UDP_PAYLOAD_BYTES})
        if tot['interval_s'] > 0:
            tot['mbps'] = round(tot['received_bytes'] * 8 / tot['interval_s'] / 1e6, 4)
        with self.data_lock:
            self.flow_totals[f['label']] = tot

    def start_client(self, f):
        node = self.dc.node(f['src'])
        dur = max(1, int(round(f['stop_s'] - f['start_s'])))
        cmd = 'iperf3 -c %s -p %d -t %d -i 1 --forceflush' % (
            self.dc.ip_of(f['dst']), f['port'], dur)
        if f['proto'] == 'udp':
            cmd += ' -u -l %d -b %gM' % (UDP_PAYLOAD_BYTES, f['mbps'])
        elif f['pacing'] == 'socket':
            # Kernel pacing (SO_MAX_PACING_RATE): a steady rate with no
            # catch-up bursts after the flow was held back.
            cmd += ' --fq-rate %gM' % f['mbps']
        else:
            cmd += ' -b %gM' % f['mbps']
        p = node.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(('iperf3-client-%s' % f['label'], p))
        r = LineReader(p, lambda ts, line: None,
                       os.path.join(self.out, 'iperf3-%s-client.log'
                                    % f['label'].replace('>', '-')))
        r.start()
        self.threads.append(r)
        self.event('traffic', '%s %s %g Mbit/s for %d s' % (f['label'], f['proto'], f['mbps'],
                                                            dur))

    def start_ping(self, pg):
        node = self.dc.node(pg['src'])
        dur = max(1, int(round(pg['stop_s'] - pg['start_s'])))
        p = node.popen('stdbuf -oL ping -D -i %g -W 1 -w %d %s' % (
            pg['interval_s'], dur, self.dc.ip_of(pg['dst'])),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(('ping-%s-%s' % (pg['src'], pg['dst']), p))

        def sink(ts, line, pg=pg):
            m = PING_LINE.search(line)
            if m:
                with self.data_lock:
                    self.rows['ping'].append({
                        't_s': round(float(m.group(1)) - self.t0, 3), 'src': pg['src'],
                        'dst': pg['dst'], 'seq': int(m.group(2)),
                        'rtt_ms': float(m.group(3))})
        r = LineReader(p, sink, os.path.join(self.out, 'ping-%s-%s.log' % (pg['src'], pg['dst'])))
        r.start()
        self.threads.append(r)

    def do_action(self, a):
        if a['do'] == 'migrate':
            try:
                self.migrate(a['vm'], a['to'], a['deadline_s'], a.get('reserve', True),
                             a.get('label'))
            except TestbedError as e:
                self.log('migration of %s not started: %s' % (a['vm'], e))
                self.event('migration-refused', '%s: %s' % (a['vm'], e))
        elif a['do'] == 'policy':
            body = {'name': a['name'], 'dry_run': bool(a.get('dry_run', False))}
            if a.get('options'):
                body['options'] = a['options']
            code, resp = shoalnet.http(self.api, 'PUT', '/api/v1/policy', body, self.token)
            self.log('PUT /api/v1/policy %s -> %s %s' % (a['name'], code, resp))
            self.event('policy', '%s -> %s' % (json.dumps(body), code))
        else:
            self.log('mark: %s' % a.get('label'))
            self.event('mark', a.get('label', ''))

    # ---- migrations ------------------------------------------------------
    def vm_host(self, vm):
        v = shoalnet.api_get(self.api, '/api/v1/vms/%s' % vm)
        if isinstance(v, dict) and v.get('host'):
            return v['host']
        br = self.dc.bridge_of_port(self.dc.vm_info[vm]['port'])
        return br

    def max_dirty_mbps(self, vm):
        """Largest dirty rate the VM's series reaches (what the orchestrator
        calls the maximum observed dirty rate)."""
        return scn.series_max(self.sc['vms'][vm]['series'], 'dirty_mbps')

    def migrate(self, vm, to, deadline_s, reserve=True, label=None):
        """Starts a migration; returns its record (tracked by the sampler)."""
        n = self.next_cmd
        self.next_cmd += 1
        rec = {'n': n, 'vm': vm, 'to': to, 'deadline_s': deadline_s, 'reserve': reserve,
               'label': label or 'migrate', 'mode': self.mode, 'state': 'starting',
               'requested_t': round(self.now(), 3), 'started_t': None, 'ended_t': None,
               'result': None, 'record': None, 'path_bridges': [], 'reservation': {},
               'error': None, 'progress': []}
        rec['from'] = self.vm_host(vm)
        if self.mode == 'controller':
            body = {'vm': vm, 'destination': to, 'deadline_s': deadline_s, 'reserve': reserve}
            code, resp = shoalnet.http(self.api, 'POST', '/api/v1/migrations', body, self.token)
            if code not in (200, 201, 202) or not isinstance(resp, dict):
                raise TestbedError('POST /api/v1/migrations %s -> %s %s'
                                   % (json.dumps(body), code, resp))
            rec['id'] = resp.get('id')
            rec['record'] = resp
            rec['state'] = resp.get('state', 'queued')
            rec['started_t'] = round(self.now(), 3)   # refined from the record
        else:
            self._migrate_hostd(rec)
            rec['started_t'] = round(self.now(), 3)
        with self.data_lock:
            self.migrations.append(rec)
        self.log('migration %s: %s %s -> %s, deadline %gs, reservation %s%s'
                 % (rec.get('id'), vm, rec['from'], to, deadline_s, 'on' if reserve else 'off',
                    '' if self.mode == 'controller' else
                    ' (hostd cap %.2f MiB/s)' % rec['cap_mib_s']))
        self.event('migration-start', '%s %s->%s reserve=%s' % (vm, rec['from'], to, reserve))
        return rec

    def _migrate_hostd(self, rec):
        vm, src, dst = rec['vm'], rec['from'], rec['to']
        if dst == 'auto':
            raise TestbedError('"auto" destinations need the controller\'s orchestrator')
        if src == dst:
            raise TestbedError('%s is already on %s' % (vm, dst))
        code, st = self.hostd_call(src, 'GET', '/api/v1/vms/%s' % vm)
        if code != 200:
            raise TestbedError('hostd %s: GET /api/v1/vms/%s -> %s %s' % (src, vm, code, st))
        inv = st['inventory']
        m_mib = float(inv['memory_mb'])
        r = self.max_dirty_mbps(vm)
        nic = self.sc['topology']['host_link_mbps'] * 1e6 / 8 / 2 ** 20
        if rec['reserve']:
            pred = scn.vmpatrol_min_bandwidth(m_mib, r, rec['deadline_s'] *
                                              HOSTD_MODE_DEADLINE_SHARE, nic)
            if pred is None:
                raise TestbedError('deadline %gs infeasible for %s (M %g MiB, R %g MiB/s, '
                                   'NIC %.1f MiB/s)' % (rec['deadline_s'], vm, m_mib, r, nic))
            cap = pred['bandwidth_mbps']
        else:
            cap = nic
        pred = scn.vmpatrol_predict(m_mib, r, cap)
        rec['cap_mib_s'] = cap
        rec['predicted'] = pred
        rec['id'] = 'tb-mig-%d' % rec['n']
        d0 = self.dc.dom0_info[dst]
        spec = {'vm': vm, 'destination_host': dst,
                'destination_addr': '%s:%d' % (d0['data_ip'], MIGRATION_PORT0 + rec['n']),
                'max_bandwidth_bytes_per_s': int(cap * 2 ** 20), 'downtime_limit_ms': 300,
                'deadline_s': float(rec['deadline_s']),
                'peer_token': shoalnet.new_token()}
        inc = dict(spec, kind='prepare_incoming', vm_spec=inv)
        in_id = 'tb-in-%d' % rec['n']
        code, resp = self.hostd_call(dst, 'PUT', '/api/v1/commands/%s' % in_id, inc)
        if code not in (200, 202):
            raise TestbedError('hostd %s prepare_incoming -> %s %s' % (dst, code, resp))
        mig = dict(spec, kind='migrate', destination_api='%s://%s' % (shoalnet.SCHEME, self.hostd_api(dst)),
                   incoming_command_id=in_id)
        code, resp = self.hostd_call(src, 'PUT', '/api/v1/commands/%s' % rec['id'], mig)
        if code not in (200, 202):
            raise TestbedError('hostd %s migrate -> %s %s' % (src, code, resp))
        rec['state'] = 'running'

    def _unix_to_t(self, ms):
        return round(ms / 1000.0 - self.t0, 3) if isinstance(ms, (int, float)) else None

    def track_controller_migrations(self):
        """Every migration the controller knows (engineers' and the live
        loop's), updated from GET /api/v1/migrations."""
        code, lst = shoalnet.http(self.api, 'GET', '/api/v1/migrations', token=self.token)
        if code != 200 or not isinstance(lst, list):
            return
        with self.data_lock:
            known = {m.get('id'): m for m in self.migrations}
        for r in lst:
            if not isinstance(r, dict) or not r.get('id'):
                continue
            rec = known.get(r['id'])
            if rec is None:
                rec = {'n': 0, 'id': r['id'], 'vm': r.get('vm'), 'to': r.get('to'),
                       'from': r.get('from'), 'deadline_s': r.get('deadline_s'),
                       'reserve': r.get('reserve', True), 'label': r.get('reason') or 'policy',
                       'mode': 'controller', 'state': r.get('state'),
                       'requested_t': self._unix_to_t(r.get('created_unix_ms')),
                       'started_t': None, 'ended_t': None, 'result': None, 'record': r,
                       'path_bridges': [], 'reservation': {}, 'error': None, 'progress': []}
                with self.data_lock:
                    self.migrations.append(rec)
                self.log('controller migration %s: %s %s -> %s (%s)'
                         % (r['id'], r.get('vm'), r.get('from'), r.get('to'),
                            r.get('reason', '')))
                self.event('migration-start', '%s %s->%s (%s)' % (r.get('vm'), r.get('from'),
                                                                  r.get('to'),
                                                                  r.get('reason', '')))
            was_active = rec['state'] not in FINAL_MIGRATION_STATES
            self.update_controller_record(rec, r)
            if was_active and rec['state'] in ('reserving', 'running', 'verifying', 'done'):
                # 'done' once: the last sample may come just after the end.
                self.check_reservations(rec, active=rec['state'] != 'done')

    def update_controller_record(self, rec, r):
        t = round(self.now(), 3)
        rec['record'] = r
        if r.get('from'):
            rec['from'] = r['from']
        old = rec['state']
        rec['state'] = r.get('state', rec['state'])
        rec['error'] = r.get('error')
        if r.get('path'):
            by_dpid = {('%016x' % v): k for k, v in self.dc.dpids.items()}
            rec['path_bridges'] = [by_dpid.get(_dpid_hex(x), str(x)) for x in r['path']]
        if r.get('started_unix_ms') is not None:
            rec['started_t'] = self._unix_to_t(r['started_unix_ms'])
        prog = r.get('progress') if isinstance(r.get('progress'), dict) else {}
        with self.data_lock:
            self.rows['migrations'].append({
                't_s': t, 'id': rec['id'], 'vm': rec['vm'], 'state': rec['state'],
                'phase': prog.get('phase', ''),
                'transferred_bytes': prog.get('transferred_bytes', 0),
                'total_bytes': prog.get('total_bytes', 0)})
        if rec['state'] in FINAL_MIGRATION_STATES and old not in FINAL_MIGRATION_STATES:
            rec['result'] = r.get('result')
            rec['ended_t'] = self._unix_to_t(r.get('ended_unix_ms')) or t
            if rec['started_t'] is None:
                rec['started_t'] = rec['requested_t']
            self.log('migration %s of %s: %s%s' % (rec['id'], rec['vm'], rec['state'],
                                                   (' (%s)' % rec['error']) if rec['error']
                                                   else ''))
            self.event('migration-end', '%s %s' % (rec['vm'], rec['state']))

    def poll_migration(self, rec):
        """hostd mode: the source hostd's command status."""
        if rec['state'] in FINAL_MIGRATION_STATES:
            return
        t = round(self.now(), 3)
        code, r = self.hostd_call(rec['from'], 'GET', '/api/v1/commands/%s' % rec['id'])
        if code != 200 or not isinstance(r, dict):
            return
        prog = r.get('progress') if isinstance(r.get('progress'), dict) else {}
        st = r.get('state')
        if st == 'succeeded':
            rec['state'] = 'done'
        elif st == 'failed':
            rec['state'] = 'failed'
            rec['error'] = r.get('error')
        else:
            rec['state'] = 'running'
        with self.data_lock:
            self.rows['migrations'].append({
                't_s': t, 'id': rec['id'], 'vm': rec['vm'], 'state': rec['state'],
                'phase': prog.get('phase', ''),
                'transferred_bytes': prog.get('transferred_bytes', 0),
                'total_bytes': prog.get('total_bytes', 0)})
        if rec['state'] in FINAL_MIGRATION_STATES:
            res = r.get('result') or {}
            rec['result'] = res.get('migration', res) if isinstance(res, dict) else res
            rec['ended_t'] = t
            self.log('migration %s of %s: %s%s' % (rec['id'], rec['vm'], rec['state'],
                                                   (' (%s)' % rec['error']) if rec['error']
                                                   else ''))
            self.event('migration-end', '%s %s' % (rec['vm'], rec['state']))

    def check_reservations(self, rec, active):
        bridges = rec['path_bridges'] or self.dc.all_switches()
        t = round(self.now(), 3)
        seen = rec['reservation'].setdefault('seen', {})
        full = []
        for b in bridges:
            r = reservations_on(b)
            has = bool((r['meters'] and r['flows']) or r['qos_ports'])
            if has:
                full.append(b)
                if active and b not in seen:
                    seen[b] = {'t_s': t, 'meters': r['meters'], 'flows': r['flows'][:4],
                               'qos_ports': r['qos_ports']}
            with self.data_lock:
                self.rows['reservations'].append({
                    't_s': t, 'migration': rec['id'], 'bridge': b, 'meters': len(r['meters']),
                    'migration_flows': len(r['flows']), 'qos_ports': len(r['qos_ports'])})
        if active:
            best = rec['reservation'].get('max_simultaneous', 0)
            rec['reservation']['max_simultaneous'] = max(best, len(full))
        return full

    def wait_migrations(self, extra_s):
        deadline = time.time() + extra_s
        while time.time() < deadline:
            with self.data_lock:
                act = [m for m in self.migrations if m['state'] not in FINAL_MIGRATION_STATES]
            if not act:
                return
            time.sleep(0.5)
        self.log('warning: migrations still running at the end: %s'
                 % ', '.join(m['vm'] for m in act))

    def after_migrations(self):
        """Reservations left on every bridge of the testbed after the
        migrations ended (should be none)."""
        left = {}
        for b in self.dc.all_switches():
            r = reservations_on(b)
            if r['meters'] or r['flows'] or r['qos_ports']:
                left[b] = r
        return left

    # ---- sampling --------------------------------------------------------
    def sampler(self):
        step = self.sc['sample_s']
        nxt = time.time()
        while not self.stop_ev.is_set():
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - a bad sample must not stop the run
                self.log('sample failed: %s' % e)
            nxt += step
            self.stop_ev.wait(max(0.0, nxt - time.time()))

    def mac_name(self):
        if not hasattr(self, '_mac_name'):
            m = {v['mac']: k for k, v in self.dc.vm_info.items()}
            m.update({v['data_mac']: v['name'] for v in self.dc.dom0_info.values()})
            m.update({v['mac']: k for k, v in self.dc.clients.items()})
            self._mac_name = m
        return self._mac_name

    def sample(self):
        t = round(self.now(), 3)
        names = self.mac_name()
        mx = shoalnet.api_get(self.api, '/api/v1/traffic-matrix')
        rows = []
        if isinstance(mx, dict):
            for p in mx.get('pairs', []):
                rows.append({'t_s': t, 'src': names.get(p.get('src'), p.get('src')),
                             'dst': names.get(p.get('dst'), p.get('dst')),
                             'class': p.get('class'), 'bytes_per_s': p.get('bytes_per_s')})
        hosts = shoalnet.api_get(self.api, '/api/v1/hosts')
        hrows = []
        if isinstance(hosts, list):
            for h in hosts:
                m = h.get('metrics') or {}
                hrows.append({'t_s': t, 'host': h.get('id'), 'cpu_util': m.get('cpu_util'),
                              'mem_used_mb': m.get('mem_used_mb'),
                              'mem_total_mb': m.get('mem_total_mb'),
                              'nic_tx_bytes_per_s': m.get('nic_tx_bytes_per_s'),
                              'nic_rx_bytes_per_s': m.get('nic_rx_bytes_per_s'),
                              'vms': ' '.join(h.get('vms') or [])})
        prows = self.sample_ports(t)
        vrows = []
        if self.sc['topology']['vf_per_host'] > 0:
            vrows, assign = self.sample_vfs(t)
            if assign is not None:
                with self.data_lock:
                    self.rows.setdefault('vf_assignments_raw', []).append(
                        {'t_s': t, 'assignments': assign})
        with self.data_lock:
            self.rows['lambda'] += rows
            self.rows['hosts'] += hrows
            self.rows['vf'] += vrows
            self.rows['ports'] += prows
            migs = list(self.migrations)
        if self.mode == 'controller':
            self.track_controller_migrations()
            self.sample_decisions(t)
        else:
            for rec in migs:
                was_active = rec['state'] not in FINAL_MIGRATION_STATES
                self.poll_migration(rec)
                if was_active and rec['state'] in ('running', 'done'):
                    self.check_reservations(rec, active=rec['state'] != 'done')

    def sample_ports(self, t):
        """Every switch port's rates from the controller's last polls
        (``GET /api/v1/ports/stats``), with its cumulative drop counters."""
        ps = shoalnet.api_get(self.api, '/api/v1/ports/stats')
        if not isinstance(ps, list):
            return []
        if not hasattr(self, '_dpid_name'):
            self._dpid_name = {'%016x' % d: n for n, d in self.dc.dpids.items()}
        rows = []
        for p in ps:
            if not isinstance(p, dict):
                continue
            c = p.get('counters') or {}
            rows.append({'t_s': t, 'bridge': self._dpid_name.get(str(p.get('dpid')), p.get('dpid')),
                         'port': p.get('port'), 'tx_bytes_per_s': p.get('tx_bytes_per_s'),
                         'rx_bytes_per_s': p.get('rx_bytes_per_s'),
                         'tx_dropped': c.get('tx_dropped'), 'rx_dropped': c.get('rx_dropped')})
        return rows

    def hop_rates(self, bridges, t_from, t_to):
        """Per bridge: the busiest port's mean egress rate (Mbit/s) over
        [t_from, t_to] (on a path, the port towards the next hop) and the
        packets all its ports dropped in that time."""
        with self.data_lock:
            rows = [r for r in self.rows['ports']
                    if r['bridge'] in bridges and t_from < r['t_s'] <= t_to]
        out = {}
        for b in bridges:
            per_port, drops = {}, {}
            for r in rows:
                if r['bridge'] != b:
                    continue
                if r['tx_bytes_per_s'] is not None:
                    per_port.setdefault(r['port'], []).append(r['tx_bytes_per_s'])
                for k in ('tx_dropped', 'rx_dropped'):
                    if r.get(k) is not None:
                        drops.setdefault((r['port'], k), []).append(r[k])
            best = max(per_port.items(), key=lambda kv: statistics.mean(kv[1]), default=None)
            out[b] = {'port': best[0] if best else None,
                      'tx_mbps': round(statistics.mean(best[1]) * 8 / 1e6, 2) if best else None,
                      'dropped': sum(max(v) - min(v) for v in drops.values())}
        return out

    def sample_vfs(self, t):
        """VF state per VM from three places: the controller's assignment
        (GET /api/v1/vf-assignments: ``attached`` per host), hostd's view
        (GET /api/v1/vms on each host: ``vf_attached``) and the VF
        stand-in interface itself (up = attached)."""
        assign = shoalnet.api_get(self.api, '/api/v1/vf-assignments')
        assigned = _assigned_vms(assign)
        ctl_vms = shoalnet.api_get(self.api, '/api/v1/vms')
        metrics = {v.get('name'): (v.get('metrics') or {}) for v in ctl_vms or []
                   if isinstance(v, dict)}
        rows = []
        for h in self.dc.hyps:
            code, vms = self.hostd_call(h, 'GET', '/api/v1/vms', timeout=2)
            if code != 200 or not isinstance(vms, list):
                continue
            for v in vms:
                name = (v.get('inventory') or {}).get('name')
                if name not in self.dc.vm_info or v.get('state') == 'incoming':
                    continue
                info = self.dc.vm_info[name]
                r = subprocess.run(['ip', '-n', name, '-o', 'link', 'show', info['vf_iface']],
                                   capture_output=True, text=True)
                up = int(',UP' in r.stdout or '<UP' in r.stdout)
                m = metrics.get(name, {})
                rows.append({'t_s': t, 'vm': name, 'host': h,
                             'vf_attached': int(bool(v.get('vf_attached'))),
                             'vf_link_up': up,
                             'assigned': '' if assigned is None else int(name in assigned),
                             'tx_packets_per_s': m.get('tx_packets_per_s'),
                             'rx_packets_per_s': m.get('rx_packets_per_s')})
        return rows, assign

    def sample_decisions(self, t):
        ds = shoalnet.api_get(self.api, '/api/v1/decisions?limit=50')
        if isinstance(ds, dict):
            ds = ds.get('decisions', [])
        if not isinstance(ds, list):
            return
        for d in ds:
            key = json.dumps(d, sort_keys=True)
            if key in self.decisions_seen:
                continue
            self.decisions_seen.add(key)
            with self.data_lock:
                self.rows['decisions'].append({'t_s': t, 'decision': d})

    # ---- results ---------------------------------------------------------
    def write_csvs(self):
        files = {}
        specs = {
            'throughput': ['t_s', 'flow', 'src', 'dst', 'proto', 'mbps'],
            'ping': ['t_s', 'src', 'dst', 'seq', 'rtt_ms'],
            'lambda': ['t_s', 'src', 'dst', 'class', 'bytes_per_s'],
            'hosts': ['t_s', 'host', 'cpu_util', 'mem_used_mb', 'mem_total_mb',
                      'nic_tx_bytes_per_s', 'nic_rx_bytes_per_s', 'vms'],
            'migrations': ['t_s', 'id', 'vm', 'state', 'phase', 'transferred_bytes',
                           'total_bytes'],
            'reservations': ['t_s', 'migration', 'bridge', 'meters', 'migration_flows',
                             'qos_ports'],
            'vf': ['t_s', 'vm', 'host', 'vf_attached', 'vf_link_up', 'assigned',
                   'tx_packets_per_s', 'rx_packets_per_s'],
            'events': ['t_s', 'kind', 'detail'],
            'ports': ['t_s', 'bridge', 'port', 'tx_bytes_per_s', 'rx_bytes_per_s', 'tx_dropped',
                      'rx_dropped'],
            'cpu': ['t_s', 'ovs_cores', 'ovs_thread', 'shoal_cores', 'machine_busy',
                    'ovs_rx_backlog_kb', 'ovs_rx_drops'],
        }
        with self.data_lock:
            for name, cols in specs.items():
                path = os.path.join(self.out, '%s.csv' % name)
                with open(path, 'w', newline='') as f:
                    w = csv.DictWriter(f, fieldnames=cols, extrasaction='ignore')
                    w.writeheader()
                    for r in self.rows[name]:
                        w.writerow(r)
                files[name] = path
            if self.rows['decisions']:
                path = os.path.join(self.out, 'decisions.jsonl')
                with open(path, 'w') as f:
                    for r in self.rows['decisions']:
                        f.write(json.dumps(r) + '\n')
                files['decisions'] = path
            if self.rows.get('vf_assignments_raw'):
                path = os.path.join(self.out, 'vf-assignments.jsonl')
                with open(path, 'w') as f:
                    for r in self.rows['vf_assignments_raw']:
                        f.write(json.dumps(r) + '\n')
                files['vf_assignments'] = path
        return files

    def flow_stats(self, label, t_from, t_to):
        """Mean receiver throughput (Mbit/s) of a flow over [t_from, t_to]
        (iperf3 one-second intervals ending in the window)."""
        with self.data_lock:
            v = [r['mbps'] for r in self.rows['throughput']
                 if r['flow'] == label and t_from < r['t_s'] <= t_to]
        return (statistics.mean(v) if v else None), len(v)

    def cpu_stats(self, t_from, t_to):
        """Mean and max of each CPU column (cores) over [t_from, t_to]."""
        with self.data_lock:
            rows = [r for r in self.rows['cpu'] if t_from < r['t_s'] <= t_to]
        out = {'samples': len(rows)}
        for k in ('ovs_cores', 'ovs_thread', 'shoal_cores', 'machine_busy',
                  'ovs_rx_backlog_kb', 'ovs_rx_drops'):
            v = [r[k] for r in rows if r[k] is not None]
            out[k + '_mean'] = round(statistics.mean(v), 3) if v else None
            out[k + '_max'] = round(max(v), 3) if v else None
        return out

    def ping_stats(self, src, dst, t_from, t_to):
        with self.data_lock:
            v = [r['rtt_ms'] for r in self.rows['ping']
                 if r['src'] == src and r['dst'] == dst and t_from <= r['t_s'] <= t_to]
        if not v:
            return None, None, 0
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)

    def matrix_rate(self, src, dst):
        """Largest λ(src, dst) seen, bytes/s."""
        with self.data_lock:
            v = [r['bytes_per_s'] or 0 for r in self.rows['lambda']
                 if r['src'] == src and r['dst'] == dst]
        return max(v) if v else 0.0

    def matrix_rate_median(self, src, dst):
        """Median of the λ(src, dst) samples whose window lies wholly
        inside a scenario flow from src to dst (from a full λ window plus two
        poll intervals after the flow started, to its end), bytes/s: the
        steady rate, unmoved by samples that cover only part of the flow or
        a catch-up burst of its sender. Without such a flow: the median of
        the non-zero samples."""
        ctl = self.sc['controller']
        settle = (ctl['window_intervals'] + 2) * ctl['interval_s']
        spans = [(f['start_s'] + settle, f['stop_s']) for f in self.sc['traffic']
                 if f['src'] == src and f['dst'] == dst]
        with self.data_lock:
            rows = [r for r in self.rows['lambda'] if r['src'] == src and r['dst'] == dst]
        if spans:
            v = [r['bytes_per_s'] or 0 for r in rows
                 if any(a <= r['t_s'] <= b for a, b in spans)]
        else:
            v = [r['bytes_per_s'] for r in rows if r['bytes_per_s']]
        return statistics.median(v) if v else 0.0

    def migration_summary(self, rec):
        out = {k: rec.get(k) for k in ('id', 'vm', 'from', 'to', 'deadline_s', 'reserve',
                                       'label', 'mode', 'state', 'requested_t', 'started_t',
                                       'ended_t', 'error', 'cap_mib_s', 'predicted',
                                       'path_bridges')}
        res = rec.get('result') or {}
        r = rec.get('record') or {}
        if rec['mode'] == 'controller':
            pred = r.get('predicted') or {}
            out['predicted'] = pred
            out['bandwidth_bytes_per_s'] = r.get('bandwidth_bytes_per_s')
            out['reservations'] = r.get('reservations')
            out['cost_before'] = r.get('cost_before')
            out['cost_after'] = r.get('cost_after')
            out['reason'] = r.get('reason')
            out['controller_record'] = r
        else:
            out['bandwidth_bytes_per_s'] = int(rec['cap_mib_s'] * 2 ** 20)
        if isinstance(res, dict):
            out['total_time_s'] = (res['total_time_ms'] / 1000.0
                                   if res.get('total_time_ms') is not None else None)
            out['downtime_ms'] = res.get('downtime_ms')
            out['transferred_bytes'] = res.get('transferred_bytes')
        seen = rec['reservation'].get('seen', {})
        out['reservation_hops_seen'] = len(seen)
        out['reservation_hops_simultaneous'] = rec['reservation'].get('max_simultaneous', 0)
        out['reservation_path_hops'] = len(rec['path_bridges']) or None
        out['reservation_seen'] = seen
        return out

    def summary(self):
        return {
            'scenario': self.sc['name'],
            'out': self.out,
            'duration_s': self.sc['duration_s'],
            'setup_s': round(self.t0 - self.started, 1) if self.t0 else None,
            'checks': self.checks,
            'migrations': [self.migration_summary(m) for m in self.migrations],
        }

    # ---- teardown --------------------------------------------------------
    def stop(self):
        self.stop_ev.set()
        if self.emu:
            self.emu.stop_ev.set()
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if hasattr(self, 'state'):
                self.state.remove('pids', p.pid)
        self.procs = []
        if self.dc:
            self.dc.stop()
        if getattr(self, 'pki', None):
            self.pki.ovs_restore()
            shoalnet.set_tls(None)
        if os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        calibrate.restore(getattr(self, 'ovs_prio', {}))
        self.ovs_prio = {}
        if getattr(self, 'own_nice', None) is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self.own_nice)
            except OSError:
                pass
            self.own_nice = None
        if self.lock_file:
            self.lock_file.close()
            self.lock_file = None


def _dpid_hex(x):
    if isinstance(x, int):
        return '%016x' % x
    s = str(x).lower()
    if s.startswith('0x'):
        return '%016x' % int(s, 16)
    return s.rjust(16, '0')


def _assigned_vms(assign):
    """VMs holding a VF per GET /api/v1/vf-assignments (a list of
    {host, vf_count, attached: [vm...], last_changes}); None when absent."""
    if not isinstance(assign, list):
        return None
    out = set()
    for a in assign:
        if isinstance(a, dict) and isinstance(a.get('attached'), list):
            out.update(v for v in a['attached'] if isinstance(v, str))
    return out


def experiment_args(ap):
    """The arguments every experiment script takes: --out, --bin-dir and
    --interval-s (the controller's and the host daemons' Δ)."""
    ap.add_argument('--out', required=True, help='output directory')
    ap.add_argument('--bin-dir', help='where shoal-controller and shoal-hostd are')
    ap.add_argument('--interval-s', type=float, default=2.0, help='controller and hostd Δ')
    return ap


def save_figure(fig, out, name):
    """Lays out, writes OUT/NAME (80 dpi) and closes a matplotlib figure;
    returns the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_or_exit(name, sc, out, bin_dir=None, **kw):
    """An experiment's testbed run ([`execute`] with the signal handlers
    installed): exits 130 when interrupted, 1 with the reason when the
    testbed fails (both after cleaning up)."""
    install_signal_handlers()
    try:
        return execute(sc, out, bin_dir, **kw)
    except KeyboardInterrupt:
        print('interrupted; cleaned up', file=sys.stderr)
        sys.exit(130)
    except TestbedError as e:
        print('%s failed: %s' % (name, e), file=sys.stderr)
        sys.exit(1)


def install_signal_handlers():
    """SIGTERM/SIGHUP end the run like Ctrl-C: cleanup runs in finally.
    SIGUSR1 prints every thread's stack to stderr and the run goes on (the
    test harness sends it before it stops a run that overran its limit)."""
    def handler(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def write_summary(out, summary):
    path = os.path.join(out, 'summary.json')
    with open(path, 'w') as f:
        json.dump(summary, f, indent=2, default=str)
    return path


def finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


# UDP with 1400-byte datagrams: Ethernet + IP + UDP headers on top of the
# payload rate iperf3 is given (what the controller's λ counts).
UDP_OVERHEAD = (1400 + 8 + 20 + 14) / 1400.0


def simulate(policy, sc, out, bin_dir, options=None):
    """The testbed scenario in the simulator; its migrations and summary."""
    sim = scn.to_simulator(sc, traffic_overhead=UDP_OVERHEAD)
    path = os.path.join(out, 'simulator-scenario.json')
    with open(path, 'w') as f:
        json.dump(sim, f, indent=2)
    res = os.path.join(out, 'simulator.jsonl')
    cmd = [shoalnet.controller_binary(bin_dir), 'simulate', '--scenario', path,
           '--policy', policy, '--output', res]
    if options:
        opath = os.path.join(out, 'simulator-options.json')
        with open(opath, 'w') as f:
            json.dump(options, f, indent=2)
        cmd += ['--options-file', opath]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {'error': (r.stderr or r.stdout).strip(), 'command': ' '.join(cmd),
                'migrations': [], 'summary': {}}
    lines = []
    with open(res) as f:
        for line in f:
            line = line.strip()
            if line:
                lines.append(json.loads(line))
    migs = [{'vm': d['vm'], 'from': d.get('from'), 'to': d.get('to'), 'round': d.get('round'),
             'reason': d.get('reason')} for d in lines if d.get('action') == 'migrate']
    summ = next((d['summary'] for d in lines if 'summary' in d), {})
    return {'scenario': path, 'output': res, 'command': ' '.join(cmd), 'migrations': migs,
            'summary': summ}


def collect_api(tb, paths, save=True):
    """While the testbed is still up: the controller's records at `paths`
    (name -> API path), as ``controller_<name>`` (the body, or its status
    and body when the request failed); each also written to
    ``controller-<name>.json`` in the output directory when `save`."""
    out = {}
    for name, path in paths:
        code, v = shoalnet.http(tb.api, 'GET', path, token=tb.token)
        out['controller_' + name] = v if code == 200 else {'status': code, 'body': v}
        if save:
            with open(os.path.join(tb.out, 'controller-%s.json' % name), 'w') as f:
                json.dump(v, f, indent=2)
    return out


def print_moves(migrations, sim, hops=False):
    """The live migrations (with the hops seen reserved when `hops`) and the
    simulator's, one line each, as the experiments print them."""
    for m in migrations:
        extra = ('  hops reserved %s/%s' % (m['reservation_hops_seen'],
                                            m['reservation_path_hops'])) if hops else ''
        print('  live:      %s %s -> %s  %s%s  (%s)'
              % (m['vm'], m['from'], m['to'], m['state'], extra, m['reason']))
    for m in sim.get('migrations', []):
        print('  simulator: %s %s -> %s  round %s' % (m['vm'], m['from'], m['to'], m['round']))
    if sim.get('error'):
        print('  simulator failed: %s' % sim['error'])


def execute(sc, out, bin_dir=None, plots=True, extra=None, quiet=False, collect=None):
    """Runs a validated scenario end to end; returns (testbed, summary).
    summary.json, the CSVs and the plots are in ``out``. ``collect(tb)``, if
    given, runs after the timeline while everything is still up and returns
    a dict merged into the summary. Raises TestbedError (or
    KeyboardInterrupt); everything is cleaned up either way."""
    tb = Testbed(sc, out, bin_dir, quiet=quiet)
    with tb:
        tb.run_timeline(extra)
        files = tb.write_csvs()
        summary = tb.summary()
        summary['flows'] = {}
        for f in sc['traffic']:
            mean, n = tb.flow_stats(f['label'], f['start_s'], f['stop_s'] + 2)
            summary['flows'][f['label']] = {'mean_mbps': mean, 'samples': n,
                                            'offered_mbps': f['mbps'], 'proto': f['proto'],
                                            'duration_s': max(1, int(round(f['stop_s'] - f['start_s']))),
                                            'totals': tb.flow_totals.get(f['label'])}
        summary['cpu'] = tb.cpu_stats(0, tb.now() + 1)
        summary['pings'] = {}
        for p in sc['pings']:
            mean, sd, n = tb.ping_stats(p['src'], p['dst'], p['start_s'], p['stop_s'])
            summary['pings']['%s>%s' % (p['src'], p['dst'])] = {
                'rtt_ms_mean': mean, 'rtt_ms_stdev': sd, 'replies': n}
        summary['matrix_pairs'] = {
            '%s>%s' % tuple(pr): tb.matrix_rate(*pr) for pr in sc['checks']['matrix_pairs']}
        summary['matrix_pairs_median'] = {
            '%s>%s' % tuple(pr): tb.matrix_rate_median(*pr)
            for pr in sc['checks']['matrix_pairs']}
        summary['reservations_left'] = tb.after_migrations() if tb.migrations else {}
        if collect:
            summary.update(collect(tb))
        if plots:
            import plots as plotmod
            files.update(plotmod.standard(tb.out, tb))
        summary['files'] = files
        write_summary(tb.out, summary)
    return tb, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--scenario', required=True, help='scenario JSON (docs/testbed.md)')
    ap.add_argument('--out', required=True, help='output directory')
    ap.add_argument('--bin-dir', help='directory of shoal-controller and shoal-hostd '
                    '(default: $SHOAL_BIN_DIR, else the newer of target/release, target/debug)')
    ap.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
    ap.add_argument('--hold', action='store_true',
                    help='build the data center and keep it up for another program '
                    '(no timeline): OUT/ready.json says where the API is, OUT/stop ends '
                    'the run, OUT/restart-controller restarts the controller on the same '
                    'database (docs/testbed.md)')
    args = ap.parse_args(argv)
    try:
        sc = scn.load(args.scenario)
    except scn.ScenarioError as e:
        print('invalid scenario: %s' % e, file=sys.stderr)
        return 2
    install_signal_handlers()
    try:
        if args.hold:
            with Testbed(sc, args.out, args.bin_dir) as tb:
                tb.hold()
            return 0
        tb, _ = execute(sc, args.out, args.bin_dir, plots=not args.no_plots)
    except KeyboardInterrupt:
        print('interrupted; cleaned up', file=sys.stderr)
        return 130
    except TestbedError as e:
        print('testbed failed: %s' % e, file=sys.stderr)
        return 1
    print('results: %s (summary.json, CSV time series, PNG plots)' % tb.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
