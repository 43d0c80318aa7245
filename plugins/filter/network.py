# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Preflight filters: kubeasz inventory variables -> validated network settings.

Every rule here runs on the deploy host before any host is touched; a failure
names the inventory variable at fault and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys

from ansible.errors import AnsibleFilterError


def _import_model():
    """pycalico's own model, from the deploy host's Python or from the collection's src/
    (the collection ships the package sources the nodes' wheels are built from)."""
    try:
        from pycalico.errors import ValidationError
        from pycalico.model.resources import MODES as POOL_MODES, IPPool, parse_cidr
    except ImportError:
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
        if not os.path.isdir(os.path.join(src, "pycalico")):
            return None
        sys.path.append(os.path.normpath(src))
        try:
            from pycalico.errors import ValidationError
            from pycalico.model.resources import MODES as POOL_MODES, IPPool, parse_cidr
        except ImportError:
            return None
    return ValidationError, POOL_MODES, IPPool, parse_cidr


_MODEL = _import_model()

# Spelling variants of the model's pool modes that inventories use.
MODE_ALIASES = {"cross-subnet": "CrossSubnet"}
# Older Calico manifests (and kubeasz inventories) use "off" for no IPIP.
IPIP_LEGACY = {"off": "Never", "false": "Never", "disabled": "Never"}
BACKENDS = ("bird", "vxlan", "none")
NETWORKS = ("calico", "pycalico", "flannel")
# kubeasz's flannel backends and the pycalico mode that does the same job
FLANNEL_BACKENDS = ("vxlan", "host-gw")
PROXY_MODES = ("iptables", "ipvs", "nftables")  # kube-proxy's; kubeasz's default is nftables
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
AUTODETECT_RE = re.compile(
    r"^(first-found|can-reach=.+|interface=.+|skip-interface=.+|cidr=.+)$"
)
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


def _fail(variable, value, allowed, reason=""):
    text = "%s: invalid value %r" % (variable, value)
    if reason:
        text += " (%s)" % reason
    text += "; allowed: %s" % allowed
    raise AnsibleFilterError(text)


def _unset(value):
    return value is None or (isinstance(value, str) and value.strip() == "")


def _model():
    if _MODEL is None:
        raise AnsibleFilterError("the pycalico.network filters need the pycalico package on the deploy host "
                                 "(the collection's src/ directory or an installed pycalico)")
    return _MODEL


def _model_error(variable, err):
    """A pycalico ValidationError, re-named after the inventory variable at fault."""
    raise AnsibleFilterError("%s: %s" % (variable, str(err).split(": ", 1)[-1])) from None


def _cidr(variable, value):
    """Parsed by the model's own parse_cidr (host bits, syntax); IPv4 only for now."""
    model = _model()
    validation_error, parse_cidr = model[0], model[3]
    text = str(value).strip()
    if "/" not in text:
        _fail(variable, value, "an IPv4 CIDR such as 172.20.0.0/16", "no prefix length")
    try:
        net = parse_cidr(variable, text)
    except validation_error as err:
        if getattr(err, "reason", "") == "host bits set":
            _fail(variable, value, "a network address with no host bits set, e.g. %s"
                  % ipaddress.ip_network(text, strict=False), "host bits set")
        _model_error(variable, err)
    if net.version != 4:
        _fail(variable, value, "an IPv4 CIDR", "IPv6 is not supported yet")
    return net


# The IPPool fields the inventory sets, and the variable each comes from.
POOL_FIELD_VARIABLES = {
    "spec.blockSize": "CALICO_IPV4POOL_BLOCK_SIZE",
    "spec.ipipMode": "CALICO_IPV4POOL_IPIP",
    "spec.vxlanMode": "CALICO_IPV4POOL_VXLAN",
    "spec.natOutgoing": "CALICO_IPV4POOL_NAT_OUTGOING",
}


def _check_pool(pool_var, name, cidr, block_size, ipip, vxlan, nat):
    """The default pool as the agent and the ippool module will write it, validated by the
    model (block size range and fit, link-local overlap, modes): what fails on a host fails here."""
    model = _model()
    validation_error, ippool = model[0], model[2]
    pool = ippool(name, {"cidr": str(cidr), "blockSize": block_size, "ipipMode": ipip, "vxlanMode": vxlan,
                         "natOutgoing": nat})
    pool.apply_defaults()
    try:
        pool.validate()
    except validation_error as err:
        field = getattr(err, "field", "")
        _model_error(pool_var if field == "spec.cidr" else POOL_FIELD_VARIABLES.get(field, field), err)


def _bool(variable, value, default):
    if _unset(value):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    _fail(variable, value, "true or false")


def _int(variable, value, default, low, high):
    if _unset(value):
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        _fail(variable, value, "an integer from %d to %d" % (low, high))
    if not low <= number <= high:
        _fail(variable, value, "an integer from %d to %d" % (low, high))
    return number


def _mode(variable, value, legacy=False):
    text = str(value).strip().lower()
    modes = dict(MODE_ALIASES, **{m.lower(): m for m in _model()[1]})
    if text in modes:
        return modes[text]
    if legacy and text in IPIP_LEGACY:
        return IPIP_LEGACY[text]
    allowed = "Always, CrossSubnet or Never" + (" (or off)" if legacy else "")
    _fail(variable, value, allowed)


def _ipv4(variable, value):
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        _fail(variable, value, "an IPv4 address")


def _host_list(variable, value):
    if _unset(value):
        return []
    if isinstance(value, str):
        # INI [all:vars] values are strings: "[]", "['10.0.0.1', '10.0.0.2']" or "10.0.0.1,10.0.0.2".
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = [v.strip("'\"") for v in re.split(r"[\s,]+", text) if v.strip("'\"")]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        _fail(variable, value, "a list of inventory host names (IP addresses)")
    return items


def network_settings(raw, groups=None):
    """Validate kubeasz-named inventory variables; return the normalised settings.

    ``raw`` maps the kubeasz names (CLUSTER_CIDR, CALICO_IPV4POOL_IPIP, ...) to
    their inventory values (None when unset); ``groups`` is Ansible's ``groups``.
    """
    if not isinstance(raw, dict):
        raise AnsibleFilterError("network_settings expects a mapping of inventory variables")
    groups = dict(groups or {})
    get = raw.get

    network = get("CLUSTER_NETWORK")
    network = "calico" if _unset(network) else str(network).strip().lower()
    if network not in NETWORKS:
        _fail("CLUSTER_NETWORK", get("CLUSTER_NETWORK"),
              "calico, or flannel (deployed as the pycalico mode that matches FLANNEL_BACKEND)")
    flannel = _flannel(get) if network == "flannel" else None

    name = get("CLUSTER_NAME")
    name = "cluster1" if _unset(name) else str(name).strip()
    if not NAME_RE.match(name):
        _fail("CLUSTER_NAME", name, "1-63 letters, digits, '.', '_' or '-', starting and ending alphanumeric")

    if _unset(get("CLUSTER_CIDR")):
        _fail("CLUSTER_CIDR", get("CLUSTER_CIDR"), "an IPv4 CIDR such as 172.20.0.0/16", "required")
    cluster_cidr = _cidr("CLUSTER_CIDR", get("CLUSTER_CIDR"))

    pool_var = "CALICO_IPV4POOL_CIDR"
    if _unset(get(pool_var)):
        pool_cidr = cluster_cidr
    else:
        pool_cidr = _cidr(pool_var, get(pool_var))
        if not pool_cidr.subnet_of(cluster_cidr):
            _fail(pool_var, get(pool_var), "a CIDR inside CLUSTER_CIDR %s" % cluster_cidr, "outside CLUSTER_CIDR")

    if flannel is not None:
        # kubeasz's config.yml carries the CALICO_* defaults whatever CLUSTER_NETWORK says;
        # with flannel chosen they mean nothing, as in kubeasz.
        get = _without_calico_modes(get)
        backend, flannel_ipip, flannel_vxlan = flannel
    backend = get("CALICO_NETWORKING_BACKEND") if flannel is None else backend
    backend = "bird" if _unset(backend) else str(backend).strip().lower()
    if backend not in BACKENDS:
        _fail("CALICO_NETWORKING_BACKEND", get("CALICO_NETWORKING_BACKEND"), "bird, vxlan or none")

    ipip_raw, vxlan_raw, overlay_raw = get("CALICO_IPV4POOL_IPIP"), get("CALICO_IPV4POOL_VXLAN"), get(
        "CALICO_ENABLE_OVERLAY")
    if flannel is not None:
        ipip_raw, vxlan_raw = flannel_ipip, flannel_vxlan
    ipip = None if _unset(ipip_raw) else _mode("CALICO_IPV4POOL_IPIP", ipip_raw, legacy=True)
    vxlan = None if _unset(vxlan_raw) else _mode("CALICO_IPV4POOL_VXLAN", vxlan_raw)
    if not _unset(overlay_raw):
        # kubeasz >= 3.7: one overlay knob, IPIP with BGP (bird), VXLAN otherwise.
        overlay = _mode("CALICO_ENABLE_OVERLAY", overlay_raw, legacy=True)
        target, current = ("CALICO_IPV4POOL_IPIP", ipip) if backend == "bird" else ("CALICO_IPV4POOL_VXLAN", vxlan)
        if current is not None and current != overlay:
            _fail("CALICO_ENABLE_OVERLAY", overlay_raw, "the same mode as %s (%s) or unset" % (target, current),
                  "contradicts %s" % target)
        if backend == "bird":
            ipip = overlay
        else:
            vxlan = overlay
    if ipip is None:
        ipip = "Always" if backend == "bird" and vxlan in (None, "Never") else "Never"
    if vxlan is None:
        vxlan = "Always" if backend == "vxlan" and ipip == "Never" else "Never"
    if ipip != "Never" and vxlan != "Never":
        _fail("CALICO_IPV4POOL_IPIP", ipip_raw if not _unset(ipip_raw) else overlay_raw,
              "Never while CALICO_IPV4POOL_VXLAN is %s" % vxlan, "IPIP and VXLAN on one pool")
    if ipip != "Never" and backend != "bird":
        _fail("CALICO_IPV4POOL_IPIP", ipip_raw if not _unset(ipip_raw) else overlay_raw,
              "Never with CALICO_NETWORKING_BACKEND=%s (IPIP needs BGP: use bird or VXLAN)" % backend)

    # Range and fit to the pool: the model's (_check_pool), not re-implemented here.
    block_size = _int("CALICO_IPV4POOL_BLOCK_SIZE", get("CALICO_IPV4POOL_BLOCK_SIZE"), 26, 0, 128)
    nat = _bool("CALICO_IPV4POOL_NAT_OUTGOING", get("CALICO_IPV4POOL_NAT_OUTGOING"), True)
    _check_pool(pool_var if not _unset(get(pool_var)) else "CLUSTER_CIDR", "default-ipv4-ippool", pool_cidr,
                block_size, ipip, vxlan, nat)
    mtu = _int("CALICO_MTU", get("CALICO_MTU"), 0, 0, 65535)
    if mtu and mtu < 576:
        _fail("CALICO_MTU", get("CALICO_MTU"), "0 (derive from the host) or 576 to 65535")
    as_number = _int("CALICO_AS_NUMBER", get("CALICO_AS_NUMBER"), 64512, 1, 4294967295)

    method = get("IP_AUTODETECTION_METHOD")
    method = "" if _unset(method) else str(method).strip()
    if method and not AUTODETECT_RE.match(method):
        _fail("IP_AUTODETECTION_METHOD", method,
              "first-found, can-reach=<ip|name>, interface=<regex>, skip-interface=<regex> or cidr=<cidr,...>")
    if method.startswith("cidr="):
        for part in method[5:].split(","):
            _cidr("IP_AUTODETECTION_METHOD", part)

    rr_enabled = _bool("CALICO_RR_ENABLED", get("CALICO_RR_ENABLED"), False)
    rr_nodes = _host_list("CALICO_RR_NODES", get("CALICO_RR_NODES"))
    members = set(groups.get("kube_master", [])) | set(groups.get("kube_node", [])) | set(
        groups.get("calico_rr", []))
    if rr_enabled:
        if backend != "bird":
            _fail("CALICO_RR_ENABLED", get("CALICO_RR_ENABLED"), "false with CALICO_NETWORKING_BACKEND=%s" % backend,
                  "route reflectors need BGP")
        if not rr_nodes:
            rr_nodes = list(groups.get("calico_rr") or groups.get("kube_master") or [])
        if not rr_nodes:
            _fail("CALICO_RR_NODES", get("CALICO_RR_NODES"), "inventory hosts (no [calico_rr] or [kube_master])",
                  "no route reflector nodes")
        if groups:
            for node in rr_nodes:
                if node not in members:
                    _fail("CALICO_RR_NODES", get("CALICO_RR_NODES"),
                          "hosts of [kube_master], [kube_node] or [calico_rr]", "%s is not one of them" % node)
    proxy_mode = get("PROXY_MODE")
    proxy_mode = "nftables" if _unset(proxy_mode) else str(proxy_mode).strip().lower()
    if proxy_mode not in PROXY_MODES:
        _fail("PROXY_MODE", get("PROXY_MODE"), "iptables, ipvs or nftables (kube-proxy's mode)")
    if proxy_mode == "ipvs" and not _bool("pycalico_accept_ipvs_policy_gap", get("pycalico_accept_ipvs_policy_gap"),
                                          False):
        _fail("PROXY_MODE", get("PROXY_MODE"),
              "iptables or nftables, or ipvs with pycalico_accept_ipvs_policy_gap=true (routing is the same)",
              "network policy does not cover what IPVS forwards: a pod's ingress policy is not applied to service "
              "traffic that reaches it through IPVS, see docs/policy.md")
    rr_cluster_id = _ipv4("CALICO_RR_CLUSTER_ID", "244.0.0.1" if _unset(get("CALICO_RR_CLUSTER_ID")) else get(
        "CALICO_RR_CLUSTER_ID"))

    return {
        "cluster_network": network,
        "cluster_name": name,
        "cluster_cidr": str(cluster_cidr),
        "pool_name": "default-ipv4-ippool",
        "pool_cidr": str(pool_cidr),
        "ipip_mode": ipip,
        "vxlan_mode": vxlan,
        "backend": backend,
        "bgp_enabled": backend == "bird",
        "block_size": block_size,
        "nat_outgoing": nat,
        "mtu": mtu,
        "as_number": as_number,
        "autodetection_method": method,
        "rr_enabled": rr_enabled,
        "rr_nodes": rr_nodes if rr_enabled else [],
        "rr_cluster_id": rr_cluster_id,
        "proxy_mode": proxy_mode,
    }


def _flannel(get):
    """(backend, ipip mode, vxlan mode) for kubeasz's FLANNEL_BACKEND and DIRECT_ROUTING."""
    raw = get("FLANNEL_BACKEND")
    flannel_backend = "vxlan" if _unset(raw) else str(raw).strip().lower()
    if flannel_backend not in FLANNEL_BACKENDS:
        _fail("FLANNEL_BACKEND", raw, " or ".join(FLANNEL_BACKENDS),
              "pycalico has no equivalent of flannel's %s backend" % flannel_backend)
    direct = _bool("DIRECT_ROUTING", get("DIRECT_ROUTING"), False)
    if flannel_backend == "host-gw":
        if direct:
            _fail("DIRECT_ROUTING", get("DIRECT_ROUTING"), "false with FLANNEL_BACKEND=host-gw",
                  "host-gw is direct routing already")
        return "none", "Never", "Never"
    return "vxlan", "Never", "CrossSubnet" if direct else "Always"


def _without_calico_modes(get):
    ignored = ("CALICO_NETWORKING_BACKEND", "CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN", "CALICO_ENABLE_OVERLAY",
               "CALICO_RR_ENABLED")

    def inner(name, default=None):
        return default if name in ignored else get(name, default)
    return inner


def node_target(value, variable, groups, allowed_groups=("kube_master", "kube_node", "calico_rr")):
    """Check NODE_TO_ADD / NODE_TO_DEL: an IPv4 address that the inventory holds."""
    if _unset(value):
        _fail(variable, value, "the IP of a host in the inventory, e.g. -e %s=192.168.1.4" % variable, "required")
    address = _ipv4(variable, value)
    groups = dict(groups or {})
    for group in allowed_groups:
        if address in groups.get(group, []):
            return address
    _fail(variable, value, "a host of [%s]" % "], [".join(allowed_groups), "add it to the inventory first")


def node_name(host, k8s_nodename=None, override=None):
    """The Node name a host registers under: kubeasz's K8S_NODENAME rule.

    ``override`` (K8S_NODENAME) wins; else the host's ``k8s_nodename``
    (lower case, '_' -> '-'); else ``k8s-`` + the inventory name with dots as dashes.
    """
    if not _unset(override):
        return str(override).strip()
    if not _unset(k8s_nodename):
        return str(k8s_nodename).strip().replace("_", "-").lower()
    return "k8s-" + str(host).replace(".", "-").replace(":", "-")


def etcd_endpoints(hosts, port=2379):
    """``https://<host>:<port>`` for each etcd host, comma-separated."""
    return ",".join("https://%s:%d" % (h, int(port)) for h in hosts or [])


class FilterModule(object):
    def filters(self):
        return {
            "network_settings": network_settings,
            "node_target": node_target,
            "node_name": node_name,
            "etcd_endpoints": etcd_endpoints,
        }
