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

import calibrate  # noqa: E402
import scenario as scn  # noqa: E402
import testbed  # noqa: E402

# The experiment at its reference scale (100 Mbit/s links); with a
# calibrated link rate everything that is a rate or an amount scales with it,
# so that the ratios of competitor, migration and link stay the same.
REFERENCE_LINK_MBPS = 100.0
PATH = ['th1', 'tt1', 'ta1', 'tc1', 'ta2', 'tt2', 'th2']
REFERENCE = {'competitor_mbps': 60.0, 'memory_mb': 96.0, 'dirty_mbps': 1.0}
# A run means nothing (the machine, not the network, was measured) when:
# on average this much (KiB) waited in ovs-vswitchd's receive queues during
# the migration: the userspace datapath fell behind the links (a datapath
# that keeps up holds 0-3 jumbo frames there, ~13 KiB each; the thread's CPU
# is no measure, it polls near a whole core whenever traffic flows) ...
OVS_BACKLOG_KB = 48.0
# ... or those queues dropped on average this many packets a second (the
# datapath could not keep up for a sustained time; a burst of a few drops
# in one second, with the backlog low on average, changes none of what is
# measured: seen once in ~15 busy suite runs, 7 drops in one second and
# 0.2 a second on average, with every acceptance point met by a margin) ...
OVS_DROPS_PER_S = 1.0
# ... or the competitor reached less than this share of its offered rate
# before the migration (nothing to protect: the path was already short) ...
COMPETITOR_BEFORE_MIN = 0.85
# ... or, without reservation, competitor and migration together carried
# less than this share of the bottleneck link (two greedy flows fill a link
# that is the bottleneck; when they do not, the CPU was).
LINK_FILL_MIN = 0.75


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
                     'host_link_mbps': a.link_mbps, 'mtu': a.mtu},
        'controller': {'interval_s': 2, 'config': json.loads(a.controller_config),
                       'tls': not a.no_tls},
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
        'cpu_during': tb.cpu_stats(start, end), 'cpu_before': tb.cpu_stats(start - before_s, start),
        'hops_during': tb.hop_rates(rec['path_bridges'] or PATH, start + 1, end),
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


def scale(a):
    """Fills in the link rate (calibrated unless given) and the rates and
    amounts that scale with it; returns the calibration (or None)."""
    cal = None
    if a.link_mbps is None:
        cal = calibrate.measure(hops=7, mtu=a.mtu)
        a.link_mbps = calibrate.choose_link_mbps(cal)
        print(calibrate.describe(cal, a.link_mbps), flush=True)
    f = a.link_mbps / REFERENCE_LINK_MBPS
    if a.competitor_mbps is None:
        a.competitor_mbps = round(REFERENCE['competitor_mbps'] * f, 1)
    if a.memory_mb is None:
        a.memory_mb = max(16, int(round(REFERENCE['memory_mb'] * f)))
    if a.dirty_mbps is None:
        a.dirty_mbps = round(REFERENCE['dirty_mbps'] * f, 3)
    print('experiment scale: links %g Mbit/s (MTU %d), competitor %g Mbit/s, VM %d MiB dirtying '
          '%g MiB/s, deadline %g s' % (a.link_mbps, a.mtu, a.competitor_mbps, a.memory_mb,
                                       a.dirty_mbps, a.deadline_s), flush=True)
    return cal


def _pct(x):
    return '?' if x is None else '%.0f%%' % (100 * x)


def verdict(a, s, runs):
    """Reasons why the runs measured the machine rather than the network
    (empty: the run is conclusive)."""
    reasons = []
    for name, (_, _, _, _, st) in runs.items():
        cpu = st.get('cpu_during') or {}
        backlog = cpu.get('ovs_rx_backlog_kb_mean')
        if backlog is not None and backlog >= OVS_BACKLOG_KB:
            reasons.append('%s reservation: the datapath fell behind: on average %.0f KiB waited in '
                           'ovs-vswitchd\'s receive queues during the migration (limit %.0f KiB; '
                           'its thread used %s of a core, the machine %s of its cores)'
                           % (name, backlog, OVS_BACKLOG_KB, _pct(cpu.get('ovs_thread_mean')),
                              _pct(cpu.get('machine_busy_mean'))))
        drops = cpu.get('ovs_rx_drops_mean')
        if drops is not None and drops >= OVS_DROPS_PER_S:
            reasons.append('%s reservation: ovs-vswitchd\'s receive queues overflowed (%.1f '
                           'packets dropped a second on average, up to %d)'
                           % (name, drops, cpu.get('ovs_rx_drops_max') or 0))
        before = st.get('competitor_mbps_before')
        if before is None or before < COMPETITOR_BEFORE_MIN * a.competitor_mbps:
            reasons.append('%s reservation: the competitor reached %s of its %g Mbit/s before the '
                           'migration (at least %.0f%% expected)'
                           % (name, 'nothing' if before is None else '%.1f Mbit/s' % before,
                              a.competitor_mbps, 100 * COMPETITOR_BEFORE_MIN))
    if 'without' in runs:
        mig_mbps = s.get('migration_mbps_without')
        comp = s.get('competitor_mbps_during_without')
        if mig_mbps is not None and comp is not None:
            fill = (mig_mbps + comp) / a.link_mbps
            s['link_fill_without'] = round(fill, 3)
            if fill < LINK_FILL_MIN:
                reasons.append('without reservation: competitor (%.1f) and migration (%.1f '
                               'Mbit/s) filled only %.0f%% of the %g Mbit/s bottleneck link '
                               '(at least %.0f%% expected): the CPU, not the link, limited them'
                               % (comp, mig_mbps, 100 * fill, a.link_mbps,
                                  100 * LINK_FILL_MIN))
    return reasons


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
    ap.add_argument('--link-mbps', type=float,
                    help='every link (<= 100); default: calibrated on this machine '
                    '(mininet/calibrate.py), at most 100')
    ap.add_argument('--mtu', type=int, default=9000,
                    help='MTU of every data-plane link (1280..9000; the calibration uses it too)')
    ap.add_argument('--competitor-mbps', type=float,
                    help='iperf3 -b of the competing TCP flow (default: 60%% of the link)')
    ap.add_argument('--memory-mb', type=int,
                    help="migrating VM's memory in MiB (default: 96 x link/100)")
    ap.add_argument('--dirty-mbps', type=float,
                    help='its dirty rate in MiB/s (default: 1.0 x link/100)')
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
    ap.add_argument('--no-tls', action='store_true',
                    help='plain TCP/HTTP (default: OpenFlow over TLS with ovs-pki certificates, '
                    'HTTPS for the controller and the host daemons)')
    ap.add_argument('--no-plots', action='store_true')
    a = ap.parse_args()
    a.out = os.path.abspath(a.out)
    os.makedirs(a.out, exist_ok=True)
    if a.link_mbps is not None and not 0 < a.link_mbps <= 100:
        ap.error('--link-mbps must be in (0, 100]')
    testbed.install_signal_handlers()
    runs = {}
    try:
        cal = scale(a)
    except calibrate.CalibrationError as e:
        print('vmpatrol failed: %s' % e, file=sys.stderr)
        return 1
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
    s = {'experiment': 'vmpatrol', 'link_mbps': a.link_mbps, 'mtu': a.mtu,
         'competitor_offered_mbps': a.competitor_mbps, 'memory_mb': a.memory_mb,
         'dirty_mbps': a.dirty_mbps, 'deadline_s': a.deadline_s,
         'calibration': cal, 'link_mbps_source': 'calibrated' if cal else 'given'}
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
        s['cpu_during_%s' % name] = st['cpu_during']
        s['hops_during_%s' % name] = st['hops_during']
        s['cpu_before_%s_run' % name] = st['cpu_before']
        tb_s = s['migration_time_s_%s' % name]
        s['migration_mbps_%s' % name] = (
            round(mig['transferred_bytes'] * 8 / tb_s / 1e6, 3)
            if mig.get('transferred_bytes') and tb_s else None)
        s['migration_driver_%s' % name] = rec['mode']
        s['transport_%s' % name] = (summary.get('checks') or {}).get('transport')
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
    reasons = verdict(a, s, runs) if runs else ['no run']
    s['verdict'] = 'inconclusive' if reasons else 'conclusive'
    s['inconclusive_reasons'] = reasons
    s['verdict_text'] = ('inconclusive: the machine was too busy: ' + '; '.join(reasons)
                         if reasons else 'conclusive: the network, not the CPU, was measured')
    if not a.no_plots and runs:
        s['plot'] = plot(a, runs)
    path = os.path.join(a.out, 'summary.json')
    with open(path, 'w') as f:
        json.dump(s, f, indent=2, default=str)
    print('=== VMPatrol summary')
    print('  %-38s %s' % ('links', '%g Mbit/s (%s)' % (
        a.link_mbps, calibrate.describe(cal, a.link_mbps) if cal else 'given')))
    for k in ('competing_throughput_ratio_with', 'competing_throughput_ratio_without',
              'ping_ms_mean_before', 'ping_ms_mean_with', 'ping_ms_mean_without',
              'migration_time_s_with', 'deadline_s', 'predicted_time_s',
              'reservation_hops_seen', 'reservation_path_hops', 'reservation_gone_after',
              'transport_with'):
        if k in s:
            v = s[k]
            print('  %-38s %s' % (k, ('%.3f' % v) if isinstance(v, float) else v))
    if 'acceptance' in s:
        for k, v in s['acceptance'].items():
            print('  %-38s %s' % (k, 'yes' if v else (
                'NO' if not reasons else 'no (the run is inconclusive)')))
    print('  %-38s %s' % ('verdict', s['verdict_text']))
    print('results: %s (summary.json, vmpatrol.png; per run: with/, without/)' % a.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
