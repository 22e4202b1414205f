"""Who opens a WebSocket: the browser's session, or a script's API token.

Browsers always send ``Origin`` on a WebSocket and cannot set ``Authorization``; scripts are
the other way round. So a connection that carries ``Authorization: Token <key>`` is a script
and is authenticated by its token (no cookie is trusted then), while every other connection
must come from an allowed Origin (cross-site WebSocket hijacking is a browser attack).
"""
from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser
from rest_framework.authtoken.models import Token


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


def websocket_auth_stack(app):
    """Origin check and authentication for the WebSocket routes ``app``."""
    browser = AllowedHostsOriginValidator(AuthMiddlewareStack(app))
    script = TokenAuthMiddleware(app)

    async def route(scope, receive, send):
        if _header(scope, b"authorization") is not None:
            return await script(scope, receive, send)
        return await browser(scope, receive, send)

    return route
