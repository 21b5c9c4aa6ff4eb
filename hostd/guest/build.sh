#!/usr/bin/env bash
# Builds Shoal's test guest for the QEMU backend: a Debian kernel extracted
# from its package and a busybox-static initramfs whose /init loads the
# virtio-net and virtio-balloon modules, gives eth0 the address from
# `shoal.ip=A.B.C.D/P` on the kernel command line (if any) and runs
# dirtier.c (dirties R MB/s, prints an uptime counter on the serial console).
#
# Output (cached; rebuilt only when missing or when dirtier.c changed):
#   $SHOAL_GUEST_DIR/vmlinuz         the kernel
#   $SHOAL_GUEST_DIR/initramfs.gz    busybox + /init + /bin/dirtier + modules
#   $SHOAL_GUEST_DIR/modules/        the kernel modules it carries
# SHOAL_GUEST_DIR defaults to <workspace>/target/guest. Needs busybox-static,
# cpio, gcc + libc6-dev (static) and apt (hostd/guest/install-qemu.sh).
# Nothing here is committed: the kernel and images stay in the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${SHOAL_GUEST_DIR:-$root/target/guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Modules the guest loads (in this order): virtio PCI, virtio-net, balloon.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_balloon"

# --- kernel and its modules ---------------------------------------------------
if [ ! -s "$out/vmlinuz" ] || [ ! -s "$out/modules/virtio_net.ko" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/shd-guest-kernel.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  chmod 777 "$work" # apt-get download drops privileges to _apt
  # The versioned image package the linux-image-amd64 metapackage points at.
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -q >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "build.sh: cannot find a linux-image-*-amd64 package" >&2; exit 1; }
  (cd "$work" && apt-get download "$pkg" >/dev/null)
  dpkg-deb -x "$work"/linux-image-*.deb "$work/x"
  rm -rf "$out/modules" && mkdir -p "$out/modules"
  for m in $MODULES; do
    f=$(find "$work/x/lib/modules" -name "$m.ko" | head -1)
    [ -n "$f" ] || { echo "build.sh: module $m not in $pkg" >&2; exit 1; }
    cp "$f" "$out/modules/"
  done
  cp "$(ls "$work"/x/boot/vmlinuz-* | head -1)" "$out/vmlinuz.tmp"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
  echo "build.sh: kernel from $pkg"
fi

# --- initramfs --------------------------------------------------------------
src_sum=$(cat "$here/dirtier.c" "$0" | sha256sum | cut -c1-16)
if [ ! -s "$out/initramfs.gz" ] || [ "$(cat "$out/initramfs.sum" 2>/dev/null)" != "$src_sum" ]; then
  [ -x /bin/busybox ] || { echo "build.sh: busybox-static missing (run hostd/guest/install-qemu.sh)" >&2; exit 1; }
  ird=$(mktemp -d "${TMPDIR:-/tmp}/shd-guest-initrd.XXXXXX")
  mkdir -p "$ird"/{bin,dev,proc,sys,tmp,lib/modules}
  cp /bin/busybox "$ird/bin/busybox"
  for m in $MODULES; do cp "$out/modules/$m.ko" "$ird/lib/modules/"; done
  echo "$MODULES" > "$ird/lib/modules/order"
  gcc -O2 -static -Wall -Wextra -o "$ird/bin/dirtier" "$here/dirtier.c"
  cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
# shoal.ip=A.B.C.D/P on the kernel command line: address of eth0.
for a in $(cat /proc/cmdline); do
  case "$a" in shoal.ip=*) addr=${a#shoal.ip=} ;; esac
done
if [ -n "$addr" ] && [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  ip addr add "$addr" dev eth0
fi
echo "shoal-guest: up"
exec /bin/dirtier </dev/console >/dev/console 2>&1
INIT
  chmod +x "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs.gz.tmp"
  mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
  echo "$src_sum" > "$out/initramfs.sum"
  rm -rf "$ird"
  echo "build.sh: initramfs built"
fi
echo "$out"
