"""Calico's policy kinds: NetworkPolicy, GlobalNetworkPolicy, Profile, NetworkSet,
GlobalNetworkSet, HostEndpoint, Tier (calico-policy.md §1).

JSON exactly as Calico stores it; the agent's policy calculation reads ``spec``
directly, so these classes own defaults and validation only.
"""

from __future__ import annotations

from pycalico.model.resources import Resource

DEFAULT_TIER = "default"


class NetworkPolicy(Resource):
    KIND = "NetworkPolicy"
    PLURAL = "networkpolicies"
    NAMESPACED = True


class GlobalNetworkPolicy(Resource):
    KIND = "GlobalNetworkPolicy"
    PLURAL = "globalnetworkpolicies"


class Profile(Resource):
    KIND = "Profile"
    PLURAL = "profiles"


class NetworkSet(Resource):
    KIND = "NetworkSet"
    PLURAL = "networksets"
    NAMESPACED = True


class GlobalNetworkSet(Resource):
    KIND = "GlobalNetworkSet"
    PLURAL = "globalnetworksets"


class HostEndpoint(Resource):
    KIND = "HostEndpoint"
    PLURAL = "hostendpoints"


class Tier(Resource):
    KIND = "Tier"
    PLURAL = "tiers"


POLICY_KINDS: tuple[type[Resource], ...] = (
    NetworkPolicy, GlobalNetworkPolicy, Profile, NetworkSet, GlobalNetworkSet, HostEndpoint, Tier,
)
