"""Fixtures for the Ansible collection tests: the collection on a collections
path, modules run in-process or through the real `ansible` CLI, against the
real TLS etcd of tests/conftest.py."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdCluster

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _ensure_ansible() -> None:
    """`make test` runs pytest before scripts/check-collection.sh: install the tools it pins."""
    try:
        import ansible  # noqa: F401
        import ansible.module_utils.testing  # noqa: F401
    except ImportError:
        subprocess.run([str(REPO / "scripts" / "check-collection.sh"), "--install-only"], check=True, cwd=REPO)
        importlib.invalidate_caches()


_ensure_ansible()


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ansible_collections/pycalico/network -> the repository."""
    root = tmp_path_factory.mktemp("collections")
    ns = root / "ansible_collections" / "pycalico"
    ns.mkdir(parents=True)
    (ns / "network").symlink_to(REPO, target_is_directory=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


@pytest.fixture
def connection(etcd_cluster: EtcdCluster) -> dict[str, Any]:
    """The etcd connection options every module takes."""
    pki = etcd_cluster.pki
    return {
        "etcd_endpoints": list(etcd_cluster.endpoints),
        "etcd_ca_cert_file": str(pki.ca),
        "etcd_cert_file": str(pki.client_cert),
        "etcd_key_file": str(pki.client_key),
    }


def snapshot(client: Any) -> dict[str, str]:
    """Every key under /calico/ with its value: to show nothing was written."""
    kvs, _ = client.list("/calico/")
    return {kv.key: kv.value for kv in kvs}


ModuleRunner = Callable[..., dict[str, Any]]


@pytest.fixture
def run_module(collections_path: Path, connection: dict[str, Any]) -> ModuleRunner:
    """Run a module's main() in this process, as Ansible would; returns its result."""
    from ansible.module_utils.testing import patch_module_args

    def run(module: str, /, check: bool = False, diff: bool = True, **args: Any) -> dict[str, Any]:
        code = importlib.import_module(f"ansible_collections.pycalico.network.plugins.modules.{module}")
        params = {**connection, **args, "_ansible_check_mode": check, "_ansible_diff": diff}
        out = io.StringIO()
        with patch_module_args(params), contextlib.redirect_stdout(out):
            with contextlib.suppress(SystemExit):
                code.main()
        return json.loads(out.getvalue())

    return run


@pytest.fixture
def ansible_env(collections_path: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="false",
    )
    return env


@pytest.fixture
def ansible_cli(ansible_env: dict[str, str], connection: dict[str, Any]) -> ModuleRunner:
    """Run a module through `ansible localhost -m pycalico.network.<name>` (the real module path)."""

    def run(module: str, /, check: bool = False, diff: bool = True, **args: Any) -> dict[str, Any]:
        env = dict(ansible_env, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
        argv = [str(VENV_BIN / "ansible"), "localhost", "-m", f"pycalico.network.{module}",
                "-a", json.dumps({**connection, **args}), "-e", f"ansible_python_interpreter={sys.executable}"]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(
                f"ansible output is not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
        return data["plays"][0]["tasks"][0]["hosts"]["localhost"]

    return run


@pytest.fixture
def playbook(ansible_env: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ansible-playbook; returns the finished process (stdout is the default callback's text)."""

    def run(path: str | Path, *args: str, inventory: str | Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "ansible-playbook"), str(path), *args]
        if inventory is not None:
            argv += ["-i", str(inventory)]
        return subprocess.run(argv, env=ansible_env, capture_output=True, text=True, timeout=300, check=False,
                              cwd=tmp_path)

    return run


@pytest.fixture
def wiped(etcd: Any) -> Iterator[Any]:
    """Alias of the etcd fixture (an empty /calico/), for readability in tests."""
    yield etcd
