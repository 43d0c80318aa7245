"""The CNI verbs of ``pycalico`` (the network plugin) and ``pycalico-ipam``.

``execute(role, env, stdin, runtime)`` is the one entry point. The launcher calls it
in-process, the fast-path server calls it in the agent; both get the same
``(exit_code, stdout)``. Errors never escape as tracebacks: they become spec JSON,
mapped in ``to_cni_error`` from the one hierarchy in ``pycalico.errors``.

The rest lives by concern: ``runtime`` (what lasts across requests), ``add`` (the ADD
transaction), ``verbs`` (DEL, CHECK, STATUS, GC, the IPAM verbs), ``delegated`` (other
IPAM plugins), ``endpoint`` (the WorkloadEndpoint).
"""

from __future__ import annotations

import json
import time

from pycalico.cni.netconf import parse_netconf
from pycalico.cni.runtime import Context, Runtime, log
from pycalico.cni.spec import (
    DATAPLANE,
    INTERNAL,
    INVALID_CONFIG,
    LATEST,
    NETNS_UNUSABLE,
    NO_ADDRESSES,
    NOT_AVAILABLE,
    NOT_READY,
    TRY_AGAIN_LATER,
    CniError,
    CniRequest,
    check_verb_version,
    config_version,
    decode_config,
    version_result,
)
from pycalico.cni.verbs import IPAM_VERBS, PLUGIN_VERBS
from pycalico.errors import (
    DataplaneError,
    DatastoreError,
    DatastoreUnavailable,
    IPAMError,
    KubeUnavailable,
    NetnsError,
    NotReady,
    PoolExhausted,
    PycalicoError,
    ValidationError,
)

PLUGIN = "plugin"
IPAM_ROLE = "ipam"


def execute(role: str, env: dict[str, str], stdin: bytes, runtime: Runtime) -> tuple[int, str]:
    """Run one CNI invocation; returns (exit code, stdout text)."""
    version = LATEST
    command = env.get("CNI_COMMAND", "")
    try:
        req = CniRequest.from_env(env, stdin)
        if req.command == "VERSION":
            try:
                raw = decode_config(stdin) if stdin.strip() else {}
            except CniError:
                raw = {}
            v = raw.get("cniVersion")
            return 0, json.dumps(version_result(v if isinstance(v, str) and v else LATEST))
        raw = decode_config(stdin)
        version = config_version(raw)
        check_verb_version(req.command, version)
        conf = parse_netconf(raw, version)
        runtime.setup_logging(conf)
        verbs = IPAM_VERBS if role == IPAM_ROLE else PLUGIN_VERBS
        started = time.monotonic()
        runtime.begin_request()
        try:
            out = verbs[req.command](req, conf, runtime)
        finally:
            runtime.end_request()
        log.info("%s %s %s ok in %.1f ms", role, req.command, req.container_id,
                 (time.monotonic() - started) * 1000)
        return 0, json.dumps(out) if out is not None else ""
    except BaseException as exc:  # noqa: BLE001 - every error becomes spec JSON
        err = to_cni_error(exc, command)
        if err.code >= INTERNAL and not isinstance(exc, PycalicoError):
            log.exception("%s %s failed", role, command)
        else:
            log.warning("%s %s failed: code %d: %s", role, command, err.code, err.msg)
        return err.code, json.dumps(err.to_json(version))



def to_cni_error(exc: BaseException, command: str = "") -> CniError:
    """The one mapping from pycalico errors to CNI codes."""
    unavailable = NOT_AVAILABLE if command == "STATUS" else TRY_AGAIN_LATER
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, DatastoreUnavailable):
        return CniError(unavailable, "datastore unreachable, try again later", exc.detail)
    if isinstance(exc, KubeUnavailable):
        return CniError(unavailable, "Kubernetes API unreachable, try again later", str(exc))
    if isinstance(exc, ValidationError):
        return CniError(INVALID_CONFIG, f"invalid value: {exc}")
    if isinstance(exc, NotReady):
        return CniError(NOT_AVAILABLE if command == "STATUS" else NOT_READY, str(exc))
    if isinstance(exc, PoolExhausted):
        return CniError(NO_ADDRESSES, str(exc))
    if isinstance(exc, IPAMError):
        return CniError(NO_ADDRESSES, f"IPAM: {exc}")
    if isinstance(exc, DatastoreError):
        return CniError(unavailable, f"datastore error: {exc}")
    if isinstance(exc, NetnsError):
        return CniError(NETNS_UNUSABLE, str(exc))
    if isinstance(exc, DataplaneError):
        return CniError(DATAPLANE, str(exc))
    if isinstance(exc, PycalicoError):
        return CniError(INTERNAL, str(exc))
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return CniError(INTERNAL, "interrupted")
    return CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


__all__ = ["IPAM_ROLE", "PLUGIN", "Context", "Runtime", "execute", "to_cni_error"]
