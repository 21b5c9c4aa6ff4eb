#!/usr/bin/env python3
"""How much traffic this machine's Open vSwitch userspace datapath carries
right now, and the testbed link rate that stays well below it.

    /usr/bin/python3 mininet/calibrate.py [--hops 7] [--seconds 4] [--json]

Every bridge of the testbed is served by one ovs-vswitchd process, and on
the userspace datapath one thread of it forwards every packet of every
bridge (ports that are not DPDK ports are polled by its main thread). A
packet that crosses seven bridges costs that thread seven times, so what an
experiment can offer is bounded by the CPU, not by the configured link
rates: past the thread's limit meters and queues protect nobody and the
experiment measures the machine instead of the network.

The calibration builds a private chain of ``--hops`` userspace bridges
(``tq1`` .. ``tqN``, the same hop count as the experiment's longest path)
between two namespaces (``tqa``, ``tqb``), runs one unlimited iperf3 TCP
flow through it and measures the throughput end to end together with the
CPU of ovs-vswitchd and of its busiest thread. ``choose_link_mbps`` turns
that into a link rate: ``budget`` (default 0.4) of the measured throughput,
rounded down to 5 Mbit/s, between ``floor`` and 100 Mbit/s. An experiment
whose links are all at that rate and whose flows together fill at most one
link leaves the datapath headroom on this machine: the chain's one
unlimited flow is batched more efficiently than the testbed's paced flows,
so the share is well below one half.

Everything it creates is named ``tq*`` and recorded in
``/tmp/shoal-tb-<pid>-cal/state.json`` (cleanup.py removes it after a
crash); it holds the testbed lock while it runs.
"""

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shoalnet  # noqa: E402

LOCK_PATH = '/tmp/shoal-tb.lock'
OVS_PIDFILE = '/var/run/openvswitch/ovs-vswitchd.pid'
NET = '10.98.0.%d'
DEFAULT_HOPS = 7
DEFAULT_BUDGET = 0.4
LINK_MAX_MBPS = 100.0


class CalibrationError(RuntimeError):
    """The calibration could not be set up or measured."""


def _run(cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CalibrationError('%s: %s' % (' '.join(cmd), (r.stderr or r.stdout).strip()))
    return r


def ovs_pid():
    try:
        with open(OVS_PIDFILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cpu_ticks(pid):
    """utime + stime of a process and of each of its threads (clock ticks)."""
    def ticks(path):
        try:
            with open(path) as f:
                # The command name is in parentheses and may hold spaces.
                rest = f.read().rsplit(')', 1)[1].split()
            return int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            return None
    total = ticks('/proc/%d/stat' % pid)
    threads = {}
    try:
        for tid in os.listdir('/proc/%d/task' % pid):
            t = ticks('/proc/%d/task/%s/stat' % (pid, tid))
            if t is not None:
                threads[tid] = t
    except OSError:
        pass
    return total, threads


def packet_socket_backlog(pid):
    """Bytes waiting in the receive queues of a process's packet sockets
    (the userspace datapath reads every port through one) and the packets
    those sockets dropped so far, from ``ss -0 -m -p``: a datapath that
    keeps up leaves its queues near empty."""
    if not pid:
        return None, None
    r = subprocess.run(['ss', '-0', '-n', '-m', '-p'], capture_output=True, text=True)
    if r.returncode != 0:
        return None, None
    return parse_ss_packet(r.stdout, pid)


def parse_ss_packet(text, pid):
    """(Recv-Q bytes summed, drops summed) over the packet sockets of
    ``pid`` in the output of ``ss -0 -n -m -p``."""
    backlog, drops, tag = 0, 0, 'pid=%d,' % pid
    for line in text.splitlines()[1:]:
        if tag not in line:
            continue
        f = line.split()
        try:
            backlog += int(f[1])
        except (IndexError, ValueError):
            pass
        m = re.search(r'skmem:\([^)]*\bd(\d+)\)', line)
        if m:
            drops += int(m.group(1))
    return backlog, drops


# Scheduling priority of ovs-vswitchd's threads while a calibration or a
# testbed runs: the emulated switches are the fabric under test, and a
# compiler or a package install beside the experiment must not take their
# CPU (a hardware switch does not share its ASIC with the hosts' jobs).
OVS_NICE = -10


def _autogroup_nice(pid):
    try:
        with open('/proc/%d/autogroup' % pid) as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(pid, nice):
    try:
        with open('/proc/%d/autogroup' % pid, 'w') as f:
            f.write('%d' % nice)
        return True
    except OSError:
        return False


def boost(pid, nice=OVS_NICE):
    """Sets every thread of ``pid`` to ``nice`` (never lowers a priority
    that is already higher), and its scheduler autogroup too: with
    ``kernel.sched_autogroup_enabled`` CPU is first shared between sessions,
    so a thread's own nice counts only within the daemon's session. Returns
    what ``restore`` needs to put things back."""
    old = {}
    if not pid:
        return old
    ag = _autogroup_nice(pid)
    if ag is not None and ag > nice and _set_autogroup_nice(pid, nice):
        old['autogroup'] = (pid, ag)
    try:
        tids = [int(t) for t in os.listdir('/proc/%d/task' % pid)]
    except OSError:
        return old
    for tid in tids:
        try:
            cur = os.getpriority(os.PRIO_PROCESS, tid)
            if cur > nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                old[tid] = cur
        except OSError:
            pass
    return old


def restore(old):
    """Puts back the priorities ``boost`` changed (threads gone are skipped)."""
    for tid, nice in old.items():
        if tid == 'autogroup':
            _set_autogroup_nice(*nice)
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass


class CpuMeter:
    """CPU share of one process (and of its busiest thread) between
    ``start()`` and ``stop()``, in cores (1.0 = one whole core)."""

    HZ = os.sysconf('SC_CLK_TCK')

    def __init__(self, pid):
        self.pid = pid

    def start(self):
        self.t = time.monotonic()
        self.total, self.threads = cpu_ticks(self.pid) if self.pid else (None, {})
        return self

    def stop(self):
        dt = max(1e-3, time.monotonic() - self.t)
        if not self.pid:
            return None, None
        total, threads = cpu_ticks(self.pid)
        if total is None or self.total is None:
            return None, None
        busiest = max([threads[k] - self.threads.get(k, threads[k]) for k in threads] or [0])
        return (total - self.total) / self.HZ / dt, busiest / self.HZ / dt


class Chain:
    """ns tqa -- tq1 -- tq2 -- ... -- tqN -- ns tqb, every bridge on the
    userspace datapath with two flows (port 1 <-> port 2)."""

    def __init__(self, hops, mtu=1500):
        if not 1 <= hops <= 16:
            raise CalibrationError('hops must be in [1, 16], got %r' % hops)
        self.hops = hops
        self.mtu = mtu
        self.bridges = ['tq%d' % (i + 1) for i in range(hops)]
        self.ns = ['tqa', 'tqb']
        self.run_dir = '/tmp/shoal-tb-%d-cal' % os.getpid()
        self.state = None

    def _veths(self):
        """(end in namespace or bridge A, end in bridge B) for every wire."""
        w = [('tqa-e', 'tq1-l')]
        for i in range(1, self.hops):
            w.append(('tq%d-r' % i, 'tq%d-l' % (i + 1)))
        w.append(('tq%d-r' % self.hops, 'tqb-e'))
        return w

    def check_free(self):
        busy = [b for b in self.bridges if _run(['ovs-vsctl', 'br-exists', b],
                                                check=False).returncode == 0]
        busy += [n for n in self.ns if os.path.exists('/run/netns/%s' % n)]
        busy += [v for pair in self._veths() for v in pair
                 if os.path.exists('/sys/class/net/%s' % v)]
        if busy:
            raise CalibrationError('calibration names in use: %s (leftovers of a crashed run: '
                                   '/usr/bin/python3 mininet/cleanup.py)' % ', '.join(busy))

    def build(self):
        import testbed  # noqa: PLC0415 - testbed imports Mininet; only needed here
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(self.run_dir)
        self.state = testbed.State(os.path.join(self.run_dir, 'state.json'))
        self.state.add('netns', self.ns)
        for n in self.ns:
            _run(['ip', 'netns', 'add', n])
            _run(['ip', '-n', n, 'link', 'set', 'lo', 'up'])
        wires = self._veths()
        self.state.add('links', [a for a, _ in wires])
        for a, b in wires:
            _run(['ip', 'link', 'add', a, 'mtu', str(self.mtu), 'type', 'veth', 'peer', 'name', b,
                  'mtu', str(self.mtu)])
        self.state.add('bridges', self.bridges)
        for i, br in enumerate(self.bridges):
            left, right = wires[i][1], wires[i + 1][0]
            _run(['ovs-vsctl', '--', 'add-br', br,
                  '--', 'set', 'bridge', br, 'datapath_type=netdev', 'fail_mode=secure',
                  'protocols=OpenFlow13', 'external_ids:shoal-testbed=cal-%d' % os.getpid(),
                  '--', 'add-port', br, left, '--', 'set', 'interface', left,
                  'ofport_request=1',
                  '--', 'add-port', br, right, '--', 'set', 'interface', right,
                  'ofport_request=2'])
            for f in ('in_port=1,actions=output:2', 'in_port=2,actions=output:1'):
                _run(['ovs-ofctl', '-O', 'OpenFlow13', 'add-flow', br, f])
        for (n, dev, ip) in (('tqa', 'tqa-e', NET % 1), ('tqb', 'tqb-e', NET % 2)):
            _run(['ip', 'link', 'set', dev, 'netns', n])
            _run(['ip', '-n', n, 'addr', 'add', ip + '/24', 'dev', dev])
            _run(['ip', '-n', n, 'link', 'set', dev, 'up'])
            _run(['ip', 'netns', 'exec', n, 'ethtool', '-K', dev, 'tx', 'off'], check=False)
        for a, b in wires:
            for dev in (a, b):
                if dev.startswith('tq') and not dev.startswith(('tqa', 'tqb')):
                    _run(['ip', 'link', 'set', dev, 'up'])
                    _run(['ethtool', '-K', dev, 'tx', 'off'], check=False)
        # The testbed's links are htb-shaped veths (Mininet TCLink): the
        # calibration's inter-bridge wires get the same qdisc, at a rate far
        # above what the datapath carries, so that its cost is counted.
        for a, _ in wires[1:-1]:
            _run(['tc', 'qdisc', 'add', 'dev', a, 'root', 'handle', '5:', 'htb', 'default', '1'])
            _run(['tc', 'class', 'add', 'dev', a, 'parent', '5:', 'classid', '5:1', 'htb',
                  'rate', '2000mbit', 'burst', '15k', 'quantum', '60000'])

    def ping_ok(self):
        for _ in range(20):
            r = _run(['ip', 'netns', 'exec', 'tqa', 'ping', '-c', '1', '-W', '1', NET % 2],
                     check=False)
            if r.returncode == 0:
                return True
            time.sleep(0.25)
        return False

    def destroy(self):
        for br in self.bridges:
            _run(['ovs-vsctl', '--if-exists', 'del-br', br], check=False)
        for a, _ in self._veths():
            if os.path.exists('/sys/class/net/%s' % a):
                _run(['ip', 'link', 'delete', a], check=False)
        for n in self.ns:
            if os.path.exists('/run/netns/%s' % n):
                _run(['ip', 'netns', 'delete', n], check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def iperf_tcp(seconds, port=5299):
    """One unlimited iperf3 TCP flow tqa -> tqb; receiver Mbit/s (first
    second omitted) and the CPU of ovs-vswitchd over the same time."""
    srv = subprocess.Popen(['ip', 'netns', 'exec', 'tqb', 'iperf3', '-s', '-1', '-p', str(port),
                            '-B', NET % 2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        meter = CpuMeter(ovs_pid())
        started = False
        client = subprocess.Popen(['ip', 'netns', 'exec', 'tqa', 'iperf3', '-c', NET % 2,
                                   '-p', str(port), '-t', str(seconds + 1), '-O', '1', '--json'],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        meter.start()
        started = True
        out, _ = client.communicate(timeout=seconds + 30)
        cpu, thread = meter.stop() if started else (None, None)
    finally:
        srv.kill()
        srv.wait()
    try:
        res = json.loads(out)
        bps = res['end']['sum_received']['bits_per_second']
    except (ValueError, KeyError, TypeError):
        raise CalibrationError('iperf3 through the chain failed: %s' % out.strip()[-400:])
    return bps / 1e6, cpu, thread


def measure(hops=DEFAULT_HOPS, seconds=4, mtu=1500):
    """Builds the chain, measures, removes it. Returns a dict:
    ``throughput_mbps`` end to end across ``hops`` bridges, ``mbps_hops``
    (throughput x hops: the datapath's capacity in bridge-crossings),
    ``ovs_cpu_cores`` (whole process) and ``ovs_thread_cpu`` (busiest
    thread) during the flow, ``load1`` of the machine before it."""
    if os.geteuid() != 0:
        raise CalibrationError('the calibration needs root (OVS bridges, namespaces)')
    subprocess.run([os.path.join(shoalnet.ROOT, 'ovs-scripts', 'start-ovs.sh')], check=True)
    with open(LOCK_PATH, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        chain = Chain(hops, mtu)
        chain.check_free()
        prio = boost(ovs_pid())
        try:
            chain.build()
            if not chain.ping_ok():
                raise CalibrationError('no ping through the calibration chain of %d bridges'
                                       % hops)
            load1 = os.getloadavg()[0]
            mbps, cpu, thread = iperf_tcp(seconds)
        finally:
            chain.destroy()
            restore(prio)
    return {'hops': hops, 'mtu': mtu, 'seconds': seconds, 'throughput_mbps': round(mbps, 1),
            'mbps_hops': round(mbps * hops, 1),
            'ovs_cpu_cores': None if cpu is None else round(cpu, 3),
            'ovs_thread_cpu': None if thread is None else round(thread, 3),
            'load1_before': round(load1, 2)}


def choose_link_mbps(cal, budget=DEFAULT_BUDGET, floor=10.0, cap=LINK_MAX_MBPS):
    """The link rate for an experiment whose flows together fill at most
    one link along a path of ``cal['hops']`` bridges: ``budget`` of the
    throughput the datapath sustained across that many bridges, rounded
    down to 5 Mbit/s, within [floor, cap]."""
    raw = budget * cal['throughput_mbps']
    return max(floor, min(cap, 5.0 * int(raw // 5)))


def describe(cal, link):
    return ('calibration: %.1f Mbit/s of TCP across %d userspace bridges (%.0f Mbit/s x hops; '
            'ovs-vswitchd %s of a core, busiest thread %s; load %.2f) -> links at %g Mbit/s'
            % (cal['throughput_mbps'], cal['hops'], cal['mbps_hops'],
               '?' if cal['ovs_cpu_cores'] is None else '%.0f%%' % (100 * cal['ovs_cpu_cores']),
               '?' if cal['ovs_thread_cpu'] is None else '%.0f%%' % (100 * cal['ovs_thread_cpu']),
               cal['load1_before'], link))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--hops', type=int, default=DEFAULT_HOPS, help='bridges in the chain')
    ap.add_argument('--seconds', type=int, default=4, help='how long the flow runs')
    ap.add_argument('--mtu', type=int, default=1500, help='MTU of every link of the chain')
    ap.add_argument('--budget', type=float, default=DEFAULT_BUDGET,
                    help='share of the measured throughput one link may carry')
    ap.add_argument('--json', action='store_true', help='print the result as JSON')
    a = ap.parse_args()
    try:
        cal = measure(a.hops, a.seconds, a.mtu)
    except CalibrationError as e:
        print('calibration failed: %s' % e, file=sys.stderr)
        return 1
    link = choose_link_mbps(cal, a.budget)
    if a.json:
        cal['link_mbps'] = link
        print(json.dumps(cal))
    else:
        print(describe(cal, link))
    return 0


if __name__ == '__main__':
    sys.exit(main())
