"""Make sure the demo account exists: ``python -m agents.stack.demo_user DATA_DIR``.

Prints ``{"username", "password", "api_token"}`` as JSON. Idempotent: the password is made once
and kept in ``DATA_DIR/demo-user.json`` (0600); a later run reuses it, and resets the account's
password to it if they disagree (e.g. a fresh database with the old data folder).
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from agents.stack.files import write_private

USERNAME = "demo"


def stored_password(data_dir: Path) -> str:
    """The demo password kept in the data folder, created on first use."""
    path = data_dir / "demo-user.json"
    try:
        return json.loads(path.read_text())["password"]
    except (FileNotFoundError, KeyError, ValueError):
        password = secrets.token_urlsafe(12)
        write_private(path, json.dumps({"username": USERNAME, "password": password}))
        return password


def ensure_demo_user(data_dir: Path) -> dict[str, str]:
    """Create or repair the demo user and its API token (Django must be set up)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    password = stored_password(data_dir)
    user, _ = get_user_model().objects.get_or_create(
        username=USERNAME, defaults={"email": "demo@localhost"})
    if not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
    token, _ = Token.objects.get_or_create(user=user)
    return {"username": USERNAME, "password": password, "api_token": token.key}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    print(json.dumps(ensure_demo_user(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
