"""controlplane.asgi_http: the handler resolves a request's path once, for its database lane
and its view, and never serves a request with another request's resolution."""
from __future__ import annotations

import asyncio
import io
import json

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse
from django.urls import Resolver404, get_resolver, path
from django.views import View

from controlplane.asgi_http import _RESOLVED, SyncChainASGIHandler, _resolve


def _echo(request) -> JsonResponse:
    """What the handler gave the view: its match, and whether it is the one the handler found
    when it chose the lane."""
    resolved = request.scope.get(_RESOLVED)
    return JsonResponse({
        "route": request.resolver_match.route,
        "kwargs": request.resolver_match.kwargs,
        "passed_through": resolved is not None and resolved[2] is request.resolver_match})


class EchoOnLane(View):
    persistent_db_methods = ("GET",)
    db_lane = "reports"

    def get(self, request, **kwargs) -> JsonResponse:
        return _echo(request)


urlpatterns = [
    path("echo/<int:n>/", lambda request, n: _echo(request)),
    path("lane/<int:n>/", EchoOnLane.as_view()),
]


def http_scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80)}


def call(scope: dict) -> tuple[int, dict]:
    """``scope`` through the ASGI handler in this process: (status, JSON body)."""
    sent = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(SyncChainASGIHandler()(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


@pytest.fixture
def echo_urls(settings):
    settings.ROOT_URLCONF = __name__


@pytest.mark.django_db(transaction=True)
class TestOneResolution:
    @pytest.mark.parametrize("prefix", ["echo", "lane"])
    def test_the_view_gets_the_match_the_lane_was_chosen_with(self, echo_urls, prefix):
        scope = http_scope(f"/{prefix}/7/")
        assert call(scope) == (200, {"route": f"{prefix}/<int:n>/", "kwargs": {"n": 7},
                                     "passed_through": True})
        assert _RESOLVED not in scope  # the server's scope is left as it was

    def test_each_request_gets_its_own_match(self, echo_urls):
        for n in (1, 2, 3):
            assert call(http_scope(f"/lane/{n}/"))[1]["kwargs"] == {"n": n}


def request_of(scope: dict) -> ASGIRequest:
    return ASGIRequest(scope, io.BytesIO())


class TestResolveRequest:
    """The handler's resolution falls back to Django's whenever the one carried may not be the
    request's own."""

    def test_it_uses_the_carried_match(self, echo_urls):
        scope = http_scope("/echo/5/")
        scope[_RESOLVED] = _resolve(scope)
        request = request_of(scope)
        assert SyncChainASGIHandler().resolve_request(request) is scope[_RESOLVED][2]
        assert request.resolver_match is scope[_RESOLVED][2]

    def test_a_match_for_another_path_is_not_used(self, echo_urls):
        scope = http_scope("/echo/5/")
        scope[_RESOLVED] = _resolve(http_scope("/echo/6/"))
        assert SyncChainASGIHandler().resolve_request(request_of(scope)).kwargs == {"n": 5}

    def test_a_request_with_its_own_urlconf_is_resolved_by_it(self, echo_urls):
        scope = http_scope("/api/v1/algorithms/")
        scope[_RESOLVED] = _resolve(scope)  # a 404 in this URLconf
        request = request_of(scope)
        request.urlconf = "controlplane.urls"
        assert SyncChainASGIHandler().resolve_request(request).url_name == "algorithm-list"

    def test_a_match_from_another_urlconf_is_not_used(self, settings):
        scope = http_scope("/echo/5/")
        settings.ROOT_URLCONF = __name__
        scope[_RESOLVED] = _resolve(scope)
        settings.ROOT_URLCONF = "controlplane.urls"  # a new resolver since the match was found
        assert scope[_RESOLVED][0] is not get_resolver()
        with pytest.raises(Resolver404):
            SyncChainASGIHandler().resolve_request(request_of(scope))
