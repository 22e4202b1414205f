"""Where the command line keeps its server and token: one JSON file, private to the user.

``$ESTUARY_CREDENTIALS`` names it, else ``~/.config/estuary/credentials.json``. Written 0600
(its folder 0700) from the moment it exists, as ``~/.netrc`` or ``gh``'s hosts file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def credentials_path() -> Path:
    named = os.environ.get("ESTUARY_CREDENTIALS")
    if named:
        return Path(named)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "estuary" / "credentials.json"


def save(server: str, token: str, path: Path | None = None) -> Path:
    """Store ``{"server", "token"}`` in a file only the user can read; returns its path."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(descriptor, "w") as file:
        json.dump({"server": server, "token": token}, file)
    return path


def load(path: Path | None = None) -> dict[str, str]:
    """The stored ``{"server", "token"}``, or ``{}`` when there is none."""
    path = path or credentials_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: str(data[key]) for key in ("server", "token") if data.get(key)}
