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
def test_offline_install_is_idempotent_and_keeps_releases(playbook, tmp_path):
    pb, rollback = tmp_path / "node.yml", tmp_path / "rollback.yml"
    pb.write_text(PLAY)
    rollback.write_text(PLAY.replace("tasks_from: install", "tasks_from: rollback"))
    root, wheels = tmp_path / "opt-pycalico", tmp_path / "wheel-cache"
    # A snapshot of the sources: the checkout may change while the test runs.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", source)
    args = ["-i", "127.0.0.1,", "-e", f"node_source_dir={source}",
            "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"node_install_root={root}",
            "-e", f"node_wheel_cache={wheels}", "-e", f"node_system_python={SYSTEM_PYTHON}",
            "-e", f"node_wheel_python={sys.executable}", "-e", "node_releases_kept=2"]
    current, previous = root / "current", root / "previous"

    def mark() -> str:
        probe = subprocess.run([str(current / "bin" / "python3"), "-c",
                                "import pycalico; print(getattr(pycalico, 'UPGRADE_MARK', 0))"],
                               capture_output=True, text=True, check=False)
        assert probe.returncode == 0, probe.stderr
        return probe.stdout.strip()

    # A node of the single-venv layout: its leftovers go with tasks_from=legacy.
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(root)], check=True)

    first = playbook(pb, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] >= 4  # release dir, venv, wheels, install, current
    release = current.readlink()
    assert release.parent == Path("releases") and release.name.startswith("0.1.0-"), release
    assert (current / "bin" / "pycalico-cni").exists() and (current / "bin" / "pycalico-agent").exists()
    assert not previous.exists() and not previous.is_symlink()
    names = sorted(p.name.split("-")[0].lower() for p in (current / "wheels").glob("*.whl"))
    assert names == ["jinja2", "markupsafe", "prometheus_client", "pycalico", "pyroute2", "pyyaml"]
    probe = subprocess.run([str(current / "bin" / "python3"), "-c", "import sys, pycalico.model, pyroute2, yaml; "
                            "print(sys.prefix)"], capture_output=True, text=True, check=False)
    assert probe.returncode == 0 and probe.stdout.strip() == str(current), probe.stderr

    second = playbook(pb, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0, second.stdout
    checked = playbook(pb, *args, "--check", "--diff")  # ansible.builtin.pip: a converged venv shows no change
    assert checked.returncode == 0 and recap(checked.stdout)["changed"] == 0, checked.stdout

    # New code (same version number): the wheels differ, so it is a new release; the old one is previous.
    init = source / "src" / "pycalico" / "__init__.py"
    init.write_text(init.read_text() + "\nUPGRADE_MARK = 1\n")
    third = playbook(pb, *args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert current.readlink() != release and previous.readlink() == release
    assert mark() == "1"
    # A version bump: the wheel of the earlier version is not carried into the new release.
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.1.1"', 1))
    init.write_text(init.read_text().replace("UPGRADE_MARK = 1", "UPGRADE_MARK = 2"))
    fourth = playbook(pb, *args)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    bumped = current.readlink()
    assert bumped.name.startswith("0.1.1-") and mark() == "2"
    assert [p.name for p in (current / "wheels").glob("pycalico-*.whl")] == ["pycalico-0.1.1-py3-none-any.whl"]
    # node_releases_kept=2: current and previous stay, the first release is gone.
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([bumped.name, previous.readlink().name])
    assert not (root / release).exists()

    back = playbook(rollback, *args)
    assert back.returncode == 0, back.stdout + back.stderr
    assert mark() == "1" and not previous.is_symlink()
    again = playbook(rollback, *args)  # nothing to roll back to any more: refused, current unchanged
    assert again.returncode != 0 and "no release to roll back to" in again.stdout, again.stdout
    assert mark() == "1"

    assert (root / "pyvenv.cfg").exists() and (root / "bin").is_dir()
    legacy = playbook(tmp_path / "legacy.yml" if (tmp_path / "legacy.yml").write_text(
        PLAY.replace("tasks_from: install", "tasks_from: legacy")) else pb, *args)
    assert legacy.returncode == 0, legacy.stdout + legacy.stderr
    assert sorted(p.name for p in root.iterdir()) == ["current", "releases"]
    assert mark() == "1"
