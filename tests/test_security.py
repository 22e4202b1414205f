"""Default deny: every URL pattern and WebSocket route refuses anonymous and other-tenant callers.

The walk iterates Django's URL resolver and the WebSocket routes, so new pages and endpoints
are covered as they land. Path parameters are filled with the *owner's* objects (chosen by the
path segment before them: ``experiments/<id>`` gets the owner's experiment), and every GET also
carries the owner's ids in the usual query parameters. A request is refused when it answers
401/403/404/405 or redirects to a login page; an other-tenant request to a collection may
answer 2xx/400 for its own data, but must not show anything of the owner's.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.regex_helper import normalize

from controlplane.devices.actions import create_enrolment_token
from controlplane.devices.models import Device, EnrolmentToken
from controlplane.experiments.models import Experiment, Job, Run
from controlplane.metrics.actions import append_logs, ingest_metrics
from controlplane.metrics.models import MetricPoint, RunLog
from controlplane.routing import websocket_urlpatterns
from tests.fixtures.servers import WebSocketClosed, WebSocketRefused, ws_connect

#: Routes anyone may reach (by URL name): logging in and out, the token exchange for scripts,
#: agent enrolment (the enrolment token is in the body), and static assets.
ALLOW_ANONYMOUS = {
    "api-token", "agent-enrol", "frontend:login", "frontend:logout",
    "admin:login", "admin:logout",
    "frontend:home",  # only redirects to the experiments page, which is walked itself

}

METHODS = ["get", "post", "put", "patch", "delete"]
REFUSED = {401, 403, 404, 405}

#: Strings only the owner's objects contain; no answer to another caller may include them.
SECRETS = ["owners-secret-device", "owner's secret experiment", "owner_secret_metric",
           "owner's secret log line", "owner's secret token note"]


def url_patterns(resolver=None, prefix=(), namespace=()):
    """(pieces, name) of every URL pattern, depth first."""
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace + ((pattern.namespace,) if pattern.namespace else ())
            yield from url_patterns(pattern, prefix + (pattern.pattern,), inner)
        elif isinstance(pattern, URLPattern):
            name = ":".join(namespace + (pattern.name,)) if pattern.name else None
            yield prefix + (pattern.pattern,), name


def build_path(pieces, world: dict[str, str]) -> str:
    """The concrete path of a pattern, each parameter filled from the owner's ``world``."""
    path = ""
    for piece in pieces:
        template, params = normalize(str(piece.regex.pattern))[0]
        values = {}
        for param in params:
            segment = (path + template.split(f"%({param})s")[0]).rstrip("/").split("/")[-1]
            values[param] = world.get(segment) or world.get(f"param:{param}")
            assert values[param], (f"teach the security walk what {param!r} after "
                                   f"{segment!r} is (in {path + template})")
        path += template % values
    return "/" + path


@pytest.fixture
def world(owner, device_factory, experiment_factory) -> dict[str, str]:
    """The owner's objects, keyed by the path segment that names them."""
    host = device_factory(owner, name="owners-secret-device").device
    experiment = experiment_factory(owner, host=host, name="owner's secret experiment")
    run = Run.objects.get(experiment=experiment)
    ingest_metrics(run, [{"name": "owner_secret_metric", "step": 1, "value": 1.0,
                          "sim_time_s": 0.0, "wall_time_s": 0.0}])
    append_logs(run, 0, ["owner's secret log line"])
    token, _ = create_enrolment_token(owner, 1, note="owner's secret token note")
    ids = {"device": str(host.id), "experiment": str(experiment.id), "run": str(run.id),
           "job": str(run.job.id), "enrolment-token": str(token.id)}
    return {
        **ids, "devices": ids["device"], "experiments": ids["experiment"],
        "runs": ids["run"], "jobs": ids["job"], "algorithms": "fedavg",
        "enrolment-tokens": ids["enrolment-token"],
        "plots": "split_fl-effects.png",  # a reproduction's plot (docs/)
        # Admin objects of other models, the admin's catch-all, the results export format.
        "param:object_id": "1", "param:id": "1", "param:app_label": "devices",
        "param:content_type_id": "1",
        "param:url": "elsewhere/", "param:fmt": "csv",
        "query": f"experiment={ids['experiment']}&run={ids['run']}&runs={ids['run']}"
                 f"&device={ids['device']}",
    }


def snapshot(owner) -> list:
    """Every row of the owner's that a refused request must leave as it was."""
    return [list(rows.order_by("pk").values()) for rows in (
        Device.objects.filter(owner=owner), Experiment.objects.filter(owner=owner),
        Run.objects.filter(experiment__owner=owner), Job.objects.filter(run__experiment__owner=owner),
        MetricPoint.objects.filter(run__experiment__owner=owner),
        RunLog.objects.filter(run__experiment__owner=owner),
        EnrolmentToken.objects.filter(owner=owner))]


def is_login_redirect(response) -> bool:
    location = response.get("Location", "")
    return response.status_code in (301, 302) and (
        location.startswith(settings.LOGIN_URL) or location.startswith("/admin/login/"))


def request(client, method: str, path: str, world) -> Any:
    if method == "get":
        return client.get(f"{path}?{world['query']}")
    return getattr(client, method)(path, data={}, content_type="application/json")


@pytest.mark.django_db
class TestDefaultDeny:
    def test_it_walks_every_route(self, world):
        paths = [build_path(pieces, world) for pieces, _ in url_patterns()]
        assert {"/api/v1/devices/", f"/api/v1/runs/{world['run']}/metrics/",
                f"/api/v1/experiments/{world['experiment']}/results/",
                "/api/v1/enrolment-tokens/",
                f"/api/v1/enrolment-tokens/{world['enrolment-token']}/revoke/"} <= set(paths)

    def test_it_refuses_anonymous_callers(self, world, owner):
        before = snapshot(owner)
        client = Client()
        for pieces, name in url_patterns():
            if name in ALLOW_ANONYMOUS:
                continue
            path = build_path(pieces, world)
            for method in METHODS:
                response = request(client, method, path, world)
                assert response.status_code in REFUSED or is_login_redirect(response), (
                    f"anonymous {method.upper()} {path} ({name}) answered "
                    f"{response.status_code}")
        assert snapshot(owner) == before

    @pytest.mark.parametrize("who", ["teammate token", "outsider token", "outsider session",
                                     "outsider's device"])
    def test_it_refuses_other_tenants(self, world, owner, teammate, outsider, device_factory,
                                      who):
        before = snapshot(owner)
        client = Client()
        if who == "teammate token":
            client.defaults["HTTP_AUTHORIZATION"] = f"Token {teammate.api_token}"
        elif who == "outsider token":
            client.defaults["HTTP_AUTHORIZATION"] = f"Token {outsider.api_token}"
        elif who == "outsider session":
            client.force_login(outsider)
        else:
            credential = device_factory(outsider).credential
            client.defaults["HTTP_AUTHORIZATION"] = f"Device {credential}"
        owners_ids = {world[kind] for kind in ("device", "experiment", "run", "job",
                                                "enrolment-token")}
        for pieces, name in url_patterns():
            path = build_path(pieces, world)
            about_owners_object = any(object_id in path for object_id in owners_ids)
            for method in METHODS:
                response = request(client, method, path, world)
                status = response.status_code
                where = f"{who}: {method.upper()} {path} ({name}) answered {status}"
                if about_owners_object:
                    assert status in REFUSED or is_login_redirect(response), where
                elif status < 300:
                    body = response.content.decode(errors="replace")
                    leaked = [secret for secret in SECRETS if secret in body]
                    assert not leaked, f"{where} showing {leaked}"
        assert snapshot(owner) == before


@pytest.mark.django_db(transaction=True)
class TestWebSocketsDenyByDefault:
    def test_it_refuses_anonymous_and_other_tenants_on_every_route(
            self, world, asgi_server, teammate, outsider):
        sessions = {}
        for user in (teammate, outsider):
            client = Client()
            client.force_login(user)
            sessions[user.username] = f"sessionid={client.cookies['sessionid'].value}"
        callers = [
            ("anonymous", {"origin": asgi_server}),
            ("teammate session", {"cookie": sessions[teammate.username], "origin": asgi_server}),
            ("outsider session", {"cookie": sessions[outsider.username], "origin": asgi_server}),
            ("outsider token", {"token": outsider.api_token}),
            ("forged token", {"token": "0" * 40}),
        ]
        assert websocket_urlpatterns
        for route in websocket_urlpatterns:
            path = build_path([route.pattern], world)
            url = asgi_server.replace("http://", "ws://") + path
            for who, how in callers:
                assert asyncio.run(first_answer(url, how)) in ("refused", 4401, 4404), (
                    f"{who} was served {path}")


async def first_answer(url: str, how: dict) -> str | int | dict:
    """'refused' (handshake), the close code, or the first message if the server sent one."""
    try:
        async with ws_connect(url, **how) as ws:
            return await ws.receive_json()
    except WebSocketRefused:
        return "refused"
    except WebSocketClosed as closed:
        return closed.code
