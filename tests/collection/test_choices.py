"""Every option with a fixed set of values has `choices`, equal to pycalico.model's allowed values,
in the argument spec, in the module's documentation and in the fallback copy (used only without pycalico)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.model.resources import (
    ALLOWED_USES,
    BIND_MODES,
    MODES,
    NEXT_HOP_MODES,
    SOURCE_ADDRESS_MODES,
    BGPConfiguration,
)
from tests.collection.conftest import REPO

# (module, option) -> what the model allows for the field the option sets
MODEL_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("ippool", "ipip_mode"): MODES,
    ("ippool", "vxlan_mode"): MODES,
    ("ippool", "allowed_uses"): ALLOWED_USES,
    ("pool_migration", "ipip_mode"): MODES,
    ("pool_migration", "vxlan_mode"): MODES,
    ("bgp_peer", "source_address"): SOURCE_ADDRESS_MODES,
    ("bgp_peer", "next_hop_mode"): NEXT_HOP_MODES,
    ("bgp_configuration", "log_severity_screen"): BGPConfiguration.LOG_LEVELS,
    ("bgp_configuration", "bind_mode"): BIND_MODES,
}
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


class _Captured(Exception):
    def __init__(self, argument_spec: dict[str, Any]) -> None:
        self.argument_spec = argument_spec


def argument_spec(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The module's argument spec, as main() hands it to AnsibleModule."""
    code = importlib.import_module(f"ansible_collections.pycalico.network.plugins.modules.{name}")

    def capture(*_: Any, argument_spec: dict[str, Any], **__: Any) -> None:
        raise _Captured(argument_spec)

    monkeypatch.setattr(code, "AnsibleModule", capture)
    with pytest.raises(_Captured) as captured:
        code.main()
    return captured.value.argument_spec


def documented(name: str) -> dict[str, Any]:
    code = importlib.import_module(f"ansible_collections.pycalico.network.plugins.modules.{name}")
    return yaml.safe_load(code.DOCUMENTATION).get("options") or {}


@pytest.mark.parametrize(("module", "option"), sorted(MODEL_CHOICES))
def test_choices_are_the_models(collections_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                                option: str) -> None:
    allowed = list(MODEL_CHOICES[module, option])
    assert argument_spec(module, monkeypatch)[option]["choices"] == allowed
    assert [str(c) for c in documented(module)[option]["choices"]] == allowed


@pytest.mark.parametrize("module", MODULES)
def test_documented_choices_match_the_argument_spec(collections_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    module: str) -> None:
    spec, docs = argument_spec(module, monkeypatch), documented(module)
    for option, entry in spec.items():
        if "choices" in entry or "choices" in docs.get(option, {}):
            assert [str(c) for c in docs[option]["choices"]] == list(entry["choices"]), option


def test_fallback_copies_equal_the_model(collections_path: Path) -> None:
    choices = importlib.import_module("ansible_collections.pycalico.network.plugins.module_utils.choices")
    assert choices.CHOICES == choices.FALLBACK
    assert choices.FALLBACK["pool_modes"] == list(MODES)


def test_a_value_outside_the_choices_is_refused_naming_option_value_and_allowed(run_module, etcd) -> None:
    result = run_module("ippool", cidr="10.50.0.0/16", ipip_mode="Sometimes")
    assert result["failed"] is True
    assert "ipip_mode" in result["msg"] and "Sometimes" in result["msg"]
    assert "Never, Always, CrossSubnet" in result["msg"]
