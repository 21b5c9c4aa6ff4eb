#!/usr/bin/env python3
"""Shoal demo: a small tree on Open vSwitch (userspace datapath) in Mininet.

    core s1 (0x1)
     /        \\
  s2 (0x21)  s3 (0x22)      s2 and s3 are the bridges of hypervisors hv1, hv2
   |    |     |    |
   h1   h2    h3   h4

Starts shoal-controller, pings all pairs, runs two UDP iperf3 flows
(h1->h2 at 20 Mbit/s, IDC: same hypervisor; h1->h3 at 5 Mbit/s, NIC), and
prints the traffic matrix the controller measured from its flow statistics.

Then, run from a terminal, it stays up for the controller's web dashboard:
the network, the controller and the same two flows (now without an end)
keep running, and it prints the dashboard's address (the API's, --api:
https://127.0.0.1:8080/ by default, http:// with --no-tls), the token file
to sign in with and, with TLS, the CA certificate the browser does not
know. Ctrl-C (SIGINT) or SIGTERM ends it.

--no-wait: run and exit, without the dashboard stage. When stdin is not a
terminal (CI, a pipe, ssh without a tty: nobody there to press Ctrl-C) it
does not wait either, unless given --wait.

Whenever it ends -- by itself, by Ctrl-C, SIGTERM or SIGHUP at any moment,
or on an error -- it stops what it started: its iperf3 processes, the
Mininet network (bridges s1, s2, s3, the hosts' namespaces), the controller,
and puts Open vSwitch's SSL settings back as they were.

Exit status: 0 when no ping was lost (also when the dashboard stage was
ended by Ctrl-C or SIGTERM), 1 when pings were lost or the controller died
during the dashboard stage, 128+N when signal N interrupted the demo before
its dashboard stage.

Run as root (scripts/demo.sh does everything): /usr/bin/python3 mininet/demo.py
"""

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mininet.log import setLogLevel  # noqa: E402
from mininet.net import Mininet  # noqa: E402

import scenario  # noqa: E402
import shoalnet  # noqa: E402

CONFIG = """
[topology]
lldp_interval_s = 1.0
port_confirm_s = 2.0
[monitor]
interval_s = {interval}
window_intervals = 3
[hypervisors]
"{hv1}" = "hv1"
"{hv2}" = "hv2"
"""

# The two flows: client, server, server port, payload rate, traffic class.
FLOWS = ((0, 1, 5201, '20M', 'IDC'), (0, 2, 5202, '5M', 'NIC'))

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived. A BaseException of its own, so
    that no ``except Exception`` (nor one for KeyboardInterrupt) in Mininet
    swallows it."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOPPING = False  # set when the cleanup starts: signals no longer interrupt


def on_signal(signum, frame):
    if STOPPING:
        return
    raise Stopped(signum)


@contextlib.contextmanager
def held_signals():
    """SIGINT, SIGTERM and SIGHUP wait until the block is done (for steps
    of a second or two whose commands a signal would leave half done)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def say(text):
    """print that never fails (the terminal may be gone after SIGHUP)."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


def alive(pid):
    """True for a running process (a zombie is not)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rpartition(')')[2].split()[0] != 'Z'
    except (OSError, IndexError, TypeError):
        return False


def kill_iperfs(pids, timeout=3.0):
    """SIGTERM to the iperf3 processes the demo started (still iperf3: a
    pid is never killed on a guess), SIGKILL to those still there after
    ``timeout``."""
    def mine(pid):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                return f.read().split(b'\0')[0].endswith(b'iperf3') and alive(pid)
        except (OSError, TypeError):
            return False
    left = [p for p in pids if mine(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline and any(alive(p) for p in left):
            time.sleep(0.1)
        left = [p for p in left if alive(p)]
        if not left:
            break
    del pids[:]


def settle(node, timeout=3.0):
    """A node.cmd() interrupted by a signal leaves the node's shell
    'waiting' and every later cmd() on it (net.stop() deletes interfaces
    with one) would fail: interrupt what runs there and read what is left."""
    if not getattr(node, 'waiting', False) or not node.shell:
        return
    try:
        node.sendInt()
        deadline = time.time() + timeout
        while node.waiting and time.time() < deadline:
            node.monitor(timeoutms=200)
    except (OSError, ValueError):
        pass
    node.waiting = False


def stop_network(net):
    for node in net.hosts + net.switches:
        settle(node)
    net.stop()


def stop_process(proc, timeout=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except Exception:
            proc.kill()
            proc.wait()


def addresses(api, scheme):
    """(the dashboard's URL, its host, its port, the IPs the HTTPS
    certificate must name) for the API address ``host:port``; an
    unspecified host (0.0.0.0, [::]) is reached on the loopback address."""
    host, _, port = api.rpartition(':')
    ips = ['127.0.0.1']
    try:
        ip = ipaddress.ip_address(host.strip('[]'))
    except ValueError:
        ip = None
    if ip is not None:
        ips.append(str(ip))
        if ip.is_unspecified:
            host = '127.0.0.1' if ip.version == 4 else '[::1]'
            ips.append('127.0.0.1' if ip.version == 4 else '::1')
    return '%s://%s:%s/' % (scheme, host, port), host, port, ips


def start_flows(hosts, out, seconds, suffix, pids):
    """The two UDP iperf3 clients (``seconds`` 0: until stopped); their
    output in OUT/iperf_h1h2<suffix>.txt, OUT/iperf_h1h3<suffix>.txt."""
    interval = '' if seconds else ' -i 10'
    for c, s, port, rate, _ in FLOWS:
        src, dst = hosts[c], hosts[s]
        src.cmd('iperf3 -c %s -p %d -u -b %s -l 1400 -t %d%s > %s/iperf_%s%s%s.txt 2>&1 &'
                % (dst.IP(), port, rate, seconds, interval, out, src.name, dst.name, suffix))
        pids.append(src.lastPid)
    return pids[-len(FLOWS):]


def dashboard(args, web, pki, hosts, ctl, pids):
    """The dashboard stage: endless flows until a signal (which raises
    Stopped). Returns 1 if the controller dies meanwhile."""
    url, host, port, _ = web
    flows = start_flows(hosts, args.out, 0, '_live', pids)
    out = os.path.abspath(args.out)
    token = os.path.join(out, 'operator.token')
    say('')
    say('*** dashboard: %s' % url)
    say('    sign in with the operator token in %s' % token)
    say('      (readable by root only: sudo cat %s)' % token)
    if pki:
        say('    HTTPS with a certificate from the demo\'s own CA, %s:' % pki.ca)
        say('      the browser warns about it (accept the warning, or import that')
        say('      file as a trusted authority); curl --cacert %s %shealthz' % (pki.ca, url))
    if args.api.rpartition(':')[0].strip('[]') in ('0.0.0.0', '::'):
        say('    listening on every address: from another machine, %s//THIS-MACHINE:%s/'
            % (url.split('//')[0], port))
    elif host in ('127.0.0.1', '[::1]', 'localhost'):
        say('    from another machine: ssh -L %s:%s:%s you@this-machine, then the same URL'
            % (port, host, port))
    say('    live traffic until stopped: UDP h1->h2 20 Mbit/s (IDC), h1->h3 5 Mbit/s (NIC)')
    say('*** Ctrl-C stops it: the flows, the network and the controller')
    flowing = True
    while True:
        if ctl.poll() is not None:
            say('*** the controller exited (status %s); see %s/controller.log'
                % (ctl.returncode, out))
            return 1
        if flowing and not any(alive(p) for p in flows):
            flowing = False
            say('*** the live iperf3 flows ended; see %s/iperf_*_live.txt' % out)
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--api', default='127.0.0.1:8080',
                    help='controller API address, host:port (the dashboard is at its /)')
    ap.add_argument('--of-port', type=int, default=6653, help='OpenFlow port')
    ap.add_argument('--interval', type=float, default=2.0, help='polling interval, s')
    ap.add_argument('--seconds', type=int, default=15, help='iperf3 duration, s')
    ap.add_argument('--out', default='out/demo', help='directory for logs and results')
    ap.add_argument('--no-tls', action='store_true',
                    help='plain TCP/HTTP (default: OpenFlow over TLS with ovs-pki '
                    'certificates, HTTPS API)')
    wait = ap.add_mutually_exclusive_group()
    wait.add_argument('--no-wait', dest='wait', action='store_false',
                      help='run and exit: no dashboard stage (the default when stdin '
                      'is not a terminal)')
    wait.add_argument('--wait', dest='wait', action='store_true',
                      help='stay up for the dashboard until SIGINT/SIGTERM even when '
                      'stdin is not a terminal')
    ap.set_defaults(wait=None)
    args = ap.parse_args()
    if args.seconds < 2:
        ap.error('--seconds must be at least 2')
    waiting_auto = args.wait is None
    if waiting_auto:
        args.wait = sys.stdin is not None and sys.stdin.isatty()
    os.makedirs(args.out, exist_ok=True)
    setLogLevel('warning')
    global STOPPING
    for s in SIGNALS:
        signal.signal(s, on_signal)

    cleanup = []  # callables, run last first, each whatever happens
    state = {'live': False, 'rc': 1}
    stopped = False
    try:
        state['rc'] = run(args, waiting_auto, cleanup, state)
    except Stopped as e:
        stopped = True
        if state['live']:
            say('\n*** %s: stopping' % e)
        else:
            say('\n*** interrupted (%s): stopping' % e)
            state['rc'] = 128 + e.signum
    finally:
        STOPPING = True
        for s in SIGNALS:  # also for the commands the cleanup runs
            signal.signal(s, signal.SIG_IGN)
        while cleanup:
            fn = cleanup.pop()
            try:
                fn()
            except Exception as e:  # the other steps run all the same
                say('*** cleanup: %s: %s' % (getattr(fn, '__name__', fn), e))
        if stopped:
            say('*** stopped: the flows, the network and the controller are gone')
    return state['rc']


def run(args, waiting_auto, cleanup, state):
    # Every API route but /healthz needs a token: an operator token for the
    # demo (out/demo/operator.token, mode 0600).
    auth = scenario.to_toml(shoalnet.operator_auth(os.path.abspath(args.out)))
    pki = None
    web = addresses(args.api, 'http' if args.no_tls else 'https')
    ips = web[3]
    if not args.no_tls:
        # OpenFlow over TLS (switch certificates from ovs-pki), HTTPS API.
        # ovs-pki and openssl (~2 s) are not interrupted: a signal to this
        # process alone would leave their children running.
        with held_signals():
            pki = shoalnet.Pki(os.path.join(os.path.abspath(args.out), 'tls'), ips)
        cleanup.append(pki.ovs_restore)  # a no-op until ovs_set_ssl
        pki.ovs_set_ssl()
        shoalnet.set_tls(pki.ca)
        auth += scenario.to_toml(pki.controller_tables())
        print('*** TLS: OpenFlow ssl:127.0.0.1:%d (ovs-pki), API https://%s'
              % (args.of_port, args.api))
    procs = []

    def stop_controller():
        for p in procs:
            stop_process(p)
    cleanup.append(stop_controller)
    ctl = shoalnet.start_controller(
        CONFIG.format(interval=args.interval, hv1=shoalnet.dpid(0x21),
                      hv2=shoalnet.dpid(0x22)) + auth,
        args.api, os.path.join(args.out, 'controller.log'), args.of_port, started=procs)
    net = Mininet(switch=shoalnet.UserOVS, controller=None,
                  autoSetMacs=True, build=False)
    cleanup.append(lambda: stop_network(net))
    iperfs = []
    cleanup.append(lambda: kill_iperfs(iperfs))
    net.addController(shoalnet.remote_controller(args.of_port, 'ssl' if pki else 'tcp'))
    s1 = net.addSwitch('s1', dpid=shoalnet.dpid(0x1))
    s2 = net.addSwitch('s2', dpid=shoalnet.dpid(0x21))
    s3 = net.addSwitch('s3', dpid=shoalnet.dpid(0x22))
    hosts = [net.addHost('h%d' % i) for i in range(1, 5)]
    net.addLink(s1, s2)
    net.addLink(s1, s3)
    net.addLink(hosts[0], s2)
    net.addLink(hosts[1], s2)
    net.addLink(hosts[2], s3)
    net.addLink(hosts[3], s3)
    net.build()
    net.start()
    shoalnet.offload_off(net)
    print('*** waiting for the controller to discover the 2 links (4 directions)')
    shoalnet.wait_links(args.api, 4)
    time.sleep(2.5)  # edge ports are confirmed after port_confirm_s
    print('*** ping all')
    loss = net.pingAll(timeout='1')
    print('    %d%% of pings lost' % loss)
    rc = 0 if loss == 0 else 1
    print('*** UDP iperf3: h1->h2 20 Mbit/s (IDC), h1->h3 5 Mbit/s (NIC), %ds' % args.seconds)
    for _, s, port, _, _ in FLOWS:
        # In the background of the host's shell (not -D): its pid is known.
        hosts[s].cmd('iperf3 -s -p %d > %s/iperf_server_%d.txt 2>&1 &'
                     % (port, args.out, port))
        iperfs.append(hosts[s].lastPid)
    time.sleep(0.5)
    clients = start_flows(hosts, args.out, args.seconds, '', iperfs)
    time.sleep(min(args.seconds - 1, args.interval * 4 + 2))
    matrix = shoalnet.api_get(args.api, '/api/v1/traffic-matrix')
    with open(os.path.join(args.out, 'traffic-matrix.json'), 'w') as f:
        json.dump(matrix, f, indent=2)
    print('*** traffic matrix (GET /api/v1/traffic-matrix)')
    print('%-18s %-18s %-5s %12s' % ('src', 'dst', 'class', 'Mbit/s'))
    for p in sorted(matrix['pairs'], key=lambda p: -p['bytes_per_s']):
        if p['bytes_per_s'] > 1000:
            print('%-18s %-18s %-5s %12.2f' % (p['src'], p['dst'], p['class'],
                                               p['bytes_per_s'] * 8 / 1e6))
    print('(window %.0f s; rates count Ethernet frames, so UDP at 20 Mbit/s of '
          'payload shows ~20.6 Mbit/s)' % matrix['window_s'])
    time.sleep(max(0, args.seconds - args.interval * 4 - 2) + 1)
    deadline = time.time() + 5  # the clients end by themselves (and report)
    while time.time() < deadline and any(alive(p) for p in clients):
        time.sleep(0.2)
    print('*** results and logs in %s' % os.path.abspath(args.out))
    if not args.wait:
        if waiting_auto:
            print('*** stdin is not a terminal: not staying up for the dashboard '
                  '(--wait does)')
        return rc
    kill_iperfs(clients)  # if one overran; the servers serve the next flows
    iperfs[:] = [p for p in iperfs if alive(p)]
    state['rc'], state['live'] = rc, True
    return dashboard(args, web, pki, hosts, ctl, iperfs) or rc


if __name__ == '__main__':
    try:
        sys.exit(main())
    except Stopped as e:  # a second signal before the cleanup began
        sys.exit(128 + e.signum)
