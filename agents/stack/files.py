"""What the stack keeps in its data folder is private to the user who runs it.

The folder holds the database, Redis's data, the agents' credentials, the secret key and logs:
folders are 0700 and files 0600, including those of an older data folder made before this rule.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The file in the data folder that keeps the server's SECRET_KEY between starts.
SECRET_KEY_FILE = "secret-key"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (also when the file already existed)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    return path


def make_private(folder: Path) -> None:
    """Make ``folder`` 0700 and every file directly in it 0600 (logs of older versions)."""
    private_dir(folder)
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o600)


def secret_key(data_dir: Path) -> str:
    """The server's SECRET_KEY: made once (0600 in the data folder), the same ever after, so
    sessions and signed values outlive a restart."""
    path = data_dir / SECRET_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 50:  # Django's own minimum for a production key
        key = secrets.token_urlsafe(50)
        write_private(path, key + "\n")
    path.chmod(0o600)
    return key
