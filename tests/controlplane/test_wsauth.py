"""controlplane.wsauth.allowed_origin: the whole origin of a browser's WebSocket must match.

The real handshake refusals are in tests/controlplane/metrics/test_live.py; these cover what a
single test server cannot show: default ports, IPv6, wss, and CSRF_TRUSTED_ORIGINS behind a
TLS proxy.
"""
import pytest
from django.test import override_settings

from controlplane.wsauth import allowed_origin


def scope(origin: str, host: str, scheme: str = "ws") -> dict:
    return {"type": "websocket", "scheme": scheme,
            "headers": [(b"origin", origin.encode()), (b"host", host.encode())]}


@pytest.mark.parametrize("origin, host, scheme", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
    ("http://localhost", "localhost:80", "ws"),
    ("http://[::1]:8000", "[::1]:8000", "ws"),
    ("https://127.0.0.1", "127.0.0.1", "wss"),
])
def test_it_accepts_the_servers_own_origin(origin, host, scheme):
    assert allowed_origin(scope(origin, host, scheme))


@pytest.mark.parametrize("origin, host, scheme", [
    ("http://127.0.0.1:9999", "127.0.0.1:8000", "ws"),     # another port
    ("https://127.0.0.1:8000", "127.0.0.1:8000", "ws"),    # another scheme
    ("http://127.0.0.1", "127.0.0.1", "wss"),              # http page, wss socket
    ("http://rebound.example:8000", "rebound.example:8000", "ws"),  # Host not allowed
    ("http://127.0.0.1:70000", "127.0.0.1:8000", "ws"),    # not a port
    ("null", "127.0.0.1:8000", "ws"),
    ("http://[::1", "127.0.0.1:8000", "ws"),                # malformed
    ("http://127.0.0.1:8000", "[::1", "ws"),
])
def test_it_refuses_any_other_origin(origin, host, scheme):
    assert not allowed_origin(scope(origin, host, scheme))


@override_settings(CSRF_TRUSTED_ORIGINS=["https://estuary.example.org", "https://*.lab.example"],
                   ALLOWED_HOSTS=["estuary.example.org", ".lab.example"])
def test_it_accepts_trusted_origins_behind_a_tls_proxy():
    # The proxy ends TLS and forwards plain ws with the public Host.
    assert allowed_origin(scope("https://estuary.example.org", "estuary.example.org"))
    assert allowed_origin(scope("https://dash.lab.example", "dash.lab.example"))
    assert not allowed_origin(scope("http://estuary.example.org:8443", "estuary.example.org"))
    assert not allowed_origin(scope("https://evil.example", "estuary.example.org"))
    assert not allowed_origin(scope("https://dash.lab.example:8443", "dash.lab.example"))
