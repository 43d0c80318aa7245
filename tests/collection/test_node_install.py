"""The node role's package install: wheels built on the deploy host, copied, installed
with pip --no-index into a venv; a second run changes nothing; new code reinstalls."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.collection.conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")

PLAY = """
- name: Install the pycalico package like on a node
  hosts: 127.0.0.1
  connection: local
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Install
      ansible.builtin.include_role:
        name: pycalico.network.node
        tasks_from: install
"""


def recap(stdout: str) -> dict[str, int]:
    m = re.search(r"^127\.0\.0\.1\s+:\s+(.*)$", stdout, re.M)
    assert m, stdout
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def _has_venv(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-c", "import ensurepip, venv"], check=False,
                                              capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_venv(SYSTEM_PYTHON), reason="needs the distribution's python3 with venv (python3-venv)")
def test_offline_install_is_idempotent(playbook, tmp_path):
    pb = tmp_path / "node.yml"
    pb.write_text(PLAY)
    venv, wheels = tmp_path / "opt-pycalico", tmp_path / "wheel-cache"
    # A snapshot of the sources: the checkout may change while the test runs.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", source)
    args = ["-i", "127.0.0.1,", "-e", f"node_source_dir={source}",
            "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"node_venv={venv}",
            "-e", f"node_wheel_cache={wheels}", "-e", f"node_system_python={SYSTEM_PYTHON}",
            "-e", f"node_wheel_python={sys.executable}"]

    first = playbook(pb, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] >= 3  # venv, wheels, install
    assert (venv / "bin" / "pycalico-cni").exists() and (venv / "bin" / "pycalico-agent").exists()
    names = sorted(p.name.split("-")[0].lower() for p in (venv / "wheels").glob("*.whl"))
    assert names == ["jinja2", "markupsafe", "prometheus_client", "pycalico", "pyroute2", "pyyaml"]
    probe = subprocess.run([str(venv / "bin" / "python3"), "-c", "import pycalico.model, pyroute2, yaml"],
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr

    second = playbook(pb, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0, second.stdout
    checked = playbook(pb, *args, "--check", "--diff")  # ansible.builtin.pip: a converged venv shows no change
    assert checked.returncode == 0 and recap(checked.stdout)["changed"] == 0, checked.stdout

    # New code (same version number): the wheel differs, so it is copied and reinstalled.
    init = source / "src" / "pycalico" / "__init__.py"
    init.write_text(init.read_text() + "\nUPGRADE_MARK = 1\n")
    third = playbook(pb, *args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert recap(third.stdout)["changed"] == 2, third.stdout  # wheel copied, package reinstalled
    probe = subprocess.run([str(venv / "bin" / "python3"), "-c", "import pycalico; print(pycalico.UPGRADE_MARK)"],
                           capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "1", probe.stderr
