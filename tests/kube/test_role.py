"""The kube_controllers role's client install, run for real on this host: lightkube's wheels
fetched on the "deploy host" for the venv's Python and CPU, copied, installed with pip
--no-index; a second run changes nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SYSTEM_PYTHON = Path("/usr/bin/python3")

PLAY = """
- name: Install the Kubernetes client like on a master
  hosts: 127.0.0.1
  connection: local
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Install
      ansible.builtin.include_role:
        name: pycalico.network.kube_controllers
        tasks_from: install
"""


def recap(stdout: str) -> dict[str, int]:
    m = re.search(r"^127\.0\.0\.1\s+:\s+(.*)$", stdout, re.M)
    assert m, stdout
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible is installed by scripts/check-collection.sh")
def test_client_install_is_offline_on_the_host_and_idempotent(tmp_path: Path) -> None:
    collections = tmp_path / "collections" / "ansible_collections" / "pycalico"
    collections.mkdir(parents=True)
    (collections / "network").symlink_to(REPO, target_is_directory=True)
    venv = tmp_path / "opt-pycalico"
    subprocess.run([str(SYSTEM_PYTHON if SYSTEM_PYTHON.exists() else sys.executable), "-m", "venv", str(venv)],
                   check=True, capture_output=True)
    play = tmp_path / "kube.yml"
    play.write_text(PLAY)
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_HOME": str(tmp_path / "ansible-home")}
    args = [str(ANSIBLE_PLAYBOOK), "-i", "127.0.0.1,", str(play), "-e", f"ansible_python_interpreter={sys.executable}",
            "-e", f"kube_controllers_venv={venv}", "-e", f"kube_controllers_wheel_cache={tmp_path / 'wheels'}",
            "-e", f"kube_controllers_wheel_python={sys.executable}"]
    try:
        first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        assert recap(first.stdout)["changed"] >= 2  # wheels copied, client installed
        assert subprocess.run([str(venv / "bin" / "python3"), "-c", "import lightkube"], check=False).returncode == 0
        assert "Restart pycalico-kube-controllers when it runs" in first.stdout  # skipped: not running
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 0, second.stdout + second.stderr
        assert recap(second.stdout)["changed"] == 0, second.stdout
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
