#!/usr/bin/env bash
# The IPIP scenario (make test-vm): this machine's kernel has no ipip module, so qemu VMs
# (TCG) with a Debian kernel are the hosts. Removes the VMs and the router at the end; the
# base disk is cached.
#
# VM_IPIP_MODE=CrossSubnet (default): three VMs, vm1 and vm2 on 10.90.0.0/24 and vm3 on
# 10.91.0.0/24, joined by a router (a network namespace on this machine holding one bridge per
# subnet, and a link to this machine). etcd.yml + network.yml with CALICO_IPV4POOL_IPIP=CrossSubnet, then:
#   - vm1's pod pings vm3's pod through tunl0 (route via tunl0 onlink, vm3's tunl0 counts it);
#   - vm1's pod pings vm2's pod directly (route via eth1, vm2's tunl0 counts nothing);
#   - verify.yml passes (its tunnel-counter row checks the same per pair);
#   - live migrations IPIP CrossSubnet -> VXLAN CrossSubnet -> IPIP CrossSubnet by re-running
#     network.yml, with a 0.1 s ping across the subnets and one inside a subnet: each step's
#     longest gap is printed, and the longest gap around lost pings must stay <= VM_MAX_GAP_S
#     (1 s; a gap with no ping lost is the VM's vCPU stalling ping itself); verify.yml after each.
# VM_IPIP_MODE=Always: two VMs on 10.90.0.0/24, vm1's pod pings vm2's pod through tunl0.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${VM_CACHE:-/var/tmp/pycalico-vm-cache}
STATE=$ROOT/.vm
VENV_BIN=$ROOT/.venv/bin
IPIP_MODE=${VM_IPIP_MODE:-CrossSubnet}
MAX_GAP_S=${VM_MAX_GAP_S:-1}
ROUTER=pcvm-router
T0=$(date +%s)
step_start=0
step() { step_start=$(date +%s); printf '\n==> %s\n' "$*"; }
done_step() { printf '    done in %ss\n' "$(( $(date +%s) - step_start ))"; }
free_port() { "$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "$IPIP_MODE" in
  CrossSubnet) VMS=(1 2 3) ;;
  Always) VMS=(1 2) ;;
  *) echo "VM_IPIP_MODE: invalid value '$IPIP_MODE'; allowed: CrossSubnet|Always" >&2; exit 2 ;;
esac
# vm3 sits in the second subnet; vm1 and vm2 share the first.
addr_of() { if [ "$1" = 3 ]; then echo "10.91.0.1$1"; else echo "10.90.0.1$1"; fi; }
subnet_of() { if [ "$1" = 3 ]; then echo b; else echo a; fi; }

save_vm_logs() {  # on failure: each VM's units' journals and tables, kept outside the checkout
  local dir i
  dir=${VM_LOG_DIR:-/var/tmp/pycalico-vm-logs}/$(date +%Y%m%d-%H%M%S)
  mkdir -p "$dir"
  if declare -F vm > /dev/null; then  # defined once every VM is booting
    for i in "${VMS[@]}"; do
      vm "$i" timeout 60 sh -c 'journalctl --no-pager -u "pycalico-*" -u bird; ip route; ip -d link; ip neigh' \
        > "$dir/vm$i.txt" 2>&1 || true
    done
  fi
  cp "$STATE"/*.log "$STATE"/vm*.console "$dir/" 2>/dev/null || true
  echo "test-vm: failed; the VMs' journals and tables are in $dir" >&2
}
stop_vms() {
  local rc=$?
  [ "$rc" = 0 ] || save_vm_logs
  for pidfile in "$STATE"/vm*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  ip netns del "$ROUTER" 2>/dev/null || true
  ip link del pcvm-host 2>/dev/null || true  # gone with the namespace already, unless that failed
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

step "boot: VMs ${VMS[*]} under TCG, a router $ROUTER between 10.90.0.0/24 and 10.91.0.0/24"
stop_vms
mkdir -p "$STATE"
# The router: a namespace with a bridge per subnet; each VM's second NIC is a tap qemu creates
# here and that moves into the router's bridge (an open tap keeps working across namespaces).
ip netns add "$ROUTER"
ip -n "$ROUTER" link set lo up
for s in a b; do
  ip -n "$ROUTER" link add "br-$s" type bridge
  ip -n "$ROUTER" link set "br-$s" up
done
ip -n "$ROUTER" addr add 10.90.0.1/24 dev br-a
ip -n "$ROUTER" addr add 10.91.0.1/24 dev br-b
ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
# The deploy host (this machine) reaches the VMs' private addresses through the router too:
# etcd.yml's auth step and the modules that run here talk to etcd at 10.90.0.11.
ip link add pcvm-host type veth peer name pcvm-rt netns "$ROUTER"
ip addr add 10.91.255.2/30 dev pcvm-host
ip link set pcvm-host up
ip -n "$ROUTER" addr add 10.91.255.1/30 dev pcvm-rt
ip -n "$ROUTER" link set pcvm-rt up
ip route add 10.90.0.0/15 via 10.91.255.1
declare -A ssh_port
for i in "${VMS[@]}"; do
  qemu-img create -q -f qcow2 -F qcow2 -b "$CACHE/base.qcow2" "$STATE/vm$i.qcow2"
  ssh_port[$i]=$(free_port)
  addr=$(addr_of "$i")
  qemu-system-x86_64 -accel tcg,thread=multi -m 1536 -smp "$(( ${#VMS[@]} > 2 ? 1 : 2 ))" -display none -daemonize \
    -pidfile "$STATE/vm$i.pid" -serial "file:$STATE/vm$i.console" -monitor none \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.hostname=vm$i pycalico.ip=$addr/24 pycalico.gw=${addr%.*}.1" \
    -drive "file=$STATE/vm$i.qcow2,if=virtio" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:${ssh_port[$i]}-:22" -device virtio-net-pci,netdev=n0 \
    -netdev "tap,id=n1,ifname=pcvm$i,script=no,downscript=no" -device "virtio-net-pci,netdev=n1,mac=52:54:00:90:00:1$i"
  ip link set "pcvm$i" netns "$ROUTER"
  ip -n "$ROUTER" link set "pcvm$i" master "br-$(subnet_of "$i")" up
done
SSH=(ssh -i "$CACHE/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
     -o ConnectTimeout=5)
vm() { local i=$1; shift; "${SSH[@]}" -p "${ssh_port[$i]}" root@127.0.0.1 "$@"; }
for i in "${VMS[@]}"; do
  deadline=$(( $(date +%s) + 900 ))
  until vm "$i" true 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "vm$i: no SSH in 900s"; tail -30 "$STATE/vm$i.console"; exit 1; }
    sleep 2
  done
  echo "    vm$i: $(addr_of "$i"), SSH on 127.0.0.1:${ssh_port[$i]}, kernel $(vm "$i" uname -r)"
done
ping -c 2 -W 5 10.90.0.11 > /dev/null || { echo "this machine cannot reach vm1 through the router" >&2; exit 1; }
if [ "$IPIP_MODE" = CrossSubnet ]; then
  vm 1 ping -c 2 -W 5 10.91.0.13 > /dev/null || { echo "vm1 cannot reach vm3 through the router" >&2; exit 1; }
  echo "    vm1 reaches vm3 through the router: $(vm 1 ip route get 10.91.0.13 | head -1)"
fi
done_step

step "deploy: etcd.yml and network.yml (IPIP $IPIP_MODE, backend bird)"
{
  echo "[etcd]"
  echo "$(addr_of 1) ansible_port=${ssh_port[1]} k8s_nodename=vm1"
  echo "[kube_master]"
  echo "$(addr_of 1) ansible_port=${ssh_port[1]} k8s_nodename=vm1"
  echo "[kube_node]"
  for i in "${VMS[@]:1}"; do echo "$(addr_of "$i") ansible_port=${ssh_port[$i]} k8s_nodename=vm$i"; done
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
  echo "IP_AUTODETECTION_METHOD=cidr=10.90.0.0/15"
  echo "cluster_dir=$STATE/cluster"
} > "$STATE/hosts"
mkdir -p "$STATE/collections/ansible_collections/pycalico"
ln -sfn "$ROOT" "$STATE/collections/ansible_collections/pycalico/network"
export ANSIBLE_COLLECTIONS_PATH=$STATE/collections ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=false
playbook() {  # playbook <name> <log> [extra args]: runs it, prints its recap, the log's tail on failure
  local pb=$1 log=$2; shift 2
  "$VENV_BIN/ansible-playbook" -i "$STATE/hosts" "$@" "playbooks/$pb.yml" > "$STATE/$log.log" 2>&1 \
    || { tail -80 "$STATE/$log.log"; exit 1; }
  grep -A"${#VMS[@]}" '^PLAY RECAP' "$STATE/$log.log" | sed 's/^/    /'
}
for pb in etcd network; do playbook "$pb" "$pb"; done
done_step

tunl_rx() { vm "$1" cat /sys/class/net/tunl0/statistics/rx_packets; }
wait_route() {  # wait_route <vm> <grep pattern>: a route matching it within 100 s
  local i=$1 pattern=$2
  for _ in $(seq 1 100); do
    if vm "$i" ip route show | grep -q "$pattern"; then return 0; fi
    sleep 1
  done
  vm "$i" ip route show | sed "s/^/    vm$i: /"
  echo "vm$i: no route matching '$pattern'" >&2
  return 1
}
pod_ping() {  # pod_ping <from vm> <pod> <ip>: 3 replies within 30 tries
  for _ in $(seq 1 30); do
    if vm "$1" ip netns exec "$2" ping -c 3 -i 0.3 -W 2 "$3" > /dev/null; then return 0; fi
    sleep 1
  done
  echo "ping from $2 on vm$1 to $3 FAILED" >&2
  return 1
}

step "prove: IPIP $IPIP_MODE routes and counters"
declare -A pod_ip
for i in "${VMS[@]}"; do
  pod_ip[$i]=$(vm "$i" bash -s add "vmpod-$i" < lab/pod.sh)
  echo "    vmpod-$i on vm$i: ${pod_ip[$i]}"
done
vm 1 ip -d link show tunl0 | sed 's/^/    /'
far=${VMS[-1]}  # vm3 in CrossSubnet (another subnet), vm2 in Always
wait_route 1 "via $(addr_of "$far") dev tunl0 proto 80 onlink"
before=$(tunl_rx "$far")
pod_ping 1 vmpod-1 "${pod_ip[$far]}"
after=$(tunl_rx "$far")
echo "    vm1 -> vm$far: $(vm 1 ip route show | grep "via $(addr_of "$far") dev tunl0" | head -1); tunl0 rx on vm$far: $before -> $after"
[ "$after" -gt "$before" ] || { echo "no packet came in through tunl0 on vm$far" >&2; exit 1; }
if [ "$IPIP_MODE" = CrossSubnet ]; then
  wait_route 1 "via 10.90.0.12 dev eth1"
  before=$(tunl_rx 2)
  pod_ping 1 vmpod-1 "${pod_ip[2]}"
  after=$(tunl_rx 2)
  echo "    vm1 -> vm2: $(vm 1 ip route show | grep 'via 10.90.0.12 dev eth1' | head -1); tunl0 rx on vm2: $before -> $after"
  [ "$after" = "$before" ] || { echo "same-subnet traffic went through tunl0 on vm2" >&2; exit 1; }
fi
done_step

if [ "$IPIP_MODE" = Always ]; then
  echo
  echo "test-vm: IPIP Always passed in $(( $(date +%s) - T0 ))s"
  exit 0
fi

step "verify.yml on the deployed network"
playbook verify verify0
done_step

# Live migrations, each a re-run of network.yml while vm1's pod pings vm3's (across the router)
# and vm2's (same subnet) every 0.1 s; the window is taken on vm1's clock, as ping -D's stamps.
# The pings stop before verify.yml: its tunnel-counter row must see only its own probes.
fail=0
n=0
for target in "Never CrossSubnet" "CrossSubnet Never"; do
  read -r ipip vxlan <<< "$target"
  n=$(( n + 1 ))
  step "migrate $n: to IPIP $ipip, VXLAN $vxlan (network.yml with 0.1 s pings, then verify.yml)"
  for pair in far near; do
    ip=${pod_ip[3]}; [ "$pair" = near ] && ip=${pod_ip[2]}
    vm 1 "nohup ip netns exec vmpod-1 ping -D -i 0.1 $ip < /dev/null > /root/ping-$pair.log 2>&1 & echo \$! > /root/ping-$pair.pid"
  done
  start=$(vm 1 date +%s.%N)
  playbook network "migrate$n" -e "CALICO_IPV4POOL_IPIP=$ipip" -e "CALICO_IPV4POOL_VXLAN=$vxlan"
  end=$(vm 1 date +%s.%N)
  vm 1 'kill $(cat /root/ping-far.pid) $(cat /root/ping-near.pid)'
  echo "[{\"step\": \"to IPIP $ipip / VXLAN $vxlan\", \"start\": $start, \"end\": $end}]" > "$STATE/window$n.json"
  for pair in far near; do
    vm 1 cat "/root/ping-$pair.log" > "$STATE/ping-$pair-$n.log"
    rows=$("$VENV_BIN/python" molecule/migrate/ping_gaps.py "$STATE/ping-$pair-$n.log" "$STATE/window$n.json")
    echo "    ping $pair ($( [ $pair = far ] && echo 'vm1 -> vm3, across the router' || echo 'vm1 -> vm2, same subnet')): $rows"
    # the network's gap: around lost pings (a VM's single vCPU also stalls ping itself: stall_max_s)
    "$VENV_BIN/python" -c 'import json,sys; sys.exit(any(r["loss_gap_max_s"] > float(sys.argv[2]) for r in json.loads(sys.argv[1])))' \
      "$rows" "$MAX_GAP_S" || { echo "ping $pair: pings lost over more than ${MAX_GAP_S}s" >&2; fail=1; }
  done
  if [ "$vxlan" = CrossSubnet ]; then wait_route 1 "dev vxlan.calico"; else wait_route 1 "via 10.91.0.13 dev tunl0"; fi
  vm 1 ip route show | grep -E 'tunl0|vxlan.calico|via 10.90.0.12' | sed 's/^/    vm1: /'
  playbook verify "verify$n" -e "CALICO_IPV4POOL_IPIP=$ipip" -e "CALICO_IPV4POOL_VXLAN=$vxlan"
  done_step
done
[ "$fail" = 0 ] || exit 1
echo
echo "test-vm: IPIP CrossSubnet passed (migrations IPIP -> VXLAN -> IPIP) in $(( $(date +%s) - T0 ))s"
