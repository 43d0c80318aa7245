#!/usr/bin/env bash
# Installs the Debian packages the tests, benchmarks and lab need. Idempotent:
# does nothing when every package is already installed.
set -euo pipefail
# With arguments, installs those packages instead of the test set.
packages=(etcd-server etcd-client bird2 containernetworking-plugins iproute2 iputils-ping
          iptables ipset nftables tcpdump iperf3 procps openssl python3-venv)
if (($#)); then packages=("$@"); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
