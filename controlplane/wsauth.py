"""Who opens a WebSocket: the browser's session, or a script's API token.

Browsers always send ``Origin`` on a WebSocket and cannot set ``Authorization``; scripts are
the other way round. So a connection that carries ``Authorization: Token <key>`` is a script
and is authenticated by its token (no cookie is trusted then), while every other connection
must come from an allowed Origin (cross-site WebSocket hijacking is a browser attack).

An allowed Origin is the whole origin (scheme, host and port) of the server itself, as the
request's ``Host`` (which must be in ALLOWED_HOSTS, against DNS rebinding) and scheme give it,
or one listed in CSRF_TRUSTED_ORIGINS (behind a TLS proxy the server sees plain ``ws``, so
its public ``https://`` origin is listed there), as Django's CSRF check compares origins.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host
from django.utils.http import is_same_domain
from rest_framework.authtoken.models import Token

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


@database_sync_to_async
def _user_for_token(key: str):
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware:
    """Sets ``scope["user"]`` from ``Authorization: Token <key>`` (anonymous if invalid)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        parts = (_header(scope, b"authorization") or "").split()
        if len(parts) == 2 and parts[0] == "Token":
            scope = dict(scope, user=await _user_for_token(parts[1]))
        elif parts:
            scope = dict(scope, user=AnonymousUser())
        return await self.app(scope, receive, send)


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None if malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port out of range or not a number
        return None
    return (scheme, host, port) if host and port else None


def _trusted_origin(scheme: str, host: str, port: int) -> bool:
    """Listed in CSRF_TRUSTED_ORIGINS (``https://*.example.org`` covers subdomains)."""
    for pattern in settings.CSRF_TRUSTED_ORIGINS:
        trusted = urlsplit(pattern)
        if trusted.scheme != scheme:
            continue
        if "*" in trusted.netloc:
            if (trusted.port or _DEFAULT_PORTS.get(scheme)) == port and is_same_domain(
                    host, (trusted.hostname or "").replace("*", "", 1)):
                return True
        elif _origin(trusted.scheme, trusted.netloc) == (scheme, host, port):
            return True
    return False


def allowed_origin(scope) -> bool:
    """Whether a browser connection's Origin is this server's own origin or a trusted one."""
    raw_origin, raw_host = _header(scope, b"origin"), _header(scope, b"host")
    if not raw_origin or not raw_host:
        return False
    try:
        host_only = urlsplit(f"//{raw_host}").hostname or ""
        parts = urlsplit(raw_origin)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    # The Host must be one of ours, as for any HTTP request (DNS rebinding).
    if not validate_host(f"[{host_only}]" if ":" in host_only else host_only,
                         settings.ALLOWED_HOSTS):
        return False
    if parts.scheme not in _DEFAULT_PORTS or parts.path or parts.query:
        return False
    origin = _origin(parts.scheme, parts.netloc)
    if origin is None:
        return False
    own_scheme = "https" if scope.get("scheme") == "wss" else "http"
    return origin == _origin(own_scheme, raw_host) or _trusted_origin(*origin)


class OriginCheck:
    """Refuses the handshake (403) unless :func:`allowed_origin`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if allowed_origin(scope):
            return await self.app(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def websocket_auth_stack(app):
    """Origin check and authentication for the WebSocket routes ``app``."""
    browser = OriginCheck(AuthMiddlewareStack(app))
    script = TokenAuthMiddleware(app)

    async def route(scope, receive, send):
        if _header(scope, b"authorization") is not None:
            return await script(scope, receive, send)
        return await browser(scope, receive, send)

    return route
