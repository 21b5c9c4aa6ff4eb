#!/usr/bin/env bash
# Installs everything Shoal's demo and tests need on Debian 12 (as root):
# Debian packages (Open vSwitch, Mininet, iperf3, ...), a Rust toolchain if
# none is present, and whatever the components' own setup scripts add.
# Idempotent and quiet when everything is already there.
#
# Shoal's demo and tests run their own Open vSwitch daemons
# (ovs-scripts/start-ovs.sh), so the openvswitch-switch service is stopped
# and disabled. When that service is running and has bridges, it is
# carrying traffic: then this script says what it found and stops, unless
# it is given --take-over-ovs (or SHOAL_TAKE_OVER_OVS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

take_over=${SHOAL_TAKE_OVER_OVS:-0}
for arg in "$@"; do
  case "$arg" in
    --take-over-ovs) take_over=1 ;;
    -h|--help)
      echo "usage: $0 [--take-over-ovs]   (env: SHOAL_TAKE_OVER_OVS=1)"
      echo "  --take-over-ovs  stop the openvswitch-switch service even when it has bridges"
      exit 0 ;;
    *) echo "install-deps: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (Open vSwitch, Mininet and namespaces need it)" >&2
  exit 1
fi

PKGS=(
  openvswitch-switch openvswitch-common mininet iperf3 iputils-ping iputils-arping
  ethtool iproute2 tcpdump procps psmisc curl ca-certificates python3 python3-matplotlib
  build-essential pkg-config busybox-static cpio gzip xz-utils
  etcd-server etcd-client protobuf-compiler
  chromium chromium-driver fonts-dejavu-core
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The etcd-server package starts a single-member etcd on port 2379 when
  # systemd runs; Shoal's tests and the cluster demo start their own
  # members on free ports, so a service this script just installed is
  # stopped and disabled (one that was there before is left alone).
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1 \
     && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi

# The OVS package's service must not fight our own start script
# (ovs-scripts/start-ovs.sh runs ovsdb-server and ovs-vswitchd itself), but
# an Open vSwitch that serves bridges is never stopped without being asked.
if command -v systemctl >/dev/null 2>&1; then
  active=0 enabled=0
  systemctl is-active --quiet openvswitch-switch 2>/dev/null && active=1
  systemctl is-enabled --quiet openvswitch-switch 2>/dev/null && enabled=1
  if [ "$active" = 1 ]; then
    bridges=$(ovs-vsctl --timeout=5 list-br 2>/dev/null || true)
    if [ -n "$bridges" ]; then
      echo "install-deps: the openvswitch-switch service is running with these bridges:" >&2
      for b in $bridges; do
        ctl=$(ovs-vsctl --timeout=5 get-controller "$b" 2>/dev/null | tr '\n' ' ')
        echo "  $b  controllers: ${ctl:-none}" >&2
      done
      if [ "$take_over" != 1 ]; then
        echo "install-deps: Shoal's demo and tests stop that service and start their own Open vSwitch" >&2
        echo "  daemons on the same database (ovs-scripts/start-ovs.sh): these bridges would stop" >&2
        echo "  forwarding meanwhile and drop their controllers. Nothing was changed." >&2
        echo "  To do it anyway: $0 --take-over-ovs (or SHOAL_TAKE_OVER_OVS=1)." >&2
        exit 1
      fi
      echo "install-deps: --take-over-ovs: stopping and disabling openvswitch-switch anyway"
    else
      echo "install-deps: stopping and disabling the openvswitch-switch service (running, no bridges);"
      echo "  Shoal's scripts run Open vSwitch themselves (ovs-scripts/start-ovs.sh)"
    fi
    systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  elif [ "$enabled" = 1 ]; then
    echo "install-deps: disabling the openvswitch-switch service (not running); Shoal's scripts"
    echo "  run Open vSwitch themselves (ovs-scripts/start-ovs.sh)"
    systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: no Rust toolchain; installing one with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$c" >/dev/null 2>&1 || true
  fi
done

# Component setup (QEMU from bookworm-backports, the test guest) when present.
for s in hostd/guest/install-qemu.sh; do
  [ -x "$s" ] && "$s"
done
exit 0
