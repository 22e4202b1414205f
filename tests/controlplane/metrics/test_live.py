"""ws/experiments/{id}/ over a real daphne: history first, then live events; refusals; sockets
on two daphne processes behind one Redis."""
import asyncio

import pytest
import requests
from django.test import Client

from controlplane.experiments.models import Run
from tests.controlplane.metrics.points import point
from tests.fixtures.servers import WebSocketClosed, WebSocketRefused, ws_connect


def session_cookie(user) -> str:
    """A logged-in browser's Cookie header (the session lives in the shared test database)."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def ws_url(asgi_server: str, experiment_id) -> str:
    return f"{asgi_server.replace('http://', 'ws://')}/ws/experiments/{experiment_id}/"


def post(asgi_server: str, path: str, credential: str, body: dict) -> dict:
    response = requests.post(f"{asgi_server}{path}", json=body, timeout=10,
                             headers={"Authorization": f"Device {credential}"})
    assert response.status_code == 200, response.text
    return response.json()


async def close_code(url: str, **how) -> int:
    """The code the server closes the connection with, before sending anything."""
    async with ws_connect(url, **how) as ws:
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive_json()
    return closed.value.code


async def no_message(ws, within: float = 1.0) -> bool:
    try:
        await ws.receive_json(timeout=within)
    except asyncio.TimeoutError:
        return True
    return False


@pytest.mark.django_db(transaction=True)
class TestExperimentWebSocket:
    def test_it_sends_the_history_then_live_events(self, asgi_server, owner, hosted_run):
        agent, run = hosted_run
        metrics = f"/api/v1/runs/{run.id}/metrics/"
        start = f"/api/v1/agents/jobs/{run.job.id}/start/"
        post(asgi_server, metrics, agent.credential, {"points": [point(step=1, value=0.4)]})

        async def watch():
            loop = asyncio.get_running_loop()
            async with ws_connect(ws_url(asgi_server, run.experiment_id),
                                  cookie=session_cookie_, origin=asgi_server) as ws:
                history = await ws.receive_json()
                batch = {"points": [point(step=2, value=0.6), point("loss", 2, 0.9)]}
                await loop.run_in_executor(None, post, asgi_server, metrics, agent.credential,
                                           batch)
                live = await ws.receive_json()
                # A retried batch stores nothing new, so nothing is published.
                await loop.run_in_executor(None, post, asgi_server, metrics, agent.credential,
                                           batch)
                quiet = await no_message(ws)
                await loop.run_in_executor(None, post, asgi_server, start, agent.credential,
                                           {})
                state = await ws.receive_json()
                await loop.run_in_executor(None, post, asgi_server, f"/api/v1/runs/{run.id}/logs/",
                                           agent.credential,
                                           {"first_seq": 0, "lines": ["round 2 done"]})
                log = await ws.receive_json()
                return history, live, quiet, state, log

        session_cookie_ = session_cookie(owner)
        history, live, quiet, state, log = asyncio.run(watch())

        assert history["type"] == "history"
        assert history["experiment"]["id"] == str(run.experiment_id)
        assert [(r["id"], r["method"], r["state"]) for r in history["runs"]] == [
            (str(run.id), "fedavg", "queued")]
        assert history["points"] == {str(run.id): [["accuracy", 1, 0.4, 2.0, 0.25]]}
        # Live messages are numbered, each with its key for the ack (flow control).
        assert live == {"seq": 1, "key": live["key"], "type": "points", "run": str(run.id),
                        "points": [["accuracy", 2, 0.6, 4.0, 0.5], ["loss", 2, 0.9, 4.0, 0.5]]}
        assert len({live["key"], state["key"], log["key"]}) == 3
        assert quiet
        assert (state["seq"], state["type"]) == (2, "run")
        assert (state["run"]["id"], state["run"]["state"]) == (str(run.id), "running")
        assert state["experiment"] == {"id": str(run.experiment_id), "status": "running"}
        assert log == {"seq": 3, "key": log["key"], "type": "log", "run": str(run.id),
                       "lines": ["round 2 done"]}

        # What arrived live equals what is stored.
        stored = requests.get(f"{asgi_server}/api/v1/runs/{run.id}/metrics/", timeout=10,
                              headers={"Authorization": f"Token {owner.api_token}"}).json()
        rows = [[p["name"], p["step"], p["value"], p["sim_time_s"], p["wall_time_s"]]
                for p in stored["points"]]
        assert rows == history["points"][str(run.id)] + live["points"]

    def test_it_accepts_a_scripts_api_token(self, asgi_server, owner, hosted_run):
        _, run = hosted_run

        async def watch():
            async with ws_connect(ws_url(asgi_server, run.experiment_id),
                                  token=owner.api_token) as ws:
                return await ws.receive_json()

        assert asyncio.run(watch())["type"] == "history"

    def test_it_stays_open_while_nothing_happens(self, asgi_server, owner, hosted_run):
        """Quiet for longer than the channel layer's blocking read (5 s): the socket must
        still deliver the next batch (redis-py 8's 5 s read timeout once closed it, 1011)."""
        agent, run = hosted_run
        metrics = f"/api/v1/runs/{run.id}/metrics/"

        async def keep_online(loop):
            # The device stays online, so a reaper started by an earlier test fails no job.
            while True:
                await loop.run_in_executor(None, post, asgi_server, "/api/v1/agents/heartbeat/",
                                           agent.credential, {"running_jobs": []})
                await asyncio.sleep(0.5)

        async def watch():
            loop = asyncio.get_running_loop()
            heartbeat = asyncio.create_task(keep_online(loop))
            async with ws_connect(ws_url(asgi_server, run.experiment_id),
                                  token=owner.api_token) as ws:
                await ws.receive_json()  # history
                quiet = await no_message(ws, within=8.0)
                heartbeat.cancel()
                await loop.run_in_executor(None, post, asgi_server, metrics, agent.credential,
                                           {"points": [point(step=1, value=0.5)]})
                return quiet, await ws.receive_json()

        quiet, live = asyncio.run(watch())
        assert quiet
        assert live == {"seq": 1, "key": live["key"], "type": "points", "run": str(run.id),
                        "points": [["accuracy", 1, 0.5, 2.0, 0.25]]}

    @pytest.mark.parametrize("who, code", [("anonymous", 4401), ("teammate", 4404),
                                           ("outsider", 4404)])
    def test_it_closes_for_anyone_but_the_owner(self, asgi_server, hosted_run, teammate,
                                                outsider, who, code):
        _, run = hosted_run
        cookie = {"anonymous": None, "teammate": session_cookie(teammate),
                  "outsider": session_cookie(outsider)}[who]

        assert asyncio.run(close_code(ws_url(asgi_server, run.experiment_id), cookie=cookie,
                                      origin=asgi_server)) == code

    @pytest.mark.parametrize("token", ["not-a-token", None])
    def test_it_closes_for_a_bad_token(self, asgi_server, hosted_run, outsider, token):
        _, run = hosted_run

        url = ws_url(asgi_server, run.experiment_id)
        assert asyncio.run(close_code(url, token=token or outsider.api_token)) == (
            4401 if token else 4404)

    def test_it_closes_for_an_unknown_experiment(self, asgi_server, owner):
        url = ws_url(asgi_server, "6f1c2a70-0000-4000-8000-000000000000")
        assert asyncio.run(close_code(url, token=owner.api_token)) == 4404

    def test_it_does_not_tell_another_tenants_experiment_from_a_missing_one(
            self, asgi_server, hosted_run, outsider):
        # Probing ids must not reveal which exist, as the REST API's 404 does not.
        _, run = hosted_run
        theirs = asyncio.run(close_code(ws_url(asgi_server, run.experiment_id),
                                        token=outsider.api_token))
        missing = asyncio.run(close_code(
            ws_url(asgi_server, "6f1c2a70-0000-4000-8000-000000000000"),
            token=outsider.api_token))
        assert theirs == missing == 4404

    @pytest.mark.parametrize("origin", [
        "http://evil.example.org", None, "null",
        "http://127.0.0.1:9999",                # same host, another port
        "https://127.0.0.1:{port}",             # same host and port, another scheme
        "http://localhost:{port}",              # an allowed host, but not the one asked
        "http://127.0.0.1:{port}/path",         # not an origin
    ])
    def test_it_refuses_a_browser_from_another_origin(self, asgi_server, owner, hosted_run,
                                                      origin):
        _, run = hosted_run
        cookie = session_cookie(owner)
        if origin:
            origin = origin.format(port=asgi_server.rsplit(":", 1)[1])

        async def watch():
            async with ws_connect(ws_url(asgi_server, run.experiment_id), cookie=cookie,
                                  origin=origin):
                pass

        with pytest.raises(WebSocketRefused):
            asyncio.run(watch())
        assert Run.objects.get().state == "queued"


@pytest.mark.django_db(transaction=True)
def test_sockets_on_two_processes_get_every_point_once_wherever_they_join(
        asgi_server, second_asgi_server, owner, hosted_run):
    """Two daphne processes behind one Redis, sockets on both, some open before a device posts
    and some joining while it posts: each gets every stored point exactly once and in order,
    history then live (no gap where the two meet, no duplicate)."""
    agent, run = hosted_run
    metrics = f"/api/v1/runs/{run.id}/metrics/"
    batches, size = 12, 5
    total = batches * size

    async def watch(server: str, join: asyncio.Event, opened: list) -> list:
        await join.wait()
        async with ws_connect(ws_url(server, run.experiment_id), token=owner.api_token) as ws:
            history = await ws.receive_json()
            opened.append(server)
            rows = list(history["points"].get(str(run.id), []))
            while len({row[1] for row in rows}) < total:
                message = await ws.receive_json(timeout=30)
                if message["type"] == "points":
                    rows += message["points"]
            return rows

    async def main() -> list[list]:
        loop = asyncio.get_running_loop()
        # Joins: before the first batch, after the 4th and after the 8th, on each server.
        joins = {0: asyncio.Event(), 4: asyncio.Event(), 8: asyncio.Event()}
        joins[0].set()
        opened: list[str] = []
        watchers = [asyncio.create_task(watch(server, joins[at], opened))
                    for at in joins for server in (asgi_server, second_asgi_server)]
        while len(opened) < 2:  # the first two sockets have their history
            await asyncio.sleep(0.05)

        def device() -> None:
            for index in range(batches):
                if index in joins:
                    loop.call_soon_threadsafe(joins[index].set)
                post(asgi_server, metrics, agent.credential, {"points": [
                    point(step=index * size + k + 1, value=0.1 * k) for k in range(size)]})

        await loop.run_in_executor(None, device)
        return await asyncio.gather(*watchers)

    seen = asyncio.run(main())

    stored = requests.get(f"{asgi_server}/api/v1/runs/{run.id}/metrics/", timeout=10,
                          headers={"Authorization": f"Token {owner.api_token}"}).json()
    rows = [[p["name"], p["step"], p["value"], p["sim_time_s"], p["wall_time_s"]]
            for p in stored["points"]]
    assert len(rows) == total
    for socket_rows in seen:
        assert socket_rows == rows
