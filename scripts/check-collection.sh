#!/usr/bin/env bash
# Quality gate for the Ansible collection pycalico.network, run by `make test`.
#
#   ansible-lint --profile production (offline), ansible-test sanity on a copy
#   under ansible_collections/pycalico/network, ansible-playbook --syntax-check
#   of every playbook, ansible-doc of a module.
#
# Installs what it needs into the project venv (.venv): the PyPI `ansible`
# bundle (community.crypto, ansible.posix, ...) and ansible-lint. No Galaxy.
# --install-only: just that (tests/collection uses it when ansible is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
BIN=$ROOT/$VENV/bin
PY=$BIN/python
ANSIBLE_BUNDLE=${ANSIBLE_BUNDLE:-12.3.0}
ANSIBLE_LINT=${ANSIBLE_LINT:-26.10.1}
SANITY_PYTHON=${SANITY_PYTHON:-3.11}
start=$(date +%s)

step() { printf '== check-collection: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

[ -x "$PY" ] || { echo "check-collection: $PY missing; run 'make venv' first" >&2; exit 1; }

# --- tools ------------------------------------------------------------------
stamp=$ROOT/$VENV/.collection-tools-$ANSIBLE_BUNDLE-$ANSIBLE_LINT
if [ ! -e "$stamp" ]; then
  step "installing ansible $ANSIBLE_BUNDLE and ansible-lint $ANSIBLE_LINT into $VENV"
  "$PY" -m pip install -q "ansible==$ANSIBLE_BUNDLE" "ansible-lint==$ANSIBLE_LINT" "netaddr>=1.3"
  touch "$stamp"
fi
[ "${1:-}" = "--install-only" ] && exit 0
export PATH=$BIN:$PATH
core_ver=$("$PY" -c 'from ansible.release import __version__ as v; print(v)')

# ansible-test bootstraps pip in each venv it makes with a script it downloads
# from a host that may be unreachable. A stand-in that does the same job with
# ensurepip + pip (from PyPI) goes into its cache under the expected name.
pip_ver=$("$PY" - <<'PY'
import re, pathlib, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
m = re.search(r"pip='([0-9.]+)'", src)
print(m.group(1) if m else "")
PY
)
[ -n "$pip_ver" ] || { echo "check-collection: cannot find ansible-test's pip version" >&2; exit 1; }
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
stand_in=$cache/get_pip_${pip_ver//./_}.py
# Written unless a real bootstrap script (without our marker) is already cached.
if [ ! -s "$stand_in" ] || grep -q 'pycalico stand-in' "$stand_in"; then
cat > "$stand_in" <<'PY'
# pycalico stand-in for pip's get-pip.py: ensurepip, then pip installs the
# requested packages (e.g. pip==X) like get-pip.py would.
import runpy
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, stdout=subprocess.DEVNULL)
sys.argv = ["pip", "install", "--upgrade"] + [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY
fi

# --- a collection tree: ansible_collections/pycalico/network ------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/pycalico-collection.XXXXXX")
trap 'rm -rf "$work"' EXIT
coll=$work/ansible_collections/pycalico/network
mkdir -p "$coll"
# What the collection is made of (not the Python package sources or tests:
# those are checked by ruff and pytest).
content=(galaxy.yml meta plugins roles playbooks inventory README.md)
for c in "${content[@]}"; do
  [ -e "$c" ] && cp -a "$c" "$coll/"
done
find "$coll" -name __pycache__ -prune -exec rm -rf {} +
# Sanity settings live with the collection tests: modules need Python >= 3.11
# (pycalico does), and the Apache-2.0 modules carry no GPLv3 header.
mkdir -p "$coll/tests/sanity"
printf 'modules:\n  python_requires: ">=3.11"\n' > "$coll/tests/config.yml"
core_minor=$(echo "$core_ver" | cut -d. -f1,2)
cp tests/collection/sanity/ignore.txt "$coll/tests/sanity/ignore-$core_minor.txt"
export ANSIBLE_COLLECTIONS_PATH=$work
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false

# --- ansible-lint -------------------------------------------------------------
step "ansible-lint --profile production"
# The collection's content (the lab and molecule scenarios have their own checks);
# our own roles and modules resolve through the copy.
ansible-lint --offline --profile production -q galaxy.yml meta roles playbooks plugins inventory

# --- syntax-check -----------------------------------------------------------
step "ansible-playbook --syntax-check"
for pb in playbooks/*.yml; do
  ansible-playbook --syntax-check -i inventory/example/hosts \
    -e NODE_TO_ADD=192.168.1.4 -e NODE_TO_DEL=192.168.1.4 "$pb" >/dev/null
  echo "   ok $pb"
done

# --- ansible-doc ----------------------------------------------------------------
step "ansible-doc pycalico.network.ippool"
for m in plugins/modules/*.py; do
  name=$(basename "$m" .py)
  ansible-doc -t module "pycalico.network.$name" >/dev/null
done
ansible-doc pycalico.network.ippool | head -5

# --- ansible-test sanity ------------------------------------------------------
step "ansible-test sanity --python $SANITY_PYTHON"
sanity() { (cd "$coll" && ansible-test sanity --python "$SANITY_PYTHON" --color no) 2>&1 | tee "$work/sanity.log"; }
if ! sanity; then
  # A failed download while ansible-test builds its venvs is not a finding: retry
  # once then. Any other failure stands.
  if grep -qE 'pip.*(failed|error)|Could not (fetch|find a version)|ConnectionError|Read timed out|does not have pip' \
       "$work/sanity.log"; then
    step "retrying ansible-test sanity after a package download failure"
    sanity
  else
    exit 1
  fi
fi

step "passed"
