"""PNG plots of a testbed run (matplotlib, Agg backend: no display needed)."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown',
          'tab:pink', 'tab:gray', 'tab:olive', 'tab:cyan']


def shade_migrations(ax, migrations, label=True):
    for i, m in enumerate(migrations):
        a, b = m.get('started_t'), m.get('ended_t')
        if a is None:
            continue
        if b is None:
            b = a
        ax.axvspan(a, b, color='gold' if m.get('reserve', True) else 'salmon', alpha=0.25,
                   label=('migration %s%s' % (m['vm'], '' if m.get('reserve', True)
                                              else ' (no reservation)')) if label else None)


def by_key(rows, key, x='t_s', y=None):
    out = {}
    for r in rows:
        v = r.get(y)
        if v is None or v == '':
            continue
        out.setdefault(r[key], ([], []))
        out[r[key]][0].append(r[x])
        out[r[key]][1].append(float(v))
    return out


def _save(fig, ax, out, name, title, ylabel):
    ax.set_title(title)
    ax.set_xlabel('time since the host daemons started (s)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize='small', loc='best')
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def standard(out, tb):
    """The plots every run gets; returns {name: path}."""
    files = {}
    rows = tb.rows
    migs = tb.migrations
    if rows['throughput']:
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, (k, (xs, ys)) in enumerate(sorted(by_key(rows['throughput'], 'flow',
                                                        y='mbps').items())):
            ax.plot(xs, ys, label=k, color=COLORS[i % len(COLORS)])
        shade_migrations(ax, migs)
        files['throughput_png'] = _save(fig, ax, out, 'throughput.png',
                                        'iperf3 receiver throughput per flow', 'Mbit/s')
    if rows['ping']:
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, (k, (xs, ys)) in enumerate(sorted(by_key(
                [dict(r, pair='%s>%s' % (r['src'], r['dst'])) for r in rows['ping']],
                'pair', y='rtt_ms').items())):
            ax.plot(xs, ys, '.', markersize=3, label=k, color=COLORS[i % len(COLORS)])
        shade_migrations(ax, migs)
        files['ping_png'] = _save(fig, ax, out, 'ping.png', 'ping round-trip time', 'ms')
    if rows['lambda']:
        fig, ax = plt.subplots(figsize=(8, 4))
        series = by_key([dict(r, pair='%s>%s' % (r['src'], r['dst'])) for r in rows['lambda']],
                        'pair', y='bytes_per_s')
        top = sorted(series.items(), key=lambda kv: -max(kv[1][1]))[:8]
        for i, (k, (xs, ys)) in enumerate(top):
            ax.plot(xs, [y * 8 / 1e6 for y in ys], label=k, color=COLORS[i % len(COLORS)])
        shade_migrations(ax, migs, label=False)
        files['lambda_png'] = _save(fig, ax, out, 'lambda.png',
                                    "controller's traffic matrix λ(u,v) (top pairs)", 'Mbit/s')
    if rows['hosts']:
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, (k, (xs, ys)) in enumerate(sorted(by_key(rows['hosts'], 'host',
                                                        y='cpu_util').items())):
            ax.plot(xs, ys, label=k, color=COLORS[i % len(COLORS)])
        shade_migrations(ax, migs, label=False)
        ax.set_ylim(0, 1.05)
        files['hosts_png'] = _save(fig, ax, out, 'hosts.png',
                                   'host CPU utilisation (as hostd reports it)', 'utilisation')
    if rows['migrations']:
        fig, ax = plt.subplots(figsize=(8, 4))
        for i, (k, (xs, ys)) in enumerate(sorted(by_key(
                [dict(r, mid='%s (%s)' % (r['vm'], r['id'])) for r in rows['migrations']],
                'mid', y='transferred_bytes').items())):
            ax.plot(xs, [y / 2 ** 20 for y in ys], label=k, color=COLORS[i % len(COLORS)])
        files['migration_png'] = _save(fig, ax, out, 'migration.png', 'migration progress',
                                       'MiB transferred')
    if rows['vf']:
        fig, ax = plt.subplots(figsize=(8, 4))
        vms = sorted(set(r['vm'] for r in rows['vf']), key=lambda v: int(v[2:]))
        for i, vm in enumerate(vms):
            pts = [(r['t_s'], r['vf_attached']) for r in rows['vf'] if r['vm'] == vm]
            ax.step([p[0] for p in pts], [i + 0.8 * p[1] for p in pts], where='post',
                    color=COLORS[i % len(COLORS)], label=vm)
        ax.set_yticks(range(len(vms)))
        ax.set_yticklabels(vms)
        files['vf_png'] = _save(fig, ax, out, 'vf.png', 'VF attached (step up = VF)', 'VM')
    return files
