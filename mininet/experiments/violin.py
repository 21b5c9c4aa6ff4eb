#!/usr/bin/env python3
"""VIOLIN live: an environment leaves its overloaded domain (all but its
head node), as the simulator decides.

    /usr/bin/python3 mininet/experiments/violin.py --out out/violin

Data center: 1 core, 2 pods (1 aggregation switch, 1 ToR each), 2
hypervisors per ToR, 3 VMs each, 2 cores per hypervisor. Domains are the
pods: d0 = th1, th2 and d1 = th3, th4 (the controller's [groups] table and
the simulator's hosts[].domain). Environment tenant1 = tv1, tv2, tv3 (all on
th1), head tv1.

From t = --hot-at s (hostd scenario series) tv2 and tv3 run at 0.9 of their
vCPU and tv4 on th2 too: their CPU EWMA passes 0.75 (high demand), th1 runs
at 1.9 of 2 cores and th2 at 1.5, so no host of d0 has room for another
high-demand VM (CPU threshold 0.85 of 2 cores). VIOLIN finds d0 overloaded
and moves tenant1 to d1 except its head: tv2 and tv3 move (reserved
migrations through the orchestrator), tv1 stays on th1. The d1 hosts idle.

The same scenario runs in the simulator (`shoal-controller simulate
--policy violin`); summary.json has the live moves, the simulator's,
whether the head stayed, the reservations seen on every hop of each
migration and whether they were gone afterwards.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import scenario as scn  # noqa: E402
import score  # noqa: E402
import testbed  # noqa: E402

DOMAINS = {'d0': ['th1', 'th2'], 'd1': ['th3', 'th4']}
ENV = {'members': ['tv1', 'tv2', 'tv3'], 'head': 'tv1'}


def build_scenario(a):
    def s(points):
        return {'interpolation': 'hold', 'points': points}
    idle = s([{'t': 0, 'cpu': 0.1, 'mem_mb': 32, 'dirty_mbps': 0.5}])

    def hot(cpu):
        return s([{'t': 0, 'cpu': 0.1, 'mem_mb': 32, 'dirty_mbps': 0.5},
                  {'t': a.hot_at, 'cpu': cpu, 'mem_mb': 32, 'dirty_mbps': 0.5}])
    end = a.duration_s
    return scn.load({
        'name': 'violin',
        'description': 'domain d0 overloaded from t=%gs; environment tenant1 (head tv1)'
                       % a.hot_at,
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 2, 'vms_per_host': 3, 'link_mbps': 100,
                     'host_link_mbps': 100, 'host_cores': 2, 'host_memory_mb': 1024},
        'controller': {'interval_s': a.interval_s,
                       'config': scn.merge({'execute': {'default_deadline_s': a.deadline_s}},
                                           json.loads(a.controller_config))},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': 32, 'series': idle},
        'vms': {'tv2': {'series': hot(0.9)}, 'tv3': {'series': hot(0.9)},
                'tv4': {'series': hot(0.9)},
                'tv5': {'series': hot(0.3)}, 'tv6': {'series': hot(0.3)}},
        'environments': {'tenant1': ENV},
        'domains': DOMAINS,
        'actions': [{'at_s': a.policy_at, 'do': 'policy', 'name': 'violin'}],
        # A little real traffic inside the environment (its members talk).
        'traffic': [{'src': 'tv2', 'dst': 'tv3', 'proto': 'udp', 'mbps': 2,
                     'start_s': 3, 'stop_s': end}],
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    testbed.experiment_args(ap)
    ap.add_argument('--hot-at', type=float, default=10.0, help='d0 turns busy at this time')
    ap.add_argument('--policy-at', type=float, default=6.0,
                    help='PUT /api/v1/policy at this time (before: monitoring only)')
    ap.add_argument('--duration-s', type=float, default=56.0)
    ap.add_argument('--deadline-s', type=float, default=12.0,
                    help="deadline of the live loop's migrations")
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the experiment\'s')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    t_start = time.time()
    tb, base = testbed.run_or_exit('violin', sc, out, a.bin_dir,
                                   plots=not a.no_plots, collect=score.collect)
    sim = testbed.simulate('violin', sc, out, a.bin_dir)
    migrations = score.migration_rows(base)
    live_moves = sorted((m['vm'], m['from'], m['to']) for m in migrations)
    sim_moves = sorted((m['vm'], m['from'], m['to']) for m in sim['migrations'])
    final = {}
    vms = base.get('controller_vms')
    for v in vms if isinstance(vms, list) else []:
        final[v.get('name')] = v.get('host')
    dom_of = {h: d for d, hs in DOMAINS.items() for h in hs}
    others = [m for m in ENV['members'] if m != ENV['head']]
    every_hop, gone = score.reservations_ok(migrations, base.get('reservations_left'))
    s = {
        'experiment': 'violin',
        'domains': DOMAINS, 'environment': dict(ENV, name='tenant1'),
        'migrations': migrations,
        'migrations_done': sum(1 for m in migrations if m['state'] == 'done'),
        'live_moves': live_moves,
        'simulator_moves': sim_moves,
        'matches_simulator': bool(live_moves) and live_moves == sim_moves,
        'final_hosts': final,
        'members_moved_to_d1': all(dom_of.get(final.get(v)) == 'd1' for v in others),
        'head_stayed': final.get(ENV['head']) == 'th1',
        'head_moved': any(m['vm'] == ENV['head'] for m in migrations),
        'reservations_per_migration': {m['vm']: [m['reservation_hops_seen'],
                                                 m['reservation_path_hops']]
                                       for m in migrations},
        'reservations_every_hop': every_hop,
        'reservations_gone_after': gone,
        'reservations_left': base.get('reservations_left'),
        'simulator_migrations': sim['migrations'],
        'simulator_summary': sim.get('summary'),
        'simulator_error': sim.get('error'),
        'simulator_command': sim.get('command'),
        'run_s': round(time.time() - t_start, 1),
    }
    if not a.no_plots:
        s['plot'] = plot(out, tb, migrations, sim_moves)
    s['testbed_summary'] = base
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== violin')
    testbed.print_moves(migrations, sim, hops=True)
    print('  members moved to d1: %s; head stayed: %s; matches simulator: %s; reservations '
          'every hop %s, gone %s' % (s['members_moved_to_d1'], s['head_stayed'],
                                     s['matches_simulator'], every_hop, gone))
    print('results: %s (summary.json, violin.png)' % out)
    return 0


def plot(out, tb, migrations, sim_moves):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6))
    hosts = sorted(set(r['host'] for r in tb.rows['hosts']))
    for h in hosts:
        pts = [(r['t_s'], r['cpu_util']) for r in tb.rows['hosts']
               if r['host'] == h and r['cpu_util'] is not None]
        dom = [d for d, hs in DOMAINS.items() if h in hs]
        ax.plot([p[0] for p in pts], [p[1] for p in pts],
                label='%s (%s)' % (h, dom[0] if dom else '?'))
    ax.axhline(0.85, color='gray', linestyle=':', label='CPU threshold')
    for i, m in enumerate(migrations):
        a, b = m.get('started_t'), m.get('ended_t')
        if a is not None:
            ax.axvspan(a, b if b is not None else a + 0.5, color='gold', alpha=0.3)
            ax.text(a, 1.02 - 0.07 * i, '%s %s->%s' % (m['vm'], m['from'], m['to']),
                    fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel('time since the host daemons started (s)')
    ax.set_ylabel('host CPU utilisation')
    ax.set_title('VIOLIN live: tenant1 (head tv1) leaves d0; simulator: %s'
                 % (', '.join('%s->%s' % (v, t) for v, _, t in sim_moves) or 'no migration'),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small', loc='lower right')
    return testbed.save_figure(fig, out, 'violin.png')


if __name__ == '__main__':
    sys.exit(main())
