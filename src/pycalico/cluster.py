"""Cluster identity: the ClusterInformation record that says which cluster an etcd belongs to.

One implementation for the agent (which claims at startup) and the Ansible
modules (which guard, and claim in check mode too).
"""

from __future__ import annotations

import uuid

import pycalico
from pycalico.errors import PycalicoError, ResourceExists, ResourceNotFound, RevisionConflict
from pycalico.model import CLUSTER_NAME_ANNOTATION, ClusterInformation, ResourceStore


class ClusterMismatch(PycalicoError):
    def __init__(self, have: str, want: str) -> None:
        self.have = have
        self.want = want
        super().__init__(
            f"this etcd belongs to cluster {have!r}, not {want!r} (ClusterInformation annotation "
            f"{CLUSTER_NAME_ANNOTATION}): refusing to touch it; check ETCD_ENDPOINTS and CLUSTER_NAME")


def new_cluster_information(cluster_name: str, cluster_type: str = "pycalico") -> ClusterInformation:
    info = ClusterInformation("default", {
        "clusterGUID": uuid.uuid4().hex,
        "clusterType": cluster_type,
        "calicoVersion": f"pycalico-{pycalico.__version__}",
        "datastoreReady": True,
    })
    if cluster_name:
        info.metadata["annotations"] = {CLUSTER_NAME_ANNOTATION: cluster_name}
    return info


def plan_claim(current: ClusterInformation | None, cluster_name: str,
               cluster_type: str = "pycalico") -> ClusterInformation | None:
    """What to write so the datastore is ready and belongs to ``cluster_name``;
    None when nothing changes. Raises ClusterMismatch for another cluster's etcd."""
    have = current.cluster_name if current is not None else ""
    if cluster_name and have and have != cluster_name:
        raise ClusterMismatch(have, cluster_name)
    if current is None:
        return new_cluster_information(cluster_name, cluster_type)
    desired: ClusterInformation = current.copy()  # type: ignore[assignment]
    if cluster_name and not have:
        desired.metadata.setdefault("annotations", {})[CLUSTER_NAME_ANNOTATION] = cluster_name
    desired.spec.setdefault("datastoreReady", True)
    return None if desired == current else desired


def claim_cluster(store: ResourceStore, cluster_name: str, cluster_type: str = "pycalico") -> ClusterInformation:
    """Create or complete ClusterInformation ``default`` for ``cluster_name``, retrying races."""
    for _ in range(100):
        current = store.get(ClusterInformation, "default")
        desired = plan_claim(current, cluster_name, cluster_type)
        if desired is None:
            assert current is not None
            return current
        try:
            return store.create(desired) if current is None else store.update(desired)
        except (ResourceExists, RevisionConflict, ResourceNotFound):
            continue
    raise RevisionConflict("ClusterInformation default")
