"""BGP passwords: Calico's ``secretKeyRef`` resolved from files on the node.

A BGPPeer's ``spec.password.secretKeyRef`` (and BGPConfiguration's ``nodeMeshPassword``)
names a Secret and a key. Calico's node reads that Secret from the Kubernetes API; a
pycalico node in etcd mode has no API access, so the collection installs each secret's key
as a file, ``<directory>/<name>/<key>`` (root, 0600), and confd reads it from there. The
value is never logged; errors name the file only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pycalico.bgp.config import PasswordResolver

DEFAULT_DIRECTORY = "/etc/pycalico/bgp-secrets"


class SecretError(Exception):
    """A referenced secret that cannot be used (missing, empty, unreadable, or not a BIRD string)."""


class FileSecrets:
    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIRECTORY) -> None:
        self.directory = Path(directory)

    def path(self, name: str, key: str) -> Path:
        for part in (name, key):
            if not part or "/" in part or part in (".", ".."):
                raise SecretError(f"secretKeyRef {name!r}/{key!r} is not a secret name and key")
        return self.directory / name / key

    def read(self, name: str, key: str) -> str:
        path = self.path(name, key)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SecretError(f"{path}: {exc.strerror or exc}") from None
        # A file usually ends in a newline; everything else is the password, as a Secret's bytes are.
        value = text[:-1] if text.endswith("\n") else text
        if not value:
            raise SecretError(f"{path} is empty")
        if '"' in value or "\n" in value or "\\" in value:
            raise SecretError(f"{path} holds a double quote, backslash or newline, which a BIRD password string "
                              "cannot carry")
        return value


def resolver(secrets: FileSecrets, log: logging.Logger) -> PasswordResolver:
    """A pycalico.bgp.config.PasswordResolver over ``secrets``: "" without a reference, the password,
    "" for an ``optional`` secret that cannot be read, None (leave the peer out) otherwise."""

    def resolve(what: str, field: Any) -> str | None:
        if not field:
            return ""
        ref = field.get("secretKeyRef") or {} if isinstance(field, dict) else {}
        try:
            return secrets.read(str(ref.get("name", "")), str(ref.get("key", "")))
        except SecretError as exc:
            if ref.get("optional"):
                log.warning("%s: %s; the secret is optional, so the session has no password", what, exc)
                return ""
            log.error("%s: %s; the peer is left out until the secret can be read", what, exc)
            return None

    return resolve
