"""The CNI executable: stdlib only, cheap to start (design.md §5).

Installed as ``/opt/cni/bin/pycalico`` and ``/opt/cni/bin/pycalico-ipam`` (the file
name picks the role). It forwards the invocation — the CNI_* environment and stdin —
to the agent's root-only unix socket and prints the reply. When the socket is
absent or nobody listens, it runs the same code in-process.

Run it with an absolute interpreter path (``#!/opt/pycalico/bin/python -IS``, see
``pycalico.cni.install``); with ``-S`` the site-packages are only activated when the
in-process fallback needs them.

Wire format (one request per connection): the client sends one JSON object
``{"role", "env", "stdin"}`` and shuts down its write side; the server answers one
JSON object ``{"code", "stdout"}`` and closes.
"""

from __future__ import annotations

import json
import os
import socket
import sys

DEFAULT_SOCKET = "/var/run/pycalico/cni.sock"
SOCKET_ENV = "PYCALICO_CNI_SOCKET"
# Set to 1 to never use the socket (tests, debugging).
NO_FAST_PATH_ENV = "PYCALICO_CNI_NO_FAST_PATH"
TIMEOUT = 120.0
LOST = 11  # spec code "try again later"


def role_from_name(argv0: str) -> str:
    return "ipam" if "ipam" in os.path.basename(argv0) else "plugin"


def socket_path(env: dict[str, str], stdin: bytes) -> str:
    path = env.get(SOCKET_ENV, "")
    if not path and b'"agent_socket"' in stdin:
        # A conflist may name the socket; only then is it worth decoding here.
        try:
            conf = json.loads(stdin)
            value = conf.get("agent_socket") if isinstance(conf, dict) else None
            if isinstance(value, str):
                return value
        except ValueError:
            pass
    return path or DEFAULT_SOCKET


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def forward(path: str, role: str, env: dict[str, str], stdin: bytes) -> tuple[int, str] | None:
    """Run the request in the agent. None when no agent listens (use the fallback)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError):
            return None
        sock.settimeout(TIMEOUT)
        request = json.dumps({"role": role, "env": env, "stdin": stdin.decode("utf-8", "surrogateescape")})
        try:
            sock.sendall(request.encode("utf-8", "surrogateescape"))
            sock.shutdown(socket.SHUT_WR)
            raw = _recv_all(sock)
        except (BrokenPipeError, ConnectionResetError):
            raw = b""
        if not raw:
            # Accepted but never answered: the agent died mid-request. Running the request
            # again here could act twice, so let the runtime retry it.
            return LOST, json.dumps({"cniVersion": "1.1.0", "code": LOST,
                                     "msg": "the pycalico agent closed the connection; try again"})
        reply = json.loads(raw)
        return int(reply["code"]), str(reply["stdout"])
    finally:
        sock.close()


def in_process(role: str, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
    if sys.flags.no_site:
        import site

        site.main()
    from pycalico.cni.plugin import Runtime, execute

    runtime = Runtime()
    try:
        return execute(role, env, stdin, runtime)
    finally:
        runtime.close()


def run(argv0: str, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
    role = role_from_name(argv0)
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    result = None
    if env.get(NO_FAST_PATH_ENV, "") not in ("1", "true"):
        result = forward(socket_path(env, stdin), role, cni_env, stdin)
    if result is None:
        result = in_process(role, cni_env, stdin)
    return result


def main() -> None:
    code = 100
    out = ""
    try:
        stdin = sys.stdin.buffer.read() if sys.stdin is not None else b""
        code, out = run(sys.argv[0], dict(os.environ), stdin)
    except BaseException as exc:  # noqa: BLE001 - never a traceback: a spec error instead
        code = 100
        out = json.dumps({"cniVersion": "1.1.0", "code": code,
                          "msg": f"pycalico plugin failed: {type(exc).__name__}: {exc}"})
    if out:
        sys.stdout.write(out)
        if not out.endswith("\n"):
            sys.stdout.write("\n")
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
