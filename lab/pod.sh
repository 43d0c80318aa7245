#!/usr/bin/env bash
# Runs inside a lab host: make (add) or remove (del) a pod through the installed
# CNI plugin, the way a runtime would: the first plugin of the conflist with the
# list's name and cniVersion, a netns, CNI_* variables. `add` prints the pod IP.
set -euo pipefail
verb=$1 name=$2
conf=$(python3 - <<'PY'
import json
c = json.load(open("/etc/cni/net.d/10-pycalico.conflist"))
p = c["plugins"][0]
p["cniVersion"], p["name"] = c["cniVersion"], c["name"]
print(json.dumps(p))
PY
)
export CNI_CONTAINERID=$name CNI_NETNS=/var/run/netns/$name CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin:/usr/lib/cni
case "$verb" in
  add)
    if ip netns list | grep -qw "$name"; then  # a re-run: remove the old pod first
      CNI_COMMAND=DEL /opt/cni/bin/pycalico <<< "$conf" >/dev/null || true
      ip netns del "$name"
    fi
    ip netns add "$name"
    out=$(CNI_COMMAND=ADD /opt/cni/bin/pycalico <<< "$conf") || { echo "$out" >&2; exit 1; }
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ips"][0]["address"].split("/")[0])' "$out"
    ;;
  del)
    CNI_COMMAND=DEL /opt/cni/bin/pycalico <<< "$conf" >/dev/null
    ip netns del "$name" 2>/dev/null || true
    ;;
esac
