#!/usr/bin/env python3
"""Set up the course in ./.venv and open it in JupyterLab, or run the test suite.

    python3 course.py lab     # install (first time, or after a dependency change), open JupyterLab in work/
    python3 course.py test    # install likewise, run the whole test suite (extra args go to pytest)

Only the standard library is used here, so any Python 3.11+ can run it. The install is
``pip install -c constraints.txt -e .`` into ``.venv``; it is redone only when
``pyproject.toml`` or ``constraints.txt`` change.

``lab`` opens a working copy, ``work/lectures`` and ``work/exercises`` (git-ignored): each notebook
is copied there the first time and never overwritten afterwards, so what a student runs and writes
stays theirs, the tracked files stay as committed, and ``git pull`` never conflicts (a notebook
added upstream is copied on the next ``lab``; to start a notebook afresh, delete its copy).

``test`` also needs three Debian packages: ``bwrap`` (bubblewrap, the grader's sandbox), ``chromium``
(the browser test) and ``opencv-doc`` (OpenCV's sample photos, of which the mini benchmark's other
collection is drawn: the tests never download them). Run as root on a machine with ``apt-get`` (a CI
machine), it installs the missing ones; elsewhere the tests that need them say how to enable them.
The notebooks download the 29 photos they use (4.7 MB, hash-checked) where ``opencv-doc`` is absent.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".retrievalkit-install"
WORK = ROOT / "work"  # the students' working copy, git-ignored
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


# Debian package -> the program (or file) it provides; needed by `test` only
DEBIAN_PACKAGES = {"bubblewrap": "bwrap", "chromium": "chromium",
                   "opencv-doc": "/usr/share/doc/opencv-doc/examples/data/baboon.jpg"}


def _provided(thing: str) -> bool:
    return Path(thing).is_file() if thing.startswith("/") else shutil.which(thing) is not None


def install_system_packages() -> None:
    """As root with apt-get, install the Debian packages of DEBIAN_PACKAGES whose program is missing."""
    missing = [pkg for pkg, thing in DEBIAN_PACKAGES.items() if not _provided(thing)]
    if not missing or not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    print(f"Installing the Debian packages {', '.join(missing)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def working_copy() -> Path:
    """Copy each notebook of lectures/ and exercises/ to work/ unless a copy is already there."""
    for folder in ("lectures", "exercises"):
        for src in sorted((ROOT / folder).rglob("*.ipynb")):
            dst = WORK / src.relative_to(ROOT)
            if ".ipynb_checkpoints" in src.parts or dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)  # never a half-copied notebook
    return WORK


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test"):
        print(__doc__)
        return 2
    install()
    command, extra = argv[0], argv[1:]
    if command == "lab":
        args = [str(PYTHON), "-m", "jupyter", "lab", f"--ServerApp.root_dir={working_copy()}", *extra]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines often run as root
            args.append("--allow-root")
    else:
        install_system_packages()
        args = [str(PYTHON), "-m", "pytest", *(extra or ["-n", "auto"])]
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
