#!/usr/bin/env bash
# The main demo: installs what it needs, starts Open vSwitch, builds Shoal,
# and runs mininet/demo.py (a small tree on the userspace datapath, ping all,
# two iperf3 flows, the traffic matrix measured by the controller).
# Run as root on Debian 12. Extra arguments go to mininet/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
ovs-scripts/start-ovs.sh
echo "=== building shoal (release)"
cargo build --release --locked -p shoal-controller -p shoal-hostd
echo "=== running mininet/demo.py"
exec /usr/bin/python3 mininet/demo.py --out out/demo "$@"
