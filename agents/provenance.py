"""What an agent runs a job with: the project's code version and the key packages' versions.

Sent with every job's ``start/`` (docs/controlplane.md, "Provenance"), so each run records the
code that produced it; the server adds the device's profile, the config and the seed.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

#: The project's root: a git checkout when run from one.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The packages whose versions decide a run's numbers (the training stack and its data),
#: recorded even where no ``requirements.txt`` says what else is pinned.
KEY_PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "pydantic", "safetensors",
                "tokenizers")


def code_version(root: Path = PROJECT_ROOT) -> str:
    """``git:<commit>`` (``+dirty`` with uncommitted changes to tracked files) in a checkout,
    else ``estuary <package version>``."""
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                    "--untracked-files=no"], check=True, capture_output=True,
                                   text=True, timeout=10).stdout.strip()
            return f"git:{commit}{'+dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass  # no git on this machine: fall back to the package version
    return f"estuary {_package_version(root)}"


def _package_version(root: Path) -> str:
    try:
        return metadata.version("estuary")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"


def pinned_packages(root: Path = PROJECT_ROOT) -> list[str]:
    """The names ``requirements.txt`` pins (none outside a checkout)."""
    try:
        lines = (root / "requirements.txt").read_text().splitlines()
    except OSError:
        return []
    return [line.split("==")[0].strip() for line in lines
            if "==" in line and not line.lstrip().startswith("#")]


def package_versions(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The installed version of :data:`KEY_PACKAGES` and of every package ``requirements.txt``
    pins (those installed), by name, sorted."""
    versions = {}
    for name in sorted({*KEY_PACKAGES, *pinned_packages(root)}, key=str.lower):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def agent_provenance() -> dict[str, object]:
    """``{"code_version", "python", "platform", "packages"}``: the start body's ``provenance``.

    Computed once per agent process: its code and packages do not change while it runs.
    """
    return {"code_version": code_version(), "python": platform.python_version(),
            "platform": platform.platform(terse=True), "packages": package_versions()}
