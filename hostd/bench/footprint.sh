#!/usr/bin/env bash
# Measures shoal-hostd's memory and CPU footprint: a release build running
# N QEMU test guests (TCG, 128 MB, dirtying 5 MiB/s) at interval 10 s,
# reporting to a stand-in controller on loopback. After a warm-up, reads
# VmRSS from /proc/<pid>/status and utime+stime from /proc/<pid>/stat over
# DUR seconds. Needs root, QEMU and the test guest (see hostd/guest/).
#   N=4 DUR=60 WARMUP=20 hostd/bench/footprint.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=${N:-4}; DUR=${DUR:-60}; WARMUP=${WARMUP:-20}
cd "$root"
cargo build --release -q -p shoal-hostd
guest=$("$root/hostd/guest/build.sh" | tail -1)
dir=$(mktemp -d /tmp/shd-footprint.XXXXXX)
echo "shd-footprint-token" > "$dir/token"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# Stand-in controller: answers 200 {} to everything.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$port" <<'PY' &
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    do_PUT = do_POST = do_GET = handle_any
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)

{
  echo "host_id = \"shd-footprint\""
  echo "controller = \"http://127.0.0.1:$port\""
  echo "listen = \"127.0.0.1:$api\""
  echo "token_file = \"$dir/token\""
  echo "interval_s = 10"
  echo "run_dir = \"$dir/run\""
  cat <<TEMPLATE
[templates.footprint]
args = ["-accel", "tcg,tb-size=16", "-m", "{memory_mb}", "-smp", "{vcpus}", "-nodefaults", "-vga", "none", "-display", "none", "-no-reboot", "-kernel", "$guest/vmlinuz", "-initrd", "$guest/initramfs.gz", "-append", "console=ttyS0 quiet panic=-1 shoal.dirty=5"]
TEMPLATE
  for i in $(seq 1 "$N"); do
    cat <<VM
[[vm]]
name = "shd-fp$i"
mac = "52:54:00:5d:ff:0$i"
memory_mb = 128
backend = "qemu"
template = "footprint"
VM
  done
} > "$dir/hostd.toml"

RUST_LOG=warn "$root/target/release/shoal-hostd" -c "$dir/hostd.toml" 2> "$dir/hostd.log" &
hp=$!
pids+=($hp)
sleep "$WARMUP"
kill -0 "$hp" || { cat "$dir/hostd.log"; exit 1; }
tck=$(getconf CLK_TCK)
cpu() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$hp/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$hp/status"; }
c0=$(cpu); t0=$(date +%s.%N)
max_rss=0
for _ in $(seq 1 "$DUR"); do
  r=$(rss); [ "$r" -gt "$max_rss" ] && max_rss=$r
  sleep 1
done
c1=$(cpu); t1=$(date +%s.%N)
vms=$(ls "$dir"/run/*.pid 2>/dev/null | wc -l)
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tck="$tck" -v rss="$max_rss" -v n="$vms" 'BEGIN {
  printf "shoal-hostd (release), %d QEMU VMs, interval 10 s, %.0f s: CPU %.3f %% of one core, max VmRSS %.1f MiB\n",
    n, t1 - t0, 100 * (c1 - c0) / tck / (t1 - t0), rss / 1024 }'
