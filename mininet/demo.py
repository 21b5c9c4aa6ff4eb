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

Run as root (scripts/demo.sh does everything): /usr/bin/python3 mininet/demo.py
"""

import argparse
import json
import os
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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--api', default='127.0.0.1:8080', help='controller API address')
    ap.add_argument('--of-port', type=int, default=6653, help='OpenFlow port')
    ap.add_argument('--interval', type=float, default=2.0, help='polling interval, s')
    ap.add_argument('--seconds', type=int, default=15, help='iperf3 duration, s')
    ap.add_argument('--out', default='out/demo', help='directory for logs and results')
    ap.add_argument('--no-tls', action='store_true',
                    help='plain TCP/HTTP (default: OpenFlow over TLS with ovs-pki '
                    'certificates, HTTPS API)')
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    setLogLevel('warning')

    # Every API route but /healthz needs a token: an operator token for the
    # demo (out/demo/operator.token, mode 0600).
    auth = scenario.to_toml(shoalnet.operator_auth(os.path.abspath(args.out)))
    pki = None
    if not args.no_tls:
        # OpenFlow over TLS (switch certificates from ovs-pki), HTTPS API.
        pki = shoalnet.Pki(os.path.join(os.path.abspath(args.out), 'tls'), ['127.0.0.1'])
        pki.ovs_set_ssl()
        shoalnet.set_tls(pki.ca)
        auth += scenario.to_toml(pki.controller_tables())
        print('*** TLS: OpenFlow ssl:127.0.0.1:%d (ovs-pki), API https://%s'
              % (args.of_port, args.api))
    try:
        ctl = shoalnet.start_controller(
            CONFIG.format(interval=args.interval, hv1=shoalnet.dpid(0x21),
                          hv2=shoalnet.dpid(0x22)) + auth,
            args.api, os.path.join(args.out, 'controller.log'), args.of_port)
    except BaseException:
        if pki:
            pki.ovs_restore()
        raise
    net = Mininet(switch=shoalnet.UserOVS, controller=None,
                  autoSetMacs=True, build=False)
    try:
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
        h1, h2, h3, _ = hosts
        print('*** UDP iperf3: h1->h2 20 Mbit/s (IDC), h1->h3 5 Mbit/s (NIC), %ds' % args.seconds)
        h2.cmd('iperf3 -s -D -p 5201')
        h3.cmd('iperf3 -s -D -p 5202')
        time.sleep(0.5)
        h1.cmd('iperf3 -c %s -p 5201 -u -b 20M -l 1400 -t %d > %s/iperf_h1h2.txt 2>&1 &'
               % (h2.IP(), args.seconds, args.out))
        h1.cmd('iperf3 -c %s -p 5202 -u -b 5M -l 1400 -t %d > %s/iperf_h1h3.txt 2>&1 &'
               % (h3.IP(), args.seconds, args.out))
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
        h2.cmd('pkill -f "iperf3 -s -D -p 5201"')
        h3.cmd('pkill -f "iperf3 -s -D -p 5202"')
        print('*** results and logs in %s' % os.path.abspath(args.out))
        return 0 if loss == 0 else 1
    finally:
        net.stop()
        ctl.terminate()
        ctl.wait(timeout=10)
        if pki:
            pki.ovs_restore()


if __name__ == '__main__':
    sys.exit(main())
