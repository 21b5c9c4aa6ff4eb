// Shoal's dashboard: one snapshot (GET /api/v1/dashboard) drawn into the
// page, taken again on every event of the live stream (GET /api/v1/events,
// debounced) and every few seconds for the rates. No library; every text
// from the controller is set with textContent, never parsed as HTML.
'use strict';

// Errors are kept where a test (or an operator's console) can read them.
window.__shoalErrors = [];
window.addEventListener('error', (e) => {
  window.__shoalErrors.push(String(e.message || e));
});
window.addEventListener('unhandledrejection', (e) => {
  window.__shoalErrors.push('unhandled rejection: ' + String(e.reason));
});

const SVG = 'http://www.w3.org/2000/svg';
const TOP = 20;
const REFRESH_MS = 3000;
const EVENTS_KEPT = 60;
const EVENT_KINDS = ['switch_up', 'switch_down', 'link_up', 'link_down', 'endpoint_learned',
  'endpoint_moved', 'hotspot_raised', 'hotspot_cleared', 'decision', 'migration',
  'reservation', 'vf_moved', 'policy_changed', 'rules_changed', 'groups_changed',
  'automation_changed', 'recommendation', 'decision_approved', 'decision_rejected',
  'maintenance_started', 'maintenance_ended', 'maintenance_vm', 'maintenance_drained',
  'audit', 'gap'];

let session = null;   // {name, role, csrf}
let last = null;      // the latest snapshot
let pending = null;   // a debounced refresh
let inflight = false;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function rate(bps) {
  // bytes/s as bit/s, human.
  const b = bps * 8;
  if (b >= 1e9) return (b / 1e9).toFixed(2) + ' Gbit/s';
  if (b >= 1e6) return (b / 1e6).toFixed(2) + ' Mbit/s';
  if (b >= 1e3) return (b / 1e3).toFixed(1) + ' kbit/s';
  return b.toFixed(0) + ' bit/s';
}

function pct(x) { return x == null ? '–' : (100 * x).toFixed(0) + ' %'; }
function secs(x) { return x == null ? '–' : x.toFixed(1) + ' s'; }
function clock(ms) { return new Date(ms).toLocaleTimeString(); }

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method !== 'GET' && session && session.csrf) opts.headers['X-Shoal-CSRF'] = session.csrf;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    // The session ended (expired, signed out elsewhere, reload): sign in again.
    window.location.assign('/');
    throw new Error('signed out');
  }
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { msg += ': ' + (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.status === 204 ? null : r.json();
}

// ---------------------------------------------------------------- topology

function loadClass(u) {
  if (!(u > 0.001)) return '#3b4b5c';
  if (u < 0.25) return '#3fae5a';
  if (u < 0.5) return '#c9c33a';
  if (u < 0.75) return '#e08a2c';
  return '#e0453a';
}

function layout(snap) {
  // Rows by level (hypervisor bridges at the bottom, the core on top;
  // switches no bridge reaches in a row of their own above), each row
  // ordered by the mean position of its neighbours below.
  const levels = new Map();
  let maxLevel = 0;
  for (const s of snap.switches) {
    const l = s.level == null ? -1 : s.level;
    maxLevel = Math.max(maxLevel, l);
    if (!levels.has(l)) levels.set(l, []);
    levels.get(l).push(s);
  }
  const adj = new Map();
  for (const l of snap.links) {
    if (!adj.has(l.a)) adj.set(l.a, []);
    if (!adj.has(l.b)) adj.set(l.b, []);
    adj.get(l.a).push(l.b);
    adj.get(l.b).push(l.a);
  }
  const rows = [];
  for (let l = 0; l <= maxLevel; l++) if (levels.has(l)) rows.push(levels.get(l));
  if (levels.has(-1)) rows.push(levels.get(-1));
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const width = Math.max(800, widest * 90);
  const rowH = 80;
  const height = rows.length * rowH + 50;
  const pos = new Map();
  rows.forEach((row, i) => {
    if (i === 0) {
      row.sort((a, b) => (a.hypervisor || a.dpid).localeCompare(b.hypervisor || b.dpid));
    } else {
      const key = (s) => {
        const xs = (adj.get(s.dpid) || []).filter((d) => pos.has(d)).map((d) => pos.get(d).x);
        return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : width / 2;
      };
      row.sort((a, b) => key(a) - key(b) || a.dpid.localeCompare(b.dpid));
    }
    const y = height - 50 - i * rowH;
    row.forEach((s, j) => pos.set(s.dpid, { x: ((j + 0.5) * width) / row.length, y }));
  });
  return { pos, width, height };
}

function drawTopology(snap) {
  const root = $('topology');
  const { pos, width, height } = layout(snap);
  root.setAttribute('viewBox', `0 0 ${width} ${height}`);
  root.style.height = Math.min(560, Math.max(260, height)) + 'px';
  root.replaceChildren();
  const hostsByDpid = new Map();
  for (const h of snap.hosts.shown) if (h.dpid) hostsByDpid.set(h.dpid, h);
  for (const l of snap.links) {
    const a = pos.get(l.a);
    const b = pos.get(l.b);
    if (!a || !b) continue;
    const line = svg('line', {
      x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      stroke: loadClass(l.utilisation),
      'stroke-width': 2 + Math.min(6, 8 * l.utilisation),
      class: 'link',
      'data-link': `${l.a}:${l.a_port}-${l.b}:${l.b_port}`,
      'data-bps': l.bytes_per_s,
    });
    const t = svg('title');
    t.textContent = `${l.a} port ${l.a_port} ↔ ${l.b} port ${l.b_port}: ${rate(l.bytes_per_s)}`
      + ` (${pct(l.utilisation)} of ${rate(l.capacity_bps / 8)})`
      + (l.reserved_bytes_per_s > 0 ? `; reserved ${rate(l.reserved_bytes_per_s)}` : '');
    line.append(t);
    root.append(line);
    if (l.reserved_bytes_per_s > 0) {
      root.append(svg('line', {
        x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: '#b565e0', 'stroke-width': 2,
        'stroke-dasharray': '6 5', class: 'reserved',
      }));
    }
  }
  for (const s of snap.switches) {
    const p = pos.get(s.dpid);
    const g = svg('g', {
      class: 'node ' + (s.hypervisor ? 'bridge' : 'fabric'),
      'data-dpid': s.dpid,
      transform: `translate(${p.x},${p.y})`,
    });
    g.append(svg('circle', { r: s.hypervisor ? 11 : 9 }));
    const label = svg('text', { y: -15 });
    label.textContent = s.hypervisor || shortDpid(s.dpid);
    g.append(label);
    const t = svg('title');
    t.textContent = `${s.dpid}${s.hypervisor ? ' (bridge of ' + s.hypervisor + ')' : ''}, ${s.ports} ports`;
    g.append(t);
    const h = hostsByDpid.get(s.dpid);
    if (h) {
      const v = svg('text', { y: 26, class: 'vms' });
      v.textContent = h.vms <= 3 && h.vm_names.length === h.vms
        ? h.vm_names.join(' ')
        : `${h.vms} VMs`;
      g.append(v);
    }
    root.append(g);
  }
  $('topo-summary').textContent =
    `${snap.switches.length} switches, ${snap.links.length} links, ${snap.hosts.total} hosts, ${snap.hosts.vms} VMs`;
}

function shortDpid(d) {
  const s = d.replace(/^0+/, '');
  return s.length ? s : '0';
}

// ------------------------------------------------------------------ matrix

function heat(x) {
  // 0..1 to a colour from dark blue to red.
  const h = 220 - 220 * x;
  return `hsl(${h}, 70%, ${22 + 30 * x}%)`;
}

function drawMatrix(snap) {
  const m = snap.matrix;
  const root = $('heatmap');
  root.replaceChildren();
  $('matrix-summary').textContent =
    `${m.pairs} pairs; IDC ${rate(m.idc_bytes_per_s)}, NIC ${rate(m.nic_bytes_per_s)}; window ${m.window_s} s`;
  if (!m.cells.length) {
    root.append(el('p', { class: 'empty', text: 'no traffic measured yet' }));
    return;
  }
  const max = Math.max(...m.cells.map((c) => c.bytes_per_s));
  const at = new Map(m.cells.map((c) => [c.src + '\u0000' + c.dst, c]));
  const hottest = m.cells[0];
  const head = el('tr', {}, el('th', { text: 'src \\ dst' }));
  for (const v of m.vms) head.append(el('th', { class: 'col', text: v }));
  const table = el('table', { id: 'heat' }, el('thead', {}, head));
  const body = el('tbody');
  for (const src of m.vms) {
    const tr = el('tr', {}, el('th', { text: src }));
    for (const dst of m.vms) {
      const c = at.get(src + '\u0000' + dst);
      const td = el('td', { class: 'cell' });
      if (c) {
        const x = max > 0 ? Math.log1p(c.bytes_per_s) / Math.log1p(max) : 0;
        td.style.background = heat(x);
        td.dataset.src = c.src;
        td.dataset.dst = c.dst;
        td.dataset.bps = String(c.bytes_per_s);
        td.dataset.class = c.class;
        td.title = `${c.src} → ${c.dst}: ${rate(c.bytes_per_s)} (${c.class})`;
        td.textContent = c.class === 'idc' ? 'i' : '';
        if (c === hottest) td.classList.add('hottest');
      }
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
  root.append(table);
  const list = el('ol', { class: 'feed pairs' });
  for (const c of m.cells.slice(0, 8)) {
    list.append(el('li', {}, el('span', { class: 'kind', text: c.class }),
      `${c.src} → ${c.dst}  ${rate(c.bytes_per_s)}`));
  }
  root.append(list);
}

// ------------------------------------------------------------------- hosts

function bar(x) {
  const b = el('span', { class: 'bar' + (x > 0.9 ? ' crit' : x > 0.7 ? ' warn' : '') });
  const i = el('i');
  i.style.width = Math.max(0, Math.min(100, 100 * (x || 0))) + '%';
  b.append(i);
  return b;
}

function drawHosts(snap) {
  const tbody = $('hosts').querySelector('tbody');
  tbody.replaceChildren();
  for (const h of snap.hosts.shown) {
    const hot = el('td');
    for (const r of h.hot) hot.append(el('span', { class: 'hot', text: r }));
    const net = h.net_bytes_per_s == null ? '–'
      : rate(h.net_bytes_per_s) + (h.nic_bps ? ` (${pct((8 * h.net_bytes_per_s) / h.nic_bps)})` : '');
    tbody.append(el('tr', { 'data-host': h.id },
      el('td', { text: h.id }),
      el('td', {}, bar(h.cpu), pct(h.cpu)),
      el('td', {}, bar(h.mem), pct(h.mem)),
      el('td', { text: net }),
      el('td', { text: h.swap_out_pages_per_s == null ? '–' : h.swap_out_pages_per_s.toFixed(0) + ' p/s' }),
      el('td', { text: String(h.vms), title: h.vm_names.join(', ') }),
      el('td', { text: `${h.vf_attached.length}/${h.vf_count}`, title: h.vf_attached.join(', ') }),
      hot));
  }
  const shown = snap.hosts.shown.length;
  $('hosts-summary').textContent = `${snap.hosts.hot} hot of ${snap.hosts.total}`
    + (shown < snap.hosts.total ? `; the ${shown} hottest and busiest shown` : '');
}

// -------------------------------------------------------------- migrations

function drawMigrations(snap) {
  const root = $('migrations');
  root.replaceChildren();
  const by = Object.entries(snap.migrations.by_state).map(([k, v]) => `${v} ${k}`).join(', ');
  $('migrations-summary').textContent = by || 'none yet';
  if (!snap.migrations.shown.length) {
    root.append(el('p', { class: 'empty', text: 'no migration yet' }));
    return;
  }
  const now = snap.at_unix_ms;
  for (const m of snap.migrations.shown) {
    const started = m.started_unix_ms;
    const ended = m.ended_unix_ms;
    const actual = started ? ((ended || now) - started) / 1000 : null;
    const predicted = m.predicted ? m.predicted.time_s : null;
    const prog = m.progress;
    const frac = m.state === 'done' ? 1
      : prog && prog.total_bytes > 0 ? Math.min(1, prog.transferred_bytes / prog.total_bytes) : 0;
    const left = el('div', {},
      el('strong', { text: m.vm }), ` ${m.from} → ${m.to}`,
      el('span', { class: 'state ' + m.state, text: m.state }),
      el('div', { class: 'muted', text: `${m.id}; ${m.reason}` }));
    const mid = el('div', {},
      el('div', { class: 'path', text: m.path.map(shortDpid).join(' → ') || '(no path yet)' }),
      el('div', { class: 'muted',
        text: (m.reserve ? `reserved ${rate(m.bandwidth_bytes_per_s)} on ${m.path.length} switches`
          : 'no reservation')
          + `; ${(100 * frac).toFixed(0)} % moved`
          + (m.error ? `; ${m.error}` : '') }));
    // A timeline: elapsed (bar) against predicted (tick) and deadline (red).
    const span = Math.max(m.deadline_s || 0, predicted || 0, actual || 0, 1) * 1.1;
    const x = (t) => 4 + (292 * t) / span;
    const tl = svg('svg', { viewBox: '0 0 300 26' });
    tl.append(svg('rect', { x: 4, y: 9, width: 292, height: 8, fill: '#26384a', rx: 3 }));
    if (actual != null) {
      tl.append(svg('rect', {
        x: 4, y: 9, width: Math.max(1, x(actual) - 4), height: 8, rx: 3,
        fill: m.state === 'failed' ? '#e0453a' : m.state === 'done' ? '#3fae5a' : '#2f7dd1',
      }));
    }
    if (predicted != null) {
      tl.append(svg('line', { x1: x(predicted), x2: x(predicted), y1: 3, y2: 23, stroke: '#dde3ea', 'stroke-width': 2 }));
    }
    if (m.deadline_s) {
      tl.append(svg('line', { x1: x(m.deadline_s), x2: x(m.deadline_s), y1: 3, y2: 23, stroke: '#e0453a', 'stroke-width': 2 }));
    }
    const tt = svg('title');
    tt.textContent = `actual ${secs(actual)}, predicted ${secs(predicted)}, deadline ${secs(m.deadline_s)}`;
    tl.append(tt);
    const right = el('div', {}, tl,
      el('div', { class: 'muted', text: `actual ${secs(actual)} / predicted ${secs(predicted)} / deadline ${secs(m.deadline_s)}` }));
    root.append(el('div', {
      class: 'mig', 'data-id': m.id, 'data-vm': m.vm, 'data-state': m.state,
      'data-path': m.path.join(','),
    }, left, mid, right));
  }
}

// --------------------------------------------------------------- decisions

function drawDecisions(snap) {
  const root = $('decisions');
  root.replaceChildren();
  if (!snap.decisions.length) {
    root.append(el('li', { class: 'empty', text: 'no decision yet' }));
    return;
  }
  for (const d of [...snap.decisions].reverse()) {
    const what = d.action === 'migrate' ? `migrate ${d.vm} ${d.from} → ${d.to}`
      : d.action === 'attach_vf' ? `give ${d.vm} a VF on ${d.host}`
      : d.action === 'detach_vf' ? `take ${d.vm}'s VF on ${d.host}`
      : `${d.action} ${d.vm || ''}`;
    root.append(el('li', { 'data-decision': String(d.id) },
      el('span', { class: 'kind', text: `${clock(d.at_unix_ms)} ${d.policy}` }),
      el('strong', { text: what }), ` (${d.outcome})`,
      el('div', { class: 'muted', text: d.reason })));
  }
  $('vf-summary').textContent = `VFs: ${snap.vfs.attached} of ${snap.vfs.total} attached`;
}

// ------------------------------------------------------------------ header

function drawHeader(snap) {
  $('policy').textContent = `policy ${snap.policy}${snap.dry_run ? ' (dry run)' : ''}`;
  $('round').textContent = `round ${snap.round}, ${clock(snap.at_unix_ms)}`;
  const b = $('dryrun');
  b.textContent = snap.dry_run ? 'let the policy act' : 'dry run';
}

function draw(snap) {
  last = snap;
  drawHeader(snap);
  drawTopology(snap);
  drawMatrix(snap);
  drawHosts(snap);
  drawMigrations(snap);
  drawDecisions(snap);
  document.body.dataset.snapshot = String(snap.at_unix_ms);
}

async function refresh() {
  pending = null;
  if (inflight) { soon(); return; }
  inflight = true;
  try {
    draw(await api('GET', `/api/v1/dashboard?top=${TOP}`));
  } catch (e) {
    if (String(e.message) !== 'signed out') console.warn('dashboard refresh failed:', e.message);
  } finally {
    inflight = false;
  }
}

function soon() {
  if (!pending) pending = setTimeout(refresh, 250);
}

// ------------------------------------------------------------------ events

function logEvent(kind, data) {
  const root = $('events');
  const text = JSON.stringify(data.data === undefined ? data : data.data);
  root.prepend(el('li', { 'data-kind': kind },
    el('span', { class: 'kind', text: `${clock(data.at_unix_ms || Date.now())} ${kind}` }),
    text.length > 160 ? text.slice(0, 157) + '…' : text));
  while (root.children.length > EVENTS_KEPT) root.lastChild.remove();
}

function stream() {
  const es = new EventSource('/api/v1/events');
  const state = $('stream');
  es.onopen = () => { state.textContent = 'events: live'; state.className = 'pill on'; };
  es.onerror = () => {
    // EventSource reconnects by itself, with Last-Event-ID.
    state.textContent = 'events: reconnecting'; state.className = 'pill off';
  };
  for (const k of EVENT_KINDS) {
    es.addEventListener(k, (ev) => {
      let data = {};
      try { data = JSON.parse(ev.data); } catch (_) { data = { raw: ev.data }; }
      logEvent(k, data);
      soon();
    });
  }
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    session = await api('GET', '/api/v1/session');
  } catch (e) {
    return;
  }
  $('who').textContent = `${session.name} (${session.role})`;
  $('signout').addEventListener('click', async () => {
    try { await api('DELETE', '/api/v1/session'); } catch (_) { /* gone anyway */ }
    window.location.assign('/');
  });
  if (session.role === 'write') {
    const b = $('dryrun');
    b.classList.remove('hidden');
    b.addEventListener('click', async () => {
      try {
        const p = await api('GET', '/api/v1/policy');
        p.dry_run = !p.dry_run;
        await api('PUT', '/api/v1/policy', p);
        soon();
      } catch (e) {
        console.warn('policy change failed:', e.message);
      }
    });
  }
  await refresh();
  stream();
  setInterval(refresh, REFRESH_MS);
}

start();
