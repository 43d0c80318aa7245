"""The one data model: Calico v3 resources, their keys, defaults and validation."""

from pycalico.model.resources import (
    CLUSTER_NAME_ANNOTATION,
    DEFAULT_AS,
    KINDS,
    BGPConfiguration,
    BGPPeer,
    ClusterInformation,
    FelixConfiguration,
    IPPool,
    Node,
    Resource,
    WorkloadEndpoint,
    from_json,
    kind_by_name,
    wep_name,
)
from pycalico.model.store import ResourceStore

__all__ = [
    "CLUSTER_NAME_ANNOTATION", "DEFAULT_AS", "KINDS", "BGPConfiguration", "BGPPeer", "ClusterInformation",
    "FelixConfiguration", "IPPool", "Node", "Resource", "ResourceStore", "WorkloadEndpoint", "from_json",
    "kind_by_name", "wep_name",
]
