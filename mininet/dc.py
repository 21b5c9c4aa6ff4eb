"""A parameterised 3-tier data center in Mininet for Shoal (Python 3).

    core        tc1 .. tcC                 dpid 0x100 + i
    aggregation ta1 .. ta(P*A)             dpid 0x200 + i   (A per pod, each to every core,
                                                             or to C/A of them: fat tree)
    ToR         tt1 .. tt(P*T)             dpid 0x300 + i   (T per pod, each to every agg of its pod)
    hypervisor  th1 .. th(P*T*H)           dpid 0x400 + i   (H per ToR: one OVS bridge per hypervisor)
      dom0      td1 ..                     data 10.0.2.i/16 on th_i, mgmt 10.99.i.2/30 to the root ns
      VMs       tv1 .. (V per hypervisor)  10.0.1.k/16 on th_i (bridge port tvk-p, VF stand-in tvk-vf)

With ``fat_tree_k: k`` (2 or 4; k=6 would take 99 bridges) the layout is a k-ary fat tree
(Al-Fares et al.): k pods of k/2 aggregation and k/2 edge (ToR) switches,
(k/2)^2 cores, k/2 hypervisors per edge switch; edge i of a pod connects to
every aggregation switch of its pod, aggregation switch j of a pod (j
counted within the pod) to cores j*(k/2) .. j*(k/2)+k/2-1, so every core
reaches every pod exactly once. The default (0) is the tiered layout above,
where every aggregation switch connects to every core.

Every switch is an Open vSwitch bridge on the userspace datapath speaking
OpenFlow 1.3 to the controller; fabric and hypervisor uplinks are TCLinks
with ``bw=`` only (no netem); TX checksum offload is off on every veth end.

Naming: everything this module creates starts with ``t`` (switches ``tc``,
``ta``, ``tt``, ``th``; hosts ``td``, ``tv``; management veths ``tm``) so that
it cannot collide with the other Shoal tests (``sh*``, ``s*``). Bridges carry
``external_ids:shoal-testbed=<run id>``.

This module only builds and tears down the network; testbed.py runs
controller, host daemons, traffic and measurements on top of it.
"""

import json
import glob
import os
import subprocess
import time

from mininet.link import Link, TCIntf
from mininet.net import Mininet

import shoalnet

CORE_BASE, AGG_BASE, TOR_BASE, HYP_BASE = 0x100, 0x200, 0x300, 0x400
UPLINK_PORT, DOM0_PORT, VM_PORT0, VF_PORT0 = 1, 2, 10, 40
DATA_PREFIX = 16


class TbIntf(TCIntf):
    """Mininet's TC interface with the htb ``r2q`` raised so that the class
    quantum stays within the kernel's bounds at 10-100 Mbit/s (Mininet's
    default draws a "quantum of class is big" warning per link)."""

    def bwCmds(self, *args, **kwargs):
        cmds, parent = super().bwCmds(*args, **kwargs)
        return [c.replace('htb default 1', 'htb default 1 r2q 100') for c in cmds], parent


class TbLink(Link):
    """A veth pair with a ``bw=`` limit on both ends (TbIntf)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('cls1', TbIntf)
        kwargs.setdefault('cls2', TbIntf)
        super().__init__(*args, **kwargs)


class TopologyError(ValueError):
    """A topology parameter is out of range."""


TOPOLOGY_DEFAULTS = {
    'cores': 1,
    'aggs_per_pod': 1,
    'pods': 2,
    'tors_per_pod': 1,
    'hosts_per_tor': 2,
    'vms_per_host': 2,
    'link_mbps': 100.0,       # fabric links (ToR-agg, agg-core)
    'host_link_mbps': 100.0,  # hypervisor uplink = the host's NIC
    'vf_per_host': 0,         # VF stand-ins per hypervisor (0 = none)
    'host_cores': 4,          # emulated host capacity (see testbed.py: ProcEmulator)
    'host_memory_mb': 1024,
    # 0: the tiered layout (every agg to every core); an even k: a k-ary fat
    # tree, which fixes cores, aggs_per_pod, pods, tors_per_pod and
    # hosts_per_tor (see the module docstring).
    'fat_tree_k': 0,
    'mgmt_net': '10.99',      # management /30s: 10.99.i.0/30 (root .1, dom0 .2)
    # MTU of every data-plane link (fabric, uplinks, VM and dom0 ports).
    # Jumbo frames, as data-center fabrics and migration networks use them:
    # the userspace datapath's cost is per packet, and 9000-byte frames cut
    # the packets of a bulk flow (migration, TCP competitor) about six-fold,
    # so that the links, not ovs-vswitchd's one forwarding thread, are what
    # an experiment measures (docs/testbed.md, "Sizing").
    'mtu': 9000,
}


def topology_params(raw):
    """Validated topology parameters (defaults filled in)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TopologyError('topology: must be an object')
    unknown = set(raw) - set(TOPOLOGY_DEFAULTS)
    if unknown:
        raise TopologyError('topology: unknown field(s) %s' % ', '.join(sorted(unknown)))
    p = dict(TOPOLOGY_DEFAULTS)
    p.update(raw)
    k = p['fat_tree_k']
    if k not in (0, 2, 4) or isinstance(k, bool):
        raise TopologyError('topology.fat_tree_k: must be 0 (tiered layout), 2 or 4 (a larger '
                            'fat tree has too many switches for this machine), got %r' % (k,))
    if k:
        h = k // 2
        shape = {'cores': h * h, 'aggs_per_pod': h, 'pods': k, 'tors_per_pod': h,
                 'hosts_per_tor': h}
        for f, v in shape.items():
            if f in raw and raw[f] != v:
                raise TopologyError('topology.%s: a fat tree with k=%d has %s = %d, got %r'
                                    % (f, k, f, v, raw[f]))
        p.update(shape)
    for k in ('cores', 'aggs_per_pod', 'pods', 'tors_per_pod', 'hosts_per_tor',
              'vms_per_host', 'host_cores'):
        v = p[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > 64:
            raise TopologyError('topology.%s: must be an integer in [1, 64], got %r' % (k, v))
    v = p['vf_per_host']
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > p['vms_per_host']:
        raise TopologyError('topology.vf_per_host: must be an integer in [0, vms_per_host], '
                            'got %r' % (v,))
    for k in ('link_mbps', 'host_link_mbps'):
        v = p[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 100:
            raise TopologyError('topology.%s: must be in (0, 100] Mbit/s (testbed limit), '
                                'got %r' % (k, v))
    v = p['host_memory_mb']
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 64:
        raise TopologyError('topology.host_memory_mb: must be >= 64, got %r' % (v,))
    v = p['mtu']
    if not isinstance(v, int) or isinstance(v, bool) or not 1280 <= v <= 9000:
        raise TopologyError('topology.mtu: must be an integer in [1280, 9000], got %r' % (v,))
    parts = str(p['mgmt_net']).split('.')
    if len(parts) != 2 or not all(x.isdigit() and 0 <= int(x) <= 255 for x in parts):
        raise TopologyError('topology.mgmt_net: must be two octets like "10.99", got %r'
                            % (p['mgmt_net'],))
    n_sw = p['cores'] + p['pods'] * (p['aggs_per_pod'] + p['tors_per_pod'])
    n_hyp = p['pods'] * p['tors_per_pod'] * p['hosts_per_tor']
    if n_hyp > 250:
        raise TopologyError('topology: at most 250 hypervisors (management addressing)')
    if n_hyp * p['vms_per_host'] > 250:
        raise TopologyError('topology: at most 250 VMs (data addressing)')
    if n_sw + n_hyp > 40:
        raise TopologyError('topology: %d switches is too many for this machine (max 40)'
                            % (n_sw + n_hyp))
    return p


def dpid_int(s):
    return int(s, 16)


class DataCenter:
    """Names, addresses and wiring of the data center; ``build()`` creates it."""

    def __init__(self, params, run_id):
        self.p = params
        self.run_id = run_id
        P, A, T, H, V, C = (params['pods'], params['aggs_per_pod'], params['tors_per_pod'],
                            params['hosts_per_tor'], params['vms_per_host'], params['cores'])
        self.cores = ['tc%d' % (i + 1) for i in range(C)]
        self.aggs = ['ta%d' % (i + 1) for i in range(P * A)]
        self.tors = ['tt%d' % (i + 1) for i in range(P * T)]
        self.hyps = ['th%d' % (i + 1) for i in range(P * T * H)]
        self.dpids = {}
        for base, names in ((CORE_BASE, self.cores), (AGG_BASE, self.aggs),
                            (TOR_BASE, self.tors), (HYP_BASE, self.hyps)):
            for i, n in enumerate(names):
                self.dpids[n] = base + i + 1
        self.pod_of = {}
        for i, a in enumerate(self.aggs):
            self.pod_of[a] = i // A
        for i, t in enumerate(self.tors):
            self.pod_of[t] = i // T
        self.tor_of = {h: self.tors[i // H] for i, h in enumerate(self.hyps)}
        for h in self.hyps:
            self.pod_of[h] = self.pod_of[self.tor_of[h]]
        # Hypervisor i: dom0 td<i>, VMs tv<(i-1)V+1 .. iV>.
        self.hyp_index = {h: i + 1 for i, h in enumerate(self.hyps)}
        self.dom0 = {h: 'td%d' % self.hyp_index[h] for h in self.hyps}
        self.vms_of = {}
        self.vm_info = {}
        for h in self.hyps:
            i = self.hyp_index[h]
            names = []
            for j in range(V):
                k = (i - 1) * V + j + 1
                vm = 'tv%d' % k
                names.append(vm)
                self.vm_info[vm] = {
                    'name': vm, 'index': k, 'home': h,
                    'ip': '10.0.1.%d' % k, 'mac': '02:74:76:00:00:%02x' % k,
                    'iface': '%s-eth0' % vm, 'port': '%s-p' % vm,
                    'vf_iface': '%s-eth1' % vm, 'vf_port': '%s-vf' % vm,
                    'vf_mac': '02:74:66:00:00:%02x' % k,
                    'ofport': VM_PORT0 + j, 'vf_ofport': VF_PORT0 + j,
                }
            self.vms_of[h] = names
        mg = params['mgmt_net']
        self.dom0_info = {}
        for h in self.hyps:
            i = self.hyp_index[h]
            self.dom0_info[h] = {
                'name': self.dom0[h], 'data_ip': '10.0.2.%d' % i,
                'data_mac': '02:74:64:00:00:%02x' % i, 'data_iface': '%s-eth0' % self.dom0[h],
                'data_port': '%s-p' % self.dom0[h],
                'mgmt_root': 'tm%d' % i, 'mgmt_iface': '%s-m' % self.dom0[h],
                'mgmt_root_ip': '%s.%d.1' % (mg, i), 'mgmt_ip': '%s.%d.2' % (mg, i),
                'uplink': '%s-up' % h,
            }
        # External clients {name: {switch, ip, mac, node}} (scenario
        # ``clients``, set by the testbed before build()).
        self.clients = {}
        self.net = None
        self.switches_started_at = None
        self.created_netns = []
        self.created_mgmt = []

    # ---- facts -----------------------------------------------------------
    def core_uplinks(self, agg):
        """The cores an aggregation switch connects to: every core, or in a
        fat tree the k/2 cores j*(k/2) .. j*(k/2)+k/2-1 of its position j in
        its pod."""
        k = self.p['fat_tree_k']
        if not k:
            return list(self.cores)
        h = k // 2
        j = self.aggs.index(agg) % self.p['aggs_per_pod']
        return self.cores[j * h:(j + 1) * h]

    def switch_links(self):
        """Inter-switch links as (a, b, kind) with a the upper end."""
        A = self.p['aggs_per_pod']
        links = []
        for a in self.aggs:
            for c in self.core_uplinks(a):
                links.append((c, a, 'core'))
        for t in self.tors:
            pod = self.pod_of[t]
            for a in self.aggs[pod * A:(pod + 1) * A]:
                links.append((a, t, 'agg'))
        for h in self.hyps:
            links.append((self.tor_of[h], h, 'host'))
        return links

    def n_directed_links(self):
        return 2 * len(self.switch_links())

    def all_switches(self):
        return self.cores + self.aggs + self.tors + self.hyps

    def host_of_bridge_dpid(self):
        return {'%016x' % self.dpids[h]: h for h in self.hyps}

    def level(self, a, b):
        """S-CORE level between two hypervisors: 0 same host, 1 rack, 2 pod, 3 core."""
        if a == b:
            return 0
        if self.tor_of[a] == self.tor_of[b]:
            return 1
        if self.pod_of[a] == self.pod_of[b]:
            return 2
        return 3

    def describe(self):
        """A JSON-able description (written to the output directory)."""
        return {
            'params': self.p,
            'switches': {n: '%016x' % self.dpids[n] for n in self.all_switches()},
            'links': [{'a': a, 'b': b, 'kind': k} for a, b, k in self.switch_links()],
            'hypervisors': {h: {'tor': self.tor_of[h], 'pod': self.pod_of[h],
                                'dom0': self.dom0_info[h], 'vms': self.vms_of[h]}
                            for h in self.hyps},
            'vms': self.vm_info,
            'clients': self.clients,
        }

    # ---- lifecycle -------------------------------------------------------
    def check_free(self):
        """Refuses to start when any name this testbed uses already exists
        (another testbed running, or leftovers of a crashed one)."""
        busy = []
        out = subprocess.run(['ovs-vsctl', 'list-br'], capture_output=True, text=True).stdout
        bridges = set(out.split())
        busy += [b for b in self.all_switches() if b in bridges]
        for vm in self.vm_info:
            if os.path.exists('/run/netns/%s' % vm):
                busy.append('/run/netns/%s' % vm)
        for h in self.hyps:
            d = self.dom0_info[h]
            if os.path.exists('/sys/class/net/%s' % d['mgmt_root']):
                busy.append(d['mgmt_root'])
            if os.path.exists('/run/netns/%s' % d['name']):
                busy.append('/run/netns/%s' % d['name'])
        addrs = subprocess.run(['ip', '-o', '-4', 'addr'], capture_output=True,
                               text=True).stdout
        mg = ' %s.' % self.p['mgmt_net']
        if mg in addrs:
            busy.append('an address in %s.0.0/16 in the root namespace' % self.p['mgmt_net'])
        if busy:
            raise SystemExit('the testbed names are in use: %s\n(another testbed running? '
                             'leftovers of a crashed run: /usr/bin/python3 mininet/cleanup.py)'
                             % ', '.join(busy))

    def build(self, of_port, state, protocol='tcp'):
        """Creates switches, hosts and links and starts the switches.

        ``state`` (a testbed.State) records every object as it is made so
        that cleanup finds it even after a crash.
        """
        p = self.p
        net = Mininet(switch=shoalnet.UserOVS, controller=None, autoSetMacs=False,
                      build=False, ipBase='10.0.0.0/%d' % DATA_PREFIX, waitConnected=False)
        self.net = net
        net.addController(shoalnet.remote_controller(of_port, protocol))
        for n in self.all_switches():
            net.addSwitch(n, dpid='%016x' % self.dpids[n])
        bw = dict(bw=p['link_mbps'], txo=False)
        for a, b, kind in self.switch_links():
            if kind == 'host':
                net.addLink(a, b, cls=TbLink, intfName2='%s-up' % b, port2=UPLINK_PORT,
                            bw=p['host_link_mbps'], txo=False)
            else:
                net.addLink(a, b, cls=TbLink, **bw)
        for h in self.hyps:
            d = self.dom0_info[h]
            dom0 = net.addHost(d['name'], ip='%s/%d' % (d['data_ip'], DATA_PREFIX),
                               mac=d['data_mac'])
            net.addLink(dom0, h, cls=Link, intfName1=d['data_iface'], intfName2=d['data_port'],
                        port2=DOM0_PORT)
            for vm in self.vms_of[h]:
                v = self.vm_info[vm]
                node = net.addHost(vm, ip='%s/%d' % (v['ip'], DATA_PREFIX), mac=v['mac'])
                net.addLink(node, h, cls=Link, intfName1=v['iface'], intfName2=v['port'],
                            port2=v['ofport'])
                if p['vf_per_host'] > 0:
                    net.addLink(node, h, cls=Link, intfName1=v['vf_iface'],
                                intfName2=v['vf_port'], port2=v['vf_ofport'])
        for name, c in sorted(self.clients.items()):
            # An external client: a namespace on a fabric switch, with an
            # address in the VMs' subnet.
            node = net.addHost(c['node'], ip='%s/%d' % (c['ip'], DATA_PREFIX), mac=c['mac'])
            net.addLink(node, c['switch'], cls=Link, intfName1='%s-eth0' % c['node'],
                        intfName2='%s-p' % c['node'])
        state.add('bridges', self.all_switches())
        net.build()
        # Interfaces set explicitly: Mininet sets MAC/IP on the default
        # interface only; the VF stand-in gets its own MAC, no IP, and is down
        # until hostd attaches it.
        for vm, v in self.vm_info.items():
            node = net.get(vm)
            if p['vf_per_host'] > 0:
                node.cmd('ip link set %s address %s' % (v['vf_iface'], v['vf_mac']))
                node.cmd('ip link set %s down' % v['vf_iface'])
        state.add('pids', [h.pid for h in net.hosts])
        # The switches start (and connect to the controller) here; the rest
        # of the build (offloads, MTU, management veths) runs while the
        # controller already discovers the links.
        self.switches_started_at = time.time()
        net.start()
        shoalnet.offload_off(net)
        shoalnet.set_mtu(net, p['mtu'])
        for n in self.all_switches():
            subprocess.run(['ovs-vsctl', 'set', 'bridge', n,
                            'external_ids:shoal-testbed=%s' % self.run_id], check=False)
        self._mgmt(state)
        self._netns(state)

    def _mgmt(self, state):
        """A veth from each dom0 to the root namespace (10.99.i.0/30)."""
        for h in self.hyps:
            d = self.dom0_info[h]
            node = self.net.get(d['name'])
            state.add('links', [d['mgmt_root']])
            run(['ip', 'link', 'add', d['mgmt_root'], 'type', 'veth', 'peer', 'name',
                 d['mgmt_iface']])
            self.created_mgmt.append(d['mgmt_root'])
            run(['ip', 'link', 'set', d['mgmt_iface'], 'netns', str(node.pid)])
            run(['ip', 'addr', 'add', '%s/30' % d['mgmt_root_ip'], 'dev', d['mgmt_root']])
            run(['ip', 'link', 'set', d['mgmt_root'], 'up'])
            node.cmd('ip addr add %s/30 dev %s' % (d['mgmt_ip'], d['mgmt_iface']))
            node.cmd('ip link set %s up' % d['mgmt_iface'])
            node.cmd('ip link set lo up')

    def _netns(self, state):
        """Names the namespaces of dom0s and VMs under /run/netns (hostd's
        netns backend finds VMs by name)."""
        for name in [self.dom0_info[h]['name'] for h in self.hyps] + list(self.vm_info):
            node = self.net.get(name)
            state.add('netns', [name])
            run(['ip', 'netns', 'attach', name, str(node.pid)])
            self.created_netns.append(name)

    def stop(self):
        """Removes everything ``build()`` made (idempotent, never raises)."""
        for name in self.created_netns:
            subprocess.run(['ip', 'netns', 'delete', name], capture_output=True)
        self.created_netns = []
        for link in self.created_mgmt:
            subprocess.run(['ip', 'link', 'delete', link], capture_output=True)
        self.created_mgmt = []
        if self.net is not None:
            net, self.net = self.net, None
            try:
                net.stop()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print('warning: mininet stop: %s' % e)
            # net.stop() fails part-way when the run was interrupted while
            # Mininet was starting (the bridges exist, not yet marked). The
            # names were free when the run began (check_free) and the
            # testbed lock is held, so a bridge by one of them is this run's.
            for br in self.all_switches():
                subprocess.run(['ovs-vsctl', '--if-exists', 'del-br', br], capture_output=True)
                for intf in glob.glob('/sys/class/net/%s-eth*' % br):
                    subprocess.run(['ip', 'link', 'delete', os.path.basename(intf)],
                                   capture_output=True)
            # A VM port that hostd moved to another bridge belongs to that
            # bridge now; Mininet deletes the bridges, but make sure no veth
            # of ours is left behind.
            for vm, v in self.vm_info.items():
                for intf in (v['port'], v['vf_port']):
                    if os.path.exists('/sys/class/net/%s' % intf):
                        subprocess.run(['ip', 'link', 'delete', intf], capture_output=True)

    # ---- helpers ---------------------------------------------------------
    def node(self, name):
        if name in self.clients:
            name = self.clients[name]['node']
        return self.net.get(name)

    def ip_of(self, name):
        """The data address of a VM or an external client."""
        if name in self.clients:
            return self.clients[name]['ip']
        return self.vm_info[name]['ip']

    def bridge_of_port(self, port):
        """The bridge a port is on now (hostd moves VM ports on migration)."""
        r = subprocess.run(['ovs-vsctl', 'port-to-br', port], capture_output=True, text=True)
        return r.stdout.strip() or None

    def write_description(self, path):
        with open(path, 'w') as f:
            json.dump(self.describe(), f, indent=2)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('%s failed: %s' % (' '.join(cmd), r.stderr.strip()))
    return r.stdout


def wait(fn, timeout, what, step=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError('timed out after %ss waiting for %s' % (timeout, what))
