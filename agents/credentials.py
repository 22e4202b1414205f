"""The agent's credential file: what enrolment returned, kept 0600 in the state directory.

A restarted agent reads it instead of enrolling again, so the enrolment token is needed only once.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

#: Device names become file names here, so they are restricted to a safe alphabet.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def default_state_dir() -> Path:
    """Where credentials and spooled points live unless ``--state-dir`` says otherwise."""
    return Path.home() / ".estuary" / "agents"


@dataclass(frozen=True)
class Credential:
    """The enrolment response plus the server it came from."""

    server: str
    name: str
    device_id: str
    credential: str
    broker_url: str
    queue: str
    heartbeat_interval_s: float


def credential_path(state_dir: Path, name: str) -> Path:
    """The credential file of device ``name`` (which must match :data:`NAME_PATTERN`)."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"device name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return Path(state_dir) / f"{name}.json"


def load_credential(path: Path) -> Credential | None:
    """The stored credential, or None when there is none; a damaged file is an error."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"credential file {path} is unreadable: {exc}") from None
    known = {f.name for f in fields(Credential)}
    missing = known - set(data)
    if missing:
        raise ValueError(f"credential file {path} lacks {', '.join(sorted(missing))}")
    return Credential(**{k: data[k] for k in known})


def save_credential(path: Path, credential: Credential) -> None:
    """Write atomically with mode 0600 (the file holds a secret), creating the directory 0700."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(credential), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode is only used for a new file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
