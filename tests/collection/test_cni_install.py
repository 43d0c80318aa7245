"""pycalico.network.cni_install: writes the compiled launcher once, reports check mode and
diff truthfully, and rewrites only what changed."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.collection.conftest import VENV_BIN


def run(collections_path: Path, check: bool = False, **args: Any) -> dict[str, Any]:
    from ansible.module_utils.testing import patch_module_args

    code = importlib.import_module("ansible_collections.pycalico.network.plugins.modules.cni_install")
    out = io.StringIO()
    with patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": True}), \
            contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        code.main()
    return json.loads(out.getvalue())


def test_check_mode_then_install_then_nothing_to_do(collections_path: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    checked = run(collections_path, check=True, bin_dir=str(bin_dir), python=sys.executable)
    assert checked["changed"] is True and not bin_dir.exists()
    assert "absent" in checked["diff"]["before"] and f"#!{sys.executable} -IS" in checked["diff"]["after"]

    first = run(collections_path, bin_dir=str(bin_dir), python=sys.executable)
    assert first["changed"] is True
    assert [e["path"] for e in first["executables"]] == [str(bin_dir / "pycalico"), str(bin_dir / "pycalico-ipam")]
    for name in ("pycalico", "pycalico-ipam"):
        assert (bin_dir / name).read_text().startswith(f"#!{sys.executable} -IS\n")
        assert (bin_dir / name).stat().st_mode & 0o777 == 0o755

    again = run(collections_path, bin_dir=str(bin_dir), python=sys.executable)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]

    (bin_dir / "pycalico-ipam").chmod(0o644)
    repaired = run(collections_path, bin_dir=str(bin_dir), python=sys.executable)
    assert [e["changed"] for e in repaired["executables"]] == [False, True]
    assert (bin_dir / "pycalico-ipam").stat().st_mode & 0o777 == 0o755


def test_bad_interpreter_is_named(collections_path: Path, tmp_path: Path) -> None:
    relative = run(collections_path, bin_dir=str(tmp_path), python="python3")
    assert relative["failed"] and "python: 'python3' is not an absolute path" in relative["msg"]
    missing = run(collections_path, bin_dir=str(tmp_path), python=str(tmp_path / "nope" / "python"))
    assert missing["failed"] and "does not exist" in missing["msg"]
    assert not (tmp_path / "pycalico").exists()


def test_through_ansible_the_running_interpreter_is_the_default(ansible_env: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "cni-bin"
    env = dict(ansible_env, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    argv = [str(VENV_BIN / "ansible"), "localhost", "-m", "pycalico.network.cni_install",
            "-a", json.dumps({"bin_dir": str(bin_dir)}), "-e", f"ansible_python_interpreter={sys.executable}"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["changed"] is True, result
    assert (bin_dir / "pycalico").read_text().startswith(f"#!{sys.executable} -IS\n")
    code = subprocess.run([str(bin_dir / "pycalico-ipam")], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
                          env={"CNI_COMMAND": "VERSION", "PYCALICO_CNI_NO_FAST_PATH": "1"}, timeout=60)
    assert code.returncode == 0 and b'"supportedVersions"' in code.stdout
