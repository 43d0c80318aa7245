"""Shared fixtures: a real etcd with mutual TLS (Debian etcd-server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pycalico.datastore.etcd import EtcdClient
from tests.support.etcd import EtcdCluster

RUN_ID = uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(1, prefix=f"pct{RUN_ID}") as cluster:
        yield cluster


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> Iterator[EtcdClient]:
    """A client on an etcd whose /calico/ tree is empty at the start of the test."""
    client = etcd_cluster.client()
    client.delete_prefix("/calico/")
    yield client
    client.delete_prefix("/calico/")
    client.close()


@pytest.fixture
def unique() -> str:
    """A short name prefix unique to this test run, for namespaces and files."""
    return f"t{RUN_ID}{uuid.uuid4().hex[:4]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root for network namespaces")
        for item in items:
            if "netns" in item.keywords:
                item.add_marker(skip)
