#!/usr/bin/env bash
# Failover benchmark of Shoal as a cluster on etcd (docs/cluster.md): a
# 3-member etcd cluster on loopback ports, three shoal-controller nodes,
# five Open vSwitch bridges connected to all three; the leader is killed
# with SIGKILL ROUNDS times (default 10) and restarted after each failover.
# Reports, per kill and as median/max, the time from the kill to a new
# leader and to every switch mastered again (granted by the switch); then
# as many kills during a reserved migration (three switches, two host
# daemons), with the time to the migration resumed by the new leader.
#
#   sudo bench/failover.sh [ROUNDS]
#
# Installs what it needs (scripts/install-deps.sh), starts Open vSwitch
# (ovs-scripts/start-ovs.sh), builds in release mode, and writes the table
# to bench/results/failover.md (and stdout). Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
rounds=${1:-10}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "failover.sh: ROUNDS must be a positive integer, got '$rounds'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "failover.sh: run as root (Open vSwitch and namespaces need it)" >&2; exit 1; }
scripts/install-deps.sh
ovs-scripts/start-ovs.sh
cargo build --release --locked --bin shoal-controller --bin shoal-hostd
mkdir -p bench/results
out=bench/results/failover.md
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
echo "failover.sh: 2 × $rounds leader kills (about $((rounds * 40)) s)"
SHOAL_FAILOVER_ROUNDS=$rounds cargo test --release --locked --test cluster_failover \
  -- --ignored --nocapture --test-threads=1 | tee "$tmp"
{
  echo "# Failover benchmark"
  echo
  echo "\`sudo bench/failover.sh $rounds\` on $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown),"
  echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME")."
  # Every table, each after a blank line.
  awk '/^\|/ {if (!table) print ""; print; table=1; next} {table=0}' "$tmp"
} > "$out"
echo "failover.sh: wrote $out"
