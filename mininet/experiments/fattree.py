#!/usr/bin/env python3
"""A k=4 fat tree on the testbed: discovery, all-pairs reachability, the
traffic matrix and a reserved migration across the core.

    /usr/bin/python3 mininet/experiments/fattree.py --out out/fattree

Data center (dc.py, ``topology.fat_tree_k = 4``): 20 switches (4 core
tc1..tc4, 8 aggregation ta1..ta8, 8 edge tt1..tt8), 4 pods of 2 aggregation
and 2 edge switches, aggregation switch j of a pod to cores 2j+1, 2j+2; each
edge switch has 2 hypervisors (th1..th16, the fat tree's 16 hosts: an OVS
bridge each, with a dom0 and one VM, tv_i on th_i). 36 bridges on the
userspace datapath, links 100 Mbit/s.

What it does and records (summary.json):

1. Discovery: the controller (the real binary) connects the 36 bridges and
   finds all 48 cables (16 core-agg, 16 agg-edge, 16 hypervisor uplinks: 96
   directed links); ``discovery_s`` is the time from the switches' start to
   the last one found.
2. All-pairs ping between the 16 VMs (240 ordered pairs, --ping-count
   echoes each, every source pinging its 15 peers one after the other, the
   16 sources at once), right after the host daemons started. No warm-up
   round: the measured round is the first time most pairs talk (the
   testbed's endpoint learning had each VM ping one VM in another pod
   before); ``ping_loss`` must be 0.
3. Three UDP flows across the core at known rates (iperf3, 1400-byte
   datagrams): λ from GET /api/v1/traffic-matrix, the median of the samples
   whose λ window lies wholly inside the flow, against the offered rate in
   Ethernet frames (payload x 1442/1400); ``lambda_within_10pct``.
4. A reserved migration of tv1 from th1 (pod 1) to th13 (pod 4) through the
   controller's orchestrator: its path crosses a core switch, the
   reservation (meter + flow) is seen on every hop of the path while it
   runs and is gone afterwards, it ends ``done`` within its deadline.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import scenario as scn  # noqa: E402
import testbed  # noqa: E402

K = 4
# Three flows, each across the core (pods 1->2, 2->3, 3->4), none touching
# the migrating VM or its destination host.
FLOWS = [('tv2', 'tv6', 5.0), ('tv7', 'tv11', 10.0), ('tv12', 'tv15', 15.0)]
MIGRATION = ('tv1', 'th13')
LAMBDA_TOLERANCE = 0.10


def build_scenario(a):
    flows_stop = a.flows_at + a.flows_s
    migrate_at = flows_stop + 2
    end = migrate_at + a.deadline_s + 4
    return scn.load({
        'name': 'fattree',
        'description': 'k=%d fat tree: all-pairs ping, three UDP flows across the core, a '
                       'reserved migration %s -> %s across the core' % ((K,) + MIGRATION),
        'duration_s': end,
        'topology': {'fat_tree_k': K, 'vms_per_host': 1, 'link_mbps': 100,
                     'host_link_mbps': 100},
        'controller': {'interval_s': a.interval_s,
                       'config': json.loads(a.controller_config)},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': 32, 'series': {
            'interpolation': 'hold', 'points': [{'t': 0, 'cpu': 0.1, 'mem_mb': 16,
                                                 'dirty_mbps': 0.5}]}},
        'traffic': [{'src': s, 'dst': d, 'proto': 'udp', 'mbps': r, 'start_s': a.flows_at,
                     'stop_s': flows_stop} for s, d, r in FLOWS],
        'actions': [{'at_s': migrate_at, 'do': 'migrate', 'vm': MIGRATION[0],
                     'to': MIGRATION[1], 'deadline_s': a.deadline_s, 'reserve': True,
                     'label': 'across the core'}],
        'checks': {'cross_pod_ping': True, 'matrix_pairs': [[s, d] for s, d, _ in FLOWS]},
    })


class AllPairs:
    """The all-pairs ping round, run from the timeline (blocking it)."""

    def __init__(self, count):
        self.count = count
        self.result = None

    def __call__(self, tb):
        d = tb.dc
        vms = sorted(d.vm_info, key=lambda v: d.vm_info[v]['index'])
        t0 = tb.now()
        tb.log('all-pairs ping: %d VMs, %d ordered pairs, %d echoes each'
               % (len(vms), len(vms) * (len(vms) - 1), self.count))
        procs = []
        for src in vms:
            script = '; '.join(
                'echo "== %s"; ping -n -q -c %d -i 0.2 -W 2 %s' % (dst, self.count,
                                                                  d.vm_info[dst]['ip'])
                for dst in vms if dst != src)
            procs.append((src, d.node(src).popen(['sh', '-c', script],
                                                 stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT)))
        pairs = {}
        for src, p in procs:
            out = p.communicate(timeout=120)[0].decode(errors='replace')
            for block in out.split('== ')[1:]:
                dst = block.split('\n', 1)[0].strip()
                m = re.search(r'(\d+) packets transmitted, (\d+) received', block)
                pairs['%s>%s' % (src, dst)] = ((int(m.group(1)), int(m.group(2))) if m
                                               else (self.count, 0))
        t1 = tb.now()
        sent = sum(s for s, _ in pairs.values())
        got = sum(r for _, r in pairs.values())
        lossy = sorted(k for k, (s, r) in pairs.items() if r < s)
        self.result = {
            'pairs': len(pairs), 'echoes_per_pair': self.count, 'sent': sent,
            'received': got, 'loss': round(1 - got / sent, 6) if sent else None,
            'lossy_pairs': lossy, 'started_s': round(t0, 2), 'ended_s': round(t1, 2),
            'time_s': round(t1 - t0, 2)}
        tb.log('all-pairs ping: %d/%d answered in %.1f s%s'
               % (got, sent, t1 - t0, ('; lossy pairs: %s' % ', '.join(lossy)) if lossy else ''))
        tb.event('all-pairs-ping', '%d/%d' % (got, sent))


def flow_rows(tb, base):
    rows = []
    for s, d, mbps in FLOWS:
        key = '%s>%s' % (s, d)
        expected = mbps * 1e6 / 8 * testbed.UDP_OVERHEAD
        lam = base['matrix_pairs_median'].get(key) or 0.0
        ratio = lam / expected if expected else None
        f = base['flows'].get(key) or {}
        rows.append({
            'src': s, 'dst': d, 'offered_mbps': mbps,
            'src_host': tb.dc.vm_info[s]['home'], 'dst_host': tb.dc.vm_info[d]['home'],
            'expected_lambda_bytes_per_s': round(expected, 1),
            'lambda_median_bytes_per_s': round(lam, 1),
            'lambda_max_bytes_per_s': base['matrix_pairs'].get(key),
            'lambda_ratio': round(ratio, 4) if ratio is not None else None,
            'within_10pct': ratio is not None and abs(ratio - 1) <= LAMBDA_TOLERANCE,
            'receiver_mbps_mean': f.get('mean_mbps'),
            'totals': f.get('totals')})
    return rows


def migration_row(tb, base, deadline_s):
    migs = base.get('migrations') or []
    if not migs:
        return None
    m = migs[0]
    path = m.get('path_bridges') or []
    wall = (m['ended_t'] - m['started_t']) if m.get('ended_t') is not None and \
        m.get('started_t') is not None else None
    return {
        'vm': m['vm'], 'from': m['from'], 'to': m['to'], 'state': m['state'],
        'error': m.get('error'), 'reserve': m['reserve'], 'deadline_s': deadline_s,
        'time_s': m.get('total_time_s'), 'wall_s': round(wall, 2) if wall is not None else None,
        'downtime_ms': m.get('downtime_ms'), 'transferred_bytes': m.get('transferred_bytes'),
        'bandwidth_bytes_per_s': m.get('bandwidth_bytes_per_s'),
        'predicted': m.get('predicted'),
        'path': path, 'path_cores': [b for b in path if b in tb.dc.cores],
        'reservation_path_hops': m.get('reservation_path_hops'),
        'reservation_hops_seen': m.get('reservation_hops_seen'),
        'reservation_hops_simultaneous': m.get('reservation_hops_simultaneous'),
        'reservation_seen_on': sorted((m.get('reservation_seen') or {}).keys()),
    }


def plot(out, tb, sc, flows, mig):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = ['tab:blue', 'tab:orange', 'tab:green']
    for f, col in zip(flows, colors):
        rows = [r for r in tb.rows['lambda'] if r['src'] == f['src'] and r['dst'] == f['dst']]
        ax.plot([r['t_s'] for r in rows], [(r['bytes_per_s'] or 0) * 8 / 1e6 for r in rows],
                color=col, label='λ(%s, %s)' % (f['src'], f['dst']))
        e = f['expected_lambda_bytes_per_s'] * 8 / 1e6
        fl = sc['traffic'][0]
        ax.hlines([e * (1 - LAMBDA_TOLERANCE), e * (1 + LAMBDA_TOLERANCE)], fl['start_s'],
                  fl['stop_s'], colors=col, linestyles=':', linewidth=1)
    if mig and tb.migrations:
        rec = tb.migrations[0]
        if rec.get('started_t') is not None:
            ax.axvspan(rec['started_t'], rec['ended_t'] or tb.now(), color='gold', alpha=0.3,
                       label='migration %s %s->%s' % (mig['vm'], mig['from'], mig['to']))
    ax.set_xlabel('time since the host daemons started (s)')
    ax.set_ylabel('controller λ, Mbit/s of frames')
    ax.set_title('k=4 fat tree: λ of three UDP flows across the core (dotted: ±10%)',
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small', loc='upper right')
    return testbed.save_figure(fig, out, 'fattree.png')


def main():
    ap = testbed.experiment_args(argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument('--ping-count', type=int, default=3, help='echoes per ordered pair')
    ap.add_argument('--ping-at', type=float, default=1.0,
                    help='the all-pairs round starts this long after the host daemons')
    ap.add_argument('--flows-at', type=float, default=25.0,
                    help='the UDP flows start (after the ping round)')
    ap.add_argument('--flows-s', type=float, default=24.0, help='how long the flows run')
    ap.add_argument('--deadline-s', type=float, default=12.0, help='migration deadline')
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the testbed\'s')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    pinger = AllPairs(a.ping_count)
    t_start = time.time()
    tb, base = testbed.run_or_exit('fattree', sc, out, a.bin_dir, plots=not a.no_plots,
                                   extra=[(a.ping_at, pinger)])
    run_s = time.time() - t_start
    ck = base['checks']
    flows = flow_rows(tb, base)
    mig = migration_row(tb, base, a.deadline_s)
    ping = pinger.result or {}
    d = tb.dc
    s = {
        'experiment': 'fattree', 'k': K,
        'switches': len(d.cores) + len(d.aggs) + len(d.tors),
        'core': len(d.cores), 'aggregation': len(d.aggs), 'edge': len(d.tors),
        'hypervisors': len(d.hyps), 'vms': len(d.vm_info),
        'cables': len(d.switch_links()),
        'directed_links_found': ck.get('directed_links'),
        'directed_links_expected': ck.get('directed_links_expected'),
        'switches_connected': ck.get('switches_connected'),
        'build_s': ck.get('build_s'), 'discovery_s': ck.get('discovery_s'),
        'setup_s': base.get('setup_s'),
        'learning_cross_pod_ping_loss': ck.get('cross_pod_ping_loss'),
        'ping': ping, 'ping_loss': ping.get('loss'), 'ping_time_s': ping.get('time_s'),
        'ping_done_before_flows': (ping.get('ended_s') is not None and
                                   ping['ended_s'] < a.flows_at - 1),
        'flows': flows,
        'lambda_within_10pct': bool(flows) and all(f['within_10pct'] for f in flows),
        'migration': mig,
        'migration_done': bool(mig) and mig['state'] == 'done',
        'migration_crosses_core': bool(mig) and bool(mig['path_cores']),
        'migration_time_s': mig and mig['time_s'],
        'reservation_every_hop': bool(mig) and bool(mig['reservation_path_hops']) and
        mig['reservation_hops_seen'] == mig['reservation_path_hops'],
        'reservation_on_core': bool(mig) and any(b in d.cores
                                                 for b in mig['reservation_seen_on']),
        'reservations_left': base.get('reservations_left'),
        'reservations_gone_after': not base.get('reservations_left'),
        'cpu': base.get('cpu'),
        'run_s': round(run_s, 1),
    }
    if not a.no_plots:
        s['plot'] = plot(out, tb, sc, flows, mig)
    s['testbed_summary'] = base
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== fattree (k=%d: %d switches, %d hypervisors)' % (K, s['switches'],
                                                              s['hypervisors']))
    print('  discovery: %s/%s directed links in %s s (build %s s)'
          % (s['directed_links_found'], s['directed_links_expected'], s['discovery_s'],
             s['build_s']))
    print('  all-pairs ping: %s/%s answered (loss %s) in %s s'
          % (ping.get('received'), ping.get('sent'), ping.get('loss'), ping.get('time_s')))
    for f in flows:
        print('  λ(%s, %s): %.0f B/s, offered %.0f B/s of frames (%.3f)'
              % (f['src'], f['dst'], f['lambda_median_bytes_per_s'],
                 f['expected_lambda_bytes_per_s'], f['lambda_ratio'] or 0))
    if mig:
        print('  migration %s %s -> %s: %s in %s s (deadline %s s), path %s, reserved on %s/%s '
              'hops, gone after: %s' % (mig['vm'], mig['from'], mig['to'], mig['state'],
                                        mig['time_s'], a.deadline_s, '-'.join(mig['path']),
                                        mig['reservation_hops_seen'],
                                        mig['reservation_path_hops'],
                                        s['reservations_gone_after']))
    print('  run: %.0f s; results: %s (summary.json, fattree.png)' % (run_s, out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
