"""Install the CNI executables: copies of the launcher with an absolute interpreter.

``python -m pycalico.cni.install /opt/cni/bin`` writes ``pycalico`` and
``pycalico-ipam`` whose first line is ``#!<this venv's python> -IS``: no pyenv shim,
no site-packages scan on the fast path (the fallback activates them itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NAMES = ("pycalico", "pycalico-ipam")


def launcher_source(python: str) -> str:
    from pycalico.cni import launcher

    body = Path(launcher.__file__).read_text()
    return f"#!{python} -IS\n" + body


def install(bin_dir: str | os.PathLike[str], python: str | None = None,
            names: tuple[str, ...] = NAMES) -> list[Path]:
    interpreter = python or sys.executable
    if not os.path.isabs(interpreter):
        raise ValueError(f"the interpreter must be an absolute path, not {interpreter!r}")
    source = launcher_source(interpreter)
    out = []
    directory = Path(bin_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = directory / name
        tmp = directory / f".{name}.tmp"
        tmp.write_text(source)
        tmp.chmod(0o755)
        os.replace(tmp, target)
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="install the pycalico CNI executables")
    parser.add_argument("bin_dir", nargs="?", default="/opt/cni/bin")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    for path in install(args.bin_dir, args.python):
        print(path)


if __name__ == "__main__":
    main()
