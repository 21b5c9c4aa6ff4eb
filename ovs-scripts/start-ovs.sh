#!/usr/bin/env bash
# Start Open vSwitch (ovsdb-server + ovs-vswitchd) without a service manager,
# as described in docs/testbed.md. Idempotent: does nothing when both
# daemons already answer. Bridges must use datapath_type=netdev (userspace).
set -euo pipefail
RUN=${OVS_RUNDIR:-/var/run/openvswitch}
ETC=${OVS_SYSCONFDIR:-/etc/openvswitch}
LOG=${OVS_LOGDIR:-/var/log/openvswitch}
mkdir -p "$RUN" "$ETC" "$LOG"

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

if ! alive ovsdb-server; then
  [ -f "$ETC/conf.db" ] || ovsdb-tool create "$ETC/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$ETC/conf.db" --remote="punix:$RUN/db.sock" \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
    --pidfile --detach --log-file
  ovs-vsctl --no-wait init
fi
if ! alive ovs-vswitchd; then
  ovs-vswitchd --pidfile --detach --log-file
fi
for _ in $(seq 1 50); do
  ovs-vsctl --timeout=2 show >/dev/null 2>&1 && ovs-appctl -t ovs-vswitchd version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "start-ovs: Open vSwitch did not come up; see $LOG" >&2
exit 1
