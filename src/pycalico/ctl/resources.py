"""``pycalicoctl apply/create/replace/get/delete``: calicoctl's resource commands.

Every document of a file is decoded, placed in its namespace and checked by the
model against the datastore (defaults, validation, pool overlap, immutable
fields, exists/missing) before the first write, so an invalid document anywhere
in a file leaves the datastore untouched.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from pycalico.ctl import documents, output
from pycalico.ctl.documents import Document, DocumentError
from pycalico.errors import PycalicoError, ResourceExists, ResourceNotFound, RevisionConflict, ValidationError
from pycalico.model import KINDS, Node, Resource, ResourceStore, kind_by_name

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND = 0, 2, 4

# calicoctl's short names (calicoctl/resourcemgr/*.go); the model knows Kind, kinds and the plural.
ALIASES = {
    "np": "NetworkPolicy", "policy": "NetworkPolicy", "policies": "NetworkPolicy", "pol": "NetworkPolicy",
    "pols": "NetworkPolicy", "gnp": "GlobalNetworkPolicy", "gnps": "GlobalNetworkPolicy",
    "netsets": "NetworkSet", "gnetsets": "GlobalNetworkSet", "hep": "HostEndpoint", "heps": "HostEndpoint",
    "pro": "Profile", "pros": "Profile", "ipp": "IPPool", "ipps": "IPPool", "pool": "IPPool", "pools": "IPPool",
    "no": "Node", "nos": "Node", "bgpp": "BGPPeer", "bgpps": "BGPPeer", "bp": "BGPPeer", "bps": "BGPPeer",
    "bgpconfig": "BGPConfiguration", "bgpconfigs": "BGPConfiguration", "felixconfig": "FelixConfiguration",
    "felixconfigs": "FelixConfiguration", "clusterinfo": "ClusterInformation", "clusterinfos": "ClusterInformation",
    "wep": "WorkloadEndpoint", "weps": "WorkloadEndpoint",
}

VERBS = {"apply": "applied", "create": "created", "replace": "replaced"}


def resolve_kind(text: str) -> type[Resource]:
    alias = ALIASES.get(text.lower())
    return KINDS[alias] if alias in KINDS else kind_by_name(text)


def _store() -> ResourceStore:
    from pycalico.ctl.main import client

    return ResourceStore(client())


@dataclass
class Change:
    doc: Document
    resource: Resource
    current: Resource | None
    skip: bool = False  # create --skip-exists of one that exists (or comes earlier in the file)


def plan(store: ResourceStore, docs: list[Document], action: str, namespace: str,
         skip_exists: bool = False) -> list[Change]:
    """Every document checked as its write would check it; the first refusal names its document."""
    changes: list[Change] = []
    created: set[str] = set()
    tiers: set[str] = set()  # Tiers an earlier document of the file writes
    for doc in docs:
        res = documents.decode(doc)
        try:
            documents.place(res, namespace)
            probe = res.copy()  # valid before it is looked up (the key needs a valid name)
            probe.apply_defaults()
            probe.validate()
            current = store.get(type(res), res.name, res.namespace)
            skip = action == "create" and (current is not None or res.key() in created)
            if skip and not skip_exists:
                raise ResourceExists(res.KIND, res.name)
            if action == "replace" and current is None:
                raise ResourceNotFound(res.KIND, res.name)
            try:
                store.check(res.copy(), creating=current is None)
            except ValidationError as exc:
                # A policy in a tier the file itself creates first is fine, as with calicoctl's in-order writes
                # (the tier check is the model's last).
                if not (exc.field == "spec.tier" and exc.value in tiers):
                    raise
        except PycalicoError as exc:
            raise DocumentError(doc.describe(res), exc) from None
        created.add(res.key())
        if res.KIND == "Tier":
            tiers.add(res.name)
        changes.append(Change(doc, res, current, skip))
    return changes


def _update(store: ResourceStore, res: Resource, current: Resource) -> Resource:
    """calicoctl's Update: the stored metadata except labels and annotations; a given
    resourceVersion must be the latest."""
    if res.resource_version and res.resource_version != current.resource_version:
        raise RevisionConflict(res.key())
    desired = res.copy()
    for field in ("uid", "creationTimestamp"):
        if field in current.metadata:
            desired.metadata[field] = current.metadata[field]
    desired.metadata["resourceVersion"] = current.resource_version
    return store.update(desired)


def write(store: ResourceStore, change: Change, action: str) -> None:
    res, current = change.resource, change.current
    if change.skip:
        return
    try:
        if action == "create":
            fresh = res.copy()
            fresh.metadata.pop("resourceVersion", None)
            store.create(fresh)
        elif action == "replace" or (current is not None and res.resource_version):
            assert current is not None
            _update(store, res, current)
        else:
            store.apply(res)
    except PycalicoError as exc:
        raise DocumentError(change.doc.describe(res), exc) from None


def cmd_write(args: argparse.Namespace) -> int:
    """apply, create and replace."""
    action = args.command
    store = _store()
    docs = documents.parse(documents.read_text(args.filename), args.filename)
    changes = plan(store, docs, action, args.namespace, skip_exists=getattr(args, "skip_exists", False))
    for change in changes:
        write(store, change, action)
    kinds = {c.resource.KIND for c in changes}
    what = f"'{kinds.pop()}' resource(s)" if len(kinds) == 1 else "resource(s)"
    print(f"Successfully {VERBS[action]} {len(changes)} {what}")
    return EXIT_OK


def _scope(cls: type[Resource], namespace: str, all_namespaces: bool) -> str | None:
    """The namespace to read in (None: every namespace, or a cluster-wide kind)."""
    if not cls.NAMESPACED:
        if namespace or all_namespaces:
            raise ValidationError("--namespace", namespace or "--all-namespaces",
                                  f"no namespace: {cls.KIND} is not namespaced")
        return None
    if namespace and all_namespaces:
        raise ValidationError("--all-namespaces", namespace, "either --namespace or --all-namespaces, not both")
    return None if all_namespaces else (namespace or documents.DEFAULT_NAMESPACE)


def cmd_get(args: argparse.Namespace) -> int:
    cls = resolve_kind(args.kind)
    ns = _scope(cls, args.namespace, args.all_namespaces)
    store = _store()
    if args.names:
        if cls.NAMESPACED and ns is None:
            raise ValidationError("--all-namespaces", True, "a namespace (-n) when getting resources by name")
        found = []
        for name in args.names:
            res = store.get(cls, name, ns)
            if res is None:
                raise ResourceNotFound(cls.KIND, name if ns is None else f"{ns}/{name}")
            found.append(res)
    else:
        found = sorted(store.list(cls, ns), key=lambda r: (r.namespace or "", r.name))
        if cls.KIND == "Tier":  # calicoctl lists tiers in their order, those without one last
            found.sort(key=lambda t: (t.spec.get("order") is None, t.spec.get("order") or 0))
    print(output.render(cls.KIND, found, args.output, single=len(args.names) == 1,
                        namespace_column=bool(args.namespace or args.all_namespaces)))
    return EXIT_OK


def _delete_targets(args: argparse.Namespace) -> list[tuple[type[Resource], str, str | None]]:
    if args.filename:
        targets = []
        for doc in documents.parse(documents.read_text(args.filename), args.filename):
            res = documents.decode(doc)
            try:
                documents.place(res, args.namespace)
            except PycalicoError as exc:
                raise DocumentError(doc.describe(res), exc) from None
            targets.append((type(res), res.name, res.namespace))
        return targets
    cls = resolve_kind(args.kind)
    ns = _scope(cls, args.namespace, False)
    return [(cls, name, ns) for name in args.names]


def cmd_delete(args: argparse.Namespace) -> int:
    if not args.filename and not (args.kind and args.names):
        print("pycalicoctl delete: give <kind> <name>... or -f FILE", file=sys.stderr)
        return EXIT_USAGE
    targets = _delete_targets(args)
    store = _store()
    missing = 0
    for cls, name, ns in targets:
        shown = f"{ns}/{name}" if ns else name
        if cls is Node:
            from pycalico.ipam import IPAM
            from pycalico.lifecycle import remove_node

            gone = not remove_node(store, IPAM(store.client), name).node_exists
        else:
            gone = not store.delete(cls, name, ns)
        if gone:
            missing += 1
            print(f"{cls.KIND} {shown!r} not found", file=sys.stderr)
            continue
        print(f"Successfully deleted {cls.KIND} {shown}")
    return EXIT_NOT_FOUND if missing and not args.skip_not_exists else EXIT_OK


def add_parsers(sub: Any) -> None:
    get = sub.add_parser("get", help="show resources (a table, -o wide, yaml or json)")
    get.add_argument("kind")
    get.add_argument("names", nargs="*", metavar="name")
    get.add_argument("-o", "--output", choices=["ps", "wide", "yaml", "json"], default="ps")
    get.add_argument("-n", "--namespace", default="")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.set_defaults(fn=cmd_get)
    for name, helptext in (("apply", "create or update resources from a file"),
                           ("create", "create resources from a file (fails on one that exists)"),
                           ("replace", "update resources from a file (fails on one that does not exist)")):
        ap = sub.add_parser(name, help=helptext)
        ap.add_argument("-f", "--filename", required=True, help="YAML or JSON file, - for stdin")
        ap.add_argument("-n", "--namespace", default="", help="namespace of namespaced resources that name none")
        if name == "create":
            ap.add_argument("--skip-exists", action="store_true", help="leave resources that exist as they are")
        ap.set_defaults(fn=cmd_write)
    de = sub.add_parser("delete", help="delete resources (a Node with its IPAM, endpoints and peers)")
    de.add_argument("kind", nargs="?", default="")
    de.add_argument("names", nargs="*", metavar="name")
    de.add_argument("-f", "--filename", default="")
    de.add_argument("-n", "--namespace", default="")
    de.add_argument("--skip-not-exists", action="store_true")
    de.set_defaults(fn=cmd_delete)
