# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The checks of playbooks/verify.yml, run on a node by the node_check, test_pod and
pod_probe modules, and the report verify_report renders on the deploy host.

Every check is one row: ``{"check", "node", "peer", "ok", "detail"}``; ``peer`` names the
other end (a BGP peer, a ping target) so a failing row names the broken pair. The expected
BGP peers come from pycalico.bgp.config.compute_peers, the code confd renders BIRD from.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid

TUNNEL_DEVICES = {"vxlan": "vxlan.calico", "ipip": "tunl0"}
CHECK_TITLES = (
    ("units", "Units"),
    ("release", "Release the units run"),
    ("readiness", "Agent readiness"),
    ("address", "Node address"),
    ("bgp", "BGP sessions"),
    ("test_pod", "Test pods"),
    ("ping", "Pod to pod ping"),
    ("mtu", "Don't-fragment probe at the pod MTU"),
    ("encapsulation", "Tunnel counters"),
    ("ipam", "IPAM check"),
    ("nat", "NAT outgoing"),
)


def row(check, node, ok, detail="", peer=""):
    return {"check": check, "node": node, "peer": peer, "ok": bool(ok), "detail": detail}


def run(argv, timeout=30, env=None):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        return 127, "", "%s not found" % argv[0]
    except subprocess.TimeoutExpired:
        return 124, "", "%s timed out after %ss" % (argv[0], timeout)
    return proc.returncode, proc.stdout, proc.stderr


# ---- node -------------------------------------------------------------------------------------
def unit_rows(node, units):
    rows = []
    for unit in units:
        rc, out, dummy = run(["systemctl", "is-active", unit])
        state = out.strip() or "unknown"
        rows.append(row("units", node, rc == 0 and state == "active", state, unit))
    return rows


def release_rows(node, units, release, proc="/proc"):
    """Each unit's main process runs an interpreter inside ``release`` (a release directory or a
    link to one, e.g. /opt/pycalico/current): its scripts' first line names the release's python."""
    target = os.path.realpath(release)
    rows = []
    for unit in units:
        rc, out, err = run(["systemctl", "show", "--property=MainPID", "--value", unit])
        pid = out.strip()
        if rc != 0 or not pid.isdigit() or pid == "0":
            rows.append(row("release", node, False, "no main process (%s)" % (err.strip() or "not running"), unit))
            continue
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                interpreter = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError as exc:
            rows.append(row("release", node, False, "pid %s: %s" % (pid, exc), unit))
            continue
        runs = os.path.dirname(os.path.dirname(os.path.normpath(interpreter)))
        ok = runs == target
        detail = "pid %s runs %s" % (pid, runs) if ok else "pid %s runs %s, not %s" % (pid, runs, target)
        rows.append(row("release", node, ok, detail, unit))
    return rows


def readiness_row(node, port, timeout=3.0):
    url = "http://127.0.0.1:%s/readiness" % port
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return row("readiness", node, resp.status in (200, 204), "HTTP %s" % resp.status)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        return row("readiness", node, False, "HTTP %s %s" % (exc.code, body))
    except OSError as exc:
        return row("readiness", node, False, "%s unreachable: %s" % (url, getattr(exc, "reason", exc)))


def local_addresses():
    """{interface name: [IPv4Interface]} from ``ip -o -4 addr``."""
    rc, out, err = run(["ip", "-o", "-4", "addr", "show"])
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            found.setdefault(parts[1], []).append(ipaddress.IPv4Interface(parts[3]))
    return found


def address_row(node, record, expected_cidr, addresses):
    """The Node record's address: set, inside ``expected_cidr`` (when given), on a local interface."""
    if record is None:
        return row("address", node, False, "no Node record %r" % node)
    if not record.ipv4_address:
        return row("address", node, False, "the Node record has no spec.bgp.ipv4Address")
    iface = ipaddress.IPv4Interface(record.ipv4_address)
    where = [name for name, addrs in addresses.items() if iface in addrs]
    if not where:
        local = ", ".join("%s %s" % (n, a) for n, addrs in sorted(addresses.items()) for a in addrs if n != "lo")
        return row("address", node, False, "Node record %s is not on any interface here (%s)" % (iface, local))
    if expected_cidr and iface.ip not in ipaddress.ip_network(expected_cidr, strict=False):
        return row("address", node, False, "%s on %s is outside the expected %s" % (iface, where[0], expected_cidr))
    return row("address", node, True, "%s on %s" % (iface, where[0]))


def expected_peers(store, nodename):
    """The BGP protocols confd gives this node's BIRD: {protocol name: Peer}."""
    from pycalico.bgp.config import compute_peers
    from pycalico.model import BGPConfiguration, BGPPeer, Node

    nodes = {n.name: n for n in store.list(Node)}
    me = nodes.get(nodename)
    if me is None or not me.ip:
        return {}
    bgp = store.get(BGPConfiguration, "default") or BGPConfiguration("default", {})
    return {p.name: p for p in compute_peers(me, nodes, bgp, store.list(BGPPeer))}


def bgp_rows(node, expected, protocols, node_by_ip):
    """Established with exactly the expected peers: missing, down and unexpected ones are rows."""
    rows = []
    actual = {p.name: p for p in protocols if p.proto == "BGP"}
    for name, peer in sorted(expected.items()):
        other = node_by_ip.get(peer.ip, peer.ip)
        got = actual.get(name)
        if got is None:
            rows.append(row("bgp", node, False, "%s (%s) expected but BIRD has no such protocol" % (name, peer.kind),
                            other))
        else:
            ok = got.state == "up" and got.info.startswith("Established")
            rows.append(row("bgp", node, ok, "%s %s %s" % (name, got.state, got.info), other))
    for name, got in sorted(actual.items()):
        if name not in expected:
            rows.append(row("bgp", node, False, "%s is not implied by the topology (%s %s)"
                            % (name, got.state, got.info), name))
    return rows


# ---- test pods --------------------------------------------------------------------------------
def cni_env(command, container, netns, cni_bin_dir, extra=None):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container,
           "CNI_NETNS": "/run/netns/%s" % netns, "CNI_IFNAME": "eth0", "CNI_PATH": cni_bin_dir}
    env.update(extra or {})
    return env


def plugin_conf(conflist_path, plain=False):
    """The pycalico plugin's config from the installed conflist, as the runtime passes it;
    ``plain`` leaves out its policy and kubernetes sections (a plain CNI container on the same
    network: the plugin gives it the network's profile instead of reading a pod from the API)."""
    with open(conflist_path) as f:
        data = json.load(f)
    plugins = data.get("plugins") or [data]
    conf = dict(next(p for p in plugins if p.get("type") == "pycalico"))
    conf["name"] = data["name"]
    conf["cniVersion"] = data.get("cniVersion", "1.0.0")
    if plain:
        conf.pop("policy", None)
        conf.pop("kubernetes", None)
    return conf


def cni_call(command, container, netns, cni_bin_dir, conflist_path, extra_env=None, timeout=60, plain=False):
    conf = plugin_conf(conflist_path, plain)
    env = cni_env(command, container, netns, cni_bin_dir, extra_env)
    try:
        proc = subprocess.run([os.path.join(cni_bin_dir, "pycalico")], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, {}, str(exc)
    try:
        result = json.loads(proc.stdout or b"{}")
    except ValueError:
        result = {}
    return proc.returncode, result, (proc.stdout + proc.stderr).decode(errors="replace")[-800:]


def pod_add(prefix, cni_bin_dir, conflist_path, extra_env=None, plain=False):
    """A netns and a CNI ADD; returns (pod dict, error). The pod dict is enough for pod_del."""
    suffix = uuid.uuid4().hex[:8]
    netns, container = "%s-%s" % (prefix, suffix), "%s%s" % (prefix.replace("-", ""), suffix)
    pod = {"netns": netns, "container": container, "ip": "", "mtu": 0}
    rc, dummy, err = run(["ip", "netns", "add", netns])
    if rc != 0:
        return pod, "ip netns add %s: %s" % (netns, err.strip())
    rc, result, text = cni_call("ADD", container, netns, cni_bin_dir, conflist_path, extra_env, plain=plain)
    if rc != 0 or not result.get("ips"):
        return pod, "CNI ADD failed (%s): %s" % (rc, text.strip())
    pod["ip"] = result["ips"][0]["address"].split("/")[0]
    rc, out, dummy = run(["ip", "netns", "exec", netns, "cat", "/sys/class/net/eth0/mtu"])
    pod["mtu"] = int(out.strip()) if rc == 0 and out.strip().isdigit() else 0
    return pod, ""


def pod_del(pod, cni_bin_dir, conflist_path, extra_env=None, plain=False):
    """CNI DEL then the netns; every step attempted; returns the errors."""
    errors = []
    if pod.get("container"):
        rc, dummy, text = cni_call("DEL", pod["container"], pod["netns"], cni_bin_dir, conflist_path, extra_env,
                                   plain=plain)
        if rc != 0:
            errors.append("CNI DEL failed (%s): %s" % (rc, text.strip()))
    if pod.get("netns") and os.path.exists("/run/netns/%s" % pod["netns"]):
        rc, dummy, err = run(["ip", "netns", "del", pod["netns"]])
        if rc != 0:
            errors.append("ip netns del: %s" % err.strip())
    return errors


# ---- probes -----------------------------------------------------------------------------------
def tx_packets(device):
    try:
        with open("/sys/class/net/%s/statistics/tx_packets" % device) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def ping(netns, ip, count=3, size=None, dont_fragment=False, timeout=2):
    argv = ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout)]
    if dont_fragment:
        argv += ["-M", "do"]
    if size is not None:
        argv += ["-s", str(size)]
    rc, out, err = run(argv + [ip], timeout=count * (timeout + 1) + 5)
    summary = next((line for line in out.splitlines() if "packets transmitted" in line), (err or out).strip())
    return rc == 0, summary


def ping_until(netns, ip, deadline_s):
    """The first ping of a fresh pod may wait for routes or policy: retry until the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        ok, summary = ping(netns, ip, count=1, timeout=1)
        if ok or time.monotonic() > deadline:
            return ok, summary
        time.sleep(0.2)


def expected_tunnel(pool, src_node, dst_node):
    """"vxlan", "ipip" or "" for traffic from src_node's pod to a pod of ``pool`` on dst_node."""
    if pool is None:
        return ""
    for kind, mode in (("vxlan", pool.vxlan_mode), ("ipip", pool.ipip_mode)):
        if mode == "Always":
            return kind
        if mode == "CrossSubnet":
            a, b = src_node.ipv4_interface if src_node else None, dst_node.ipv4_interface if dst_node else None
            if a is None or b is None or b.ip not in a.network:
                return kind
            return ""
    return ""


def probe_rows(node, pod, targets, pools, nodes, settle_s=20.0):
    """Ping, the don't-fragment probe and tunnel counters from ``pod`` to each target {node, ip, mtu}."""
    rows = []
    me = nodes.get(node)
    for target in targets:
        peer = "%s (%s)" % (target["node"], target["ip"])
        label = "%s (%s)" % (node, pod["ip"])
        pool = next((p for p in pools if ipaddress.ip_address(target["ip"]) in p.network), None)
        tunnel = expected_tunnel(pool, me, nodes.get(target["node"]))
        devices = sorted(TUNNEL_DEVICES.values())
        before = {d: tx_packets(d) for d in devices}
        ok, summary = ping_until(pod["netns"], target["ip"], settle_s)
        if ok:
            ok, summary = ping(pod["netns"], target["ip"], count=3, timeout=1)
        rows.append(row("ping", label, ok, summary, peer))
        after = {d: tx_packets(d) for d in devices}
        if ok:
            rows.append(encapsulation_row(label, peer, tunnel, before, after, pool))
        mtu = min(m for m in (pod.get("mtu") or 0, target.get("mtu") or 0) if m) if (pod.get("mtu") or target.get(
            "mtu")) else 0
        if mtu:
            size = mtu - 28
            df_ok, df_summary = ping(pod["netns"], target["ip"], count=2, size=size, dont_fragment=True, timeout=1)
            rows.append(row("mtu", label, df_ok and ok, "%d-byte DF ping (MTU %d): %s"
                            % (size, mtu, df_summary if ok else "skipped, plain ping fails"), peer))
    return rows


def encapsulation_row(label, peer, tunnel, before, after, pool):
    moved = {d: (after[d] - before[d]) for d in before if before[d] is not None and after[d] is not None}
    mode = "pool %s (ipip %s, vxlan %s)" % (pool.cidr, pool.ipip_mode, pool.vxlan_mode) if pool else "no pool"
    if tunnel:
        device = TUNNEL_DEVICES[tunnel]
        count = moved.get(device)
        if count is None:
            return row("encapsulation", label, False, "%s expected over %s, which is missing" % (mode, device), peer)
        return row("encapsulation", label, count >= 3, "%s: %s tx +%d (expected to move)" % (mode, device, count),
                   peer)
    leaked = {d: c for d, c in moved.items() if c > 0}
    detail = ", ".join("%s tx +%d" % kv for kv in sorted(leaked.items())) or "no tunnel counter moved"
    return row("encapsulation", label, not leaked, "%s: direct expected; %s" % (mode, detail), peer)


# ---- ipam, report ------------------------------------------------------------------------------
def ipam_rows(node, report):
    if report.ok:
        return [row("ipam", node, True, "%d allocations, %d in use" % (report.allocations, report.in_use))]
    data = report.to_json()
    rows = []
    for key, value in sorted(data.items()):
        if isinstance(value, list) and value:
            rows.append(row("ipam", node, False, "%s: %s" % (key, json.dumps(value)[:300])))
    return rows or [row("ipam", node, False, json.dumps(data)[:300])]


def _table(headers, rows):
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [sep, "|" + "|".join(" %s " % h.ljust(w) for h, w in zip(headers, widths)) + "|", sep]
    out += ["|" + "|".join(" %s " % c.ljust(w) for c, w in zip(r, widths)) + "|" for r in rows]
    out.append(sep)
    return "\n".join(out)


_NOISE = re.compile(r"\s+")


def render(rows):
    """A table per check (failures first), then the failed pairs in one line each."""
    rows = [dict(r) for r in rows]
    known = [c for c, dummy in CHECK_TITLES]
    titles = dict(CHECK_TITLES)
    sections = []
    for check in known + sorted({r["check"] for r in rows} - set(known)):
        mine = [r for r in rows if r["check"] == check]
        if not mine:
            continue
        bad = sum(1 for r in mine if not r["ok"])
        mine.sort(key=lambda r: (r["ok"], r["node"], r["peer"]))
        table = _table(["result", "node", "peer", "detail"],
                       [["ok" if r["ok"] else "FAIL", r["node"], r["peer"] or "-",
                         _NOISE.sub(" ", r["detail"])[:110]] for r in mine])
        sections.append("%s: %s\n%s" % (titles.get(check, check), "%d failed of %d" % (bad, len(mine)) if bad
                                        else "all %d ok" % len(mine), table))
    failed = [r for r in rows if not r["ok"]]
    if failed:
        sections.append("FAILED (%d):\n" % len(failed) + "\n".join(
            "  %s: %s%s" % (r["check"], r["node"], " -> " + r["peer"] if r["peer"] else "") for r in failed))
    else:
        sections.append("All %d checks passed." % len(rows))
    return "\n\n".join(sections) + "\n"
