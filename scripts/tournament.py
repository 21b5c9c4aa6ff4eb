#!/usr/bin/env python3
"""The tournament in one command: every policy on the papers' situations and
on generated data centers, the tables and plots into docs/experiments.md.

    python3 scripts/tournament.py [--bin target/release/shoal-controller]
        [--sizes 64,640,2560] [--mixes comm,hot,nic,mixed]
        [--reference-sizes 2560] [--seed 1] [--out out/tournament]
        [--doc docs/experiments.md | --no-doc] [--replot]

Runs `shoal-controller simulate --tournament` once on the scenario files of
examples/scenarios (the papers' situations) and once per size on generated
data centers of every mix (with the reference optimiser at the sizes of
--reference-sizes), keeps the JSON and Markdown in --out, draws
tournament-papers.png and tournament-dc.png (into docs/figures with the
document, else into --out), and replaces the text between
``<!-- tournament:begin -->`` and ``<!-- tournament:end -->`` in the
document. Without --bin the release binary is built when missing. Every
number but the times is deterministic for a seed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = '<!-- tournament:begin -->', '<!-- tournament:end -->'
# Each paper's situation and its headline metric (lower is better).
HEADLINE = {
    'idc': ('overloaded_host_s', 'overloaded host-s'),
    'sandpiper': ('overloaded_host_s', 'overloaded host-s'),
    'score': ('cost_after', 'communication cost left'),
    'sova': ('nic_overloaded_host_s', 'NIC-overloaded host-s'),
    'violin': ('overloaded_host_s', 'overloaded host-s'),
}


# One colour per policy in every plot (shoal in red).
COLOURS = {'sandpiper': 'tab:blue', 'idc': 'tab:orange', 'score': 'tab:green',
           'sova': 'tab:purple', 'violin': 'tab:brown', 'shoal': 'tab:red'}


def run(cmd, what):
    t0 = time.time()
    print('== %s' % what, file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit('tournament.py: %s failed (exit %d):\n%s' % (what, p.returncode, p.stderr))
    print('   %.1f s' % (time.time() - t0), file=sys.stderr, flush=True)
    return p.stdout


def ensure_bin(path):
    if path:
        if not os.access(path, os.X_OK):
            sys.exit('tournament.py: %s is not an executable' % path)
        return path
    path = os.path.join(ROOT, 'target', 'release', 'shoal-controller')
    if not os.access(path, os.X_OK):
        run(['cargo', 'build', '--release', '-p', 'shoal-controller',
             '--manifest-path', os.path.join(ROOT, 'Cargo.toml')], 'building the release binary')
    return path


def sizes_arg(s):
    try:
        return [int(x) for x in s.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError('expected numbers of hosts, e.g. 64,640')


def tournament(binary, out, name, extra):
    js = os.path.join(out, name + '.json')
    md = run([binary, 'simulate', '--tournament', '--json', js] + extra, name)
    with open(os.path.join(out, name + '.md'), 'w') as f:
        f.write(md)
    with open(js) as f:
        return json.load(f), md


def plot_papers(entries, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    entries = [e for e in entries if e['scenario'] in HEADLINE]
    fig, axes = plt.subplots(1, len(entries), figsize=(3.2 * len(entries), 3.2), squeeze=False)
    for ax, e in zip(axes[0], entries):
        key, label = HEADLINE[e['scenario']]
        names = [r['policy'] for r in e['results']]
        vals = [r[key] for r in e['results']]
        colors = ['tab:red' if n == 'shoal' else
                  'tab:blue' if n == e['scenario'] else 'tab:gray' for n in names]
        ax.bar(range(len(names)), vals, color=colors)
        top = max(vals + [0]) or 1.0
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02 * top, '%.3g' % v, ha='center', fontsize=6)
        ax.set_ylim(0, 1.15 * top)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, fontsize=7)
        ax.set_title('%s: %s' % (e['scenario'], label), fontsize=8)
        ax.tick_params(axis='y', labelsize=7)
    fig.suptitle('Each paper\'s situation, its headline metric (lower is better; '
                 'blue: the paper\'s policy, red: shoal)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_dc(entries, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not entries:
        return
    policies = [r['policy'] for r in entries[0]['results']]
    panels = [('reduction', 'communication cost reduction (%)', 100.0),
              ('bytes_moved', 'GB migrated', 1e-9),
              ('overloaded_host_s', 'overloaded host-s', 1.0),
              ('congested_link_s', 'link-s above 90 %', 1.0)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * len(entries)), 10),
                             squeeze=False)
    width = 0.8 / len(policies)
    for ax, (key, label, scale) in zip(axes[:, 0], panels):
        for i, p in enumerate(policies):
            xs = [j + (i - len(policies) / 2 + 0.5) * width for j in range(len(entries))]
            ys = [next(r for r in e['results'] if r['policy'] == p)[key] * scale
                  for e in entries]
            ax.bar(xs, ys, width, label=p, color=COLOURS.get(p, 'tab:gray'))
        ax.set_ylabel(label, fontsize=8)
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([e['scenario'] for e in entries], fontsize=7)
        ax.tick_params(axis='y', labelsize=7)
        ax.grid(axis='y', alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(policies))
    fig.suptitle('Generated data centers (hosts, load mix): every policy', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def splice(doc, block):
    if BEGIN in doc and END in doc and doc.index(BEGIN) < doc.index(END):
        a = doc.index(BEGIN)
        b = doc.index(END) + len(END)
        return doc[:a] + block + doc[b:]
    return doc.rstrip('\n') + '\n\n' + block + '\n'


def commit():
    try:
        return subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--bin', help='shoal-controller binary (default: the release build)')
    ap.add_argument('--sizes', type=sizes_arg, default=[64, 640, 2560])
    ap.add_argument('--mixes', default='comm,hot,nic,mixed')
    ap.add_argument('--reference-sizes', type=sizes_arg, default=[2560],
                    help='sizes at which the reference optimiser also runs')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--out', default=os.path.join(ROOT, 'out', 'tournament'))
    ap.add_argument('--doc', default=os.path.join(ROOT, 'docs', 'experiments.md'))
    ap.add_argument('--no-doc', action='store_true', help='leave the document alone')
    ap.add_argument('--replot', action='store_true',
                    help='only redraw the plots from OUT/tournament.json')
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    figs = os.path.join(os.path.dirname(os.path.abspath(a.doc)), 'figures') if not a.no_doc \
        else out
    if a.replot:
        with open(os.path.join(out, 'tournament.json')) as f:
            j = json.load(f)
        os.makedirs(figs, exist_ok=True)
        plot_papers(j['papers'], os.path.join(figs, 'tournament-papers.png'))
        plot_dc(j['dc'], os.path.join(figs, 'tournament-dc.png'))
        return 0
    binary = ensure_bin(a.bin)
    t0 = time.time()
    scen_dir = os.path.join(ROOT, 'examples', 'scenarios')
    papers, papers_md = tournament(binary, out, 'papers',
                                   ['--scenario-dir', scen_dir, '--sizes', '',
                                    '--seed', str(a.seed)])
    dc, dc_md = [], []
    with tempfile.TemporaryDirectory() as empty:
        for n in a.sizes:
            extra = ['--scenario-dir', empty, '--sizes', str(n), '--mixes', a.mixes,
                     '--seed', str(a.seed)]
            if n in a.reference_sizes:
                extra.append('--reference')
            e, md = tournament(binary, out, 'dc-%d' % n, extra)
            dc += e
            dc_md.append(md)
    os.makedirs(figs, exist_ok=True)
    plot_papers(papers, os.path.join(figs, 'tournament-papers.png'))
    plot_dc(dc, os.path.join(figs, 'tournament-dc.png'))
    with open(os.path.join(out, 'tournament.json'), 'w') as f:
        json.dump({'papers': papers, 'dc': dc}, f, indent=1)
    took = time.time() - t0
    print('tournament: %.0f s; results in %s' % (took, out), file=sys.stderr)
    if a.no_doc:
        return 0
    rel = os.path.relpath(figs, os.path.dirname(os.path.abspath(a.doc)))
    block = '\n'.join([
        BEGIN, '',
        '### Tournament results (commit `%s`, %s, seed %d, %.0f s on this machine)'
        % (commit(), time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), a.seed, took),
        '', '![each paper\'s situation](%s/tournament-papers.png)' % rel, '',
        '![generated data centers](%s/tournament-dc.png)' % rel, '',
        '#### The papers\' situations', papers_md.strip(), '',
        '#### Generated data centers', '\n'.join(m.strip() + '\n' for m in dc_md).strip(), '',
        END])
    with open(a.doc) as f:
        doc = f.read()
    with open(a.doc, 'w') as f:
        f.write(splice(doc, block))
    print('tournament: tables written into %s' % a.doc, file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
