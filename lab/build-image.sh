#!/usr/bin/env bash
# Builds the lab's systemd host image from Debian packages, without any registry:
# debootstrap a bookworm rootfs and `podman import` it. Skipped when the image exists.
set -euo pipefail
IMAGE=${LAB_IMAGE:-localhost/pycalico-lab-base:bookworm-2}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}
if podman image exists "$IMAGE"; then
  echo "image $IMAGE: present, reused"
  exit 0
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/pycalico-lab-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
# Everything the roles would install is pre-installed, so a lab deploy needs no
# network on the hosts; the roles still declare it (and find it present).
pkgs=systemd,systemd-sysv,dbus,python3,python3-venv,iproute2,iptables,ipset,sudo,iputils-ping,procps,kmod
pkgs+=,ca-certificates,bird2,etcd-server,etcd-client,containernetworking-plugins,tcpdump
echo "debootstrap bookworm from $mirror (about 2 minutes)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
: > "$rootfs/etc/machine-id"
for unit in getty.target console-getty.service systemd-resolved.service systemd-logind.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# Installed but not enabled, as on a host where the roles will configure them
# (masking would put a foreign unit where the etcd role writes its own).
rm -f "$rootfs"/etc/systemd/system/multi-user.target.wants/{etcd,bird}.service
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$IMAGE" > /dev/null
echo "image $IMAGE: built"
