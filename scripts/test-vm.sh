#!/usr/bin/env bash
# The IPIP scenario (make test-vm): this machine's kernel has no ipip module, so two
# qemu VMs (TCG) with a Debian kernel are the hosts. Deploys etcd.yml + network.yml
# with CALICO_IPV4POOL_IPIP=Always over SSH, then proves that a pod on vm1 pings a pod
# on vm2 through tunl0. Removes the VMs at the end; the base disk is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${VM_CACHE:-/var/tmp/pycalico-vm-cache}
STATE=$ROOT/.vm
VENV_BIN=$ROOT/.venv/bin
IPIP_MODE=${VM_IPIP_MODE:-Always}
T0=$(date +%s)
step_start=0
step() { step_start=$(date +%s); printf '\n==> %s\n' "$*"; }
done_step() { printf '    done in %ss\n' "$(( $(date +%s) - step_start ))"; }
free_port() { "$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_vms() {
  for pidfile in "$STATE"/vm*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$STATE"
}
trap stop_vms EXIT

step "tools: qemu, the project venv with ansible"
scripts/install-deps.sh qemu-system-x86 qemu-utils openssh-client debootstrap e2fsprogs
[ -x "$VENV_BIN/python" ] || make -s venv
"$VENV_BIN/python" -c 'import ansible_collections.community.crypto' 2>/dev/null \
  || "$VENV_BIN/python" -m pip install -q "ansible==12.3.0" "netaddr>=1.3"
done_step

step "disk: Debian bookworm with a kernel (built once into $CACHE)"
lab/vm/build-disk.sh "$CACHE"
done_step

step "boot: two VMs under TCG with a private link 10.90.0.0/24"
stop_vms
mkdir -p "$STATE"
link_port=$(free_port)
declare -A ssh_port
for i in 1 2; do
  qemu-img create -q -f qcow2 -F qcow2 -b "$CACHE/base.qcow2" "$STATE/vm$i.qcow2"
  ssh_port[$i]=$(free_port)
  if [ "$i" = 1 ]; then link="listen=127.0.0.1:$link_port"; else link="connect=127.0.0.1:$link_port"; fi
  qemu-system-x86_64 -accel tcg,thread=multi -m 1536 -smp 2 -display none -daemonize \
    -pidfile "$STATE/vm$i.pid" -serial "file:$STATE/vm$i.console" -monitor none \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.hostname=vm$i pycalico.ip=10.90.0.1$i/24" \
    -drive "file=$STATE/vm$i.qcow2,if=virtio" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:${ssh_port[$i]}-:22" -device virtio-net-pci,netdev=n0 \
    -netdev "socket,id=n1,$link" -device "virtio-net-pci,netdev=n1,mac=52:54:00:90:00:1$i"
done
SSH=(ssh -i "$CACHE/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
     -o ConnectTimeout=5)
for i in 1 2; do
  deadline=$(( $(date +%s) + 600 ))
  until "${SSH[@]}" -p "${ssh_port[$i]}" root@127.0.0.1 true 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "vm$i: no SSH in 600s"; tail -30 "$STATE/vm$i.console"; exit 1; }
    sleep 2
  done
  echo "    vm$i: SSH on 127.0.0.1:${ssh_port[$i]}, kernel $("${SSH[@]}" -p "${ssh_port[$i]}" root@127.0.0.1 uname -r)"
done
done_step

step "deploy: etcd.yml and network.yml (IPIP $IPIP_MODE, backend bird)"
{
  echo "[etcd]"
  echo "10.90.0.11 ansible_port=${ssh_port[1]} k8s_nodename=vm1"
  echo "[kube_master]"
  echo "10.90.0.11 ansible_port=${ssh_port[1]} k8s_nodename=vm1"
  echo "[kube_node]"
  echo "10.90.0.12 ansible_port=${ssh_port[2]} k8s_nodename=vm2"
  echo "[all:vars]"
  echo "ansible_host=127.0.0.1"
  echo "ansible_user=root"
  echo "ansible_ssh_private_key_file=$CACHE/id_ed25519"
  echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
  echo "ansible_python_interpreter=/usr/bin/python3"
  echo "CLUSTER_NAME=vm"
  echo "CLUSTER_CIDR=172.20.0.0/16"
  echo "CALICO_NETWORKING_BACKEND=bird"
  echo "CALICO_IPV4POOL_IPIP=$IPIP_MODE"
  echo "CALICO_IPV4POOL_VXLAN=Never"
  echo "IP_AUTODETECTION_METHOD=cidr=10.90.0.0/24"
  echo "cluster_dir=$STATE/cluster"
} > "$STATE/hosts"
mkdir -p "$STATE/collections/ansible_collections/pycalico"
ln -sfn "$ROOT" "$STATE/collections/ansible_collections/pycalico/network"
export ANSIBLE_COLLECTIONS_PATH=$STATE/collections ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=false
for pb in etcd network; do
  "$VENV_BIN/ansible-playbook" -i "$STATE/hosts" "playbooks/$pb.yml" > "$STATE/$pb.log" 2>&1 \
    || { tail -50 "$STATE/$pb.log"; exit 1; }
  grep -A3 '^PLAY RECAP' "$STATE/$pb.log" | sed 's/^/    /'
done
done_step

vm() { local i=$1; shift; "${SSH[@]}" -p "${ssh_port[$i]}" root@127.0.0.1 "$@"; }
step "prove: tunl0, routes via tunl0 onlink, pod on vm1 pings pod on vm2"
ip1=$(vm 1 bash -s add vmpod-a < lab/pod.sh)
ip2=$(vm 2 bash -s add vmpod-b < lab/pod.sh)
echo "    vmpod-a on vm1: $ip1    vmpod-b on vm2: $ip2"
vm 1 ip -d link show tunl0 | sed 's/^/    /'
routes_ok=0
for _ in $(seq 1 100); do
  if vm 1 ip route show | grep -q "via 10.90.0.12 dev tunl0"; then routes_ok=1; break; fi
  sleep 1
done
vm 1 ip route show | grep tunl0 | sed 's/^/    vm1: /' || true
[ "$routes_ok" = 1 ] || { echo "no route via tunl0 on vm1" >&2; exit 1; }
ping_ok=0
for _ in $(seq 1 30); do
  if vm 1 ip netns exec vmpod-a ping -c 3 -i 0.3 -W 2 "$ip2"; then ping_ok=1; break; fi
  sleep 1
done
[ "$ping_ok" = 1 ] || { echo "IPIP ping vm1 -> vm2 FAILED" >&2; exit 1; }
ipip_rx=$(vm 2 cat /sys/class/net/tunl0/statistics/rx_packets)
echo "    tunl0 rx packets on vm2: $ipip_rx"
[ "$ipip_rx" -gt 0 ] || { echo "no packet came in through tunl0 on vm2" >&2; exit 1; }
done_step
echo
echo "test-vm: IPIP $IPIP_MODE passed in $(( $(date +%s) - T0 ))s"
