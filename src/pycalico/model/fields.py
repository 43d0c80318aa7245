"""Calico's JSON field names, for strict decoding: a field Calico does not know is
refused with its path named, as calicoctl's strict unmarshalling refuses it.

A schema is a mapping of field name to ``None`` (any value), a nested schema (an
object with those fields) or a one-element list holding a schema (a list of such
objects). Names are the union of Calico v3.32.1 and its HEAD of Aug 2026
(``api/pkg/apis/projectcalico/v3/*.go``, ``libcalico-go/lib/apis/internalapi/*.go``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycalico.errors import ValidationError

Schema = Mapping[str, "Schema | list[Schema] | None"]


def _names(text: str) -> dict[str, None]:
    return dict.fromkeys(text.split())


TOP_LEVEL = ("kind", "apiVersion", "metadata", "spec")

# Kubernetes ObjectMeta (k8s.io/apimachinery meta/v1), which every Calico kind embeds.
OBJECT_META = _names(
    "name generateName namespace selfLink uid resourceVersion generation creationTimestamp deletionTimestamp "
    "deletionGracePeriodSeconds labels annotations ownerReferences finalizers managedFields")

IPPOOL_SPEC: Schema = _names(
    "cidr vxlanMode ipipMode natOutgoing disabled disableBGPExport blockSize nodeSelector namespaceSelector "
    "allowedUses assignmentMode")

_NODE_BGP = _names("asNumber ipv4Address ipv6Address ipv4IPIPTunnelAddr routeReflectorClusterID")
NODE_SPEC: Schema = {
    "bgp": _NODE_BGP,
    **_names("ipv4VXLANTunnelAddr vxlanTunnelMACAddr ipv6VXLANTunnelAddr vxlanTunnelMACAddrV6"),
    "orchRefs": [_names("nodeName orchestrator")],
    "wireguard": _names("interfaceIPv4Address interfaceIPv6Address"),
    "addresses": [_names("address type")],
    "interfaces": [_names("name addresses")],
}

# BGPPassword: a reference to a Secret's key (in pycalico a file, see pycalico.bgp.secrets).
BGP_PASSWORD: Schema = {"secretKeyRef": _names("name key optional")}
BGPPEER_SPEC: Schema = {
    **_names(
        "node nodeSelector peerIP asNumber localASNumber peerSelector keepOriginalNextHop nextHopMode "
        "sourceAddress maxRestartTime keepaliveTime numAllowedLocalASNumbers ttlSecurity reachableBy filters "
        "localWorkloadSelector reversePeering"),
    "password": BGP_PASSWORD,
}

_CIDR_BLOCK = _names("cidr")
BGPCONFIGURATION_SPEC: Schema = {
    **_names("logSeverityScreen nodeToNodeMeshEnabled asNumber serviceLoadBalancerAggregation listenPort "
             "nodeMeshMaxRestartTime bindMode ignoredInterfaces localWorkloadPeeringIPV4 "
             "localWorkloadPeeringIPV6 programClusterRoutes ipv4NormalRoutePriority ipv6NormalRoutePriority"),
    "nodeMeshPassword": BGP_PASSWORD,
    "serviceLoadBalancerIPs": [_CIDR_BLOCK],
    "serviceExternalIPs": [_CIDR_BLOCK],
    "serviceClusterIPs": [_CIDR_BLOCK],
    "communities": [_names("name value")],
    "prefixAdvertisements": [_names("cidr communities")],
}

_FELIX_NAMES = _names("""
    nodeSelector useInternalDataplaneDriver dataplaneDriver dataplaneWatchdogTimeout ipv6Support
    routeRefreshInterval interfaceRefreshInterval iptablesRefreshInterval iptablesPostWriteCheckInterval
    iptablesLockProbeInterval featureDetectOverride featureGates ipsetsRefreshInterval maxIpsetSize iptablesBackend
    xdpRefreshInterval netlinkTimeout metadataAddr metadataPort openstackRegion interfacePrefix interfaceExclude
    chainInsertMode defaultEndpointToHostAction iptablesFilterAllowAction iptablesMangleAllowAction
    iptablesFilterDenyAction logPrefix logActionRateLimit logActionRateLimitBurst logFilePath logSeverityFile
    logSeverityScreen logSeveritySys logDebugFilenameRegex ipipEnabled ipipMTU vxlanEnabled vxlanMTU vxlanMTUV6
    vxlanPort vxlanVNI allowVXLANPacketsFromWorkloads allowIPIPPacketsFromWorkloads reportingInterval reportingTTL
    endpointReportingEnabled endpointReportingDelay endpointStatusPathPrefix iptablesMarkMask
    disableConntrackInvalidCheck healthEnabled healthHost healthPort healthTimeoutOverrides prometheusMetricsEnabled
    prometheusMetricsHost prometheusMetricsPort prometheusGoMetricsEnabled prometheusProcessMetricsEnabled
    prometheusWireGuardMetricsEnabled prometheusMetricsCAFile prometheusMetricsCertFile prometheusMetricsKeyFile
    prometheusMetricsClientAuth failsafeInboundHostPorts failsafeOutboundHostPorts kubeNodePortRanges
    policySyncPathPrefix usageReportingEnabled usageReportingInitialDelay usageReportingInterval natPortRange
    natOutgoingAddress natOutgoingExclusions deviceRouteSourceAddress deviceRouteSourceAddressIPv6
    deviceRouteProtocol removeExternalRoutes programClusterRoutes ipForwarding externalNodesList
    debugMemoryProfilePath debugDisableLogDropping debugSimulateCalcGraphHangAfter debugSimulateDataplaneHangAfter
    debugSimulateDataplaneApplyDelay debugHost debugPort iptablesNATOutgoingInterfaceFilter
    sidecarAccelerationEnabled xdpEnabled genericXDPEnabled nftablesMode nftablesFlowTableOffload
    nftablesFlowTableDataIfacePattern nftablesRefreshInterval nftablesFilterAllowAction nftablesMangleAllowAction
    nftablesFilterDenyAction nftablesMarkMask bpfEnabled bpfOverlayHostSourceIP bpfDisableUnprivileged
    bpfJITHardening bpfLogLevel bpfConntrackLogLevel bpfConntrackMode bpfConntrackTimeouts bpfIPFragTimeout
    bpfLogFilters bpfCTLBLogFilter bpfDataIfacePattern bpfL3IfacePattern bpfConnectTimeLoadBalancingEnabled
    bpfConnectTimeLoadBalancing bpfHostNetworkedNATWithoutCTLB bpfExternalServiceMode bpfDSROptoutCIDRs
    bpfExtToServiceConnmark bpfKubeProxyIptablesCleanupEnabled bpfKubeProxyMinSyncPeriod bpfKubeProxyHealthzPort
    bpfPSNATPorts bpfMapSizeNATFrontend bpfMapSizeNATBackend bpfMapSizeNATAffinity bpfMapSizeRoute
    bpfMapSizeConntrack bpfMapSizePerCpuConntrack bpfMapSizeConntrackScaling bpfMapSizeConntrackCleanupQueue
    bpfMapSizeIPSets bpfMapSizeIfState bpfHostConntrackBypass bpfIPFragmentReassemblyEnabled bpfEnforceRPF
    bpfPolicyDebugEnabled bpfForceTrackPacketsFromIfaces bpfDisableGROForIfaces bpfExcludeCIDRsFromNAT
    bpfExportBufferSizeMB istioAmbientMode istioDSCPMark cgroupV2Path flowLogsPolicyEvaluationMode
    bpfRedirectToPeer bpfAttachType flowLogsFlushInterval flowLogsCollectorDebugTrace flowLogsGoldmaneServer
    flowLogsLocalReporter bpfProfiling routeSource routeTableRanges routeTableRange routeSyncDisabled
    ipv4NormalRoutePriority ipv4ElevatedRoutePriority ipv6NormalRoutePriority ipv6ElevatedRoutePriority
    liveMigrationRouteConvergenceTime wireguardEnabled wireguardEnabledV6 wireguardThreadingEnabled
    wireguardListeningPort wireguardListeningPortV6 wireguardRoutingRulePriority wireguardInterfaceName
    wireguardInterfaceNameV6 wireguardMTU wireguardMTUV6 wireguardHostEncryptionEnabled wireguardKeepAlive
    awsSrcDstCheck serviceLoopPrevention workloadSourceSpoofing mtuIfacePattern floatingIPs
    localSubnetL2Reachability localSubnetL2ReachabilityRefreshInterval windowsManageFirewallRules goGCThreshold
    goMemoryLimitMB goMaxProcs requireMTUFile bpfMaglevMaxEndpointsPerService bpfMaglevMaxServices
""")
_PROTO_PORT = _names("protocol port net")
FELIXCONFIGURATION_SPEC: Schema = {
    **_FELIX_NAMES, "failsafeInboundHostPorts": [_PROTO_PORT], "failsafeOutboundHostPorts": [_PROTO_PORT]}

CLUSTERINFORMATION_SPEC: Schema = _names("clusterGUID clusterType calicoVersion datastoreReady variant")

WORKLOADENDPOINT_SPEC: Schema = _names(
    "orchestrator workload node containerID pod endpoint serviceAccountName ipNetworks ipNATs ipv4Gateway "
    "ipv6Gateway profiles interfaceName mac ports allowSpoofedSourcePrefixes qosControls")


def _allowed(schema: Schema) -> str:
    return "one of " + ", ".join(schema)


def check_object(path: str, value: Any, schema: Schema) -> None:
    """Refuse a field ``schema`` does not name, anywhere below ``path``."""
    if not isinstance(value, dict):
        raise ValidationError(path, value, "an object with fields " + ", ".join(schema))
    for name, item in value.items():
        if name not in schema:
            raise ValidationError(f"{path}.{name}", item, _allowed(schema), reason="unknown field")
        sub = schema[name]
        if item is None or sub is None:
            continue
        if isinstance(sub, list):
            if not isinstance(item, list):
                raise ValidationError(f"{path}.{name}", item, "a list of objects with fields " + ", ".join(sub[0]))
            for i, element in enumerate(item):
                check_object(f"{path}.{name}[{i}]", element, sub[0])
        else:
            check_object(f"{path}.{name}", item, sub)


def check_envelope(top_level: dict[str, Any], extra_top_level: tuple[str, ...], metadata: Any) -> None:
    """The fields around the spec: top level (``kind``, ``apiVersion``, ``metadata``, ``spec``
    and the kind's own, e.g. ``status``) and Kubernetes ObjectMeta."""
    allowed = TOP_LEVEL + extra_top_level
    for name, value in top_level.items():
        if name not in allowed:
            raise ValidationError(name, value, "one of " + ", ".join(allowed), reason="unknown top-level field")
    check_object("metadata", metadata, OBJECT_META)
