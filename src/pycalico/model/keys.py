"""etcd key layout, exactly Calico's etcdv3 datastore (calico-internals §1)."""

from __future__ import annotations

import ipaddress

RESOURCE_ROOT = "/calico/resources/v3/projectcalico.org/"
IPAM_ROOT = "/calico/ipam/v2/"
BLOCK_PREFIX_V4 = IPAM_ROOT + "assignment/ipv4/block/"
BLOCK_PREFIX_V6 = IPAM_ROOT + "assignment/ipv6/block/"
HANDLE_PREFIX = IPAM_ROOT + "handle/"
HOST_AFFINITY_ROOT = IPAM_ROOT + "host/"
IPAM_CONFIG_KEY = IPAM_ROOT + "config"
FELIX_STATUS_ROOT = "/calico/felix/v2/"


def resource_prefix(plural: str, namespace: str | None = None) -> str:
    if namespace:
        return f"{RESOURCE_ROOT}{plural}/{namespace}/"
    return f"{RESOURCE_ROOT}{plural}/"


def resource_key(plural: str, name: str, namespace: str | None = None) -> str:
    return resource_prefix(plural, namespace) + name


def cidr_to_segment(cidr: str) -> str:
    """``10.244.12.0/26`` → ``10.244.12.0-26``."""
    return cidr.replace("/", "-")


def segment_to_cidr(segment: str) -> str:
    net, _, length = segment.rpartition("-")
    return f"{net}/{length}"


def _family(cidr: str) -> str:
    return "ipv6" if ipaddress.ip_network(cidr, strict=False).version == 6 else "ipv4"


def block_key(cidr: str) -> str:
    return f"{IPAM_ROOT}assignment/{_family(cidr)}/block/{cidr_to_segment(cidr)}"


def block_prefix(version: int = 4) -> str:
    return BLOCK_PREFIX_V6 if version == 6 else BLOCK_PREFIX_V4


def host_affinity_prefix(host: str, version: int = 4) -> str:
    return f"{HOST_AFFINITY_ROOT}{host}/ipv{version}/block/"


def affinity_key(host: str, cidr: str) -> str:
    return f"{HOST_AFFINITY_ROOT}{host}/{_family(cidr)}/block/{cidr_to_segment(cidr)}"


def parse_affinity_key(key: str) -> tuple[str, str] | None:
    """``/calico/ipam/v2/host/<host>/ipv4/block/<seg>`` → (host, cidr)."""
    if not key.startswith(HOST_AFFINITY_ROOT):
        return None
    parts = key[len(HOST_AFFINITY_ROOT):].split("/")
    if len(parts) != 4 or parts[2] != "block":
        return None
    return parts[0], segment_to_cidr(parts[3])


def handle_key(handle_id: str) -> str:
    return HANDLE_PREFIX + handle_id


def felix_status_key(host: str, region: str = "no-region") -> str:
    return f"{FELIX_STATUS_ROOT}{region}/host/{host}/status"
