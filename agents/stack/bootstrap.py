"""``python -m agents.stack.bootstrap --server URL --out FILE``: first start of a deployment.

Used by docker-compose: makes sure the demo user exists, waits for the web server, issues an
enrolment token and writes it to ``FILE`` (0600) for the agents to read with ``--token-file``.
It prints where the demo login is kept, never a secret: container logs are read by more
people than the data volume.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agents.stack import StackError
from agents.stack.api import UserApi, wait_for_http
from agents.stack.files import write_private


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.stack.bootstrap")
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", type=Path, required=True, help="file to write the token to")
    parser.add_argument("--ttl-hours", type=int, default=24 * 30)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from django.conf import settings

    from agents.stack.demo_user import ensure_demo_user

    user = ensure_demo_user(Path(settings.ESTUARY["DATA_DIR"]))
    try:
        wait_for_http(f"{args.server.rstrip('/')}/api/v1/", 120)
        token = UserApi(args.server, user["api_token"]).issue_enrolment_token(args.ttl_hours)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_private(args.out, token + "\n")
    login_file = Path(settings.ESTUARY["DATA_DIR"]) / "demo-user.json"
    print(f"demo user {user['username']!r}: password and API token in {login_file} (0600)")
    print(f"enrolment token written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
