"""The CNI executable: stdlib only, and cheap to start (design.md §5).

Installed as ``/opt/cni/bin/pycalico`` and ``/opt/cni/bin/pycalico-ipam`` (the file
name picks the role). It forwards the invocation — the CNI_* environment and stdin —
to the agent's root-only unix socket and prints the reply. When the socket is absent
or nobody listens, it runs the same code in-process.

Start cost matters more than anything here: the Go reference plugins finish an ADD
in about the time a Python interpreter needs to start. So the installed copy runs
as ``#!<venv>/bin/python -IS`` (no site scan; the fallback activates site-packages
itself), carries this module already compiled (``pycalico.cni.install``), and the
fast path imports nothing but the built-in ``posix`` and the C-level ``_socket``:
no ``os`` (~0.7 ms), no ``socket`` (enum, selectors), no ``json`` (re).

Wire format, one request per connection:
  request  ``PYCNI1 <role> <len(env)> <len(stdin)>\\n`` + env + stdin, where env is
           ``KEY=VALUE`` entries joined by NUL; the client then shuts down writing.
  reply    ``<exit code>\\n`` + the bytes to print on stdout; the server closes.
"""

import posix
import sys

DEFAULT_SOCKET = "/var/run/pycalico/cni.sock"
SOCKET_ENV = "PYCALICO_CNI_SOCKET"
# Set to 1 to never use the socket (tests, debugging, benchmarks of the fallback).
NO_FAST_PATH_ENV = "PYCALICO_CNI_NO_FAST_PATH"
MAGIC = b"PYCNI1"
TIMEOUT = 120.0
LOST = 11  # spec code "try again later"


def role_from_name(argv0):
    return "ipam" if "ipam" in argv0.rpartition("/")[2] else "plugin"


def socket_path(env, stdin):
    path = env.get(SOCKET_ENV, "")
    if not path and b'"agent_socket"' in stdin:
        # A conflist may name the socket; only then is it worth decoding the config here.
        import json

        try:
            conf = json.loads(stdin)
            value = conf.get("agent_socket") if isinstance(conf, dict) else None
            if isinstance(value, str):
                return value
        except ValueError:
            pass
    return path or DEFAULT_SOCKET


def encode_request(role, env, stdin):
    blob = "\0".join(f"{k}={v}" for k, v in env.items()).encode("utf-8", "surrogateescape")
    return b"%s %s %d %d\n" % (MAGIC, role.encode(), len(blob), len(stdin)) + blob + stdin


def decode_request(data):
    """(role, env, stdin) from the wire; ValueError when malformed."""
    header, sep, rest = data.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 4 or parts[0] != MAGIC:
        raise ValueError("not a pycalico CNI request")
    role = parts[1].decode()
    env_len, stdin_len = int(parts[2]), int(parts[3])
    if len(rest) != env_len + stdin_len:
        raise ValueError("truncated request")
    env = {}
    for item in rest[:env_len].decode("utf-8", "surrogateescape").split("\0"):
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
    return role, env, rest[env_len:]


def encode_reply(code, stdout):
    return b"%d\n" % code + stdout.encode("utf-8", "surrogateescape")


def forward(path, role, env, stdin):
    """Run the request in the agent: (code, stdout bytes), or None when no agent
    listens (use the fallback)."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError):
            return None
        sock.settimeout(TIMEOUT)
        chunks = []
        try:
            sock.sendall(encode_request(role, env, stdin))
            sock.shutdown(_socket.SHUT_WR)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except (BrokenPipeError, ConnectionResetError):
            chunks = []
        raw = b"".join(chunks)
        head, sep, out = raw.partition(b"\n")
        if not sep or not head.isdigit():
            # Accepted but never answered: the agent died mid-request. Running the
            # request again here could act twice, so let the runtime retry it.
            return LOST, (b'{"cniVersion": "1.1.0", "code": 11, '
                          b'"msg": "the pycalico agent closed the connection; try again"}')
        return int(head), out
    finally:
        sock.close()


def in_process(role, env, stdin):
    if sys.flags.no_site:
        import site

        site.main()
    from pycalico.cni.plugin import Runtime, execute

    runtime = Runtime()
    try:
        code, out = execute(role, env, stdin, runtime)
        return code, out.encode("utf-8", "surrogateescape")
    finally:
        runtime.close()


def run(argv0, env, stdin):
    role = role_from_name(argv0)
    cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
    result = None
    if env.get(NO_FAST_PATH_ENV, "") not in ("1", "true"):
        result = forward(socket_path(env, stdin), role, cni_env, stdin)
    if result is None:
        result = in_process(role, cni_env, stdin)
    return result


def environment():
    """The variables the launcher looks at, from ``posix.environ`` (bytes) without ``os``."""
    return {key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for key, value in posix.environ.items() if key.startswith((b"CNI_", b"PYCALICO_CNI_"))}


def main():
    code = 100
    out = b""
    try:
        stdin = sys.stdin.buffer.read() if sys.stdin is not None else b""
        code, out = run(sys.argv[0], environment(), stdin)
    except BaseException as exc:  # noqa: BLE001 - never a traceback: a spec error instead
        import json

        code = 100
        out = json.dumps({"cniVersion": "1.1.0", "code": code,
                          "msg": f"pycalico plugin failed: {type(exc).__name__}: {exc}"}).encode()
    try:
        if out:
            view = memoryview(out if out.endswith(b"\n") else out + b"\n")
            while view:
                view = view[posix.write(1, view):]
    finally:
        posix._exit(code)


if __name__ == "__main__":
    main()
