#!/usr/bin/env python3
"""Sova on the testbed: a host's scarce VF follows the VM whose network
intensity grows.

    /usr/bin/python3 mininet/experiments/sova.py --out out/sova

Data center: 1 core, 2 pods (1 aggregation, 1 ToR each), one hypervisor per
ToR with 3 VMs and ONE VF (a VF stand-in interface per VM, brought up by
hostd on vf_attach). tv1 and tv2 (th1) mostly wait for I/O (10 % CPU: a
high I/O factor), tv3 computes (40 % CPU), so Sova's top-q I/O set is
{tv1, tv2} and the VF goes to the one with the higher network factor.

Timeline: tv1 sends UDP to tv4 (th2) from the start; tv2 is silent. Then
tv2's traffic to tv5 grows in steps (--step-mbps, three steps) while tv1
stops. The controller's live loop (policy sova, set with PUT /api/v1/policy)
recomputes the assignment every interval and applies the changes through
hostd (vf_detach, vf_attach); the same happens on th2 for the receivers.
vf.csv records, every second, each VM's VF from hostd (vf_attached), from
the stand-in interface (link up) and from the controller
(GET /api/v1/vf-assignments); summary.json has the holder timeline per host
and whether the VF followed the traffic.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import scenario as scn  # noqa: E402
import testbed  # noqa: E402


def build_scenario(a):
    def cpu(c):
        return {'interpolation': 'hold', 'points': [{'t': 0, 'cpu': c, 'mem_mb': 32,
                                                     'dirty_mbps': 0.2}]}
    s1, s2, s3 = a.switch_at, a.switch_at + a.step_s, a.switch_at + 2 * a.step_s
    end = s3 + a.tail_s
    return scn.load({
        'name': 'sova',
        'description': 'VF follows the growing traffic: tv1 -> tv2 on th1',
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 1, 'vms_per_host': 3, 'vf_per_host': 1,
                     'link_mbps': 100, 'host_link_mbps': 100, 'host_cores': 2},
        'controller': {'interval_s': a.interval_s, 'config': json.loads(a.controller_config)},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': 64, 'series': cpu(0.1)},
        'vms': {'tv3': {'series': cpu(0.4)}, 'tv6': {'series': cpu(0.4)}},
        # A sample "has traffic" above 50 packets per interval: every VM sees
        # a few background frames (LLDP probes, ARP) even when idle.
        'actions': [{'at_s': a.policy_at, 'do': 'policy', 'name': 'sova',
                     'options': {'sova': {'traffic_floor_packets': 50}}}],
        'traffic': [
            {'src': 'tv1', 'dst': 'tv4', 'proto': 'udp', 'mbps': a.step_mbps * 2,
             'start_s': 3, 'stop_s': s2, 'label': 'tv1>tv4'},
            {'src': 'tv2', 'dst': 'tv5', 'proto': 'udp', 'mbps': a.step_mbps / 2,
             'start_s': s1, 'stop_s': s2, 'port': 5401, 'label': 'tv2>tv5 step1'},
            {'src': 'tv2', 'dst': 'tv5', 'proto': 'udp', 'mbps': a.step_mbps,
             'start_s': s2, 'stop_s': s3, 'port': 5402, 'label': 'tv2>tv5 step2'},
            {'src': 'tv2', 'dst': 'tv5', 'proto': 'udp', 'mbps': a.step_mbps * 3,
             'start_s': s3, 'stop_s': end, 'port': 5403, 'label': 'tv2>tv5 step3'},
        ],
    })


def holders(rows, field):
    """Per host, the timeline of which VMs hold a VF: [(t, [vms])] at each change."""
    out = {}
    by_t = {}
    for r in rows:
        by_t.setdefault((r['host'], r['t_s']), []).append(r)
    for (h, t), rs in sorted(by_t.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        cur = sorted(r['vm'] for r in rs if r.get(field) == 1)
        tl = out.setdefault(h, [])
        if not tl or tl[-1][1] != cur:
            tl.append((t, cur))
    return out


def plot(out, tb, a):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for vm in ('tv1', 'tv2', 'tv3'):
        pts = [(r['t_s'], (r['tx_packets_per_s'] or 0) + (r['rx_packets_per_s'] or 0))
               for r in tb.rows['vf'] if r['vm'] == vm]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], label=vm)
    ax1.set_ylabel('packets/s (hostd)')
    ax1.set_title('th1: VM traffic and who holds the VF (Sova, 1 VF, 3 VMs)')
    ax1.legend(fontsize='small')
    ax1.grid(alpha=0.3)
    for i, vm in enumerate(('tv1', 'tv2', 'tv3')):
        pts = [(r['t_s'], r['vf_attached']) for r in tb.rows['vf'] if r['vm'] == vm]
        ax2.step([p[0] for p in pts], [i + 0.8 * p[1] for p in pts], where='post', label=vm)
    ax2.axvline(a.policy_at, color='gray', linestyle=':', label='policy sova on')
    ax2.set_yticks([0, 1, 2])
    ax2.set_yticklabels(['tv1', 'tv2', 'tv3'])
    ax2.set_ylabel('VF attached (hostd)')
    ax2.set_xlabel('time since the host daemons started (s)')
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, 'sova.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collect(tb):
    return testbed.collect_api(tb, (('decisions', '/api/v1/decisions?limit=500'),
                                    ('vf_assignments', '/api/v1/vf-assignments')), save=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help='output directory')
    ap.add_argument('--bin-dir', help='where shoal-controller and shoal-hostd are')
    ap.add_argument('--interval-s', type=float, default=2.0)
    ap.add_argument('--policy-at', type=float, default=6.0, help='PUT /api/v1/policy sova')
    ap.add_argument('--switch-at', type=float, default=24.0, help="tv2's traffic starts")
    ap.add_argument('--step-s', type=float, default=12.0, help='length of each step')
    ap.add_argument('--step-mbps', type=float, default=8.0)
    ap.add_argument('--tail-s', type=float, default=20.0)
    ap.add_argument('--controller-config', default='{}')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    tb, base = testbed.run_or_exit('sova', sc, out, a.bin_dir,
                                   plots=not a.no_plots, collect=collect)
    hostd_tl = holders(tb.rows['vf'], 'vf_attached')
    link_tl = holders(tb.rows['vf'], 'vf_link_up')
    ctl_tl = holders(tb.rows['vf'], 'assigned')
    decisions = base.get('controller_decisions')
    vf_decisions = []
    for d in decisions if isinstance(decisions, list) else []:
        if 'vf' in str(d.get('action', '')):
            vf_decisions.append({k: d.get(k) for k in ('round', 'action', 'vm', 'host',
                                                       'reason', 'outcome')})
    # Share of the samples (policy on) in which the VF of a host sits on
    # the VM of that host with the most packets/s.
    busiest = {}
    by_t = {}
    for r in tb.rows['vf']:
        if r['t_s'] >= a.policy_at + 2 * a.interval_s:
            by_t.setdefault((r['host'], r['t_s']), []).append(r)
    for (h, t), rs in by_t.items():
        top = max(rs, key=lambda r: (r['tx_packets_per_s'] or 0) + (r['rx_packets_per_s'] or 0))
        ok, n = busiest.get(h, (0, 0))
        busiest[h] = (ok + int(top['vf_attached'] == 1), n + 1)
    th1 = hostd_tl.get('th1', [])
    before_switch = [v for t, v in th1 if t < a.switch_at]
    final = th1[-1][1] if th1 else None
    s = {
        'experiment': 'sova',
        'vf_holders_hostd': hostd_tl,
        'vf_holders_link': link_tl,
        'vf_holders_controller': ctl_tl,
        'vf_decisions': vf_decisions,
        'th1_holder_before_switch': before_switch[-1] if before_switch else None,
        'th1_holder_final': final,
        'followed_traffic': bool(before_switch) and before_switch[-1] == ['tv1']
        and final == ['tv2'],
        'th2_holder_final': hostd_tl.get('th2', [[None, None]])[-1][1],
        'hostd_and_link_agree': hostd_tl == link_tl,
        'vf_changes': {h: max(0, len(tl) - 2) for h, tl in hostd_tl.items()},
        'vf_on_busiest_vm_share': {h: round(ok / n, 3) for h, (ok, n) in busiest.items() if n},
        'testbed_summary': base,
    }
    if not a.no_plots:
        s['plot'] = plot(out, tb, a)
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== Sova: VF holders (hostd vf_attached)')
    for h, tl in sorted(hostd_tl.items()):
        print('  %s: %s' % (h, ', '.join('t=%.0fs %s' % (t, '+'.join(v) or '-') for t, v in tl)))
    print('  VF followed the traffic on th1 (tv1 -> tv2): %s; share of samples with the VF on '
          'the busiest VM: %s' % (s['followed_traffic'], s['vf_on_busiest_vm_share']))
    print('results: %s (summary.json, vf.csv, vf-assignments.jsonl, sova.png)' % out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
