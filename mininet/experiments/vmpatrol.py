#!/usr/bin/env python3
"""VMPatrol on the testbed: a VM migrates across the fabric while a
rate-limited iperf3 TCP flow and a ping share its bottleneck, once with the
migration's bandwidth reserved on its path and once without.

    /usr/bin/python3 mininet/experiments/vmpatrol.py --out out/vmpatrol

Data center: 1 core, 2 pods (1 aggregation switch, 1 ToR each), one
hypervisor per ToR, all links 100 Mbit/s. tv1 (on th1, pod 1) migrates to th2
(pod 2): the stream leaves dom0 td1 and crosses th1-tt1-ta1-tc1-ta2-tt2-th2.
tv2 (th1) sends a TCP flow paced at --competitor-mbps to tv3 (th2) and pings
tv4 (th2): both share every link of the migration's path, the first one
(th1's uplink) being where queues build.

Run "with": the controller computes the bandwidth L the deadline needs from
the VM's memory and its largest dirty rate, reserves it on every hop and
caps the migration at L. Run "without": the migration is not reserved and
hostd sends at the NIC's speed. summary.json holds the competitor's
throughput during the migration divided by before it (both runs), ping RTT
mean/stdev before/with/without, the migration time against its deadline and
the model's prediction, and the reservation seen on the switches
(ovs-ofctl dump-meters / dump-flows) during and after the migration.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import scenario as scn  # noqa: E402
import testbed  # noqa: E402


def build_scenario(a, reserve):
    migrate_at = a.warmup_s + a.before_s
    end = migrate_at + a.deadline_s + a.after_s
    return scn.load({
        'name': 'vmpatrol-%s' % ('with' if reserve else 'without'),
        'description': 'VMPatrol: migration of tv1 th1->th2 across the core %s reservation, '
                       'TCP competitor tv2->tv3 at %g Mbit/s, ping tv2->tv4'
                       % ('with' if reserve else 'without', a.competitor_mbps),
        'duration_s': end,
        'topology': {'cores': 1, 'aggs_per_pod': 1, 'pods': 2, 'tors_per_pod': 1,
                     'hosts_per_tor': 1, 'vms_per_host': 2, 'link_mbps': a.link_mbps,
                     'host_link_mbps': a.link_mbps},
        'controller': {'interval_s': 2, 'config': json.loads(a.controller_config)},
        'hostd': {'interval_s': 2},
        'vm_defaults': {'memory_mb': 32, 'series': {
            'interpolation': 'hold', 'points': [{'t': 0, 'cpu': 0.1, 'mem_mb': 16,
                                                 'dirty_mbps': 0.2}]}},
        'vms': {'tv1': {'memory_mb': a.memory_mb, 'series': {
            'interpolation': 'hold', 'points': [
                {'t': 0, 'cpu': 0.3, 'mem_mb': a.memory_mb * 0.8,
                 'dirty_mbps': a.dirty_mbps}]}}},
        'traffic': [{'src': 'tv2', 'dst': 'tv3', 'proto': 'tcp', 'mbps': a.competitor_mbps,
                     'start_s': a.warmup_s, 'stop_s': end, 'label': 'competitor'}],
        'pings': [{'src': 'tv2', 'dst': 'tv4', 'start_s': a.warmup_s, 'stop_s': end,
                   'interval_s': 0.2}],
        'actions': [{'at_s': migrate_at, 'do': 'migrate', 'vm': 'tv1', 'to': 'th2',
                     'deadline_s': a.deadline_s, 'reserve': reserve,
                     'label': 'with' if reserve else 'without'}],
    })


def window_stats(tb, rec, before_s):
    """Competitor throughput and ping RTT before and during the migration."""
    start = rec['started_t']
    end = rec['ended_t'] if rec['ended_t'] is not None else tb.now()
    # iperf3 reports one-second intervals stamped at their end: "during"
    # takes the intervals that end inside the migration (the first one from
    # one second after its start).
    before_tp, nb = tb.flow_stats('competitor', start - before_s + 1, start)
    during_tp, nd = tb.flow_stats('competitor', start + 1, end)
    pb = tb.ping_stats('tv2', 'tv4', start - before_s + 1, start)
    pd = tb.ping_stats('tv2', 'tv4', start, end)
    return {
        'competitor_mbps_before': before_tp, 'competitor_mbps_during': during_tp,
        'competitor_samples_before': nb, 'competitor_samples_during': nd,
        'ratio': (during_tp / before_tp) if before_tp and during_tp is not None else None,
        'ping_ms_mean_before': pb[0], 'ping_ms_stdev_before': pb[1],
        'ping_ms_mean_during': pd[0], 'ping_ms_stdev_during': pd[1], 'ping_replies_during': pd[2],
        'window_s': [start, end],
    }


def run_once(a, reserve):
    sc = build_scenario(a, reserve)
    out = os.path.join(a.out, 'with' if reserve else 'without')
    print('=== VMPatrol run %s reservation -> %s' % ('with' if reserve else 'without', out),
          flush=True)
    tb, summary = testbed.execute(sc, out, a.bin_dir, plots=not a.no_plots)
    if not tb.migrations:
        raise testbed.TestbedError('the migration did not start (see %s/events.csv)' % out)
    rec = tb.migrations[0]
    stats = window_stats(tb, rec, a.before_s)
    mig = tb.migration_summary(rec)
    return tb, summary, rec, mig, stats


def plot(a, runs):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, (tb, _, rec, _, _) in runs.items():
        t0 = rec['started_t']
        color = 'tab:green' if name == 'with' else 'tab:red'
        xs = [r['t_s'] - t0 for r in tb.rows['throughput'] if r['flow'] == 'competitor']
        ys = [r['mbps'] for r in tb.rows['throughput'] if r['flow'] == 'competitor']
        ax1.plot(xs, ys, color=color, label='competitor, %s reservation' % name)
        px = [r['t_s'] - t0 for r in tb.rows['ping']]
        py = [r['rtt_ms'] for r in tb.rows['ping']]
        ax2.plot(px, py, '.', markersize=3, color=color, label='ping, %s reservation' % name)
        if rec['ended_t'] is not None:
            for ax in (ax1, ax2):
                ax.axvline(rec['ended_t'] - t0, color=color, linestyle='--', linewidth=1)
    for ax in (ax1, ax2):
        ax.axvline(0, color='black', linewidth=1)
        ax.axvline(a.deadline_s, color='gray', linestyle=':', linewidth=1, label='deadline')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    ax1.set_ylabel('TCP competitor, Mbit/s')
    ax1.set_title('VMPatrol: migration across the core (starts at 0, dashed: ends)')
    ax2.set_ylabel('ping RTT, ms')
    ax2.set_xlabel('seconds since the migration started')
    ax2.set_yscale('log')
    fig.tight_layout()
    path = os.path.join(a.out, 'vmpatrol.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help='output directory')
    ap.add_argument('--bin-dir', help='where shoal-controller and shoal-hostd are')
    ap.add_argument('--link-mbps', type=float, default=100.0, help='every link (≤ 100)')
    ap.add_argument('--competitor-mbps', type=float, default=60.0,
                    help='iperf3 -b of the competing TCP flow')
    ap.add_argument('--memory-mb', type=int, default=96, help="migrating VM's memory (MiB)")
    ap.add_argument('--dirty-mbps', type=float, default=1.0, help='its dirty rate (MiB/s)')
    ap.add_argument('--deadline-s', type=float, default=40.0, help='migration deadline')
    ap.add_argument('--warmup-s', type=float, default=3.0, help='before the flows start')
    ap.add_argument('--before-s', type=float, default=15.0,
                    help='flows run this long before the migration')
    ap.add_argument('--after-s', type=float, default=6.0,
                    help='the run lasts this long past the deadline')
    ap.add_argument('--controller-config', default='{}',
                    help='controller config tables as JSON, merged over the testbed\'s, '
                    'e.g. \'{"execute": {"reservation": "queue"}}\'')
    ap.add_argument('--only', choices=('with', 'without'), help='run one of the two only')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    testbed.install_signal_handlers()
    runs = {}
    try:
        for name in ('with', 'without'):
            if a.only and a.only != name:
                continue
            runs[name] = run_once(a, name == 'with')
    except KeyboardInterrupt:
        print('interrupted; cleaned up', file=sys.stderr)
        return 130
    except testbed.TestbedError as e:
        print('vmpatrol failed: %s' % e, file=sys.stderr)
        return 1
    s = {'experiment': 'vmpatrol', 'link_mbps': a.link_mbps,
         'competitor_offered_mbps': a.competitor_mbps, 'memory_mb': a.memory_mb,
         'dirty_mbps': a.dirty_mbps, 'deadline_s': a.deadline_s}
    for name, (tb, summary, rec, mig, st) in runs.items():
        s['competing_throughput_ratio_%s' % name] = st['ratio']
        s['competitor_mbps_before_%s_run' % name] = st['competitor_mbps_before']
        s['competitor_mbps_during_%s' % name] = st['competitor_mbps_during']
        s['ping_ms_mean_%s' % name] = st['ping_ms_mean_during']
        s['ping_ms_stdev_%s' % name] = st['ping_ms_stdev_during']
        s['ping_ms_mean_before_%s_run' % name] = st['ping_ms_mean_before']
        s['ping_ms_stdev_before_%s_run' % name] = st['ping_ms_stdev_before']
        s['migration_state_%s' % name] = mig['state']
        s['migration_time_s_%s' % name] = mig.get('total_time_s') or (
            (rec['ended_t'] - rec['started_t']) if rec['ended_t'] is not None else None)
        s['migration_wall_s_%s' % name] = ((rec['ended_t'] - rec['started_t'])
                                           if rec['ended_t'] is not None else None)
        s['bandwidth_bytes_per_s_%s' % name] = mig.get('bandwidth_bytes_per_s')
        s['transferred_bytes_%s' % name] = mig.get('transferred_bytes')
        s['downtime_ms_%s' % name] = mig.get('downtime_ms')
        s['migration_driver_%s' % name] = rec['mode']
        s['details_%s' % name] = os.path.join(a.out, name, 'summary.json')
        if name == 'with':
            pred = mig.get('predicted') or {}
            s['predicted_time_s'] = pred.get('time_s')
            s['predicted_traffic_bytes'] = (pred.get('traffic_bytes') or
                                            (pred['traffic_mb'] * 2 ** 20
                                             if pred.get('traffic_mb') else None))
            s['predicted_rounds'] = pred.get('rounds')
            s['ping_ms_mean_before'] = st['ping_ms_mean_before']
            s['ping_ms_stdev_before'] = st['ping_ms_stdev_before']
            s['reservation_path'] = mig.get('path_bridges')
            s['reservation_path_hops'] = mig.get('reservation_path_hops')
            s['reservation_hops_seen'] = mig.get('reservation_hops_seen')
            s['reservation_hops_simultaneous'] = mig.get('reservation_hops_simultaneous')
            s['reservation_seen'] = mig.get('reservation_seen')
            s['reservations_left_after'] = summary.get('reservations_left')
            s['reservation_gone_after'] = not summary.get('reservations_left')
            s['met_deadline'] = (mig['state'] == 'done' and s['migration_time_s_with'] is not None
                                 and s['migration_time_s_with'] <= a.deadline_s)
    if 'with' in runs and 'without' in runs:
        rw, ro = s['competing_throughput_ratio_with'], s['competing_throughput_ratio_without']
        s['acceptance'] = {
            'competitor_keeps_90pct_with_reservation': rw is not None and rw >= 0.9,
            'competitor_drops_without_reservation': (ro is not None and rw is not None
                                                     and ro < rw - 0.05),
            'migration_meets_deadline': bool(s.get('met_deadline')),
            'reservation_on_every_hop': bool(s.get('reservation_path_hops')) and
            s.get('reservation_hops_seen') == s.get('reservation_path_hops'),
            'reservation_gone_after': bool(s.get('reservation_gone_after')),
        }
    if not a.no_plots and runs:
        s['plot'] = plot(a, runs)
    path = os.path.join(a.out, 'summary.json')
    with open(path, 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== VMPatrol summary')
    for k in ('competing_throughput_ratio_with', 'competing_throughput_ratio_without',
              'ping_ms_mean_before', 'ping_ms_mean_with', 'ping_ms_mean_without',
              'migration_time_s_with', 'deadline_s', 'predicted_time_s',
              'reservation_hops_seen', 'reservation_path_hops', 'reservation_gone_after'):
        if k in s:
            v = s[k]
            print('  %-38s %s' % (k, ('%.3f' % v) if isinstance(v, float) else v))
    if 'acceptance' in s:
        for k, v in s['acceptance'].items():
            print('  %-38s %s' % (k, 'yes' if v else 'NO'))
    print('results: %s (summary.json, vmpatrol.png; per run: with/, without/)' % a.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
