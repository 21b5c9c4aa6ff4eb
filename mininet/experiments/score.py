#!/usr/bin/env python3
"""S-CORE live: chatty VM pairs placed across the core are brought together
by the controller's token passing, measured against the simulator.

    /usr/bin/python3 mininet/experiments/score.py --out out/score

Data center: 1 core, 2 pods (1 aggregation switch, 1 ToR each), 2
hypervisors per ToR (th1, th2 in pod 1; th3, th4 in pod 2), 2 VMs per
hypervisor (tv1..tv8), links 100 Mbit/s. Real UDP flows at fixed rates
(iperf3): two chatty pairs across the core, tv1 <-> tv5 and tv4 <-> tv8
(10 Mbit/s one way, 2 back), and two light flows, tv2 -> tv6 and tv3 -> tv7
(1 Mbit/s, also across the core).

The policy `score` is set with PUT /api/v1/policy (round-robin token in
IPv4 order, first-fit, c_m = --cm) once every hostd has reported and the
traffic matrix is steady. A chatty pair's reduction (~3.7e7) is far above
c_m, a light flow's (~3e6) far below it: S-CORE moves one VM of each chatty
pair next to its peer (reserved migrations through the orchestrator) and
leaves the light flows where they are.

The communication cost is computed from what the controller measures: λ
from GET /api/v1/traffic-matrix (pairs of VM addresses, bytes/s), each VM's
host from GET /api/v1/vms, the levels of the tree (0 same host, 1 same ToR,
2 same pod, 3 across the core) and the controller's default S-CORE weights
(W(l) = c_1 + ... + c_l, c = e^0, e^1, e^3). It is averaged over a steady
window before the first migration and one after the last migration has
settled (the λ window plus two intervals after it ended). The same scenario
runs in the simulator (`shoal-controller simulate --policy score`), whose
cost_before / cost_after give its reduction. summary.json compares both.
"""

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import scenario as scn  # noqa: E402
import shoalnet  # noqa: E402
import testbed  # noqa: E402

API_MIGRATION_REASON = 'requested through the API'
# The controller's default S-CORE link weights c_1..c_4 (controller/src/plan/score.rs).
WEIGHTS = [1.0, math.e, math.e ** 3, math.e ** 5]


def level_weight(level):
    """W(l) = c_1 + ... + c_l (W(0) = 0)."""
    return sum(WEIGHTS[:level])


def series(points, interpolation='hold'):
    return {'interpolation': interpolation, 'points': points}


def build_scenario(a):
    # Every VM uses its whole allocation (hostd reports the host's memory as
    # the sum of its VMs' use; the simulator as the sum of allocations).
    idle = series([{'t': 0, 'cpu': 0.1, 'mem_mb': 32, 'dirty_mbps': 0.5}])
    end = a.duration_s
    flows = [('tv1', 'tv5', a.chatty_mbps), ('tv5', 'tv1', a.chatty_back_mbps),
             ('tv4', 'tv8', a.chatty_mbps), ('tv8', 'tv4', a.chatty_back_mbps),
             ('tv2', 'tv6', a.light_mbps), ('tv3', 'tv7', a.light_mbps)]
    return scn.load({
        'name': 'score',
        'description': 'chatty pairs across the core; policy score at t=%gs' % a.policy_at,
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 2, 'vms_per_host': 2, 'link_mbps': 100,
                     'host_link_mbps': 100, 'host_cores': 2, 'host_memory_mb': 1024},
        'controller': {'interval_s': a.interval_s,
                       'config': scn.merge({'execute': {'default_deadline_s': a.deadline_s}},
                                           json.loads(a.controller_config))},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': 32, 'series': idle},
        'actions': [{'at_s': a.policy_at, 'do': 'policy', 'name': 'score',
                     'options': policy_options(a)}],
        'traffic': [{'src': s, 'dst': d, 'proto': 'udp', 'mbps': r, 'start_s': a.traffic_at,
                     'stop_s': end} for s, d, r in flows],
    })


def policy_options(a):
    return {'score': {'cm': a.cm, 'token': 'round-robin', 'destination': 'first-fit'}}


class ApiSampler(threading.Thread):
    """Once a second: GET /api/v1/traffic-matrix and GET /api/v1/vms, kept
    as (t, [(src_ip, dst_ip, bytes_per_s)], {vm: (ip, host)})."""

    def __init__(self, tb, step=1.0):
        super().__init__(daemon=True)
        self.tb = tb
        self.step = step
        self.samples = []

    def run(self):
        tb = self.tb
        while not tb.stop_ev.is_set():
            t = round(tb.now(), 3)
            mx = shoalnet.api_get(tb.api, '/api/v1/traffic-matrix')
            vms = shoalnet.api_get(tb.api, '/api/v1/vms')
            if isinstance(mx, dict) and isinstance(vms, list):
                pairs = [(p.get('src_ip'), p.get('dst_ip'), float(p.get('bytes_per_s') or 0))
                         for p in mx.get('pairs', []) if p.get('src_ip') and p.get('dst_ip')]
                place = {}
                for v in vms:
                    ip = v.get('ip') or (v.get('inventory') or {}).get('ip')
                    place[v.get('name') or v.get('id')] = (ip, v.get('host'))
                self.samples.append((t, pairs, place))
            tb.stop_ev.wait(self.step)


def communication_cost(pairs, place, level):
    """C = Σ λ(u,v)·W(ℓ(u,v)) over VM pairs (pairs whose two addresses are
    VMs the controller knows; dom0 migration streams are not VM pairs)."""
    host_of_ip = {ip: h for ip, h in place.values() if ip and h}
    c = 0.0
    for s, d, bps in pairs:
        hs, hd = host_of_ip.get(s), host_of_ip.get(d)
        if hs is None or hd is None:
            continue
        c += bps * level_weight(level(hs, hd))
    return c


def cost_series(samples, level):
    return [(t, communication_cost(pairs, place, level)) for t, pairs, place in samples]


def window_mean(series_, lo, hi):
    v = [c for t, c in series_ if lo <= t <= hi]
    return (statistics.mean(v) if v else None), len(v)


def migration_rows(base):
    """The live loop's migrations (not engineers' API ones) as summary rows."""
    rows = []
    for m in base['migrations']:
        if m.get('label') == API_MIGRATION_REASON:
            continue
        rec = m.get('controller_record') or {}
        rows.append({
            'id': m['id'], 'vm': m['vm'], 'from': m['from'], 'to': m['to'],
            'reason': rec.get('reason'), 'state': m['state'],
            'requested_t': m.get('requested_t'),
            'started_t': m.get('started_t'), 'ended_t': m.get('ended_t'),
            'total_time_s': m.get('total_time_s'), 'deadline_s': m.get('deadline_s'),
            'reserve': m.get('reserve'),
            'path_bridges': m.get('path_bridges'),
            'reservation_hops_seen': m.get('reservation_hops_seen'),
            'reservation_path_hops': m.get('reservation_path_hops')})
    return rows


def reservations_ok(migrations, left):
    """Every migration reserved and seen reserved on every hop of its path,
    nothing left on any bridge afterwards."""
    every_hop = bool(migrations) and all(
        m['reserve'] and m['reservation_path_hops'] and
        m['reservation_hops_seen'] == m['reservation_path_hops'] for m in migrations)
    return every_hop, left == {}


def collect(tb):
    """While the testbed is still up: the controller's records."""
    return testbed.collect_api(tb, (('migrations', '/api/v1/migrations'),
                                    ('decisions', '/api/v1/decisions?limit=500'),
                                    ('policy', '/api/v1/policy'), ('vms', '/api/v1/vms')))


def plot_cost(out, name, title, costs, migrations, windows):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot([t for t, _ in costs], [c for _, c in costs], color='tab:blue',
            label='communication cost (measured λ)')
    for i, m in enumerate(migrations):
        a, b = m.get('started_t'), m.get('ended_t')
        if a is None:
            continue
        ax.axvspan(a, b if b is not None else a + 0.5, color='gold', alpha=0.3,
                   label='migrations' if i == 0 else None)
        ax.text(a, ax.get_ylim()[1] * (0.92 - 0.08 * i), ' %s %s->%s' % (m['vm'], m['from'],
                                                                        m['to']), fontsize=7)
    for (lo, hi), lab, col in zip(windows, ('before', 'after'), ('tab:green', 'tab:red')):
        if lo is not None and hi is not None and hi > lo:
            ax.axvspan(lo, hi, color=col, alpha=0.08, label='%s window' % lab)
    ax.set_xlabel('time since the host daemons started (s)')
    ax.set_ylabel('Σ λ·W(level)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small', loc='upper right')
    return testbed.save_figure(fig, out, name)


def steady_windows(sc, migrations, t_end, first_action_t):
    """(before, after): before = from when the λ window is full of steady
    traffic to the first migration's request (or the policy change); after
    = from the last migration's end plus the λ window and two intervals to
    the end of the run."""
    ctl = sc['controller']
    settle = (ctl['window_intervals'] + 2) * ctl['interval_s']
    start = min(f['start_s'] for f in sc['traffic']) + settle
    firsts = [m.get('requested_t') or m.get('started_t') for m in migrations]
    firsts = [x for x in firsts if x is not None]
    before_end = min(firsts + [first_action_t + ctl['interval_s']])
    ends = [m.get('ended_t') for m in migrations if m.get('ended_t') is not None]
    after_start = (max(ends) + settle) if ends else None
    return (start, before_end), (after_start, t_end)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    testbed.experiment_args(ap)
    ap.add_argument('--traffic-at', type=float, default=3.0)
    ap.add_argument('--policy-at', type=float, default=20.0,
                    help='PUT /api/v1/policy at this time (before: monitoring only)')
    ap.add_argument('--duration-s', type=float, default=72.0)
    ap.add_argument('--deadline-s', type=float, default=12.0,
                    help="deadline of the live loop's migrations")
    ap.add_argument('--cm', type=float, default=1e7, help='S-CORE c_m (cost units)')
    ap.add_argument('--chatty-mbps', type=float, default=10.0)
    ap.add_argument('--chatty-back-mbps', type=float, default=2.0)
    ap.add_argument('--light-mbps', type=float, default=1.0)
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the experiment\'s')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    d = testbed.dc.DataCenter(sc['topology'], 'score')
    samplers = []

    def start_sampler(tb):
        s = ApiSampler(tb)
        s.start()
        samplers.append(s)

    t_start = time.time()
    tb, base = testbed.run_or_exit('score', sc, out, a.bin_dir,
                                   plots=not a.no_plots, collect=collect,
                                   extra=[(0.0, start_sampler)])
    samples = samplers[0].samples if samplers else []
    sim = testbed.simulate('score', sc, out, a.bin_dir, policy_options(a))
    migrations = migration_rows(base)
    costs = cost_series(samples, d.level)
    t_end = samples[-1][0] if samples else sc['duration_s']
    before_w, after_w = steady_windows(sc, migrations, t_end, a.policy_at)
    c_before, n_before = window_mean(costs, *before_w)
    c_after, n_after = (window_mean(costs, *after_w) if after_w[0] is not None
                        else (c_before, 0))
    live_red = (1 - c_after / c_before) if c_before and c_after is not None else None
    ss = sim.get('summary') or {}
    sim_red = (1 - ss['cost_after'] / ss['cost_before']) if ss.get('cost_before') else None
    live_moves = sorted((m['vm'], m['from'], m['to']) for m in migrations)
    sim_moves = sorted((m['vm'], m['from'], m['to']) for m in sim['migrations'])
    every_hop, gone = reservations_ok(migrations, base.get('reservations_left'))
    with open(os.path.join(out, 'cost.csv'), 'w') as f:
        f.write('t_s,cost\n')
        for t, c in costs:
            f.write('%s,%.1f\n' % (t, c))
    s = {
        'experiment': 'score',
        'migrations': migrations,
        'migrations_done': sum(1 for m in migrations if m['state'] == 'done'),
        'live_moves': live_moves,
        'simulator_moves': sim_moves,
        'matches_simulator': bool(live_moves) and live_moves == sim_moves,
        'live_cost_before': c_before, 'live_cost_after': c_after,
        'live_reduction': live_red,
        'live_window_before_s': before_w, 'live_window_after_s': after_w,
        'live_window_samples': [n_before, n_after],
        'simulator_cost_before': ss.get('cost_before'),
        'simulator_cost_after': ss.get('cost_after'),
        'simulator_reduction': sim_red,
        'within_15pct': (live_red is not None and sim_red is not None and
                         abs(live_red - sim_red) <= 0.15 * sim_red),
        'weights': WEIGHTS, 'cm': a.cm,
        'reservations_every_hop': every_hop,
        'reservations_gone_after': gone,
        'reservations_left': base.get('reservations_left'),
        'simulator_migrations': sim['migrations'],
        'simulator_summary': ss,
        'simulator_error': sim.get('error'),
        'simulator_command': sim.get('command'),
        'run_s': round(time.time() - t_start, 1),
    }
    if not a.no_plots:
        s['plot'] = plot_cost(
            out, 'score.png',
            'S-CORE live: cost %.3g -> %.3g (%.0f%% less); simulator %.0f%% less'
            % (c_before or 0, c_after or 0, 100 * (live_red or 0), 100 * (sim_red or 0)),
            costs, migrations, [before_w, after_w])
    s['testbed_summary'] = base
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== score')
    testbed.print_moves(migrations, sim, hops=True)
    print('  live cost %s -> %s (reduction %s); simulator %s -> %s (reduction %s); '
          'within 15%%: %s; matches simulator: %s; reservations every hop %s, gone %s'
          % (_g(c_before), _g(c_after), _g(live_red), _g(ss.get('cost_before')),
             _g(ss.get('cost_after')), _g(sim_red), s['within_15pct'], s['matches_simulator'],
             every_hop, gone))
    print('results: %s (summary.json, score.png, cost.csv)' % out)
    return 0


def _g(x):
    return '%.4g' % x if isinstance(x, (int, float)) else str(x)


if __name__ == '__main__':
    sys.exit(main())
