#!/usr/bin/env bash
# Installs everything Shoal's demo and tests need on Debian 12 (as root):
# Debian packages (Open vSwitch, Mininet, iperf3, ...), a Rust toolchain if
# none is present, and whatever the components' own setup scripts add.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (Open vSwitch, Mininet and namespaces need it)" >&2
  exit 1
fi

PKGS=(
  openvswitch-switch openvswitch-common mininet iperf3 iputils-ping iputils-arping
  ethtool iproute2 tcpdump procps psmisc curl ca-certificates python3 python3-matplotlib
  build-essential pkg-config busybox-static cpio gzip xz-utils
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
fi

# The OVS package's service must not fight our own start script.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled openvswitch-switch >/dev/null 2>&1; then
  systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
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
