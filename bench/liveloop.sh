#!/usr/bin/env bash
# The live MAPE-K loop at scale: builds shoal-controller and hostswarm
# (release), starts a controller with a temporary configuration on free
# ports (policy in dry run: no host daemon is called), lets hostswarm
# register HOSTS hosts with VMS VMs and post RATE reports/s through the
# real API for DURATION s, and prints a markdown section with the round
# times (GET /api/v1/loop), the report latency and the controller's CPU
# and memory, and the size and time of the dashboard's snapshot
# (GET /api/v1/dashboard) at that scale.
#
#   bench/liveloop.sh                 # 640 hosts, 10,000 VMs, 1,000 reports/s, 60 s
#   HOSTS=64 VMS=1000 DURATION=20 bench/liveloop.sh
#   bench/liveloop.sh --write-doc     # also replace the section in docs/performance.md
#
# Environment: HOSTS (640), VMS (10000), RATE (1000), DURATION (60),
# WARMUP (10), INTERVAL (the controller's monitoring interval = one round
# per interval, 2 s), POLICY (sandpiper), SEED (1), CONCURRENCY (64),
# WORK (a fresh directory under target/liveloop), JOBS (cargo -j, 1).
# Needs cargo, python3 and curl. Writes WORK/summary.json, WORK/section.md
# and the controller's log WORK/controller.log. The hand-written findings in
# bench/liveloop-notes.md are appended to the section.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
HOSTS=${HOSTS:-640}
VMS=${VMS:-10000}
RATE=${RATE:-1000}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
INTERVAL=${INTERVAL:-2}
POLICY=${POLICY:-sandpiper}
SEED=${SEED:-1}
CONCURRENCY=${CONCURRENCY:-64}
JOBS=${JOBS:-1}
write_doc=0
for a in "$@"; do
    case $a in
        --write-doc) write_doc=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "liveloop.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

cd "$root"
echo "liveloop.sh: building (release)..." >&2
nice -n 19 cargo build --release -j "$JOBS" -p shoal-controller -p hostswarm >&2
ctl_bin=$root/target/release/shoal-controller
swarm_bin=$root/target/release/hostswarm

WORK=${WORK:-$root/target/liveloop/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$WORK"
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
api_port=$(free_port)
of_port=$(free_port)
api=http://127.0.0.1:$api_port

umask 077
python3 -c 'import secrets; print(secrets.token_hex(24))' > "$WORK/reader.token"
"$swarm_bin" --write-host-tokens "$WORK/hosts" --hosts "$HOSTS"
cat > "$WORK/controller.toml" <<EOF
of_listen = "127.0.0.1:$of_port"
api_listen = "127.0.0.1:$api_port"
db = "$WORK/shoal.db"
log_filter = "warn"
[monitor]
interval_s = $INTERVAL
[policy]
name = "$POLICY"
dry_run = true
[auth]
host_tokens_dir = "$WORK/hosts"
operators = [ { name = "bench", role = "read", token_file = "$WORK/reader.token" } ]
EOF

"$ctl_bin" --config "$WORK/controller.toml" > "$WORK/controller.log" 2>&1 &
ctl_pid=$!
cleanup() {
    if kill -0 "$ctl_pid" 2>/dev/null; then
        kill "$ctl_pid" 2>/dev/null || true
        wait "$ctl_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "$api/healthz" > /dev/null 2>&1 && break
    kill -0 "$ctl_pid" 2>/dev/null || { echo "liveloop.sh: the controller exited; see $WORK/controller.log" >&2; exit 1; }
    sleep 0.1
done

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
# The doc itself does not count (compare.sh rewrites it just before).
dirty=$(git -C "$root" status --porcelain --untracked-files=no -- . ':!docs/performance.md' 2>/dev/null | head -c1)
[ -n "$dirty" ] && commit="$commit (with uncommitted changes)"
swarm_cmd="hostswarm --api http://127.0.0.1:PORT --token-file reader.token --host-tokens-dir hosts --hosts $HOSTS --vms $VMS --rate $RATE --duration $DURATION --warmup $WARMUP --seed $SEED --concurrency $CONCURRENCY --cpu-pid PID --json"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
"$swarm_bin" --api "$api" --token-file "$WORK/reader.token" --host-tokens-dir "$WORK/hosts" \
    --hosts "$HOSTS" --vms "$VMS" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" \
    --seed "$SEED" --concurrency "$CONCURRENCY" --cpu-pid "$ctl_pid" --json > "$WORK/summary.json"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
# The dashboard's snapshot at this scale (GET /api/v1/dashboard, top 20):
# its size and time, 20 requests one after another.
: > "$WORK/dashboard.txt"
for _ in $(seq 1 20); do
    curl -fsS -o /dev/null -w '%{size_download} %{time_total}\n' \
        -H "Authorization: Bearer $(cat "$WORK/reader.token")" "$api/api/v1/dashboard?top=20" \
        >> "$WORK/dashboard.txt" || echo "fail 0" >> "$WORK/dashboard.txt"
done
cleanup

python3 - "$WORK/summary.json" "$WORK/section.md" <<EOF
import json, sys
s = json.load(open(sys.argv[1]))
r, rd, c = s["reports"], s["round"], s.get("controller") or {}
lat = r.get("latency") or {}
def f(x, d=1):
    return "–" if x is None else f"{x:,.{d}f}"
def st(k):
    x = rd.get(k) or {}
    return [f(x.get(q)) for q in ("last", "p50", "p99", "max")]
o = []
w = o.append
w("<!-- live loop: generated by bench/liveloop.sh -->")
w("## Live loop at 10,000 VMs")
w("")
w(f"Measured $started on the machine above, commit \`$commit\`, release build, by "
  f"\`HOSTS=$HOSTS VMS=$VMS RATE=$RATE DURATION=$DURATION WARMUP=$WARMUP "
  f"INTERVAL=$INTERVAL POLICY=$POLICY bench/liveloop.sh --write-doc\`. The controller ran with \`[monitor] interval_s = $INTERVAL\` "
  f"(one round every $INTERVAL s), policy \`$POLICY\` in dry run (decisions recorded, no host "
  f"daemon called), an SQLite knowledge file, and no switches. \`hostswarm\` (bench/hostswarm) "
  f"registered {s['hosts']} hosts with {s['vms']:,} VMs ({s['hot_hosts']} hosts hot: VMs at 90–100 % CPU) "
  f"through \`PUT /api/v1/hosts/{{id}}\`, each host with its own token, then every host posted a report "
  f"every {s['interval_s']:.2f} s (\`POST /api/v1/hosts/{{id}}/reports\`, {s['vms'] // max(s['hosts'], 1)}–"
  f"{-(-s['vms'] // max(s['hosts'], 1))} VMs each) for a $WARMUP s warm-up and {s['duration_s']:.0f} s measured. "
  f"Load average $load_start at the start, $load_end at the end (other builds and tests shared the cores).")
w("")
w("| round time, ms | last | p50 | p99 | max |")
w("|---|---|---|---|---|")
w("| whole round | " + " | ".join(st("total_ms")) + " |")
w("| snapshot | " + " | ".join(st("snapshot_ms")) + " |")
w("| Analyze + Plan | " + " | ".join(st("analyze_plan_ms")) + " |")
w("| Execute (dry run: record) | " + " | ".join(st("execute_ms")) + " |")
w("| CPU time of snapshot + Analyze + Plan | " + " | ".join(st("cpu_ms")) + " |")
w("| CPU time of the snapshot alone | " + " | ".join(st("snapshot_cpu_ms")) + " |")
w("")
w(f"Rounds: the last {rd.get('window')} of {rd.get('round')} (\`GET /api/v1/loop\`); "
  f"{(rd.get('last') or {}).get('vms', '–')} VMs and {(rd.get('last') or {}).get('hosts', '–')} hosts "
  f"in the last snapshot; hotspots in the latest round: {s.get('hotspots')}; decisions shown: {s.get('decisions')}. "
  f"Target of issue 15: round ≤ 100 ms.")
w("")
w("| reports | |")
w("|---|---|")
w(f"| target / achieved | {f(r['target_per_s'], 0)} /s / {f(r['achieved_per_s'])} /s |")
w(f"| sent / accepted / errors | {r['sent']:,} / {r['accepted']:,} / {sum(r['errors_by_status'].values()) + r['transport_errors']} {r['errors_by_status'] or ''} |")
w(f"| latency p50 / p99 / p99.9 / max | {f(lat.get('p50_ms'), 2)} / {f(lat.get('p99_ms'), 2)} / {f(lat.get('p999_ms'), 2)} / {f(lat.get('max_ms'), 2)} ms |")
w(f"| registration of all hosts | {s['registration_s']:.2f} s |")
w(f"| controller CPU (over the measurement) | {f(c.get('cpu_cores'), 3)} cores |")
w(f"| controller RSS at the end | {f(c.get('rss_mb'), 0)} MiB |")
w("")
rows = [l.split() for l in open("$WORK/dashboard.txt") if l.strip()]
ok = sorted((int(b), float(t) * 1000) for b, t in rows if b != "fail")
if ok:
    ts = sorted(t for _, t in ok)
    w(f"The dashboard's snapshot at this scale (\`GET /api/v1/dashboard?top=20\`, {len(ok)} of {len(rows)} "
      f"requests answered, one at a time, after the reports stopped): {ok[-1][0]:,} bytes; "
      f"{ts[len(ts) // 2]:.1f} ms median, {ts[-1]:.1f} ms max. Its size depends on the switches and "
      f"\`top\`, not on the {s['vms']:,} VMs.")
    w("")
w("Command (\`PID\`: the controller's; ports are free ones picked per run):")
w("")
w("\`\`\`sh")
w("$swarm_cmd")
w("\`\`\`")
try:
    notes = open("$root/bench/liveloop-notes.md").read().rstrip("\n")
    w("")
    w(notes)
except OSError:
    pass
w("<!-- end of live loop -->")
open(sys.argv[2], "w").write("\n".join(o) + "\n")
print("\n".join(o))
EOF

if [ "$write_doc" = 1 ]; then
    python3 - "$root/docs/performance.md" "$WORK/section.md" <<'EOF'
import sys
doc, sec = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(doc).read()
b, e = "<!-- live loop: generated by bench/liveloop.sh -->", "<!-- end of live loop -->"
if b in text and e in text:
    text = text[:text.index(b)] + sec + text[text.index(e) + len(e):]
elif "\n## Commands\n" in text:
    i = text.index("\n## Commands\n") + 1
    text = text[:i] + sec + "\n\n" + text[i:]
else:
    text = text.rstrip("\n") + "\n\n" + sec + "\n"
open(doc, "w").write(text)
print(f"liveloop.sh: {doc} updated", file=sys.stderr)
EOF
fi
