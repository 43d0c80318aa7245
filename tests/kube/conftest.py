"""Fixtures for the Kubernetes tests: the stand-in API server (tests/support/kube_apiserver.py,
HTTPS with client certificates) and a kubeconfig for it; etcd comes from tests/conftest.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.kube.api import KubeApi
from tests.support.kube_apiserver import KubeApiServer


@pytest.fixture
def kube(unique: str) -> Iterator[KubeApiServer]:
    directory = Path(tempfile.mkdtemp(prefix=f"{unique}-kube-"))
    server = KubeApiServer(directory, bookmark_interval=0.5).start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kubeconfig(kube: KubeApiServer) -> Path:
    return kube.write_kubeconfig(kube.dir / "kubeconfig")


@pytest.fixture
def kube_api(kubeconfig: Path) -> Iterator[KubeApi]:
    api = KubeApi(str(kubeconfig), timeout=3.0)
    yield api
    api.close()
