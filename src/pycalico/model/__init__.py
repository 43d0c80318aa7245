"""The one data model: Calico v3 resources, their keys, defaults and validation."""

from pycalico.model.policy import (
    POLICY_KINDS,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
)
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
from pycalico.model.resources import register as _register
from pycalico.model.store import ResourceStore

_register(*POLICY_KINDS)

__all__ = [
    "CLUSTER_NAME_ANNOTATION", "DEFAULT_AS", "KINDS", "POLICY_KINDS", "BGPConfiguration", "BGPPeer",
    "ClusterInformation", "FelixConfiguration", "GlobalNetworkPolicy", "GlobalNetworkSet", "HostEndpoint", "IPPool",
    "NetworkPolicy", "NetworkSet", "Node", "Profile", "Resource", "ResourceStore", "Tier", "WorkloadEndpoint",
    "from_json", "kind_by_name", "wep_name",
]
