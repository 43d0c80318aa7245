"""Settings from the node's environment file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.config import DatastoreSettings, node_environment, read_env_file
from pycalico.errors import ValidationError


def test_env_file_is_read_like_systemd(tmp_path: Path) -> None:
    env = tmp_path / "pycalico.env"
    env.write_text("# comment\n\nETCD_ENDPOINTS=\"https://10.0.0.1:2379,https://10.0.0.2:2379\"\n"
                   "ETCD_CA_CERT_FILE='/etc/pycalico/ssl/ca.pem'\nNODENAME=n1\n")
    assert read_env_file(str(env)) == {"ETCD_ENDPOINTS": "https://10.0.0.1:2379,https://10.0.0.2:2379",
                                       "ETCD_CA_CERT_FILE": "/etc/pycalico/ssl/ca.pem", "NODENAME": "n1"}
    assert read_env_file(str(tmp_path / "missing")) == {}


def test_process_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "pycalico.env"
    env.write_text("ETCD_ENDPOINTS=https://10.0.0.1:2379\nNODENAME=file\n")
    monkeypatch.setenv("NODENAME", "process")
    merged = node_environment(str(env))
    assert merged["ETCD_ENDPOINTS"] == "https://10.0.0.1:2379" and merged["NODENAME"] == "process"


def test_https_endpoints_need_the_tls_files() -> None:
    with pytest.raises(ValidationError) as err:
        DatastoreSettings.from_mapping({"ETCD_ENDPOINTS": "https://10.0.0.1:2379"})
    assert err.value.field == "ETCD_CA_CERT_FILE"
