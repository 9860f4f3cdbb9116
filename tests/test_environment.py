"""pyproject.toml, environment.yml and constraints.txt must describe the same environment."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _pyproject() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): str(Requirement(d).specifier) for d in deps}


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        items = entry["pip"] if isinstance(entry, dict) else [entry]
        for item in items:
            if item.startswith("-e"):
                continue
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", item)
            name = CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower())
            if name not in ("python", "pip"):
                found[name] = m.group(2).replace(" ", "")
    return found


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    return pins


def test_environment_yml_lists_the_same_packages_and_bounds():
    assert _environment() == _pyproject()


def test_constraints_pin_every_dependency_within_its_bounds():
    pins = _constraints()
    for name, spec in _pyproject().items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert Requirement(f"{name}{spec}").specifier.contains(pins[name]), f"{name}=={pins[name]} violates {spec}"


def test_the_ci_script_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["python3 course.py lab", "python3 course.py test"]
    assert "python3 course.py test" in (ROOT / ".ci" / "run").read_text()


def _wait_policy(env):
    import os
    import subprocess
    import sys

    code = "import os, retrievalkit; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_package_makes_idle_openmp_threads_sleep_unless_the_user_chose():
    # torch and faiss ship two OpenMP runtimes; spinning faiss threads starve torch on few cores
    assert _wait_policy({"OMP_WAIT_POLICY": None}) == "PASSIVE"
    assert _wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
