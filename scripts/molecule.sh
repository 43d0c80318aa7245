#!/usr/bin/env bash
# Runs the molecule scenarios (podman driver) on this machine:
#   scripts/molecule.sh [scenario ...]     (default: all but the VM one)
# Builds or reuses the lab base image, creates each scenario's podman network with a
# fixed subnet (the driver's schema refuses `subnet:`, and hosts are named by IP),
# runs `molecule test -s <scenario>`, removes the network, prints the times. MOLECULE_JOBS
# (default 2) scenarios run side by side, each line of output prefixed with its name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CONTAINERS_CONF=$ROOT/lab/containers.conf
VENV_BIN=$ROOT/.venv/bin
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(default vxlan route_reflector lifecycle kubernetes)

scripts/install-deps.sh podman runc netavark aardvark-dns debootstrap
[ -x "$VENV_BIN/python" ] || make -s venv
"$VENV_BIN/python" -c 'import molecule, molecule_plugins.podman, ansible_collections.containers.podman' 2>/dev/null \
  || "$VENV_BIN/python" -m pip install -q "ansible==12.3.0" "molecule==26.10.0" "molecule-plugins[podman]==26.10.12" \
       "netaddr>=1.3"
lab/build-image.sh

work=$(mktemp -d /tmp/pycalico-molecule.XXXXXX)
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  # the kubernetes scenario's stand-in API server, should its cleanup step not have run
  pkill -f -- "tests.support.kube_apiserver serve --dir .*kubernetes/kube-apiserver" 2>/dev/null || true
  for s in "${scenarios[@]}"; do
    podman network rm -f "pcm-${s//_/-}" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ansible_collections/pycalico"
ln -s "$ROOT" "$work/ansible_collections/pycalico/network"
# Ansible's and molecule's state (tmp, ephemeral directories, any collection copy) in the work
# directory, which the EXIT trap removes even after a failure: nothing is left in ~/.ansible.
export ANSIBLE_HOME=$work/ansible-home
export ANSIBLE_COLLECTIONS_PATH=$work PATH=$VENV_BIN:$PATH ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export MOLECULE_NO_LOG=false ANSIBLE_HOST_KEY_CHECKING=false

# One scenario: its own podman network, its hosts removed first, its output prefixed with its
# name (lanes run side by side), its result in $work/<scenario>.result.
run_scenario() {
  local s=$1 net="pcm-${1//_/-}" subnet host start rc
  subnet=$(awk '/^    ip: / {split($2, a, "."); print a[1] "." a[2] "." a[3] ".0/24"; exit}' "molecule/$s/molecule.yml")
  for host in $(awk '/^  - name: / {print $3}' "molecule/$s/molecule.yml"); do
    podman rm -f -t 2 "$host" >/dev/null 2>&1 || true
  done
  podman network exists "$net" || podman network create --subnet "$subnet" "$net" >/dev/null
  start=$(date +%s)
  echo "[$s] == molecule test -s $s (network $net $subnet)"
  set +e
  molecule test -s "$s" 2>&1 | sed -u "s/^/[$s] /"
  rc=${PIPESTATUS[0]}
  set -e
  podman network rm -f "$net" >/dev/null 2>&1 || true
  echo "$s: $([ "$rc" = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start ))s" > "$work/$s.result"
  echo "[$s] == $(cat "$work/$s.result")"
}

# Lanes: MOLECULE_JOBS scenarios at a time (each is mostly waiting on its hosts), the longest
# first so the lanes end together. One failure lets the running ones finish, starts no more.
jobs=${MOLECULE_JOBS:-2}
ordered=()
for s in lifecycle route_reflector default vxlan kubernetes migrate upgrade; do
  for want in "${scenarios[@]}"; do [ "$want" = "$s" ] && ordered+=("$s"); done
done
for want in "${scenarios[@]}"; do
  case " ${ordered[*]} " in *" $want "*) ;; *) ordered+=("$want");; esac
done
running=0
for s in "${ordered[@]}"; do
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  grep -qs FAILED "$work"/*.result && break
  run_scenario "$s" &
  running=$((running + 1))
done
wait || true
echo "== molecule summary"
for s in "${ordered[@]}"; do
  if [ -e "$work/$s.result" ]; then cat "$work/$s.result"; else echo "$s: not run (an earlier scenario failed)"; fi
done
! grep -qs FAILED "$work"/*.result
