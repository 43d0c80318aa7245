# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The allowed values of the modules' options: pycalico.model's own.

The literal copies serve only when pycalico is not importable, so that the argument
spec can still be built (ansible-test sanity, ansible-doc) and a module reports the
missing package; tests/collection checks them, the argument specs and the modules'
documentation against the model.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

FALLBACK = {
    "pool_modes": ["Never", "Always", "CrossSubnet"],
    "allowed_uses": ["Workload", "Tunnel", "LoadBalancer"],
    "next_hop_modes": ["Auto", "Self", "Keep"],
    "source_address_modes": ["UseNodeIP", "None"],
    "bind_modes": ["None", "NodeIP"],
    "bgp_log_levels": ["Debug", "Info", "Warning", "Error", "Fatal", "None"],
}

try:
    from pycalico.model.resources import (
        ALLOWED_USES,
        BIND_MODES,
        MODES,
        NEXT_HOP_MODES,
        SOURCE_ADDRESS_MODES,
        BGPConfiguration,
    )
except ImportError:
    CHOICES = dict((k, list(v)) for k, v in FALLBACK.items())
else:
    CHOICES = {
        "pool_modes": list(MODES),
        "allowed_uses": list(ALLOWED_USES),
        "next_hop_modes": list(NEXT_HOP_MODES),
        "source_address_modes": list(SOURCE_ADDRESS_MODES),
        "bind_modes": list(BIND_MODES),
        "bgp_log_levels": list(BGPConfiguration.LOG_LEVELS),
    }

POOL_MODES = CHOICES["pool_modes"]
ALLOWED_USE_CHOICES = CHOICES["allowed_uses"]
NEXT_HOP_MODE_CHOICES = CHOICES["next_hop_modes"]
SOURCE_ADDRESS_CHOICES = CHOICES["source_address_modes"]
BIND_MODE_CHOICES = CHOICES["bind_modes"]
BGP_LOG_LEVEL_CHOICES = CHOICES["bgp_log_levels"]
