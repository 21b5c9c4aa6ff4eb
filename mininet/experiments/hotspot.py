#!/usr/bin/env python3
"""A hotspot resolved by the controller's live loop, checked against the
simulator on the same scenario.

    /usr/bin/python3 mininet/experiments/hotspot.py --policy sandpiper --out out/hotspot

Data center: 1 core, 2 pods (1 aggregation switch, 1 ToR each), 2
hypervisors per ToR (th1, th2 in pod 1; th3, th4 in pod 2), 3 VMs per
hypervisor, 2 cores and 1 GiB each, links 100 Mbit/s. Every VM idles at 10 %
CPU; from t = --hot-at s the three VMs of th1 climb (hostd scenario series)
(tv1 to 30 %, tv2 and tv3 to 80 %: two high-demand VMs for VIOLIN) so that
th1 runs at 0.95 of its cores, above the 0.85 threshold, for good.
Real UDP traffic runs between VM groups: tv3 <-> tv8 across the core (the
heaviest), tv1 -> tv4 inside the rack, tv2 -> tv5.

The controller runs the live MAPE-K loop; the policy NAME is set with PUT
/api/v1/policy at --policy-at s, once every hostd has reported (hotspot after
k = 3 of n = 5 hot reports and an AR(1) forecast above the threshold) and
executes its decisions through the orchestrator (reserved migrations with
the configured default deadline). The same scenario is written as a
simulator scenario (docs/scenario.md: same tree, same hosts, the VMs' CPU
series sampled once per interval, the flows as λ series) and run with
`shoal-controller simulate --policy NAME`. summary.json lists the live
migrations (vm, from, to, reason, cost before/after from the controller's
migration records), the simulator's, and whether they match.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import scenario as scn  # noqa: E402
import testbed  # noqa: E402

API_MIGRATION_REASON = 'requested through the API'



MIGRATION_ID = re.compile(r'\b(mig-\d+-\d+)\b')


def migration_of(outcome):
    """The migration a decision queued, from its outcome (`queued as
    mig-…` while it runs, `done (mig-…)` or `failed (mig-…)` once it ended,
    `approved by NAME: …` after an operator's approval), else None."""
    m = MIGRATION_ID.search(str(outcome or ''))
    return m.group(1) if m else None

def series(points, interpolation='hold'):
    return {'interpolation': interpolation, 'points': points}


def build_scenario(a):
    idle = series([{'t': 0, 'cpu': 0.1, 'mem_mb': 32, 'dirty_mbps': 0.5}])

    def hot(cpu_hot, mem, dirty):
        return series([{'t': 0, 'cpu': 0.1, 'mem_mb': mem, 'dirty_mbps': dirty},
                       {'t': a.hot_at, 'cpu': cpu_hot, 'mem_mb': mem, 'dirty_mbps': dirty}])
    end = a.duration_s
    return scn.load({
        'name': 'hotspot-%s' % a.policy,
        'description': 'CPU hotspot on th1 from t=%gs; policy %s' % (a.hot_at, a.policy),
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 2, 'vms_per_host': 3, 'link_mbps': 100,
                     'host_link_mbps': 100, 'host_cores': 2, 'host_memory_mb': 1024},
        'controller': {'interval_s': a.interval_s,
                       'config': scn.merge({'execute': {'default_deadline_s': a.deadline_s}},
                                           json.loads(a.controller_config))},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': 64, 'series': idle},
        'vms': {
            'tv1': {'memory_mb': 48, 'series': hot(0.3, 40, 0.5)},
            'tv2': {'memory_mb': 64, 'series': hot(0.8, 48, 1.0)},
            'tv3': {'memory_mb': 80, 'series': hot(0.8, 64, 1.0)},
        },
        # The policy is switched on once every host daemon has reported a
        # few times (the live loop plans from reports: dirty rates, CPU).
        'actions': [{'at_s': a.policy_at, 'do': 'policy', 'name': a.policy}],
        'traffic': [
            {'src': 'tv3', 'dst': 'tv8', 'proto': 'udp', 'mbps': 24, 'start_s': 3,
             'stop_s': end},
            {'src': 'tv8', 'dst': 'tv3', 'proto': 'udp', 'mbps': 6, 'start_s': 3,
             'stop_s': end},
            {'src': 'tv1', 'dst': 'tv4', 'proto': 'udp', 'mbps': 8, 'start_s': 3,
             'stop_s': end},
            {'src': 'tv2', 'dst': 'tv5', 'proto': 'udp', 'mbps': 3, 'start_s': 3,
             'stop_s': end},
        ],
    })


def collect(tb):
    """While the testbed is still up: the controller's records."""
    return testbed.collect_api(tb, (('migrations', '/api/v1/migrations'),
                                    ('decisions', '/api/v1/decisions?limit=500'),
                                    ('hotspots', '/api/v1/hotspots'),
                                    ('policy', '/api/v1/policy')))


def plot(out, tb, live, sim):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    hosts = sorted(set(r['host'] for r in tb.rows['hosts']))
    for i, h in enumerate(hosts):
        pts = [(r['t_s'], r['cpu_util']) for r in tb.rows['hosts']
               if r['host'] == h and r['cpu_util'] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=h)
    ax.axhline(0.85, color='gray', linestyle=':', label='CPU threshold')
    for m in live:
        a, b = m.get('started_t'), m.get('ended_t')
        if a is not None:
            ax.axvspan(a, b if b is not None else a + 0.5, color='gold', alpha=0.3)
            ax.text(a, 1.02, '%s %s->%s' % (m['vm'], m['from'], m['to']), fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel('time since the host daemons started (s)')
    ax.set_ylabel('host CPU utilisation')
    ax.set_title('hotspot on th1 resolved by the live loop (%s); simulator: %s'
                 % (tb.sc['actions'][0]['name'],
                    ', '.join('%s->%s' % (m['vm'], m['to']) for m in sim) or 'no migration'),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small', loc='lower right')
    fig.tight_layout()
    path = os.path.join(out, 'hotspot.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--policy', required=True,
                    choices=('sandpiper', 'idc', 'score', 'sova', 'violin'))
    testbed.experiment_args(ap)
    ap.add_argument('--hot-at', type=float, default=10.0, help='th1 turns hot at this time')
    ap.add_argument('--policy-at', type=float, default=6.0,
                    help='PUT /api/v1/policy at this time (before: monitoring only)')
    ap.add_argument('--duration-s', type=float, default=75.0)
    ap.add_argument('--deadline-s', type=float, default=30.0,
                    help="deadline of the live loop's migrations")
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the experiment\'s')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    tb, base = testbed.run_or_exit('hotspot', sc, out, a.bin_dir,
                                   plots=not a.no_plots, collect=collect)
    sim = testbed.simulate(a.policy, sc, out, a.bin_dir)
    live = [m for m in base['migrations'] if m.get('label') != API_MIGRATION_REASON]
    migrations = []
    for m in live:
        rec = m.get('controller_record') or {}
        migrations.append({
            'id': m['id'], 'vm': m['vm'], 'from': m['from'], 'to': m['to'],
            'reason': rec.get('reason'), 'state': m['state'],
            'started_t': m.get('started_t'), 'ended_t': m.get('ended_t'),
            'total_time_s': m.get('total_time_s'), 'deadline_s': m.get('deadline_s'),
            'cost_before': rec.get('cost_before'), 'cost_after': rec.get('cost_after'),
            'reservation_hops_seen': m.get('reservation_hops_seen'),
            'reservation_path_hops': m.get('reservation_path_hops')})
    done = [m for m in migrations if m['state'] == 'done']
    live_moves = [(m['vm'], m['from'], m['to']) for m in migrations]
    sim_moves = [(m['vm'], m['from'], m['to']) for m in sim.get('migrations', [])]
    decisions = base.get('controller_decisions')
    # The live loop's first round with migrate decisions vs the simulator's.
    live_rounds = {}
    for d in decisions if isinstance(decisions, list) else []:
        if d.get('action') == 'migrate' and migration_of(d.get('outcome')):
            live_rounds.setdefault(d.get('round'), set()).add((d.get('vm'), d.get('from'),
                                                               d.get('to')))
    sim_rounds = {}
    for m in sim.get('migrations', []):
        sim_rounds.setdefault(m.get('round'), set()).add((m['vm'], m['from'], m['to']))
    first_live = live_rounds[min(live_rounds)] if live_rounds else set()
    first_sim = sim_rounds[min(sim_rounds)] if sim_rounds else set()
    s = {
        'experiment': 'hotspot', 'policy': a.policy, 'hot_host': 'th1', 'hot_at_s': a.hot_at,
        'migrations': migrations,
        'migrations_done': len(done),
        'cost_before': migrations[0]['cost_before'] if migrations else None,
        'cost_after': done[-1]['cost_after'] if done else None,
        'hotspot_resolved': None,
        'simulator_migrations': sim.get('migrations'),
        'simulator_summary': sim.get('summary'),
        'simulator_error': sim.get('error'),
        'simulator_command': sim.get('command'),
        'live_moves': live_moves,
        'simulator_moves': sim_moves,
        'matches_simulator': bool(live_moves) and live_moves == sim_moves,
        'first_round_matches_simulator': bool(first_live) and first_live == first_sim,
        'first_round_live': sorted(first_live),
        'first_round_simulator': sorted(first_sim),
        'decisions': len(decisions) if isinstance(decisions, list) else decisions,
        'details': os.path.join(out, 'controller-decisions.json'),
        'reservations_left': base.get('reservations_left'),
    }
    # Resolved: th1 below the threshold in the last reports.
    last = [r['cpu_util'] for r in tb.rows['hosts'] if r['host'] == 'th1' and
            r['cpu_util'] is not None][-3:]
    if last:
        s['th1_cpu_last'] = last
        s['hotspot_resolved'] = all(x < 0.85 for x in last)
    if not a.no_plots:
        s['plot'] = plot(out, tb, live, sim.get('migrations', []))
    s['testbed_summary'] = base
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== hotspot (%s)' % a.policy)
    testbed.print_moves(migrations, sim)
    print('  cost before %s, after %s; hotspot resolved: %s; matches simulator: %s '
          '(first decision round: %s)' % (s['cost_before'], s['cost_after'],
                                          s['hotspot_resolved'], s['matches_simulator'],
                                          s['first_round_matches_simulator']))
    print('results: %s (summary.json, hotspot.png)' % out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
