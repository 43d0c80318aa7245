"""pycalico-kube-controllers settings: Calico's environment names, clear errors, and the
environment file the kube_controllers role writes is one they accept."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from pycalico.config import read_env_file
from pycalico.errors import ValidationError
from pycalico.kube.settings import Settings, parse_duration

REPO = Path(__file__).resolve().parents[2]
ETCD = {"ETCD_ENDPOINTS": "https://127.0.0.1:2379", "ETCD_CA_CERT_FILE": "/ca", "ETCD_CERT_FILE": "/c",
        "ETCD_KEY_FILE": "/k"}


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("90s", 90), ("1h30m", 5400), ("0", 0), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("RECONCILER_PERIOD", text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 minutes", "-1s"])
def test_bad_duration_names_the_field(text: str) -> None:
    with pytest.raises(ValidationError, match="RECONCILER_PERIOD"):
        parse_duration("RECONCILER_PERIOD", text)


def test_defaults_are_calicos() -> None:
    settings = Settings.from_mapping(ETCD)
    assert settings.controllers == ("node", "policy", "workloadendpoint", "serviceaccount", "namespace")
    assert (settings.reconciler_period, settings.leak_grace_period, settings.metrics_port) == (300, 900, 9094)
    assert settings.kubeconfig == ""


def test_kubeasz_controller_list_with_alias_and_loadbalancer() -> None:
    settings = Settings.from_mapping({**ETCD, "ENABLED_CONTROLLERS": "policy,profile,serviceaccount,"
                                                                    "workloadendpoint,node,loadbalancer"})
    assert settings.controllers == ("policy", "namespace", "serviceaccount", "workloadendpoint", "node")


def test_unknown_controller_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"ENABLED_CONTROLLERS: invalid value 'flannelmigration'"):
        Settings.from_mapping({**ETCD, "ENABLED_CONTROLLERS": "policy,flannelmigration"})


def test_calico_prefixed_etcd_names_are_read() -> None:
    settings = Settings.from_mapping({"CALICO_" + k: v for k, v in ETCD.items()})
    assert settings.datastore.endpoints == ("https://127.0.0.1:2379",)


def test_missing_etcd_endpoints_is_named() -> None:
    with pytest.raises(ValidationError, match="^ETCD_ENDPOINTS"):
        Settings.from_mapping({})


def test_role_environment_file_is_accepted(tmp_path: Path) -> None:
    role = REPO / "roles" / "kube_controllers"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"
    text = env.from_string((role / "templates" / "kube-controllers.env.j2").read_text()).render(
        ansible_managed="Ansible managed", inventory_hostname="192.168.1.1",
        **{**defaults, "kube_controllers_etcd_endpoints": "https://192.168.1.1:2379"})
    path = tmp_path / "kube-controllers.env"
    path.write_text(text)
    settings = Settings.from_mapping(read_env_file(str(path)))
    assert settings.kubeconfig == "/root/.kube/config"
    assert settings.datastore.cert_file == "/etc/pycalico/ssl/client.pem"
    assert settings.controllers == ("policy", "namespace", "serviceaccount", "workloadendpoint", "node")
    assert settings.identity == "192.168.1.1" and settings.leader_ttl == 5
