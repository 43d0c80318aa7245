"""Calico v3 resources: JSON exactly as Calico stores it, defaults, validation.

Each resource keeps its JSON as a dict and exposes typed accessors for the
fields pycalico uses. Keeping the dict (rather than a dataclass per spec) means
fields we do not model — written by a real Calico, or by a newer version —
survive a read-modify-write untouched.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar, Self

from pycalico.errors import ValidationError
from pycalico.model import fields, keys, rules, selector

API_VERSION = "projectcalico.org/v3"
MODES = ("Never", "Always", "CrossSubnet")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
ASSIGNMENT_MODES = ("Automatic", "Manual")
NEXT_HOP_MODES = ("Auto", "Self", "Keep")
SOURCE_ADDRESS_MODES = ("UseNodeIP", "None")
BIND_MODES = ("None", "NodeIP")
DEFAULT_AS = 64512
CLUSTER_NAME_ANNOTATION = "pycalico.io/cluster-name"
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
NAME_ALLOWED = "lowercase letters, digits, '-' and '.', starting and ending alphanumeric, at most 253 characters"


def _check_bool(field: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(field, value, "true or false")


def _check_as_number(field: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4294967295:
        raise ValidationError(field, value, "an integer AS number from 1 to 4294967295")


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ValidationError(field, value, "|".join(choices))


def parse_cidr(field: str, value: Any, *, strict: bool = True) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "a CIDR such as 10.244.0.0/16")
    try:
        return ipaddress.ip_network(value, strict=strict)
    except ValueError as exc:
        reason = "host bits set" if "host bits" in str(exc) else "not a CIDR"
        allowed = "a network address with zero host bits, e.g. 10.244.0.0/16" if "host bits" in str(exc) \
            else "a CIDR such as 10.244.0.0/16"
        raise ValidationError(field, value, allowed, reason=reason) from None


def _check_ip(field: str, value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise ValidationError(field, value, "an IPv4 or IPv6 address") from None


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): what copy.deepcopy does for
    it at a fifth of the cost (no memo; resources are copied on every CNI ADD)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def _same(value: Any) -> Any:
    return value


class Resource:
    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False
    # Calico's spec fields (pycalico.model.fields): any other is refused. None: the kind checks its own.
    ALLOWED_SPEC_FIELDS: ClassVar[fields.Schema | None] = None
    # Top-level fields besides kind, apiVersion, metadata and spec (e.g. "status").
    EXTRA_TOP_LEVEL_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str = "", spec: dict[str, Any] | None = None, *, namespace: str | None = None,
                 metadata: dict[str, Any] | None = None, **extra: Any) -> None:
        self.metadata: dict[str, Any] = dict(metadata or {})
        if name:
            self.metadata["name"] = name
        if namespace:
            self.metadata["namespace"] = namespace
        self.spec: dict[str, Any] = dict(spec or {})
        self.extra: dict[str, Any] = dict(extra)  # e.g. "status" and unknown top-level fields

    # ---- JSON -------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: dict[str, Any], *, copy: bool = True) -> Self:
        """``copy=False`` for JSON the caller has just parsed and hands over (a watch cache
        parsing thousands of objects at start): the resource then owns those dicts."""
        if not isinstance(data, dict):
            raise ValidationError("resource", data, f"a JSON object of kind {cls.KIND}")
        kind = data.get("kind", cls.KIND)
        if kind != cls.KIND:
            raise ValidationError("kind", kind, cls.KIND)
        take = json_copy if copy else _same
        extra = {k: take(v) for k, v in data.items() if k not in ("kind", "apiVersion", "metadata", "spec")}
        return cls(metadata=take(data.get("metadata") or {}), spec=take(data.get("spec") or {}), **extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.KIND, "apiVersion": API_VERSION,
                               "metadata": json_copy(self.metadata), "spec": json_copy(self.spec)}
        out.update(json_copy(self.extra))
        return out

    def copy(self) -> Self:
        return type(self).from_json(self.to_json())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resource) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"{self.KIND}({self.namespace + '/' if self.namespace else ''}{self.name})"

    # ---- metadata ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str | None:
        return self.metadata.get("namespace") if self.NAMESPACED else None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("labels") or {})

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    def key(self) -> str:
        return keys.resource_key(self.PLURAL, self.name, self.namespace)

    # ---- defaults and validation --------------------------------------------------------
    def apply_defaults(self) -> None:
        """Fill in the defaults Calico stores on create."""

    def validate(self) -> None:
        fields.check_envelope(self.extra, self.EXTRA_TOP_LEVEL_FIELDS, self.metadata)
        if self.ALLOWED_SPEC_FIELDS is not None:
            fields.check_object("spec", self.spec, self.ALLOWED_SPEC_FIELDS)
        self._validate_name()
        if self.NAMESPACED and not self.namespace:
            raise ValidationError("metadata.namespace", self.namespace, "a namespace name")
        labels = self.metadata.get("labels")
        if labels is not None and (not isinstance(labels, dict) or
                                   not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
            raise ValidationError("metadata.labels", labels, "a map of string keys to string values")

    def _validate_name(self) -> None:
        name = self.metadata.get("name")
        if not isinstance(name, str) or len(name) > 253 or not _NAME_RE.fullmatch(name):
            raise ValidationError("metadata.name", name, NAME_ALLOWED)


class IPPool(Resource):
    KIND = "IPPool"
    PLURAL = "ippools"
    ALLOWED_SPEC_FIELDS = fields.IPPOOL_SPEC
    EXTRA_TOP_LEVEL_FIELDS = ("status",)

    @property
    def cidr(self) -> str:
        return str(self.spec.get("cidr", ""))

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def block_size(self) -> int:
        return int(self.spec.get("blockSize") or (26 if self.version == 4 else 122))

    @property
    def ipip_mode(self) -> str:
        return str(self.spec.get("ipipMode") or "Never")

    @property
    def vxlan_mode(self) -> str:
        return str(self.spec.get("vxlanMode") or "Never")

    @property
    def nat_outgoing(self) -> bool:
        return bool(self.spec.get("natOutgoing", False))

    @property
    def disabled(self) -> bool:
        return bool(self.spec.get("disabled", False))

    @property
    def disable_bgp_export(self) -> bool:
        return bool(self.spec.get("disableBGPExport", False))

    @property
    def node_selector(self) -> str:
        return str(self.spec.get("nodeSelector") or "all()")

    @property
    def allowed_uses(self) -> list[str]:
        return list(self.spec.get("allowedUses") or ["Workload", "Tunnel"])

    @property
    def assignment_mode(self) -> str:
        return str(self.spec.get("assignmentMode") or "Automatic")

    def selects_node(self, labels: dict[str, str]) -> bool:
        return selector.matches(self.node_selector, labels)

    def apply_defaults(self) -> None:
        spec = self.spec
        if self.cidr:
            try:
                version = ipaddress.ip_network(self.cidr, strict=False).version
            except ValueError:
                version = 4
            spec.setdefault("blockSize", 26 if version == 4 else 122)
        spec.setdefault("ipipMode", "Never")
        spec.setdefault("vxlanMode", "Never")
        spec.setdefault("nodeSelector", "all()")
        spec.setdefault("allowedUses", ["Workload", "Tunnel"])
        spec.setdefault("assignmentMode", "Automatic")

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        net = parse_cidr("spec.cidr", spec.get("cidr"))
        block_size = spec.get("blockSize", 26 if net.version == 4 else 122)
        low, high = (20, 32) if net.version == 4 else (116, 128)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not low <= block_size <= high:
            raise ValidationError("spec.blockSize", block_size, f"an integer from {low} to {high} for IPv{net.version}")
        if net.prefixlen > block_size and not spec.get("disabled"):
            raise ValidationError("spec.cidr", spec.get("cidr"),
                                  f"a prefix no longer than the block size /{block_size}",
                                  reason="pool too small for Calico IPAM")
        link_local = _LINK_LOCAL_V4 if net.version == 4 else _LINK_LOCAL_V6
        if net.overlaps(link_local):  # type: ignore[arg-type]
            raise ValidationError("spec.cidr", spec.get("cidr"), f"a CIDR that does not overlap {link_local}")
        _check_choice("spec.ipipMode", spec.get("ipipMode"), MODES)
        _check_choice("spec.vxlanMode", spec.get("vxlanMode"), MODES)
        ipip, vxlan = spec.get("ipipMode") or "Never", spec.get("vxlanMode") or "Never"
        if ipip != "Never" and vxlan != "Never":
            raise ValidationError("spec.ipipMode", ipip, "Never when spec.vxlanMode is enabled",
                                  reason=f"ipipMode and vxlanMode cannot both be enabled (vxlanMode={vxlan})")
        if net.version == 6 and ipip != "Never":
            raise ValidationError("spec.ipipMode", ipip, "Never on an IPv6 pool", reason="IPIP is IPv4 only")
        for field in ("natOutgoing", "disabled", "disableBGPExport"):
            _check_bool(f"spec.{field}", spec.get(field))
        node_selector = spec.get("nodeSelector", "all()")
        if not isinstance(node_selector, str):
            raise ValidationError("spec.nodeSelector", node_selector, selector.ALLOWED)
        selector.validate("spec.nodeSelector", node_selector)
        uses = spec.get("allowedUses", ["Workload", "Tunnel"])
        if not isinstance(uses, list) or not uses or any(u not in ALLOWED_USES for u in uses):
            raise ValidationError("spec.allowedUses", uses, "a non-empty list of " + "|".join(ALLOWED_USES))
        if "LoadBalancer" in uses:
            if set(uses) & {"Workload", "Tunnel"}:
                raise ValidationError("spec.allowedUses", uses, "LoadBalancer alone, without Workload or Tunnel")
            if ipip != "Never" or vxlan != "Never":
                raise ValidationError("spec.allowedUses", uses, "LoadBalancer only on a pool without IPIP or VXLAN")
            if node_selector != "all()":
                raise ValidationError("spec.nodeSelector", node_selector, "all() on a LoadBalancer pool")
        _check_choice("spec.assignmentMode", spec.get("assignmentMode"), ASSIGNMENT_MODES)


class Node(Resource):
    KIND = "Node"
    PLURAL = "nodes"
    ALLOWED_SPEC_FIELDS = fields.NODE_SPEC
    EXTRA_TOP_LEVEL_FIELDS = ("status",)

    @property
    def bgp(self) -> dict[str, Any]:
        return dict(self.spec.get("bgp") or {})

    @property
    def ipv4_address(self) -> str:
        """The node address in CIDR form (``10.0.0.5/24``), or ""."""
        return str(self.bgp.get("ipv4Address") or "")

    @property
    def ipv4_interface(self) -> ipaddress.IPv4Interface | None:
        return ipaddress.IPv4Interface(self.ipv4_address) if self.ipv4_address else None

    @property
    def ip(self) -> str:
        return self.ipv4_address.split("/")[0]

    @property
    def as_number(self) -> int | None:
        value = self.bgp.get("asNumber")
        return int(value) if value is not None else None

    @property
    def rr_cluster_id(self) -> str:
        return str(self.bgp.get("routeReflectorClusterID") or "")

    @property
    def ipip_tunnel_addr(self) -> str:
        return str(self.bgp.get("ipv4IPIPTunnelAddr") or "")

    @property
    def vxlan_tunnel_addr(self) -> str:
        return str(self.spec.get("ipv4VXLANTunnelAddr") or "")

    @property
    def vxlan_mac(self) -> str:
        return str(self.spec.get("vxlanTunnelMACAddr") or "")

    def validate(self) -> None:
        super().validate()
        bgp = self.spec.get("bgp")
        if bgp is None:
            return
        if not isinstance(bgp, dict):
            raise ValidationError("spec.bgp", bgp, "an object")
        if bgp.get("ipv4Address"):
            try:
                iface = ipaddress.ip_interface(bgp["ipv4Address"])
            except ValueError:
                iface = None
            if iface is None or iface.version != 4 or "/" not in str(bgp["ipv4Address"]):
                raise ValidationError("spec.bgp.ipv4Address", bgp["ipv4Address"],
                                      "an IPv4 address in CIDR form, e.g. 10.0.0.5/24")
        _check_as_number("spec.bgp.asNumber", bgp.get("asNumber"))
        rr = bgp.get("routeReflectorClusterID")
        if rr:
            try:
                ipaddress.IPv4Address(rr)
            except ValueError:
                raise ValidationError("spec.bgp.routeReflectorClusterID", rr,
                                      "an IPv4-formatted cluster ID, e.g. 244.0.0.1") from None
        for field in ("ipv4IPIPTunnelAddr",):
            if bgp.get(field):
                _check_ip(f"spec.bgp.{field}", bgp[field])
        if self.spec.get("ipv4VXLANTunnelAddr"):
            _check_ip("spec.ipv4VXLANTunnelAddr", self.spec["ipv4VXLANTunnelAddr"])


class BGPPeer(Resource):
    KIND = "BGPPeer"
    PLURAL = "bgppeers"
    ALLOWED_SPEC_FIELDS = fields.BGPPEER_SPEC

    @property
    def node(self) -> str:
        return str(self.spec.get("node") or "")

    @property
    def node_selector(self) -> str:
        return str(self.spec.get("nodeSelector") or "")

    @property
    def peer_selector(self) -> str:
        return str(self.spec.get("peerSelector") or "")

    @property
    def peer_ip(self) -> str:
        return str(self.spec.get("peerIP") or "")

    @property
    def as_number(self) -> int | None:
        value = self.spec.get("asNumber")
        return int(value) if value is not None else None

    def is_global(self) -> bool:
        return not self.node and not self.node_selector

    def applies_to(self, node_name: str, labels: dict[str, str]) -> bool:
        if self.node:
            return self.node == node_name
        if self.node_selector:
            return selector.matches(self.node_selector, labels)
        return True

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        if spec.get("node") and spec.get("nodeSelector"):
            raise ValidationError("spec.nodeSelector", spec["nodeSelector"], "empty when spec.node is set")
        if spec.get("peerIP") and spec.get("peerSelector"):
            raise ValidationError("spec.peerSelector", spec["peerSelector"], "empty when spec.peerIP is set")
        if not spec.get("peerIP") and not spec.get("peerSelector"):
            raise ValidationError("spec.peerIP", spec.get("peerIP"), "an IP (or ip:port), or set spec.peerSelector")
        if spec.get("peerIP"):
            peer = str(spec["peerIP"])
            host, port = split_peer_ip(peer)
            if port is not None and not 1 <= port <= 65535:
                raise ValidationError("spec.peerIP", peer, "an IP or ip:port with a port from 1 to 65535")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValidationError("spec.peerIP", peer, "an IPv4/IPv6 address, optionally with :port") from None
        for field in ("nodeSelector", "peerSelector"):
            if spec.get(field):
                selector.validate(f"spec.{field}", spec[field])
        _check_as_number("spec.asNumber", spec.get("asNumber"))
        _check_as_number("spec.localASNumber", spec.get("localASNumber"))
        _check_choice("spec.nextHopMode", spec.get("nextHopMode"), NEXT_HOP_MODES)
        _check_choice("spec.sourceAddress", spec.get("sourceAddress"), SOURCE_ADDRESS_MODES)
        _check_bool("spec.keepOriginalNextHop", spec.get("keepOriginalNextHop"))
        _check_password("spec.password", spec.get("password"))


_SECRET_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")


def _check_password(path: str, value: Any) -> None:
    """A BGPPassword: ``{secretKeyRef: {name, key}}``, names as Kubernetes allows them."""
    if value is None:
        return
    ref = value.get("secretKeyRef") if isinstance(value, dict) else None
    if not isinstance(ref, dict):
        raise ValidationError(path, value, "{secretKeyRef: {name: <secret>, key: <key>}}")
    for part in ("name", "key"):
        text = ref.get(part)
        if not isinstance(text, str) or not _SECRET_PART.fullmatch(text) or ".." in text:
            raise ValidationError(f"{path}.secretKeyRef.{part}", text,
                                  "letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    _check_bool(f"{path}.secretKeyRef.optional", ref.get("optional"))


def split_peer_ip(peer: str) -> tuple[str, int | None]:
    """``10.0.0.1:1179`` → ("10.0.0.1", 1179); ``[fd00::1]:179``; a bare IP → (ip, None)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:]+)\]:(\d+)", peer) or re.fullmatch(r"([0-9.]+):(\d+)", peer)
    if m:
        return m.group(1), int(m.group(2))
    return peer, None


class BGPConfiguration(Resource):
    KIND = "BGPConfiguration"
    PLURAL = "bgpconfigurations"
    ALLOWED_SPEC_FIELDS = fields.BGPCONFIGURATION_SPEC
    LOG_LEVELS = ("Debug", "Info", "Warning", "Error", "Fatal", "None")

    @property
    def as_number(self) -> int:
        return int(self.spec.get("asNumber") or DEFAULT_AS)

    @property
    def node_to_node_mesh(self) -> bool:
        value = self.spec.get("nodeToNodeMeshEnabled")
        return True if value is None else bool(value)

    @property
    def listen_port(self) -> int:
        return int(self.spec.get("listenPort") or 179)

    @property
    def log_severity(self) -> str:
        return str(self.spec.get("logSeverityScreen") or "Info")

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        _check_as_number("spec.asNumber", spec.get("asNumber"))
        _check_bool("spec.nodeToNodeMeshEnabled", spec.get("nodeToNodeMeshEnabled"))
        _check_choice("spec.logSeverityScreen", spec.get("logSeverityScreen"), self.LOG_LEVELS)
        port = spec.get("listenPort")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise ValidationError("spec.listenPort", port, "an integer port from 1 to 65535")
        _check_choice("spec.bindMode", spec.get("bindMode"), BIND_MODES)
        _check_password("spec.nodeMeshPassword", spec.get("nodeMeshPassword"))
        for field in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
            for i, item in enumerate(spec.get(field) or []):
                parse_cidr(f"spec.{field}[{i}].cidr", (item or {}).get("cidr"), strict=False)


class FelixConfiguration(Resource):
    KIND = "FelixConfiguration"
    PLURAL = "felixconfigurations"
    ALLOWED_SPEC_FIELDS = fields.FELIXCONFIGURATION_SPEC
    # Calico's validator (libcalico-go validator/v3) for the knobs pycalico honours or that select a mode.
    CHOICES = {
        "defaultEndpointToHostAction": ("Drop", "Accept", "Return"),
        "iptablesFilterAllowAction": ("Accept", "Return"),
        "iptablesMangleAllowAction": ("Accept", "Return"),
        "iptablesFilterDenyAction": ("Drop", "Reject"),
        "chainInsertMode": ("Insert", "Append"),
        "iptablesBackend": ("Legacy", "NFT", "Auto"),
        "logSeverityScreen": ("Trace", "Debug", "Info", "Warning", "Error", "Fatal"),
    }
    INTEGERS = {"vxlanVNI": (0, 16777215), "vxlanPort": (1, 65535), "vxlanMTU": (0, 65535), "vxlanMTUV6": (0, 65535),
                "ipipMTU": (0, 65535), "healthPort": (1, 65535), "prometheusMetricsPort": (1, 65535)}
    BOOLEANS = ("ipipEnabled", "vxlanEnabled", "bpfEnabled", "ipv6Support", "healthEnabled",
                "prometheusMetricsEnabled", "wireguardEnabled", "wireguardEnabledV6")
    _DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|0")

    def validate(self) -> None:
        super().validate()
        spec = self.spec
        for field, choices in self.CHOICES.items():
            _check_choice(f"spec.{field}", spec.get(field), choices)
        for field, (low, high) in self.INTEGERS.items():
            value = spec.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= high):
                raise ValidationError(f"spec.{field}", value, f"an integer from {low} to {high}")
        for field in self.BOOLEANS:
            _check_bool(f"spec.{field}", spec.get(field))
        interval = spec.get("routeRefreshInterval")
        if interval is not None and not (isinstance(interval, str) and self._DURATION.fullmatch(interval)):
            raise ValidationError("spec.routeRefreshInterval", interval, "a duration such as 90s, 1m30s or 500ms")
        for field in ("failsafeInboundHostPorts", "failsafeOutboundHostPorts"):
            for i, entry in enumerate(spec.get(field) or []):
                port = entry.get("port")
                if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                    raise ValidationError(f"spec.{field}[{i}].port", port, "an integer port from 0 to 65535")
                if entry.get("protocol") not in ("TCP", "UDP", "SCTP"):
                    raise ValidationError(f"spec.{field}[{i}].protocol", entry.get("protocol"), "TCP|UDP|SCTP")
                if entry.get("net"):
                    parse_cidr(f"spec.{field}[{i}].net", entry["net"], strict=False)


class ClusterInformation(Resource):
    KIND = "ClusterInformation"
    PLURAL = "clusterinformations"
    ALLOWED_SPEC_FIELDS = fields.CLUSTERINFORMATION_SPEC

    @property
    def datastore_ready(self) -> bool:
        return bool(self.spec.get("datastoreReady", False))

    @property
    def cluster_guid(self) -> str:
        return str(self.spec.get("clusterGUID") or "")

    @property
    def cluster_name(self) -> str:
        return str((self.metadata.get("annotations") or {}).get(CLUSTER_NAME_ANNOTATION, ""))

    def validate(self) -> None:
        super().validate()
        _check_bool("spec.datastoreReady", self.spec.get("datastoreReady"))


class WorkloadEndpoint(Resource):
    KIND = "WorkloadEndpoint"
    PLURAL = "workloadendpoints"
    NAMESPACED = True
    ALLOWED_SPEC_FIELDS = fields.WORKLOADENDPOINT_SPEC

    @property
    def node(self) -> str:
        return str(self.spec.get("node") or "")

    @property
    def ip_networks(self) -> list[str]:
        return list(self.spec.get("ipNetworks") or [])

    @property
    def interface_name(self) -> str:
        return str(self.spec.get("interfaceName") or "")

    @property
    def container_id(self) -> str:
        return str(self.spec.get("containerID") or "")

    def apply_defaults(self) -> None:
        # Calico's client always writes these two labels on a WorkloadEndpoint.
        labels = dict(self.metadata.get("labels") or {})
        if self.namespace:
            labels["projectcalico.org/namespace"] = self.namespace
        if self.spec.get("orchestrator"):
            labels["projectcalico.org/orchestrator"] = str(self.spec["orchestrator"])
        self.metadata["labels"] = labels

    def _validate_name(self) -> None:
        # WEP names carry the node, the orchestrator and the workload joined by '-'.
        name = self.metadata.get("name")
        if not isinstance(name, str) or not name or len(name) > 253 or not re.fullmatch(r"[a-z0-9][-a-z0-9._]*", name):
            raise ValidationError("metadata.name", name, NAME_ALLOWED)

    def validate(self) -> None:
        super().validate()
        nets = self.spec.get("ipNetworks") or []
        if not isinstance(nets, list):
            raise ValidationError("spec.ipNetworks", nets, "a list of CIDRs such as 10.244.1.5/32")
        for i, net in enumerate(nets):
            parse_cidr(f"spec.ipNetworks[{i}]", net, strict=False)
        profiles = rules.check_list("spec.profiles", self.spec.get("profiles") or [], "profile names")
        for i, profile in enumerate(profiles):
            if not isinstance(profile, str) or not profile:
                raise ValidationError(f"spec.profiles[{i}]", profile, "a profile name")
        rules.check_endpoint_ports("spec.ports", self.spec.get("ports"), workload=True)


KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (IPPool, Node, BGPPeer, BGPConfiguration, FelixConfiguration, ClusterInformation, WorkloadEndpoint)
}


def register(*classes: type[Resource]) -> None:
    """Add kinds defined in other modules of the model (policy kinds) to ``KINDS``."""
    for cls in classes:
        KINDS[cls.KIND] = cls


def kind_by_name(text: str) -> type[Resource]:
    """``IPPool``, ``ippool``, ``ippools`` all name the same kind."""
    lowered = text.lower()
    for cls in KINDS.values():
        if lowered in (cls.KIND.lower(), cls.PLURAL, cls.KIND.lower() + "s"):
            return cls
    raise ValidationError("kind", text, ", ".join(KINDS))


def from_json(data: dict[str, Any]) -> Resource:
    if not isinstance(data, dict) or "kind" not in data:
        raise ValidationError("kind", None if not isinstance(data, dict) else data.get("kind"), ", ".join(KINDS))
    return kind_by_name(str(data["kind"])).from_json(data)


def wep_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """Calico's WorkloadEndpoint name: segments joined by '-', inner '-' doubled."""
    return "-".join(part.replace("-", "--") for part in (node, orchestrator, workload, endpoint))
