#!/usr/bin/env python3
"""Shoal live: the project's own policy through the closed loop, hotspot ->
decision (expected benefit and cost) -> reserved migration -> measured
effect, measured against what the decision expected and against the
simulator.

    /usr/bin/python3 mininet/experiments/shoal.py --out out/shoal

Data center: the S-CORE experiment's (score.py): 1 core, 2 pods (1
aggregation switch, 1 ToR each), 2 hypervisors per ToR (th1, th2 in pod 1;
th3, th4 in pod 2), 2 VMs per hypervisor (tv1..tv8, --memory-mb each, all of
it in use, dirty rate 0.5 MiB/s), 2 cores per hypervisor, links 100 Mbit/s.
One chatty pair across the core: tv1 (th1) <-> tv5 (th3), real UDP at
--chatty-mbps one way and --chatty-back-mbps back (iperf3).

The policy `shoal` is set with PUT /api/v1/policy at --policy-at, before
anything is hot, with its migrations amortised over --horizon-s (the default
is an hour): the chatty pair alone then does not pay for moving a VM across
the core (its communication gain is below (1 + margin) x the migration
cost), and nothing moves. From --hot-at the hostd series put tv1 and tv2 at
--hot-cpu of their vCPU: th1 runs above the 0.85 CPU threshold and the
detector raises a hotspot (k of n hot reports and a forecast above the
threshold). Moving either VM resolves it (same relief); shoal takes the
move with the best net benefit (communication gain minus amortised
migration cost): tv1 next to its peer, th1 -> th3. Moving tv2 gains nothing
and costs its migration; moving tv1 under the other ToR of pod 2 (th4) gains
λ·c_1 less.

The decision (GET /api/v1/decisions) carries what shoal expects:
`comm_gain` (the fall of Σ λ·W(level)), `migration_cost`, `net_benefit`,
`relief`, `migration_bytes` and `migration_time_s` (VMPatrol at the planning
bandwidth, `constraints.migration_nic_share` of the NIC). The live loop
gives its migrations the configured default deadline and the orchestrator
reserves the least bandwidth that meets it; the experiment sets that
deadline (unless --deadline-s) to the decision's own predicted time /
(1 - execute.deadline_margin), so the migration runs at the bandwidth it
was costed at. Measured: the migration record (total time, bytes sent,
reserved bandwidth), th1's CPU before/after (GET /api/v1/hosts), whether
the hotspot is gone (the last reports and the controller's hotspot report),
and the communication cost before/after from the measured traffic matrix,
computed as in score.py. The same scenario runs in the simulator
(`shoal-controller simulate --policy shoal`, same options). summary.json
has the decision(s) with their expected numbers, the measured ones, the
ratios measured / expected, the live moves against the simulator's, and
the reservations (every hop of the path while it ran, none left after).
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import hotspot  # noqa: E402
import scenario as scn  # noqa: E402
import score  # noqa: E402
import testbed  # noqa: E402

HOT_HOST = 'th1'
CPU_THRESHOLD = 0.85
LINK_MBPS = 100
# Controller defaults the auto deadline is computed from
# (constraints.migration_nic_share in controller/src/plan/constraints.rs,
# execute.deadline_margin in controller/src/config.rs).
MIGRATION_NIC_SHARE = 0.5
DEADLINE_MARGIN = 0.1
DIRTY_MBPS = 0.5


def build_scenario(a):
    def s(cpu_hot):
        pts = [{'t': 0, 'cpu': 0.1, 'mem_mb': a.memory_mb, 'dirty_mbps': DIRTY_MBPS}]
        if cpu_hot is not None:
            pts.append({'t': a.hot_at, 'cpu': cpu_hot, 'mem_mb': a.memory_mb,
                        'dirty_mbps': DIRTY_MBPS})
        return score.series(pts)
    end = a.duration_s
    flows = [('tv1', 'tv5', a.chatty_mbps), ('tv5', 'tv1', a.chatty_back_mbps)]
    return scn.load({
        'name': 'shoal',
        'description': 'CPU hotspot on th1 from t=%gs, tv1 <-> tv5 chatty across the core; '
                       'policy shoal at t=%gs' % (a.hot_at, a.policy_at),
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 2, 'vms_per_host': 2, 'link_mbps': LINK_MBPS,
                     'host_link_mbps': LINK_MBPS, 'host_cores': 2, 'host_memory_mb': 1024},
        'controller': {'interval_s': a.interval_s,
                       'config': scn.merge({'execute': {'default_deadline_s': a.deadline_s}},
                                           json.loads(a.controller_config))},
        'hostd': {'interval_s': a.interval_s},
        'vm_defaults': {'memory_mb': a.memory_mb, 'series': s(None)},
        'vms': {'tv1': {'series': s(a.hot_cpu)}, 'tv2': {'series': s(a.hot_cpu)}},
        'actions': [{'at_s': a.policy_at, 'do': 'policy', 'name': 'shoal',
                     'options': policy_options(a)}],
        'traffic': [{'src': x, 'dst': y, 'proto': 'udp', 'mbps': r, 'start_s': a.traffic_at,
                     'stop_s': end} for x, y, r in flows],
    })


def policy_options(a):
    return {'shoal': {'horizon_s': a.horizon_s}}


def auto_deadline_s(a):
    """The deadline at which the orchestrator's least bandwidth is the
    planning bandwidth shoal costs a migration at: the VMPatrol time there
    / (1 - deadline_margin), rounded up to 0.1 s."""
    margin = json.loads(a.controller_config).get('execute', {}).get('deadline_margin',
                                                                     DEADLINE_MARGIN)
    bw = MIGRATION_NIC_SHARE * LINK_MBPS * 1e6 / 8 / 2 ** 20
    p = scn.vmpatrol_predict(a.memory_mb, DIRTY_MBPS, bw)
    return math.ceil(10 * p['time_s'] / (1 - margin)) / 10.0


def decision_rows(base):
    """The live loop's migrate decisions of `shoal` with what they expect."""
    rows = []
    ds = base.get('controller_decisions')
    for d in ds if isinstance(ds, list) else []:
        if d.get('action') != 'migrate' or d.get('policy') != 'shoal':
            continue
        det = d.get('details') or {}
        rows.append({'round': d.get('round'), 'at_unix_ms': d.get('at_unix_ms'),
                     'vm': d.get('vm'), 'from': d.get('from'), 'to': d.get('to'),
                     'reason': d.get('reason'), 'score': d.get('score'),
                     'outcome': d.get('outcome'), 'metrics': det.get('metrics') or {},
                     'migration': det.get('migration'),
                     'alternatives': det.get('alternatives') or []})
    return rows


def simulator_decisions(sim):
    """The simulator's migrate decisions with their metrics (its JSON lines)."""
    out = []
    if not sim.get('output') or not os.path.exists(sim['output']):
        return out
    with open(sim['output']) as f:
        for line in f:
            d = json.loads(line) if line.strip() else {}
            if d.get('action') == 'migrate':
                det = d.get('details') or {}
                out.append({'round': d.get('round'), 'vm': d.get('vm'), 'from': d.get('from'),
                            'to': d.get('to'), 'reason': d.get('reason'),
                            'metrics': det.get('metrics') or {},
                            'migration': det.get('migration')})
    return out


def host_cpu(tb, host):
    return [(r['t_s'], r['cpu_util']) for r in tb.rows['hosts']
            if r['host'] == host and r['cpu_util'] is not None]


def ratio(x, y):
    return x / y if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else None


def measured_vs_expected(tb, dec, mig, c_before, c_after):
    """One decision's expected numbers next to its migration's measured
    ones, and their ratios."""
    m = dec['metrics']
    rec = mig.get('controller_record') or {}
    pred = rec.get('predicted') or {}
    t_meas = mig.get('total_time_s')
    b_meas = mig.get('transferred_bytes')
    fell = (c_before - c_after) if c_before is not None and c_after is not None else None
    plan_bw = (dec.get('migration') or {}).get('bandwidth_mbps')
    return {
        'vm': dec['vm'], 'from': dec['from'], 'to': dec['to'], 'round': dec['round'],
        'decision_t': tb._unix_to_t(dec.get('at_unix_ms')),
        'migration_id': mig.get('id'), 'state': mig.get('state'),
        'expected': {k: m.get(k) for k in ('comm_gain', 'migration_cost', 'net_benefit',
                                           'relief', 'resolved', 'hot_resources',
                                           'migration_bytes', 'migration_time_s')},
        'expected_bandwidth_mib_s': plan_bw,
        'orchestrator_predicted_time_s': pred.get('time_s'),
        'orchestrator_predicted_bytes': pred.get('traffic_bytes'),
        'reserved_bandwidth_mib_s': (rec.get('bandwidth_bytes_per_s') or 0) / 2 ** 20 or None,
        'deadline_s': mig.get('deadline_s'),
        'measured': {'migration_time_s': t_meas, 'migration_bytes': b_meas,
                     'downtime_ms': mig.get('downtime_ms'), 'comm_cost_fall': fell},
        'ratio': {'migration_time': ratio(t_meas, m.get('migration_time_s')),
                  'migration_bytes': ratio(b_meas, m.get('migration_bytes')),
                  'comm_cost_fall_vs_gain': ratio(fell, m.get('comm_gain')),
                  'migration_time_vs_orchestrator': ratio(t_meas, pred.get('time_s'))},
    }


def hot_now(base, host):
    """Whether the controller's last hotspot report names `host` (None when
    there is no report)."""
    h = base.get('controller_hotspots')
    rep = h.get('report') if isinstance(h, dict) else None
    if not isinstance(rep, dict):
        return None
    return host in (rep.get('hot') or {})


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    testbed.experiment_args(ap)
    ap.add_argument('--traffic-at', type=float, default=3.0)
    ap.add_argument('--policy-at', type=float, default=6.0,
                    help='PUT /api/v1/policy at this time (before: monitoring only)')
    ap.add_argument('--hot-at', type=float, default=20.0, help='tv1, tv2 turn busy at this time')
    ap.add_argument('--duration-s', type=float, default=72.0)
    ap.add_argument('--deadline-s', type=float,
                    help="deadline of the live loop's migrations (default: the decision's "
                    'predicted time / (1 - deadline margin))')
    ap.add_argument('--memory-mb', type=int, default=64, help='memory of every VM (MiB)')
    ap.add_argument('--hot-cpu', type=float, default=0.92,
                    help='CPU of tv1 and tv2 from --hot-at (share of their vCPU)')
    ap.add_argument('--chatty-mbps', type=float, default=10.0, help='tv1 -> tv5')
    ap.add_argument('--chatty-back-mbps', type=float, default=1.5, help='tv5 -> tv1')
    ap.add_argument('--horizon-s', type=float, default=60.0,
                    help='shoal.horizon_s: seconds a migration is amortised over')
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the experiment\'s')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    if a.deadline_s is None:
        a.deadline_s = auto_deadline_s(a)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sc = build_scenario(a)
    d = testbed.dc.DataCenter(sc['topology'], 'shoal')
    samplers = []

    def start_sampler(tb):
        s = score.ApiSampler(tb)
        s.start()
        samplers.append(s)

    t_start = time.time()
    tb, base = testbed.run_or_exit('shoal', sc, out, a.bin_dir,
                                   plots=not a.no_plots, collect=hotspot.collect,
                                   extra=[(0.0, start_sampler)])
    samples = samplers[0].samples if samplers else []
    sim = testbed.simulate('shoal', sc, out, a.bin_dir, policy_options(a))
    migrations = score.migration_rows(base)
    by_id = {m['id']: m for m in base['migrations']}
    decisions = decision_rows(base)
    costs = score.cost_series(samples, d.level)
    t_end = samples[-1][0] if samples else sc['duration_s']
    # Before: from when the λ window holds steady traffic to the first
    # migration's request (no policy change bounds it: the policy is on from
    # the start and nothing pays before the hotspot).
    before_w, after_w = score.steady_windows(sc, migrations, t_end, sc['duration_s'])
    c_before, n_before = score.window_mean(costs, *before_w)
    c_after, n_after = (score.window_mean(costs, *after_w) if after_w[0] is not None
                        else (c_before, 0))
    cpu = host_cpu(tb, HOT_HOST)
    cpu_before, n_cpu_before = score.window_mean(cpu, a.hot_at + a.interval_s, before_w[1])
    cpu_after, n_cpu_after = (score.window_mean(cpu, *after_w) if after_w[0] is not None
                              else (None, 0))
    last = [u for _, u in cpu[-3:]]
    still_hot = hot_now(base, HOT_HOST)
    cleared = bool(migrations) and bool(last) and all(u < CPU_THRESHOLD for u in last) and \
        cpu_after is not None and cpu_after < CPU_THRESHOLD and still_hot is False
    per_decision = []
    for dec in decisions:
        mid = hotspot.migration_of(dec.get('outcome'))
        if mid in by_id:
            per_decision.append(measured_vs_expected(tb, dec, by_id[mid], c_before, c_after))
    live_moves = sorted((m['vm'], m['from'], m['to']) for m in migrations)
    sim_moves = sorted((m['vm'], m['from'], m['to']) for m in sim['migrations'])
    sim_decisions = simulator_decisions(sim)
    every_hop, gone = score.reservations_ok(migrations, base.get('reservations_left'))
    ss = sim.get('summary') or {}
    first = per_decision[0] if per_decision else {}
    s = {
        'experiment': 'shoal', 'hot_host': HOT_HOST, 'hot_at_s': a.hot_at,
        'policy_at_s': a.policy_at, 'options': policy_options(a),
        'deadline_s': a.deadline_s, 'memory_mb': a.memory_mb,
        'decisions': decisions,
        'migrations': migrations,
        'migrations_done': sum(1 for m in migrations if m['state'] == 'done'),
        'measured_vs_expected': per_decision,
        'ratios': first.get('ratio'),
        'live_moves': live_moves,
        'simulator_moves': sim_moves,
        'matches_simulator': bool(live_moves) and live_moves == sim_moves,
        'simulator_decisions': sim_decisions,
        'live_cost_before': c_before, 'live_cost_after': c_after,
        'live_cost_fall': (c_before - c_after) if c_before is not None and
        c_after is not None else None,
        'live_window_before_s': before_w, 'live_window_after_s': after_w,
        'live_window_samples': [n_before, n_after],
        'th1_cpu_before': cpu_before, 'th1_cpu_after': cpu_after,
        'th1_cpu_samples': [n_cpu_before, n_cpu_after], 'th1_cpu_last': last,
        'th1_hot_in_last_report': still_hot,
        'hotspot_history': (base.get('controller_hotspots') or {}).get('history')
        if isinstance(base.get('controller_hotspots'), dict) else None,
        'hotspot_cleared': cleared,
        'simulator_cost_before': ss.get('cost_before'),
        'simulator_cost_after': ss.get('cost_after'),
        'weights': score.WEIGHTS,
        'reservations_every_hop': every_hop,
        'reservations_gone_after': gone,
        'reservations_left': base.get('reservations_left'),
        'simulator_summary': ss,
        'simulator_error': sim.get('error'),
        'simulator_command': sim.get('command'),
        'run_s': round(time.time() - t_start, 1),
    }
    with open(os.path.join(out, 'cost.csv'), 'w') as f:
        f.write('t_s,cost\n')
        for t, c in costs:
            f.write('%s,%.1f\n' % (t, c))
    if not a.no_plots:
        s['plot'] = plot(out, tb, costs, migrations, [before_w, after_w], first)
    s['testbed_summary'] = base
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== shoal')
    testbed.print_moves(migrations, sim, hops=True)
    for p in per_decision:
        e, m, r = p['expected'], p['measured'], p['ratio']
        print('  %s %s -> %s: comm gain %s, migration cost %s, net %s; expected %s B in %s s; '
              'measured %s B in %s s, cost fell by %s (ratios: time %s, bytes %s, '
              'comm %s)' % (p['vm'], p['from'], p['to'], score._g(e['comm_gain']),
                            score._g(e['migration_cost']), score._g(e['net_benefit']),
                            score._g(e['migration_bytes']), score._g(e['migration_time_s']),
                            score._g(m['migration_bytes']), score._g(m['migration_time_s']),
                            score._g(m['comm_cost_fall']), score._g(r['migration_time']),
                            score._g(r['migration_bytes']), score._g(r['comm_cost_fall_vs_gain'])))
    print('  th1 CPU %s -> %s, hotspot cleared: %s; cost %s -> %s; matches simulator: %s; '
          'reservations every hop %s, gone %s'
          % (score._g(cpu_before), score._g(cpu_after), cleared, score._g(c_before), score._g(c_after),
             s['matches_simulator'], every_hop, gone))
    print('results: %s (summary.json, shoal.png, cost.csv)' % out)
    return 0


def plot(out, tb, costs, migrations, windows, first):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 5.4), sharex=True)
    for h in (HOT_HOST, 'th3'):
        pts = host_cpu(tb, h)
        ax.plot([t for t, _ in pts], [u for _, u in pts], label=h)
    ax.axhline(CPU_THRESHOLD, color='gray', linestyle=':', label='CPU threshold')
    ax.set_ylim(0, 1.1)
    ax.set_ylabel('host CPU utilisation')
    bx.plot([t for t, _ in costs], [c for _, c in costs], color='tab:blue',
            label='communication cost (measured λ)')
    for (lo, hi), lab, col in zip(windows, ('before', 'after'), ('tab:green', 'tab:red')):
        if lo is not None and hi is not None and hi > lo:
            bx.axvspan(lo, hi, color=col, alpha=0.08, label='%s window' % lab)
    for i, m in enumerate(migrations):
        a, b = m.get('started_t'), m.get('ended_t')
        if a is None:
            continue
        for x in (ax, bx):
            x.axvspan(a, b if b is not None else a + 0.5, color='gold', alpha=0.3,
                      label='migration' if i == 0 and x is ax else None)
        ax.text(a, 1.02 - 0.07 * i, '%s %s->%s' % (m['vm'], m['from'], m['to']), fontsize=7)
    if first.get('decision_t') is not None:
        for x in (ax, bx):
            x.axvline(first['decision_t'], color='tab:red', linestyle='--', linewidth=1,
                      label='decision (round %s)' % first.get('round') if x is ax else None)
    e = first.get('expected') or {}
    ms = first.get('measured') or {}
    ax.set_title('shoal live: expected comm gain %s, cost fell by %s; migration %s s '
                 '(expected %s s)' % (score._g(e.get('comm_gain')), score._g(ms.get('comm_cost_fall')),
                                      score._g(ms.get('migration_time_s')),
                                      score._g(e.get('migration_time_s'))), fontsize=9)
    bx.set_xlabel('time since the host daemons started (s)')
    bx.set_ylabel('Σ λ·W(level)')
    for x in (ax, bx):
        x.grid(alpha=0.3)
        x.legend(fontsize='x-small', loc='upper right')
    return testbed.save_figure(fig, out, 'shoal.png')


if __name__ == '__main__':
    sys.exit(main())
