#!/usr/bin/env bash
# The main demo: installs what it needs, starts Open vSwitch, builds Shoal,
# runs mininet/demo.py (a small tree on the userspace datapath, ping all,
# two iperf3 flows, the traffic matrix measured by the controller), then the
# VMPatrol experiment on the Mininet data-center testbed (a VM migrates
# across the core with and without a bandwidth reservation while a TCP flow
# and a ping share its path; ~3 minutes) and prints where its plots are.
# Run as root on Debian 12. `--quick` skips the VMPatrol experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
ovs-scripts/start-ovs.sh
echo "=== building shoal (release)"
cargo build --release --locked -p shoal-controller -p shoal-hostd
echo "=== running mininet/demo.py"
/usr/bin/python3 mininet/demo.py --out out/demo
if [ "${1:-}" = "--quick" ]; then exit 0; fi
echo "=== running mininet/experiments/vmpatrol.py (about 3 minutes)"
/usr/bin/python3 mininet/experiments/vmpatrol.py --out out/vmpatrol --bin-dir target/release
echo "=== plots and data: $(pwd)/out/vmpatrol (vmpatrol.png, summary.json, with/, without/)"
