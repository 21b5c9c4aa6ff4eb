#!/usr/bin/env bash
# Installs what hostd's QEMU backend and end-to-end tests need on Debian 12:
# qemu-system-x86 from bookworm-backports (the image already carries
# qemu-utils 10.x from there, so bookworm's QEMU 7.2 cannot be installed),
# busybox-static, cpio and a C toolchain for the test guest. Idempotent: does nothing when all is
# present. Needs root.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh && dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-qemu: everything present ($(qemu-system-x86_64 --version | head -1))"
  exit 0
fi

# bookworm-backports, with the mirror URI of the existing bookworm entry.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  uri=${uri:-http://deb.debian.org/debian}
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
pkgs=()
for p in "${need[@]}"; do
  if [ "$p" = qemu-system-x86 ]; then
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
  else
    pkgs+=("$p")
  fi
done
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get install -y -q --no-install-recommends "${pkgs[@]}"
fi
qemu-system-x86_64 --version | head -1
