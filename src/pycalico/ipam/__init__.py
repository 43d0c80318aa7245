"""Calico-compatible block IPAM."""

from pycalico.ipam.allocator import (
    IPAM,
    TUNNEL_TYPES,
    CheckReport,
    IpamConfig,
    handle_id,
    tunnel_attrs,
    tunnel_handle,
)
from pycalico.ipam.block import AllocationBlock

__all__ = ["IPAM", "TUNNEL_TYPES", "AllocationBlock", "CheckReport", "IpamConfig", "handle_id", "tunnel_attrs",
           "tunnel_handle"]
