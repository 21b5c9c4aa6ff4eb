#!/usr/bin/env python3
"""Writes the numbers of every experiment run by run-all.sh into
docs/experiments.md, between ``<!-- results:begin -->`` and
``<!-- results:end -->`` (everything else in the document stays as it is).

    /usr/bin/python3 mininet/experiments/results.py --out out --doc docs/experiments.md

One table per experiment found in OUT (OUT/<name>/summary.json): what was
measured live next to what the model or the simulator says, with the commit
and the date of the run. Missing experiments are listed as not run.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

BEGIN, END = '<!-- results:begin -->', '<!-- results:end -->'
EXPERIMENTS = ('vmpatrol', 'hotspot-idc', 'hotspot-sandpiper', 'sova', 'score', 'violin',
               'shoal')


def fmt(x, spec='%.3g'):
    if x is None:
        return '–'
    if isinstance(x, bool):
        return 'yes' if x else 'no'
    if isinstance(x, float):
        return spec % x
    return str(x)


def moves(ms):
    if not ms:
        return 'none'
    return ', '.join('%s %s→%s' % (m[0], m[1], m[2]) if isinstance(m, (list, tuple))
                     else '%s %s→%s' % (m.get('vm'), m.get('from'), m.get('to')) for m in ms)


def table(rows, head=('', 'measured (live)', 'model / simulator')):
    out = ['| %s |' % ' | '.join(head), '|' + '---|' * len(head)]
    for r in rows:
        out.append('| %s |' % ' | '.join(fmt(x) for x in r))
    return out


def vmpatrol(s):
    return table([
        ('competitor throughput during ÷ before, with reservation',
         fmt(s.get('competing_throughput_ratio_with')), '≥ 0.90 (acceptance)'),
        ('the same without reservation', fmt(s.get('competing_throughput_ratio_without')),
         'drops'),
        ('migration time with reservation (deadline %s s)' % fmt(s.get('deadline_s')),
         fmt(s.get('migration_time_s_with'), '%.2f s'), fmt(s.get('predicted_time_s'),
                                                            '%.2f s (VMPatrol model)')),
        ('hops reserved / path', '%s / %s' % (s.get('reservation_hops_seen'),
                                              s.get('reservation_path_hops')), 'every hop'),
        ('reservations gone afterwards', fmt(s.get('reservation_gone_after')), 'yes'),
        ('links, verdict', '%s Mbit/s, %s' % (fmt(s.get('link_mbps')), s.get('verdict')), ''),
    ])


def hotspot(s):
    return table([
        ('migrations', moves(s.get('live_moves')), moves(s.get('simulator_moves'))),
        ('communication cost before → after (controller records)',
         '%s → %s' % (fmt(s.get('cost_before')), fmt(s.get('cost_after'))),
         '%s → %s' % (fmt((s.get('simulator_summary') or {}).get('cost_before')),
                      fmt((s.get('simulator_summary') or {}).get('cost_after')))),
        ('hotspot resolved', fmt(s.get('hotspot_resolved')), ''),
        ('matches the simulator', fmt(s.get('matches_simulator')), ''),
        ('reservations left', 'none' if not s.get('reservations_left') else 'some', 'none'),
    ])


def sova(s):
    return table([
        ('VF holder on th1 before the switch → at the end',
         '%s → %s' % tuple('+'.join(x) if isinstance(x, list) else fmt(x) for x in
                           (s.get('th1_holder_before_switch'), s.get('th1_holder_final'))),
         'tv1 → tv2'),
        ('VF followed the traffic', fmt(s.get('followed_traffic')), 'yes'),
        ('samples with the VF on the busiest VM', shares(s.get('vf_on_busiest_vm_share')), ''),
        ("hostd's vf_attached and the stand-in link agree", fmt(s.get('hostd_and_link_agree')),
         'yes'),
    ])


def score(s):
    return table([
        ('migrations', moves(s.get('live_moves')), moves(s.get('simulator_moves'))),
        ('communication cost before', fmt(s.get('live_cost_before')),
         fmt(s.get('simulator_cost_before'))),
        ('communication cost after', fmt(s.get('live_cost_after')),
         fmt(s.get('simulator_cost_after'))),
        ('reduction', fmt(s.get('live_reduction')), fmt(s.get('simulator_reduction'))),
        ('reductions within 15 % (abs(live − simulator) ≤ 0.15 × simulator)', fmt(s.get('within_15pct')), ''),
        ('every hop of every migration reserved; gone after',
         '%s; %s' % (fmt(s.get('reservations_every_hop')),
                     fmt(s.get('reservations_gone_after'))), ''),
    ])


def violin(s):
    per = s.get('reservations_per_migration') or {}
    return table([
        ('migrations', moves(s.get('live_moves')), moves(s.get('simulator_moves'))),
        ('members except the head in d1', fmt(s.get('members_moved_to_d1')), 'yes'),
        ('head tv1 stayed on th1', fmt(s.get('head_stayed')), 'yes'),
        ('matches the simulator', fmt(s.get('matches_simulator')), ''),
        ('hops reserved / path per migration',
         ', '.join('%s %s/%s' % (k, v[0], v[1]) for k, v in sorted(per.items())) or '–',
         'every hop'),
        ('reservations gone after', fmt(s.get('reservations_gone_after')), 'yes'),
    ])


def shoal(s):
    p = (s.get('measured_vs_expected') or [{}])[0]
    e, m, r = p.get('expected') or {}, p.get('measured') or {}, p.get('ratio') or {}
    nbytes = m.get('migration_bytes')
    nbytes = float(nbytes) if isinstance(nbytes, int) else nbytes
    return table([
        ('migrations', moves(s.get('live_moves')), moves(s.get('simulator_moves'))),
        ('communication cost fall (decision: comm_gain)', fmt(m.get('comm_cost_fall')),
         fmt(e.get('comm_gain'))),
        ('migration time (deadline %s s)' % fmt(p.get('deadline_s')),
         fmt(m.get('migration_time_s'), '%.2f s'), fmt(e.get('migration_time_s'), '%.2f s')),
        ('migration bytes', fmt(nbytes, '%.4g'),
         fmt(e.get('migration_bytes'), '%.4g')),
        ('ratios measured / expected: time, bytes, cost fall',
         ', '.join(fmt(r.get(k), '%.3f') for k in ('migration_time', 'migration_bytes',
                                                    'comm_cost_fall_vs_gain')), '1'),
        ('th1 CPU before → after; hotspot cleared',
         '%s → %s; %s' % (fmt(s.get('th1_cpu_before')), fmt(s.get('th1_cpu_after')),
                          fmt(s.get('hotspot_cleared'))),
         'resolves %s/%s' % (fmt(e.get('resolved')), fmt(e.get('hot_resources')))),
        ('net benefit, migration cost (decision)', '',
         '%s, %s' % (fmt(e.get('net_benefit')), fmt(e.get('migration_cost')))),
        ('every hop of every migration reserved; gone after',
         '%s; %s' % (fmt(s.get('reservations_every_hop')),
                     fmt(s.get('reservations_gone_after'))), ''),
    ])


RENDER = {'vmpatrol': vmpatrol, 'hotspot-idc': hotspot, 'hotspot-sandpiper': hotspot,
          'sova': sova, 'score': score, 'violin': violin, 'shoal': shoal}


def render(out_dir, commit, date):
    lines = [BEGIN, '',
             '### Results of the last `run-all.sh` (commit `%s`, %s)' % (commit, date), '']
    for name in EXPERIMENTS:
        path = os.path.join(out_dir, name, 'summary.json')
        lines.append('**%s**' % name)
        lines.append('')
        try:
            with open(path) as f:
                s = json.load(f)
        except (OSError, ValueError) as e:
            lines.append('not run (no %s)' % path if isinstance(e, OSError) else
                         'unreadable summary (%s)' % e)
            lines.append('')
            continue
        lines += RENDER[name](s)
        lines.append('')
    lines.append(END)
    return '\n'.join(lines)


def splice(doc, block):
    """``doc`` with the text between the markers replaced by ``block`` (the
    markers appended at the end when missing)."""
    if BEGIN in doc and END in doc and doc.index(BEGIN) < doc.index(END):
        a = doc.index(BEGIN)
        b = doc.index(END) + len(END)
        return doc[:a] + block + doc[b:]
    return doc.rstrip('\n') + '\n\n' + block + '\n'


def run_info(out_dir):
    """(commit, date) of the run: from OUT/run-info.json (written by
    run-all.sh when it starts), else the working tree's HEAD and now."""
    try:
        with open(os.path.join(out_dir, 'run-info.json')) as f:
            info = json.load(f)
        return info['commit'], info['date']
    except (OSError, ValueError, KeyError):
        pass
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(['git', '-C', root, 'rev-parse', '--short', 'HEAD'],
                       capture_output=True, text=True)
    commit = r.stdout.strip() or 'unknown'
    dirty = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        commit += ' + local changes'
    return commit, datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')


def shares(d):
    if not isinstance(d, dict):
        return fmt(d)
    return ', '.join('%s %s' % (k, fmt(v)) for k, v in sorted(d.items())) or '–'


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help="run-all.sh's output directory")
    ap.add_argument('--doc', required=True, help='docs/experiments.md')
    a = ap.parse_args()
    commit, date = run_info(a.out)
    with open(a.doc) as f:
        doc = f.read()
    new = splice(doc, render(a.out, commit, date))
    with open(a.doc, 'w') as f:
        f.write(new)
    print('results written into %s' % a.doc)
    return 0


if __name__ == '__main__':
    sys.exit(main())
