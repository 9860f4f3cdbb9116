#!/usr/bin/env python3
"""Set up the course in ./.venv and open it in JupyterLab, or run the test suite.

    python3 course.py lab     # install (first time, or after a dependency change), open JupyterLab
    python3 course.py test    # install likewise, run the whole test suite (extra args go to pytest)

Only the standard library is used here, so any Python 3.11+ can run it. The install is
``pip install -c constraints.txt -e .`` into ``.venv``; it is redone only when
``pyproject.toml`` or ``constraints.txt`` change.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".retrievalkit-install"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def install() -> None:
    """Create .venv and install the course into it unless it is already up to date."""
    if sys.version_info < (3, 11):
        sys.exit(f"The course needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if STAMP.exists() and STAMP.read_text() == _fingerprint() and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"Creating the virtual environment {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing the course and its dependencies (a few minutes the first time) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    subprocess.run(pip + ["-c", str(ROOT / "constraints.txt"), "-e", str(ROOT)], check=True, cwd=ROOT)
    STAMP.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test"):
        print(__doc__)
        return 2
    install()
    command, extra = argv[0], argv[1:]
    if command == "lab":
        args = [str(PYTHON), "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT}", *extra]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines often run as root
            args.append("--allow-root")
    else:
        args = [str(PYTHON), "-m", "pytest", *(extra or ["-n", "auto"])]
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
