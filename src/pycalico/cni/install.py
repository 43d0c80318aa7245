"""Install the CNI executables: the launcher, compiled, behind an absolute interpreter.

``python -m pycalico.cni.install /opt/cni/bin`` writes ``pycalico`` and
``pycalico-ipam``: ``#!<this venv's python> -IS`` (no pyenv shim, no site-packages
scan on the fast path; the fallback activates them itself), then the launcher module
as a marshalled code object. Compiling the launcher's source costs ~1.8 ms at every
start, more than its whole fast path; unmarshalling costs ~0.05 ms. Code objects are
tied to one Python minor version, so the file checks the interpreter's cache tag and,
on any other Python, imports the launcher from site-packages instead.

A file is rewritten only when its content would change (``--dry-run`` only tells),
and the output says which, so configuration management can report changes.
"""

from __future__ import annotations

import argparse
import hashlib
import marshal
import os
import sys
from pathlib import Path

NAMES = ("pycalico", "pycalico-ipam")
# Part of the header's digest: raise it when the generated file's shape changes.
FORMAT = 1


def launcher_source(python: str) -> str:
    """The executable's text for ``python`` (which must be this Python for the compiled
    part to be used; another one takes the import path)."""
    from pycalico.cni import launcher

    source = Path(launcher.__file__).read_text()
    digest = hashlib.sha256(f"{FORMAT}\0{python}\0{sys.implementation.cache_tag}\0{source}".encode()).hexdigest()[:16]
    code = marshal.dumps(compile(source, "pycalico-cni-launcher", "exec", dont_inherit=True, optimize=2))
    return (
        f"#!{python} -IS\n"
        f"# pycalico CNI launcher {digest}, made by python -m pycalico.cni.install; do not edit.\n"
        "import sys\n"
        f"if sys.implementation.cache_tag == {sys.implementation.cache_tag!r}:\n"
        "    import marshal\n"
        f"    exec(marshal.loads({code!r}))\n"
        "else:\n"
        "    import site\n"
        "    site.main()\n"
        "    from pycalico.cni.launcher import main\n"
        "    main()\n"
    )


def install(bin_dir: str | os.PathLike[str], python: str | None = None,
            names: tuple[str, ...] = NAMES, *, dry_run: bool = False) -> list[tuple[Path, bool]]:
    """(path, changed) for each executable; ``dry_run`` writes nothing."""
    interpreter = python or sys.executable
    if not os.path.isabs(interpreter):
        raise ValueError(f"the interpreter must be an absolute path, not {interpreter!r}")
    source = launcher_source(interpreter)
    out = []
    directory = Path(bin_dir)
    if not dry_run:
        directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = directory / name
        changed = not _same(target, source)
        if changed and not dry_run:
            tmp = directory / f".{name}.tmp"
            tmp.write_text(source)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        out.append((target, changed))
    return out


def header(source: str) -> str:
    """The lines that identify an executable: interpreter, launcher digest."""
    return "".join(source.splitlines(keepends=True)[:2])


def installed_header(target: Path) -> str | None:
    """``target``'s identifying lines, or None when it is missing or not executable
    as the installer makes it (mode 0755)."""
    try:
        with target.open() as existing:
            head = existing.readline() + existing.readline()
        mode = target.stat().st_mode & 0o7777
    except (OSError, UnicodeDecodeError):
        return None
    return head if mode == 0o755 else None


def _same(target: Path, source: str) -> bool:
    return installed_header(target) == header(source)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="install the pycalico CNI executables")
    parser.add_argument("bin_dir", nargs="?", default="/opt/cni/bin")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--dry-run", action="store_true", help="only tell what would change")
    args = parser.parse_args(argv)
    for path, changed in install(args.bin_dir, args.python, dry_run=args.dry_run):
        print(f"{'changed' if changed else 'unchanged'} {path}")


if __name__ == "__main__":
    main()
