"""Testbed scenario files: loading and validation, the hostd time series,
the VMPatrol model, and the translation into a simulator scenario.

Pure Python (no Mininet, no root): unit-tested by mininet/test_scenario.py.
The format is documented in docs/testbed.md.
"""

import copy
import json
import math

import dc

HOSTD_SERIES_FIELDS = {'cpu', 'mem_mb', 'dirty_mbps', 'wait'}


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the field."""


def _num(v, where, lo=None, hi=None, lo_open=False, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (isinstance(v, float) and not math.isfinite(v)):
        raise ScenarioError('%s: must be a number, got %r' % (where, v))
    if integer and not isinstance(v, int):
        raise ScenarioError('%s: must be an integer, got %r' % (where, v))
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ScenarioError('%s: must be %s %s, got %r' % (where, '>' if lo_open else '>=', lo, v))
    if hi is not None and v > hi:
        raise ScenarioError('%s: must be <= %s, got %r' % (where, hi, v))
    return v


def _obj(v, where, allowed):
    if not isinstance(v, dict):
        raise ScenarioError('%s: must be an object' % where)
    unknown = set(v) - set(allowed)
    if unknown:
        raise ScenarioError('%s: unknown field(s) %s' % (where, ', '.join(sorted(unknown))))
    return v


def validate_series(s, where):
    """A hostd scenario time series (docs/hostd.md), checked by the same rules."""
    _obj(s, where, {'interpolation', 'after_end', 'points'})
    if s.get('interpolation', 'linear') not in ('linear', 'hold'):
        raise ScenarioError('%s.interpolation: "linear" or "hold"' % where)
    if s.get('after_end', 'hold') not in ('hold', 'loop'):
        raise ScenarioError('%s.after_end: "hold" or "loop"' % where)
    pts = s.get('points')
    if not isinstance(pts, list) or not pts:
        raise ScenarioError('%s.points: must be a non-empty array' % where)
    last = None
    for i, p in enumerate(pts):
        w = '%s.points[%d]' % (where, i)
        _obj(p, w, HOSTD_SERIES_FIELDS | {'t'})
        t = _num(p.get('t'), w + '.t', lo=0)
        if last is not None and t <= last:
            raise ScenarioError('%s.t: must increase strictly' % w)
        last = t
        if 'cpu' not in p:
            raise ScenarioError('%s.cpu: missing' % w)
        _num(p['cpu'], w + '.cpu', lo=0, hi=1)
        for k in ('mem_mb', 'dirty_mbps'):
            if k in p:
                _num(p[k], '%s.%s' % (w, k), lo=0)
        if 'wait' in p:
            _num(p['wait'], w + '.wait', lo=0, hi=1)
    return s


def series_at(s, t, field, default=0.0):
    """Value of ``field`` at time ``t`` (seconds since the series epoch),
    interpolated the way hostd does."""
    pts = s['points']
    if s.get('after_end', 'hold') == 'loop' and pts[-1]['t'] > 0 and t > pts[-1]['t']:
        t = math.fmod(t, pts[-1]['t'])

    def val(p):
        return p.get(field, default)
    if t <= pts[0]['t']:
        return val(pts[0])
    for a, b in zip(pts, pts[1:]):
        if a['t'] <= t < b['t']:
            if s.get('interpolation', 'linear') == 'hold':
                return val(a)
            f = (t - a['t']) / (b['t'] - a['t'])
            return val(a) + f * (val(b) - val(a))
    return val(pts[-1])


def series_max(s, field, default=0.0):
    return max(p.get(field, default) for p in s['points'])


DEFAULT_SERIES = {'interpolation': 'hold',
                  'points': [{'t': 0, 'cpu': 0.05, 'mem_mb': 32, 'dirty_mbps': 0.5}]}

CONTROLLER_DEFAULTS = {
    'interval_s': 2.0, 'window_intervals': 3, 'lldp_interval_s': 1.0,
    'port_confirm_s': 2.0, 'config': {}, 'policy': None, 'dry_run': False,
    'args': [], 'of_port': 6653, 'tls': False,
}


def load(src):
    """Loads and validates a scenario (a path or a dict); fills in defaults."""
    if isinstance(src, str):
        try:
            with open(src) as f:
                raw = json.load(f)
        except ValueError as e:
            raise ScenarioError('%s: not JSON: %s' % (src, e))
        except OSError as e:
            raise ScenarioError('cannot read %s: %s' % (src, e))
    else:
        raw = copy.deepcopy(src)
    _obj(raw, 'scenario', {'name', 'description', 'duration_s', 'topology', 'controller',
                           'hostd', 'vm_defaults', 'vms', 'traffic', 'pings', 'actions',
                           'checks', 'sample_s', 'environments', 'domains', 'clients'})
    sc = {'name': raw.get('name', 'scenario'), 'description': raw.get('description', '')}
    sc['duration_s'] = _num(raw.get('duration_s', 30), 'duration_s', lo=1, hi=3600)
    sc['sample_s'] = _num(raw.get('sample_s', 1.0), 'sample_s', lo=0.2, hi=10)
    try:
        sc['topology'] = dc.topology_params(raw.get('topology'))
    except dc.TopologyError as e:
        raise ScenarioError(str(e))
    ctl = dict(CONTROLLER_DEFAULTS)
    ctl.update(_obj(raw.get('controller', {}), 'controller', CONTROLLER_DEFAULTS))
    _num(ctl['interval_s'], 'controller.interval_s', lo=1, hi=60)
    _num(ctl['window_intervals'], 'controller.window_intervals', lo=1, hi=6, integer=True)
    _num(ctl['lldp_interval_s'], 'controller.lldp_interval_s', lo=0.5, hi=10)
    _num(ctl['port_confirm_s'], 'controller.port_confirm_s', lo=0.5, hi=10)
    _num(ctl['of_port'], 'controller.of_port', lo=1, hi=65535, integer=True)
    if not isinstance(ctl['config'], dict):
        raise ScenarioError('controller.config: must be an object (TOML tables)')
    try:
        to_toml(ctl['config'])
    except ValueError as e:
        raise ScenarioError('controller.config: %s' % e)
    if ctl['policy'] is not None and not isinstance(ctl['policy'], str):
        raise ScenarioError('controller.policy: must be a string or null')
    if not isinstance(ctl['args'], list) or not all(isinstance(a, str) for a in ctl['args']):
        raise ScenarioError('controller.args: must be an array of strings')
    if not isinstance(ctl['tls'], bool):
        raise ScenarioError('controller.tls: must be true or false')
    sc['controller'] = ctl
    hd = _obj(raw.get('hostd', {}), 'hostd', {'interval_s'})
    sc['hostd'] = {'interval_s': _num(hd.get('interval_s', ctl['interval_s']),
                                      'hostd.interval_s', lo=0.1, hi=60)}
    dcx = dc.DataCenter(sc['topology'], 'validate')
    vms = dcx.vm_info
    hyps = set(dcx.hyps)
    vd = _obj(raw.get('vm_defaults', {}), 'vm_defaults', {'memory_mb', 'vcpus', 'series'})
    defaults = {'memory_mb': 64, 'vcpus': 1, 'series': DEFAULT_SERIES}
    defaults.update(vd)
    sc['vms'] = {}
    rv = raw.get('vms', {})
    if not isinstance(rv, dict):
        raise ScenarioError('vms: must be an object keyed by VM name')
    for name in rv:
        if name not in vms:
            raise ScenarioError('vms.%s: no such VM in this topology (tv1..tv%d)'
                                % (name, len(vms)))
    for name in vms:
        v = dict(defaults)
        v.update(_obj(rv.get(name, {}), 'vms.%s' % name, {'memory_mb', 'vcpus', 'series'}))
        _num(v['memory_mb'], 'vms.%s.memory_mb' % name, lo=1, hi=4096, integer=True)
        _num(v['vcpus'], 'vms.%s.vcpus' % name, lo=1, hi=64, integer=True)
        validate_series(v['series'], 'vms.%s.series' % name)
        sc['vms'][name] = v
    groups(raw, sc, dcx)
    ends = set(vms) | set(sc['clients'])
    sc['traffic'] = []
    ports = set()
    for i, t in enumerate(_list(raw.get('traffic', []), 'traffic')):
        w = 'traffic[%d]' % i
        _obj(t, w, {'src', 'dst', 'proto', 'mbps', 'start_s', 'stop_s', 'port', 'label',
                    'pacing'})
        for k in ('src', 'dst'):
            if t.get(k) not in ends:
                raise ScenarioError('%s.%s: unknown VM or client %r' % (w, k, t.get(k)))
        if t['src'] == t['dst']:
            raise ScenarioError('%s: src and dst must differ' % w)
        if t['src'] in sc['clients'] and t['dst'] in sc['clients']:
            raise ScenarioError('%s: src and dst are both clients (one end must be a VM)' % w)
        e = {'src': t['src'], 'dst': t['dst'], 'proto': t.get('proto', 'udp')}
        if e['proto'] not in ('tcp', 'udp'):
            raise ScenarioError('%s.proto: "tcp" or "udp"' % w)
        e['mbps'] = _num(t.get('mbps'), w + '.mbps', lo=0, lo_open=True, hi=100)
        e['pacing'] = t.get('pacing', 'socket')
        if e['pacing'] not in ('socket', 'app'):
            raise ScenarioError('%s.pacing: "socket" (kernel pacing, TCP) or "app" '
                                '(iperf3 -b, catches up after stalls)' % w)
        e['start_s'] = _num(t.get('start_s', 0), w + '.start_s', lo=0)
        e['stop_s'] = _num(t.get('stop_s', sc['duration_s']), w + '.stop_s',
                           lo=e['start_s'] + 1)
        e['port'] = _num(t.get('port', 5301 + i), w + '.port', lo=1024, hi=65535, integer=True)
        if (e['dst'], e['port']) in ports:
            raise ScenarioError('%s.port: %d already used on %s' % (w, e['port'], e['dst']))
        ports.add((e['dst'], e['port']))
        e['label'] = t.get('label', '%s>%s' % (e['src'], e['dst']))
        sc['traffic'].append(e)
    sc['pings'] = []
    for i, p in enumerate(_list(raw.get('pings', []), 'pings')):
        w = 'pings[%d]' % i
        _obj(p, w, {'src', 'dst', 'start_s', 'stop_s', 'interval_s'})
        for k in ('src', 'dst'):
            if p.get(k) not in ends:
                raise ScenarioError('%s.%s: unknown VM or client %r' % (w, k, p.get(k)))
        e = {'src': p['src'], 'dst': p['dst']}
        e['start_s'] = _num(p.get('start_s', 0), w + '.start_s', lo=0)
        e['stop_s'] = _num(p.get('stop_s', sc['duration_s']), w + '.stop_s', lo=e['start_s'] + 1)
        e['interval_s'] = _num(p.get('interval_s', 0.2), w + '.interval_s', lo=0.2, hi=10)
        sc['pings'].append(e)
    sc['actions'] = []
    for i, a in enumerate(_list(raw.get('actions', []), 'actions')):
        w = 'actions[%d]' % i
        if not isinstance(a, dict):
            raise ScenarioError('%s: must be an object' % w)
        do = a.get('do')
        if do == 'migrate':
            _obj(a, w, {'at_s', 'do', 'vm', 'to', 'deadline_s', 'reserve', 'label'})
            if a.get('vm') not in vms:
                raise ScenarioError('%s.vm: unknown VM %r' % (w, a.get('vm')))
            if a.get('to') != 'auto' and a.get('to') not in hyps:
                raise ScenarioError('%s.to: a hypervisor (th1..th%d) or "auto"'
                                    % (w, len(hyps)))
            _num(a.get('deadline_s'), w + '.deadline_s', lo=0, lo_open=True, hi=3600)
            if not isinstance(a.get('reserve', True), bool):
                raise ScenarioError('%s.reserve: must be true or false' % w)
        elif do == 'policy':
            _obj(a, w, {'at_s', 'do', 'name', 'options', 'dry_run'})
            if not isinstance(a.get('name'), str):
                raise ScenarioError('%s.name: a policy name' % w)
            if not isinstance(a.get('options', {}), dict):
                raise ScenarioError('%s.options: must be an object' % w)
        elif do == 'mark':
            _obj(a, w, {'at_s', 'do', 'label'})
        else:
            raise ScenarioError('%s.do: "migrate", "policy" or "mark", got %r' % (w, do))
        e = dict(a)
        e['at_s'] = _num(a.get('at_s', 0), w + '.at_s', lo=0, hi=sc['duration_s'])
        e.setdefault('reserve', True)
        e.setdefault('label', do)
        sc['actions'].append(e)
    ck = _obj(raw.get('checks', {}), 'checks', {'cross_pod_ping', 'matrix_pairs'})
    sc['checks'] = {'cross_pod_ping': bool(ck.get('cross_pod_ping', False)),
                    'matrix_pairs': []}
    for i, pr in enumerate(_list(ck.get('matrix_pairs', []), 'checks.matrix_pairs')):
        if not (isinstance(pr, list) and len(pr) == 2 and all(x in ends for x in pr)):
            raise ScenarioError('checks.matrix_pairs[%d]: a [src, dst] pair of VMs or clients'
                                % i)
        sc['checks']['matrix_pairs'].append(pr)
    return sc


CLIENT_NET = '10.0.3.'


def _name(v, where):
    if not isinstance(v, str) or not v:
        raise ScenarioError('%s: must be a non-empty string' % where)
    return v


def groups(raw, sc, d):
    """The scenario's VIOLIN groups and external clients, validated into
    ``sc['environments']`` (name -> {members, head}), ``sc['domains']``
    (name -> hosts) and ``sc['clients']`` (name -> {switch, ip, mac, node})."""
    vms, hyps = d.vm_info, set(d.hyps)
    envs = raw.get('environments', {})
    if not isinstance(envs, dict):
        raise ScenarioError('environments: must be an object keyed by environment name')
    sc['environments'] = {}
    env_of = {}
    for name, e in envs.items():
        w = 'environments.%s' % name
        _obj(e, w, {'members', 'head'})
        members = _list(e.get('members'), w + '.members')
        if not members:
            raise ScenarioError('%s.members: must name at least one VM' % w)
        for i, m in enumerate(members):
            if m not in vms:
                raise ScenarioError('%s.members[%d]: unknown VM %r' % (w, i, m))
            if m in env_of:
                raise ScenarioError('%s.members[%d]: %s is already in environment %s'
                                    % (w, i, m, env_of[m]))
            env_of[m] = name
        head = e.get('head')
        if head is not None and head not in members:
            raise ScenarioError('%s.head: %r is not one of its members' % (w, head))
        sc['environments'][name] = {'members': list(members), 'head': head}
    doms = raw.get('domains', {})
    if not isinstance(doms, dict):
        raise ScenarioError('domains: must be an object keyed by domain name')
    sc['domains'] = {}
    dom_of = {}
    for name, hs in doms.items():
        w = 'domains.%s' % name
        hs = _list(hs, w)
        if not hs:
            raise ScenarioError('%s: must name at least one hypervisor' % w)
        for i, h in enumerate(hs):
            if h not in hyps:
                raise ScenarioError('%s[%d]: unknown hypervisor %r (th1..th%d)'
                                    % (w, i, h, len(hyps)))
            if h in dom_of:
                raise ScenarioError('%s[%d]: %s is already in domain %s' % (w, i, h, dom_of[h]))
            dom_of[h] = name
        sc['domains'][name] = list(hs)
    cl = raw.get('clients', {})
    if not isinstance(cl, dict):
        raise ScenarioError('clients: must be an object keyed by client name')
    if len(cl) > 20:
        raise ScenarioError('clients: at most 20')
    switches = d.cores + d.aggs + d.tors
    taken = set(vms) | set(d.all_switches()) | set(d.dom0.values())
    sc['clients'] = {}
    for j, name in enumerate(sorted(cl)):
        w = 'clients.%s' % name
        if not (name[:1].isalpha() and name.isalnum() and name.islower() and len(name) <= 8):
            raise ScenarioError('%s: a client name is 1-8 lower-case letters and digits, '
                                'starting with a letter' % w)
        if name in taken:
            raise ScenarioError('%s: the name is taken by the testbed' % w)
        c = _obj(cl[name], w, {'switch'})
        if c.get('switch') not in switches:
            raise ScenarioError('%s.switch: a core, aggregation or ToR switch (%s), got %r'
                                % (w, ', '.join(switches), c.get('switch')))
        sc['clients'][name] = {'switch': c['switch'], 'ip': '%s%d' % (CLIENT_NET, j + 1),
                               'mac': '02:74:63:00:00:%02x' % (j + 1),
                               'node': 'tx%d' % (j + 1)}


def controller_groups(sc):
    """The controller's ``[groups]`` table for the scenario's domains and
    environments (empty when it has none)."""
    g = {}
    if sc.get('domains'):
        g['domains'] = {k: list(v) for k, v in sc['domains'].items()}
    if sc.get('environments'):
        envs = []
        for name, e in sc['environments'].items():
            x = {'name': name, 'members': list(e['members'])}
            if e.get('head'):
                x['head'] = e['head']
            envs.append(x)
        g['environments'] = envs
    return g


def _list(v, where):
    if not isinstance(v, list):
        raise ScenarioError('%s: must be an array' % where)
    return v


# ---- controller configuration ----

def merge(base, over):
    """``over`` merged into ``base`` (tables recursively), as a new dict."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _toml_value(v, where):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError('%s: not a finite number' % where)
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return '[%s]' % ', '.join(_toml_value(x, where) for x in v)
    if isinstance(v, dict):
        # An inline table (inside arrays, e.g. [auth] operators).
        return '{ %s }' % ', '.join('%s = %s' % (k, _toml_value(x, where + '.' + k))
                                     for k, x in v.items())
    raise ValueError('%s: unsupported value %r' % (where, v))


def to_toml(d, prefix=''):
    """A dict of scalars and tables as TOML (what the controller reads)."""
    lines, tables = [], []
    for k, v in d.items():
        if not isinstance(k, str) or not k.replace('_', '').replace('-', '').isalnum():
            raise ValueError('bad key %r' % (k,))
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append('%s = %s' % (k, _toml_value(v, prefix + k)))
    for k, v in tables:
        name = prefix + k
        body = to_toml(v, name + '.')
        lines.append('')
        lines.append('[%s]' % name)
        lines.append(body)
    return '\n'.join(lines).strip('\n') + '\n' if not prefix else '\n'.join(lines).strip('\n')


# ---- VMPatrol pre-copy model, the same rules as shoal_common::vmpatrol ----

DOWNTIME_GOAL_S = 0.3
MIN_PROGRESS_MB = 1.0


def _ceil_log(base, x):
    if x >= 1.0:
        return 0
    if x <= 0.0:
        return 1000
    v = math.ceil(math.log(x) / math.log(base))
    return int(min(max(v, 0), 1000))


def vmpatrol_predict(m, r, bw, t_goal=DOWNTIME_GOAL_S, x=MIN_PROGRESS_MB):
    """Pre-copy prediction for memory ``m`` MiB, dirty rate ``r`` MiB/s and
    bandwidth ``bw`` MiB/s: dict(rounds, traffic_mb, time_s, downtime_s), or
    None when it does not converge (bw <= r)."""
    if bw <= r or bw <= 0 or m <= 0:
        return None
    if r == 0:
        return {'bandwidth_mbps': bw, 'rounds': 1, 'traffic_mb': m, 'time_s': m / bw,
                'downtime_s': 0.0}
    q = r / bw
    n = min(_ceil_log(q, t_goal * bw / m), _ceil_log(q, x * r / (m * (bw - r))))
    traffic = m * (1 - q ** (n + 1)) / (1 - q)
    return {'bandwidth_mbps': bw, 'rounds': n, 'traffic_mb': traffic, 'time_s': traffic / bw,
            'downtime_s': (m / bw) * q ** n}


def vmpatrol_min_bandwidth(m, r, deadline_s, max_bw):
    """Smallest bandwidth (MiB/s) whose predicted time meets the deadline, with
    its prediction; None when even ``max_bw`` cannot."""
    def meets(bw):
        p = vmpatrol_predict(m, r, bw)
        return p if p and p['time_s'] <= deadline_s else None
    lo = max(r * (1 + 1e-9), m / deadline_s, 1e-9)
    if lo > max_bw:
        return None
    if meets(lo):
        return meets(lo)
    prev = lo
    while True:
        nxt = min(prev * 1.01, max_bw)
        best = meets(nxt)
        if best:
            a, b = prev, nxt
            for _ in range(60):
                mid = 0.5 * (a + b)
                p = meets(mid)
                if p:
                    b, best = mid, p
                else:
                    a = mid
                if b - a <= 1e-9 * b:
                    break
            return best
        if nxt >= max_bw:
            return None
        prev = nxt


# ---- the same scenario for the simulator (docs/scenario.md) ----

def to_simulator(sc, rounds=None, traffic_overhead=1.0):
    """The testbed scenario as a simulator scenario: same switch tree, hosts
    with the emulated capacities, VMs with their CPU/memory series sampled
    once per controller interval, and the iperf3 flows as λ series.

    Round ``r`` of the simulator is the controller evaluation at
    ``t = (r + 1) * Δ`` seconds after the host daemons started (their series
    epoch); a flow counts in a round when it runs during that interval.
    ``traffic_overhead`` scales payload rates to the Ethernet-frame rates the
    controller measures (e.g. 1.03 for UDP with 1400-byte datagrams).
    """
    p = sc['topology']
    d = dc.DataCenter(p, 'sim')
    step = sc['controller']['interval_s']
    if rounds is None:
        rounds = max(1, int(sc['duration_s'] // step))
    switches = []
    for c in d.cores:
        switches.append({'id': c, 'level': 'core', 'uplinks': []})
    for a in d.aggs:
        switches.append({'id': a, 'level': 'aggregation', 'uplinks': d.core_uplinks(a),
                         'uplink_bps': p['link_mbps'] * 1e6})
    A = p['aggs_per_pod']
    for t in d.tors:
        pod = d.pod_of[t]
        switches.append({'id': t, 'level': 'tor', 'uplinks': d.aggs[pod * A:(pod + 1) * A],
                         'uplink_bps': p['link_mbps'] * 1e6})
    hosts = [{'id': h, 'tor': d.tor_of[h], 'cores': p['host_cores'],
              'memory_mb': p['host_memory_mb'], 'nic_bps': p['host_link_mbps'] * 1e6,
              'vf_count': p['vf_per_host']} for h in d.hyps]
    for dom, hs in sc.get('domains', {}).items():
        for hst in hosts:
            if hst['id'] in hs:
                hst['domain'] = dom
    env_of, heads = {}, set()
    for env, e in sc.get('environments', {}).items():
        for m in e['members']:
            env_of[m] = env
        if e.get('head'):
            heads.add(e['head'])
    times = [(r + 1) * step for r in range(rounds)]
    vms = []
    for h in d.hyps:
        for vm in d.vms_of[h]:
            v = sc['vms'][vm]
            s = v['series']
            vms.append({
                'name': vm, 'host': h, 'ip': d.vm_info[vm]['ip'],
                'memory_mb': v['memory_mb'], 'vcpus': v['vcpus'],
                'dirty_rate_mbps': series_max(s, 'dirty_mbps'),
                'vf': False,
                'cpu': [series_at(s, t, 'cpu') * v['vcpus'] for t in times],
                'mem_used_mb': [min(series_at(s, t, 'mem_mb'), v['memory_mb']) for t in times],
            })
            if vm in env_of:
                vms[-1]['environment'] = env_of[vm]
                if vm in heads:
                    vms[-1]['head'] = True
    traffic = {}
    for f in sc['traffic']:
        key = (f['src'], f['dst'])
        series = traffic.setdefault(key, [0.0] * rounds)
        for r, t in enumerate(times):
            lo, hi = t - step, t
            overlap = max(0.0, min(hi, f['stop_s']) - max(lo, f['start_s']))
            series[r] += f['mbps'] * 1e6 / 8 * traffic_overhead * overlap / step
    out = {
        'name': sc['name'] + ' (testbed)',
        'interval_s': step,
        'rounds': rounds,
        'topology': {'switches': switches},
        'hosts': hosts,
        'vms': vms,
        'traffic': [{'src': s, 'dst': t, 'bytes_per_s': v} for (s, t), v in sorted(traffic.items())],
    }
    if sc.get('clients'):
        # External endpoints (not placed, never migrated) attached to a
        # switch of the tree.
        out['externals'] = [{'name': n, 'switch': c['switch'], 'ip': c['ip']}
                            for n, c in sorted(sc['clients'].items())]
    return out
