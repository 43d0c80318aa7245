"""Resource files as calicoctl reads them: YAML (several documents) or JSON, a single
resource, a JSON array, ``kind: List`` or ``kind: <Kind>List`` with ``items``; ``-``
is stdin. Decoding is strict: the apiVersion must be Calico's and the kind known;
the model refuses unknown fields. Namespaces are filled in as calicoctl does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pycalico.errors import PycalicoError, ValidationError
from pycalico.model import KINDS, Resource
from pycalico.model.resources import API_VERSION

DEFAULT_NAMESPACE = "default"


class DocumentError(PycalicoError):
    """A document of a file is refused: says which one (position, kind, name) and why."""

    def __init__(self, label: str, error: PycalicoError) -> None:
        self.label = label
        self.error = error
        super().__init__(f"{label}: {error}")


@dataclass
class Document:
    label: str  # "document 2" or "document 1, item 3": where it is in the file
    data: Any

    def describe(self, res: Resource | None = None) -> str:
        """The label with the kind and [namespace/]name, as far as they are known."""
        data: dict[str, Any] = self.data if isinstance(self.data, dict) else {}
        meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
        kind = res.KIND if res is not None else data.get("kind")
        name = res.name if res is not None else meta.get("name")
        ns = res.namespace if res is not None else meta.get("namespace")
        if not kind:
            return self.label
        who = f"{ns}/{name}" if ns and name else str(name or "")
        return f"{self.label} ({kind} {who})" if who else f"{self.label} ({kind})"


def read_text(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def parse(text: str, source: str) -> list[Document]:
    """Every resource of the file, lists flattened, each with its place in the file."""
    try:
        if text.lstrip().startswith(("{", "[")):
            loaded = [json.loads(text)]
        else:
            loaded = list(yaml.safe_load_all(text))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError("file", source, "YAML or JSON resources", reason=str(exc).splitlines()[0]) from None
    docs: list[Document] = []
    position = 0
    for doc in loaded:
        if doc is None:
            continue
        position += 1
        label = f"document {position}"
        if isinstance(doc, list):
            docs.extend(Document(f"{label}, item {i}", item) for i, item in enumerate(doc, 1))
        elif isinstance(doc, dict) and _list_kind(doc.get("kind")) is not None:
            docs.extend(_list_items(label, doc))
        else:
            docs.append(Document(label, doc))
    if not docs:
        raise ValidationError("file", source, "at least one resource", reason="no resources in the file")
    return docs


def _list_kind(kind: Any) -> str | None:
    """``List`` → "" (any kind); ``NetworkPolicyList`` → ``NetworkPolicy``; else None."""
    if kind == "List":
        return ""
    if isinstance(kind, str) and kind.endswith("List") and kind[:-4] in KINDS:
        return kind[:-4]
    return None


def _list_items(label: str, doc: dict[str, Any]) -> list[Document]:
    item_kind = _list_kind(doc.get("kind"))
    for field in doc:
        if field not in ("kind", "apiVersion", "metadata", "items"):
            raise DocumentError(label, ValidationError(field, doc[field], "one of kind, apiVersion, metadata, items",
                                                       reason=f"unknown field of a {doc['kind']}"))
    items = doc.get("items")
    if not isinstance(items, list):
        raise DocumentError(label, ValidationError("items", items, "a list of resources"))
    out = []
    for i, item in enumerate(items, 1):
        if item_kind and isinstance(item, dict):
            # A typed list's items may leave out their kind (Kubernetes lists do).
            item = {"kind": item_kind, "apiVersion": doc.get("apiVersion", API_VERSION), **item}
            if item["kind"] != item_kind:
                raise DocumentError(f"{label}, item {i}", ValidationError("kind", item["kind"], item_kind,
                                                                          reason=f"an item of a {doc['kind']}"))
        out.append(Document(f"{label}, item {i}", item))
    return out


def decode(doc: Document) -> Resource:
    """The resource of one document: apiVersion and kind checked, the rest left to the model."""
    data = doc.data
    try:
        if not isinstance(data, dict):
            raise ValidationError("resource", data, "an object with kind, apiVersion, metadata and spec")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValidationError("kind", kind, ", ".join(KINDS))
        if data.get("apiVersion") != API_VERSION:
            raise ValidationError("apiVersion", data.get("apiVersion"), API_VERSION)
        for field in ("metadata", "spec"):
            if field in data and data[field] is not None and not isinstance(data[field], dict):
                raise ValidationError(field, data[field], "an object")
        return KINDS[kind].from_json(data)
    except PycalicoError as exc:
        raise DocumentError(doc.describe(), exc) from None


def place(res: Resource, namespace: str, all_namespaces: bool = False) -> None:
    """calicoctl's namespace rules: a namespaced kind gets ``-n`` or ``default`` unless it
    names its own; a namespace on a cluster-wide kind is an error, as is a conflict."""
    own = res.metadata.get("namespace") or ""
    if not res.NAMESPACED:
        if own:
            raise ValidationError("metadata.namespace", own, f"empty: {res.KIND} is not namespaced")
        if namespace or all_namespaces:
            raise ValidationError("--namespace", namespace or "--all-namespaces",
                                  f"no namespace: {res.KIND} is not namespaced")
        return
    if namespace and own and own != namespace:
        raise ValidationError("metadata.namespace", own, f"{namespace!r} (given with --namespace) or no namespace")
    res.metadata["namespace"] = own or namespace or DEFAULT_NAMESPACE
