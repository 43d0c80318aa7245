#!/usr/bin/env bash
# The local lab: three systemd hosts in podman containers, the pod network deployed
# on them with the collection's playbooks/network.yml, then a cross-node ping between
# pods made through the installed CNI plugin.
#
#   scripts/lab.sh up      (make lab)       build or reuse the image, deploy, prove it
#   scripts/lab.sh down    (make lab-down)  remove containers, network and lab files
#   scripts/lab.sh status                   node status from every host
#
#   scripts/lab.sh hosts                    only the hosts and the inventory ($STATE/hosts), no deploy
#
# Settings (environment): LAB_BACKEND=bird|vxlan (bird), LAB_HOSTS (3); a second lab beside the
# first (bench/deploy.py): LAB_PREFIX (pycalico-lab, the containers' and network's name),
# LAB_SUBNET_PREFIX (10.89.60), LAB_STATE (.lab).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CONTAINERS_CONF=$ROOT/lab/containers.conf
IMAGE=${LAB_IMAGE:-localhost/pycalico-lab-base:bookworm-2}
PREFIX=${LAB_PREFIX:-pycalico-lab}
NET=$PREFIX
SUBNET_PREFIX=${LAB_SUBNET_PREFIX:-10.89.60}
NHOSTS=${LAB_HOSTS:-3}
BACKEND=${LAB_BACKEND:-bird}
STATE=${LAB_STATE:-$ROOT/.lab}
PY=$ROOT/.venv/bin/python
T0=$(date +%s)

step_start=0
step() { step_start=$(date +%s); printf '\n==> %s\n' "$*"; }
done_step() { printf '    done in %ss\n' "$(( $(date +%s) - step_start ))"; }
host_name() { echo "$PREFIX-$1"; }
host_ip() { echo "$SUBNET_PREFIX.$((10 + $1))"; }

lab_down() {
  step "removing lab containers, network and $STATE (the base image is kept)"
  for i in $(seq 1 9); do
    podman rm -f -t 2 "$(host_name "$i")" >/dev/null 2>&1 || true
  done
  podman network rm -f "$NET" >/dev/null 2>&1 || true
  rm -rf "$STATE"
  done_step
}

tools() {
  step "tools: Debian packages, podman, the project venv with ansible"
  scripts/install-deps.sh
  scripts/install-deps.sh podman runc netavark aardvark-dns debootstrap
  [ -x "$PY" ] || make -s venv
  "$PY" -c 'import ansible_collections.containers.podman, ansible_collections.community.crypto' 2>/dev/null \
    || "$PY" -m pip install -q "ansible==12.3.0" "netaddr>=1.3"
  done_step
}

hosts_up() {
  step "image: build from Debian packages or reuse"
  lab/build-image.sh
  done_step
  step "hosts: $NHOSTS privileged systemd containers on podman network $NET ($SUBNET_PREFIX.0/24)"
  podman network exists "$NET" || podman network create --subnet "$SUBNET_PREFIX.0/24" "$NET" >/dev/null
  for i in $(seq 1 "$NHOSTS"); do
    name=$(host_name "$i")
    podman container exists "$name" && continue
    podman run -d --name "$name" --hostname "lab-$i" --systemd=always --privileged \
      --network "$NET" --ip "$(host_ip "$i")" "$IMAGE" /sbin/init >/dev/null
  done
  for i in $(seq 1 "$NHOSTS"); do
    name=$(host_name "$i")
    for _ in $(seq 1 100); do
      state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
      case "$state" in running|degraded) break ;; esac
      sleep 0.2
    done
    echo "    $name $(host_ip "$i"): $state"
  done
  done_step
}

write_inventory() {
  mkdir -p "$STATE"
  {
    echo "# written by scripts/lab.sh: kubeasz layout, hosts named by IP"
    echo "[etcd]"
    echo "$(host_ip 1) ansible_host=$(host_name 1)"
    echo "[kube_master]"
    echo "$(host_ip 1) ansible_host=$(host_name 1) k8s_nodename=lab-1"
    echo "[kube_node]"
    for i in $(seq 2 "$NHOSTS"); do
      echo "$(host_ip "$i") ansible_host=$(host_name "$i") k8s_nodename=lab-$i"
    done
    echo "[calico_rr]"
    echo "[all:vars]"
    echo "ansible_connection=containers.podman.podman"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "CLUSTER_NAME=lab"
    echo "CLUSTER_CIDR=172.20.0.0/16"
    echo "CALICO_NETWORKING_BACKEND=$BACKEND"
    # The containers share this machine's kernel, which has no ipip module.
    if [ "$BACKEND" = vxlan ]; then
      echo "CALICO_IPV4POOL_IPIP=Never"
      echo "CALICO_IPV4POOL_VXLAN=Always"
    else
      echo "CALICO_IPV4POOL_IPIP=Never"
      echo "CALICO_IPV4POOL_VXLAN=Never"
    fi
    echo "IP_AUTODETECTION_METHOD=cidr=$SUBNET_PREFIX.0/24"
    echo "cluster_dir=$STATE/cluster"
  } > "$STATE/hosts"
}

deploy() {
  write_inventory
  export ANSIBLE_COLLECTIONS_PATH=$STATE/collections
  mkdir -p "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/pycalico"
  ln -sfn "$ROOT" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/pycalico/network"
  export ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 ANSIBLE_STDOUT_CALLBACK=default
  export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks ANSIBLE_HOST_KEY_CHECKING=false
  step "deploy: ansible-playbook playbooks/etcd.yml (etcd on $(host_ip 1))"
  "$ROOT/.venv/bin/ansible-playbook" -i "$STATE/hosts" playbooks/etcd.yml > "$STATE/etcd.log" 2>&1 \
    || { tail -40 "$STATE/etcd.log"; exit 1; }
  grep -A3 '^PLAY RECAP' "$STATE/etcd.log" | sed 's/^/    /'
  done_step
  step "deploy: ansible-playbook playbooks/network.yml (backend $BACKEND, log in $STATE/network.log)"
  "$ROOT/.venv/bin/ansible-playbook" -i "$STATE/hosts" playbooks/network.yml > "$STATE/network.log" 2>&1 \
    || { tail -60 "$STATE/network.log"; exit 1; }
  grep -A"$((NHOSTS + 2))" '^PLAY RECAP' "$STATE/network.log" | sed 's/^/    /'
  done_step
}

status() {
  for i in $(seq 1 "$NHOSTS"); do
    echo "--- $(host_name "$i") ($(host_ip "$i")): pycalicoctl node status"
    podman exec "$(host_name "$i")" /opt/pycalico/current/bin/pycalicoctl node status || true
  done
}

wait_established() {
  [ "$BACKEND" = bird ] || return 0
  local want=$((NHOSTS - 1))
  for i in $(seq 1 "$NHOSTS"); do
    for _ in $(seq 1 150); do
      n=$(podman exec "$(host_name "$i")" /opt/pycalico/current/bin/pycalicoctl node status 2>/dev/null \
          | grep -c Established || true)
      [ "$n" -ge "$want" ] && break
      sleep 0.2
    done
  done
}

pod() {  # pod <host index> <add|del> <pod name>: a pod made by the installed CNI plugin
  podman exec -i "$(host_name "$1")" bash -s "$2" "$3" < lab/pod.sh
}

prove() {
  step "BGP sessions and node status"
  wait_established
  status
  done_step
  step "pods: one on lab-1 and one on lab-$NHOSTS through /opt/cni/bin/pycalico"
  ip1=$(pod 1 add labpod-a)
  ip3=$(pod "$NHOSTS" add labpod-b)
  echo "    labpod-a on lab-1: $ip1    labpod-b on lab-$NHOSTS: $ip3"
  done_step
  step "ping labpod-a (lab-1) -> labpod-b (lab-$NHOSTS)"
  ok=0
  for _ in $(seq 1 50); do
    if podman exec "$(host_name 1)" ip netns exec labpod-a ping -c 3 -i 0.2 -W 1 "$ip3"; then ok=1; break; fi
    sleep 0.2
  done
  done_step
  [ "$ok" = 1 ] || { echo "lab: cross-node ping FAILED" >&2; exit 1; }
  echo
  echo "lab: up in $(( $(date +%s) - T0 ))s. Pods stay up; 'make lab-down' removes everything."
}

case "${1:-up}" in
  up) tools; hosts_up; deploy; prove ;;
  down) lab_down ;;
  status) status ;;
  deploy) deploy ;;
  hosts) tools; hosts_up; write_inventory ;;
  prove) prove ;;
  *) echo "usage: $0 up|down|status|hosts" >&2; exit 2 ;;
esac
