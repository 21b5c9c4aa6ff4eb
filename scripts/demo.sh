#!/usr/bin/env bash
# The main demo. Run as root on Debian 12:
#
#   scripts/demo.sh [--quick] [--no-wait | --wait] [--no-tls]
#                   [--api HOST:PORT] [--of-port PORT]
#
# It installs what it needs, starts Open vSwitch, builds Shoal, then:
#
# 1. mininet/demo.py: a small tree on the userspace datapath, ping all, two
#    iperf3 flows, the traffic matrix measured by the controller. Then it
#    stays up for the web dashboard: the network, the controller and the two
#    flows keep running, and it prints the dashboard's URL
#    (https://127.0.0.1:8080/ by default), the token file to sign in with
#    (out/demo/operator.token) and the CA certificate the browser will warn
#    about (out/demo/tls/ca.pem). Ctrl-C ends that stage: everything it
#    started is stopped and, after 5 s in which another Ctrl-C ends the
#    demo there, the script goes on with step 2.
# 2. The VMPatrol experiment on the Mininet data-center testbed (a VM
#    migrates across the core with and without a bandwidth reservation while
#    a TCP flow and a ping share its path; ~3 minutes); prints where its
#    plots are (out/vmpatrol/).
#
# The dashboard comes first so that it is up about 30 s after the build,
# not after the 3-minute experiment. A Ctrl-C during step 1's dashboard
# stage ends that stage only; one at any other moment stops the script
# (exit 130), step 1 and the experiment cleaning up what they started.
#
# Options:
#   --quick           skip the VMPatrol experiment (step 2)
#   --no-wait         no dashboard stage: step 1 runs and ends by itself (for
#                     scripts and CI). Also the default when stdin is not a
#                     terminal: nobody could press Ctrl-C there.
#   --wait            the dashboard stage even when stdin is not a terminal
#                     (SIGINT or SIGTERM to mininet/demo.py ends it)
#   --no-tls          plain OpenFlow over TCP and an HTTP API (default: TLS
#                     with certificates made for the run, HTTPS)
#   --api HOST:PORT   the controller's API and dashboard address in step 1
#                     (default 127.0.0.1:8080)
#   --of-port PORT    the controller's OpenFlow port in step 1 (default 6653)
#   -h, --help        this text
set -euo pipefail

usage() {
  # The header comment above, without its '#'.
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

die_usage() {
  echo "demo.sh: $1 (scripts/demo.sh --help lists the options)" >&2
  exit 2
}

quick=0
demo_args=()
vmpatrol_args=()
wait_mode=auto
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1 ;;
    --no-wait) demo_args+=(--no-wait); wait_mode=no ;;
    --wait) demo_args+=(--wait); wait_mode=yes ;;
    --no-tls) demo_args+=(--no-tls); vmpatrol_args+=(--no-tls) ;;
    --api|--of-port)
      [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"
      demo_args+=("$1" "$2"); shift ;;
    --api=?*|--of-port=?*) demo_args+=("$1") ;;
    *) die_usage "unknown option '$1'" ;;
  esac
  shift
done
if [ "$wait_mode" = auto ]; then
  if [ -t 0 ]; then wait_mode=yes; else wait_mode=no; fi
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
ovs-scripts/start-ovs.sh
echo "=== building shoal (release)"
cargo build --release --locked -p shoal-controller -p shoal-hostd

echo "=== running mininet/demo.py"
if [ "$wait_mode" = yes ]; then
  if [ "$quick" = 1 ]; then next="the script ends"; else
    next="the VMPatrol experiment follows (~3 minutes; --quick skips it)"; fi
  echo "    it stays up for the dashboard until Ctrl-C; then $next"
fi
# Ctrl-C reaches the whole foreground process group: demo.py stops its
# dashboard stage cleanly (exit 0) or, earlier, cleans up and exits 130.
# While it runs, bash only notes the SIGINT (trap ':') instead of dying, so
# it carries on after a clean end and stops after an interrupted or failed one.
rc=0
trap ':' INT
/usr/bin/python3 mininet/demo.py --out out/demo "${demo_args[@]}" || rc=$?
trap - INT
if [ "$rc" -ne 0 ]; then
  echo "=== mininet/demo.py ended with status $rc" >&2
  exit "$rc"
fi
if [ "$quick" = 1 ]; then exit 0; fi
if [ "$wait_mode" = yes ]; then
  echo "=== the VMPatrol experiment starts in 5 s (Ctrl-C now ends the demo here)"
  sleep 5
fi

echo "=== running mininet/experiments/vmpatrol.py (about 3 minutes)"
/usr/bin/python3 mininet/experiments/vmpatrol.py --out out/vmpatrol --bin-dir target/release \
  "${vmpatrol_args[@]}"
echo "=== plots and data: $(pwd)/out/vmpatrol (vmpatrol.png, summary.json, with/, without/)"
