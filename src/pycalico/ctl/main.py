"""pycalicoctl: node status/diags, ipam show/check/release, get/apply/create/replace/delete, version.

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

import pycalico
from pycalico.ctl import resources
from pycalico.ctl.documents import DocumentError
from pycalico.errors import (
    DatastoreError,
    DatastoreUnavailable,
    PycalicoError,
    ResourceExists,
    ResourceNotFound,
    ValidationError,
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_DATASTORE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def client() -> Any:
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


def cmd_node_diags(args: argparse.Namespace) -> int:
    from pycalico.config import node_environment
    from pycalico.ctl import diags

    collected = diags.collect(node_environment())
    out = diags.write_archive(collected, Path(args.output) if args.output else diags.default_path())
    print(f"Diagnostics written to {out} ({len(collected.members)} files, {len(collected.skipped)} skipped)")
    return EXIT_OK


# ---- ipam ---------------------------------------------------------------------------------------
def _ipam() -> Any:
    from pycalico.ipam import IPAM

    run_dir = os.environ.get("PYCALICO_RUN_DIR") or "/var/run/pycalico"
    return IPAM(client(), lock_dir=run_dir if os.access(run_dir, os.W_OK) else None)


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


def cmd_version(args: argparse.Namespace) -> int:
    print(f"Client Version:    {pycalico.__version__}")
    try:
        from pycalico.model import ClusterInformation, ResourceStore

        info = ResourceStore(client()).get(ClusterInformation, "default")
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
    dg = node.add_parser("diags", help="one tar.gz of this node's network state, logs and configs (no keys)")
    dg.add_argument("-o", "--output", default="", help="archive path (default: ./pycalico-diags-<host>-<time>.tar.gz)")
    dg.set_defaults(fn=cmd_node_diags)
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
    resources.add_parsers(sub)
    ver = sub.add_parser("version", help="client and cluster version")
    ver.set_defaults(fn=cmd_version)
    return p


def exit_code(exc: BaseException) -> int:
    """The one mapping of errors to exit codes (a refused document: that of its cause)."""
    if isinstance(exc, DocumentError):
        return exit_code(exc.error)
    if isinstance(exc, DatastoreUnavailable):
        return EXIT_DATASTORE
    if isinstance(exc, ResourceNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, (ValidationError, ResourceExists)):
        return EXIT_USAGE
    return EXIT_PROBLEM


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (PycalicoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
