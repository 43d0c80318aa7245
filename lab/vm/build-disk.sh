#!/usr/bin/env bash
# Builds the base disk for the IPIP VMs (this machine's kernel has no ipip; a Debian
# guest kernel does): a debootstrap rootfs with a kernel, sshd and everything the roles
# install, as an ext4 image turned into qcow2. Reused when present.
#   lab/vm/build-disk.sh <dir>     writes <dir>/base.qcow2, vmlinuz, initrd.img, id_ed25519
set -euo pipefail
out=$(realpath "${1:?usage: build-disk.sh <dir>}")
mkdir -p "$out"
if [ -s "$out/base.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/id_ed25519" ]; then
  echo "vm disk $out/base.qcow2: present, reused"
  exit 0
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/pycalico-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
pkgs=systemd,systemd-sysv,dbus,linux-image-amd64,initramfs-tools,openssh-server,udev,ifupdown,isc-dhcp-client
pkgs+=,python3,python3-venv,iproute2,iptables,ipset,kmod,sudo,iputils-ping,procps,ca-certificates
pkgs+=,bird2,etcd-server,etcd-client,containernetworking-plugins
echo "debootstrap bookworm with a kernel from $mirror (a few minutes)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }

[ -s "$out/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C pycalico-vm -f "$out/id_ed25519"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$out/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
: > "$rootfs/etc/machine-id"
echo '/dev/vda / ext4 defaults 0 1' > "$rootfs/etc/fstab"
cat > "$rootfs/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
# The private link's address (and router) come from the kernel command line (pycalico.ip=..., pycalico.gw=...).
cat > "$rootfs/usr/local/sbin/pycalico-vm-net" <<'EOF'
#!/bin/sh
addr=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^pycalico.ip=//p')
[ -n "$addr" ] || exit 0
ip link set eth1 up
ip addr replace "$addr" dev eth1
# A router on the private link (pycalico.gw=...) joins the test subnets 10.90.0.0/15.
gw=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^pycalico.gw=//p')
[ -z "$gw" ] || ip route replace 10.90.0.0/15 via "$gw" dev eth1
EOF
chmod 0755 "$rootfs/usr/local/sbin/pycalico-vm-net"
cat > "$rootfs/etc/systemd/system/pycalico-vm-net.service" <<'EOF'
[Unit]
Description=Address of the private link between the test VMs
After=systemd-udev-settle.service
Before=network-online.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pycalico-vm-net
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/pycalico-vm-net.service "$rootfs/etc/systemd/system/multi-user.target.wants/"
rm -f "$rootfs"/etc/systemd/system/multi-user.target.wants/{etcd,bird}.service
rm -f "$rootfs"/etc/ssh/ssh_host_*
# Host keys are made on first boot (the disk is shared by every VM).
cat > "$rootfs/etc/systemd/system/ssh-keygen-first.service" <<'EOF'
[Unit]
Description=SSH host keys
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/ssh-keygen-first.service "$rootfs/etc/systemd/system/multi-user.target.wants/"
cp "$rootfs"/boot/vmlinuz-* "$out/vmlinuz"
cp "$rootfs"/boot/initrd.img-* "$out/initrd.img"
chmod 0644 "$out/vmlinuz" "$out/initrd.img"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
mkfs.ext4 -q -L root -d "$rootfs" "$work/disk.raw" 3G
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$out/base.qcow2"
echo "vm disk $out/base.qcow2: built"
