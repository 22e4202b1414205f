"""What the client raises: one class per kind of refusal, each carrying the server's body."""
from __future__ import annotations

from typing import Any


class EstuaryError(Exception):
    """Any failure of a client call."""


class ServerUnreachable(EstuaryError):
    """No HTTP answer: connection refused, DNS failure or timeout."""


class ApiError(EstuaryError):
    """The server answered an error status; ``body`` is its parsed JSON (or text)."""

    def __init__(self, status: int, message: str, body: Any = None):
        self.status = status
        self.body = body
        super().__init__(message)


class InvalidInput(ApiError):
    """400: ``fields`` maps each field at fault (dotted for nested ones, e.g. ``config.rounds``)
    to its messages."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(status, message, body)
        self.fields: dict[str, list[str]] = field_errors(body)


class AuthFailed(ApiError):
    """401/403: no token, a bad one, or one that may not do this."""


class NotFound(ApiError):
    """404: no such object among those the token's user may see."""


class Conflict(ApiError):
    """409: the object's state does not allow this."""


def field_errors(body: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's ``{"field": ["message"], "config": {"rounds": [...]}}`` flattened to
    ``{"field": [...], "config.rounds": [...]}``; ``detail`` and ``non_field_errors`` keep
    their key (or the prefix)."""
    found: dict[str, list[str]] = {}
    if isinstance(body, dict):
        for key, value in body.items():
            inner = prefix if key in ("non_field_errors",) and prefix else \
                f"{prefix}.{key}" if prefix else str(key)
            found.update(field_errors(value, inner))
    elif isinstance(body, list) and all(isinstance(item, str) for item in body):
        found.setdefault(prefix or "detail", []).extend(body)
    elif isinstance(body, list):
        for index, item in enumerate(body):
            found.update(field_errors(item, f"{prefix}.{index}" if prefix else str(index)))
    elif body is not None:
        found.setdefault(prefix or "detail", []).append(str(body))
    return found
