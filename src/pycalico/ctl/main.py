"""pycalicoctl: node status, ipam show/check/release, get/apply/delete, version.

Exit codes: 0 ok, 1 a check found problems or the daemon is not reachable,
2 usage or validation error, 3 datastore unavailable, 4 not found.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

import pycalico
from pycalico.errors import (
    DatastoreError,
    DatastoreUnavailable,
    PycalicoError,
    ResourceExists,
    ResourceNotFound,
    ValidationError,
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_DATASTORE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def _client() -> Any:
    from pycalico.config import DatastoreSettings, node_environment

    # Like calicoctl with /etc/calico/calicoctl.cfg: on a node, the agent's settings
    # (/etc/pycalico/pycalico.env, or PYCALICO_ENV_FILE) apply unless the environment says otherwise.
    return DatastoreSettings.from_mapping(node_environment()).client(timeout=5.0, connect_timeout=2.0)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [sep, "|" + "|".join(f" {h.upper():<{w}} " for h, w in zip(headers, widths, strict=True)) + "|", sep]
    lines += ["|" + "|".join(f" {c:<{w}} " for c, w in zip(r, widths, strict=True)) + "|" for r in rows]
    lines.append(sep)
    return "\n".join(lines)


# ---- node status ------------------------------------------------------------------------------
def cmd_node_status(args: argparse.Namespace) -> int:
    from pycalico.bgp import bird

    port = os.environ.get("PYCALICO_HEALTH_PORT") or "9099"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2) as resp:
            running = resp.status in (200, 204)
    except OSError:
        running = False
    print("pycalico agent is running." if running else "pycalico agent is not running.")
    ctl = args.bird_socket or str(Path(os.environ.get("PYCALICO_RUN_DIR") or "/var/run/pycalico") / "bird.ctl")
    try:
        peers = bird.bgp_peers(ctl)
    except bird.BirdError as exc:
        print(f"\nBIRD is not ready: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    print("\nIPv4 BGP status")
    if not peers:
        print("No IPv4 peers found.")
    else:
        print(_table(["Peer address", "Peer type", "State", "Since", "Info"],
                     [[p["peer"], p["type"], p["state"], p["since"], p["info"]] for p in peers]))
    print("\nIPv6 BGP status\nNo IPv6 peers found.")
    return EXIT_OK if running else EXIT_PROBLEM


# ---- ipam ---------------------------------------------------------------------------------------
def _ipam() -> Any:
    from pycalico.ipam import IPAM

    run_dir = os.environ.get("PYCALICO_RUN_DIR") or "/var/run/pycalico"
    return IPAM(_client(), lock_dir=run_dir if os.access(run_dir, os.W_OK) else None)


def cmd_ipam_show(args: argparse.Namespace) -> int:
    from pycalico.model import IPPool, ResourceStore

    ipam = _ipam()
    pools = ResourceStore(ipam.client).list(IPPool)
    blocks = ipam.blocks(4)
    rows = []
    for pool in sorted(pools, key=lambda p: p.cidr):
        if pool.version != 4:
            continue
        mine = [b for b in blocks if b.network.subnet_of(pool.network)]
        used = sum(b.network.num_addresses - b.free for b in mine)
        size = pool.network.num_addresses
        rows.append(["IP Pool", pool.cidr, str(size), f"{used} ({used * 100 // max(size, 1)}%)",
                     f"{size - used} ({(size - used) * 100 // max(size, 1)}%)"])
        if args.show_blocks:
            for b in sorted(mine, key=lambda b: b.network):
                n = b.network.num_addresses
                u = n - b.free
                rows.append(["Block", str(b.network), str(n), f"{u} ({u * 100 // n}%)",
                             f"{n - u} ({(n - u) * 100 // n}%)"])
    print(_table(["Grouping", "CIDR", "IPs total", "IPs in use", "IPs free"], rows))
    if args.show_blocks:
        print(_table(["Block", "Affinity"], [[str(b.network), b.host() or "-"] for b in
                                             sorted(blocks, key=lambda b: b.network)]))
    return EXIT_OK


def cmd_ipam_check(args: argparse.Namespace) -> int:
    report = _ipam().check()
    data = report.to_json()
    if args.output:
        Path(args.output).write_text(json.dumps(data, indent=2) + "\n")
    print(f"Found {report.allocations} IPAM allocations, {report.in_use} in use by workloads or tunnels.")
    for label, items in (("leaked", report.leaked), ("allocated but not in IPAM", report.not_allocated),
                         ("duplicate owners", report.duplicate_owners),
                         ("handles without IPs", report.handles_without_ips),
                         ("missing handles", report.handles_missing), ("block problems", report.block_problems)):
        if items:
            print(f"{label}: {len(items)}")
            for item in items:
                print(f"  {json.dumps(item) if not isinstance(item, str) else item}")
    print("IPAM is consistent." if report.ok else "IPAM has problems; see above.")
    return EXIT_OK if report.ok else EXIT_PROBLEM


def cmd_ipam_release(args: argparse.Namespace) -> int:
    ipam = _ipam()
    if args.ip:
        try:
            ipaddress.ip_address(args.ip)
        except ValueError:
            raise ValidationError("--ip", args.ip, "an IP address") from None
        unallocated = ipam.release_ips([args.ip])
        if unallocated:
            print(f"{args.ip} was not allocated")
            return EXIT_NOT_FOUND
        print(f"Released {args.ip}")
        return EXIT_OK
    if args.from_report or args.leaked:
        ips = ipam.release_leaked()
        print(f"Released {len(ips)} leaked address(es)" + (": " + ", ".join(ips) if ips else ""))
        return EXIT_OK
    print("pycalicoctl ipam release: give --ip <address> or --leaked", file=sys.stderr)
    return EXIT_USAGE


# ---- resources ------------------------------------------------------------------------------------
def _load_documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    docs: list[dict[str, Any]] = []
    try:
        loaded = [json.loads(text)] if text.lstrip().startswith(("{", "[")) else list(yaml.safe_load_all(text))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError("file", path, "YAML or JSON resources", reason=str(exc).splitlines()[0]) from None
    for doc in loaded:
        if doc is None:
            continue
        if isinstance(doc, list):
            docs.extend(doc)
        elif isinstance(doc, dict) and doc.get("kind", "").endswith("List") and "items" in doc:
            docs.extend(doc["items"])
        else:
            docs.append(doc)
    return docs


def _emit(resources: list[Any], output: str) -> None:
    data = [r.to_json() for r in resources]
    if output == "json":
        print(json.dumps(data[0] if len(data) == 1 else {"kind": "List", "apiVersion": "v1", "items": data}, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump_all(data, sort_keys=False), end="")
    else:
        rows = []
        for r in resources:
            extra = ""
            if r.KIND == "IPPool":
                extra = r.cidr
            elif r.KIND == "Node":
                extra = r.ipv4_address
            elif r.KIND == "WorkloadEndpoint":
                extra = ",".join(r.ip_networks)
            rows.append([r.namespace or "", r.name, extra] if r.NAMESPACED else [r.name, extra])
        if resources and resources[0].NAMESPACED:
            print(_table(["Namespace", "Name", "Networks"], rows))
        else:
            print(_table(["Name", "Detail"], rows))


def cmd_get(args: argparse.Namespace) -> int:
    from pycalico.model import ResourceStore, kind_by_name

    cls = kind_by_name(args.kind)
    store = ResourceStore(_client())
    ns = args.namespace if cls.NAMESPACED and not args.all_namespaces else None
    if args.name:
        res = store.get(cls, args.name, ns or ("default" if cls.NAMESPACED else None))
        if res is None:
            raise ResourceNotFound(cls.KIND, args.name)
        _emit([res], args.output)
    else:
        _emit(store.list(cls, ns), args.output)
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from pycalico.model import ResourceStore, from_json

    store = ResourceStore(_client())
    docs = _load_documents(args.filename)
    resources = [from_json(d) for d in docs]
    for res in resources:
        res.apply_defaults()
        res.validate()
    for res in resources:
        if args.create:
            store.create(res)
        else:
            store.apply(res)
    print(f"Successfully {'created' if args.create else 'applied'} {len(resources)} resource(s)")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from pycalico.model import Node, ResourceStore, from_json, kind_by_name

    store = ResourceStore(_client())
    targets: list[tuple[Any, str, str | None]] = []
    if args.filename:
        for d in _load_documents(args.filename):
            res = from_json(d)
            targets.append((type(res), res.name, res.namespace))
    elif args.kind and args.name:
        cls = kind_by_name(args.kind)
        targets.append((cls, args.name, (args.namespace or "default") if cls.NAMESPACED else None))
    else:
        print("pycalicoctl delete: give <kind> <name> or -f FILE", file=sys.stderr)
        return EXIT_USAGE
    missing = 0
    for cls, name, ns in targets:
        if cls is Node:
            from pycalico.ipam import IPAM
            from pycalico.lifecycle import remove_node

            plan = remove_node(store, IPAM(store.client), name)
            if not plan.node_exists:
                missing += 1
                print(f"Node {name!r} not found", file=sys.stderr)
                continue
        elif not store.delete(cls, name, ns):
            missing += 1
            print(f"{cls.KIND} {name!r} not found", file=sys.stderr)
            continue
        print(f"Successfully deleted {cls.KIND} {name}")
    return EXIT_NOT_FOUND if missing and not args.skip_not_exists else EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"Client Version:    {pycalico.__version__}")
    try:
        from pycalico.model import ClusterInformation, ResourceStore

        info = ResourceStore(_client()).get(ClusterInformation, "default")
    except (PycalicoError, DatastoreError):
        info = None
    if info is not None:
        print(f"Cluster Version:   {info.spec.get('calicoVersion', 'unknown')}")
        print(f"Cluster Type:      {info.spec.get('clusterType', 'unknown')}")
        if info.cluster_name:
            print(f"Cluster Name:      {info.cluster_name}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pycalicoctl", description="Manage a pycalico network")
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="node commands").add_subparsers(dest="sub", required=True)
    st = node.add_parser("status", help="agent and BGP peer status on this node")
    st.add_argument("--bird-socket", default="")
    st.set_defaults(fn=cmd_node_status)
    ipam = sub.add_parser("ipam", help="IP address management").add_subparsers(dest="sub", required=True)
    show = ipam.add_parser("show", help="pool and block usage")
    show.add_argument("--show-blocks", action="store_true")
    show.set_defaults(fn=cmd_ipam_show)
    check = ipam.add_parser("check", help="find leaked or inconsistent allocations")
    check.add_argument("-o", "--output", default="", help="write the report as JSON to this file")
    check.set_defaults(fn=cmd_ipam_check)
    rel = ipam.add_parser("release", help="release an address, or every leaked one")
    rel.add_argument("--ip", default="")
    rel.add_argument("--leaked", action="store_true")
    rel.add_argument("--from-report", default="")
    rel.set_defaults(fn=cmd_ipam_release)
    get = sub.add_parser("get", help="show resources")
    get.add_argument("kind")
    get.add_argument("name", nargs="?", default="")
    get.add_argument("-o", "--output", choices=["ps", "yaml", "json"], default="ps")
    get.add_argument("-n", "--namespace", default="")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.set_defaults(fn=cmd_get)
    for name, helptext in (("apply", "create or update resources from a file"),
                           ("create", "create resources from a file")):
        ap = sub.add_parser(name, help=helptext)
        ap.add_argument("-f", "--filename", required=True)
        ap.set_defaults(fn=cmd_apply, create=name == "create")
    de = sub.add_parser("delete", help="delete resources (a Node with its IPAM, endpoints and peers)")
    de.add_argument("kind", nargs="?", default="")
    de.add_argument("name", nargs="?", default="")
    de.add_argument("-f", "--filename", default="")
    de.add_argument("-n", "--namespace", default="")
    de.add_argument("--skip-not-exists", action="store_true")
    de.set_defaults(fn=cmd_delete)
    ver = sub.add_parser("version", help="client and cluster version")
    ver.set_defaults(fn=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DatastoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATASTORE
    except ResourceNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (ValidationError, ResourceExists) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (PycalicoError, DatastoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
