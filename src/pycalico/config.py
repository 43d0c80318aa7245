"""Datastore settings from the environment or a mapping: the one place they become a client."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pycalico.datastore.etcd import EtcdClient, TlsConfig
from pycalico.errors import ValidationError

NODE_ENV_FILE = "/etc/pycalico/pycalico.env"


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them (comments, blank
    lines and surrounding quotes allowed). A missing file is an empty mapping."""
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def node_environment(path: str | None = None) -> dict[str, str]:
    """The node's settings: the agent's environment file overlaid by this process's environment."""
    merged = read_env_file(path or os.environ.get("PYCALICO_ENV_FILE") or NODE_ENV_FILE)
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class DatastoreSettings:
    endpoints: tuple[str, ...]
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], *, prefix: str = "ETCD_") -> DatastoreSettings:
        """Reads ``ETCD_ENDPOINTS``, ``ETCD_CA_CERT_FILE``, ``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``."""
        raw = values.get(f"{prefix}ENDPOINTS", "") or ""
        endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
        if not endpoints:
            raise ValidationError(f"{prefix}ENDPOINTS", raw, "a comma-separated list of https://host:port URLs")
        for endpoint in endpoints:
            if not endpoint.startswith(("https://", "http://")):
                raise ValidationError(f"{prefix}ENDPOINTS", endpoint, "URLs starting with https:// or http://")
        settings = cls(
            endpoints,
            values.get(f"{prefix}CA_CERT_FILE", "") or "",
            values.get(f"{prefix}CERT_FILE", "") or "",
            values.get(f"{prefix}KEY_FILE", "") or "",
        )
        if any(e.startswith("https://") for e in endpoints):
            for field, value in (("CA_CERT_FILE", settings.ca_file), ("CERT_FILE", settings.cert_file),
                                 ("KEY_FILE", settings.key_file)):
                if not value:
                    raise ValidationError(f"{prefix}{field}", value, "a file path (required with https endpoints)")
        return settings

    @classmethod
    def from_env(cls) -> DatastoreSettings:
        return cls.from_mapping(os.environ)

    def tls(self) -> TlsConfig | None:
        if not self.ca_file:
            return None
        return TlsConfig(self.ca_file, self.cert_file, self.key_file)

    def client(self, *, timeout: float = 5.0, connect_timeout: float = 2.0) -> EtcdClient:
        return EtcdClient(list(self.endpoints), self.tls(), timeout=timeout, connect_timeout=connect_timeout)
