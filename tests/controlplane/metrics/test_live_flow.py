"""Flow control of ws/experiments/{id}/ over a real daphne and Redis (the protocol:
controlplane/metrics/consumers.py): a client that does not acknowledge is closed with 4008 once
1,000 messages or 1 MiB are unacknowledged, so the server never buffers more for it; a client
that acknowledges gets every event, once and in order.

Events are PUBLISHed to the experiment's channel straight from the test (as the control plane's
publisher does), so a test can send thousands in a second; they are log events, which the
consumer forwards as they are.
"""
import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
import redis

from controlplane.metrics import consumers, fanout
from controlplane.metrics.events import group_name
from tests.fixtures.servers import WebSocketClosed, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)

BOUND = consumers.MAX_UNACKED_EVENTS


def ws_url(asgi_server: str, experiment_id) -> str:
    return f"{asgi_server.replace('http://', 'ws://')}/ws/experiments/{experiment_id}/"


def event_text(run_id, index: int, pad: int = 0) -> str:
    return json.dumps({"type": "log", "run": str(run_id), "lines": [f"event {index}" + "x" * pad]})


def publish(experiment_id, texts: list[str]) -> None:
    """PUBLISH ``texts`` to the experiment's live channel, in order, in one round trip."""
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        pipe = client.pipeline(transaction=False)
        channel = fanout.channel_name(group_name(experiment_id))
        for text in texts:
            pipe.publish(channel, text)
        pipe.execute()
    finally:
        client.close()


def index_of(message: dict) -> int:
    return int(message["lines"][0].split()[1].rstrip("x"))


async def ack(ws, message: dict, **forged) -> None:
    await ws.connection.send(json.dumps({"type": "ack", "seq": message["seq"],
                                         "key": message["key"], **forged}))


async def forge(ws, message: dict, how: int) -> None:
    """An ack that proves nothing: a key never sent, a seq not sent yet, or not JSON."""
    if how == 0:
        await ack(ws, message, key="00000000")
    elif how == 1:
        await ack(ws, message, seq=message["seq"] + BOUND)
    else:
        await ws.connection.send("[" * 150)


@pytest.mark.parametrize("acks", ["none", "forged", "late"])
def test_a_client_that_does_not_acknowledge_is_closed_with_4008_after_the_bound(
        asgi_server, owner, hosted_run, acks):
    """It reads every message but acknowledges none (or only with acks that prove nothing: a
    key it was not sent, a seq it has not had, not JSON): it gets exactly the first 1,000, then
    (after the server's wait for it to catch up, CATCH_UP_S) 4008. One that acknowledges them
    all only once the server has stopped ("late") gets nothing more either: 4008 then."""
    _, run = hosted_run

    async def watch() -> tuple[list[dict], int]:
        async with ws_connect(ws_url(asgi_server, run.experiment_id),
                              token=owner.api_token) as ws:
            assert (await ws.receive_json())["type"] == "history"
            received: list[dict] = []
            for chunk in range(BOUND // 100 + 2):  # 100 at a time: none waits long to be sent
                publish(run.experiment_id,
                        [event_text(run.id, chunk * 100 + k) for k in range(100)])
                while len(received) < min((chunk + 1) * 100, BOUND):
                    received.append(message := await ws.receive_json(timeout=30))
                    if acks == "forged":
                        await forge(ws, message, len(received) % 3)
            if acks == "late":
                await ack(ws, received[-1])
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive_json(timeout=consumers.CATCH_UP_S + 30)
            return received, closed.value.code

    received, code = asyncio.run(watch())
    assert code == consumers.CLOSE_TOO_FAR_BEHIND == 4008
    assert [m["seq"] for m in received] == list(range(1, BOUND + 1))
    assert [index_of(m) for m in received] == list(range(BOUND))


def test_a_client_that_acknowledges_gets_every_event_exactly_once(asgi_server, owner,
                                                                  hosted_run):
    """2.5 x the bound, acknowledged every 100 messages (as the browser does): all of them,
    in order, once; and the socket is still open."""
    _, run = hosted_run
    total = 5 * BOUND // 2

    async def watch() -> list[dict]:
        async with ws_connect(ws_url(asgi_server, run.experiment_id),
                              token=owner.api_token) as ws:
            assert (await ws.receive_json())["type"] == "history"
            received: list[dict] = []
            for chunk in range(total // 100):
                publish(run.experiment_id,
                        [event_text(run.id, chunk * 100 + k) for k in range(100)])
                while len(received) < (chunk + 1) * 100:
                    received.append(await ws.receive_json(timeout=30))
                await ack(ws, received[-1])
            publish(run.experiment_id, [event_text(run.id, total)])
            received.append(await ws.receive_json(timeout=30))  # still open
            return received

    received = asyncio.run(watch())
    assert [m["seq"] for m in received] == list(range(1, total + 2))
    assert [index_of(m) for m in received] == list(range(total + 1))
    assert len({m["key"] for m in received}) == total + 1


def test_the_byte_budget_closes_a_client_of_large_messages_sooner(asgi_server, owner,
                                                                  hosted_run):
    """Messages of ~20 kB: at most 1 MiB goes unacknowledged, then 4008."""
    _, run = hosted_run

    async def watch() -> tuple[list[dict], int]:
        async with ws_connect(ws_url(asgi_server, run.experiment_id),
                              token=owner.api_token) as ws:
            assert (await ws.receive_json())["type"] == "history"
            publish(run.experiment_id,
                    [event_text(run.id, k, pad=20_000) for k in range(80)])
            received: list[dict] = []
            with pytest.raises(WebSocketClosed) as closed:
                while True:
                    received.append(await ws.receive_json(timeout=consumers.CATCH_UP_S + 30))
            return received, closed.value.code

    received, code = asyncio.run(watch())
    sizes = [len(json.dumps(m)) for m in received]
    assert code == 4008
    assert [index_of(m) for m in received] == list(range(len(received)))
    assert sum(sizes) <= consumers.MAX_UNACKED_BYTES < sum(sizes) + sizes[-1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_costs_the_server_a_bounded_buffer(
        asgi_process, owner, hosted_run):
    """A raw client that completes the handshake and then reads nothing (a stalled tab, a
    hostile script) while 32 MB of events are published: daphne's memory grows by about the
    bound, not by what was published, and the server ends the connection. (Before flow
    control, daphne buffered all of it: its resident memory grew by ~30 MB here.)"""
    _, run = hosted_run
    server = asgi_process.url
    pid = asgi_process.process.popen.pid
    port = int(server.rsplit(":", 1)[1])
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no room to hide it in
    client.connect(("127.0.0.1", port))
    client.sendall((f"GET /ws/experiments/{run.experiment_id}/ HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Token {owner.api_token}\r\n\r\n").encode())
    answer = b""
    client.settimeout(30)
    while b"\r\n\r\n" not in answer:
        answer += client.recv(1)  # byte by byte: nothing of the frames is read
    assert b" 101 " in answer.split(b"\r\n", 1)[0], answer
    time.sleep(1.0)  # the history is sent and the socket subscribed
    before = rss_bytes(pid)
    for chunk in range(40):
        publish(run.experiment_id,
                [event_text(run.id, chunk * 100 + k, pad=8_000) for k in range(100)])
    time.sleep(3.0)  # delivered (or refused) by daphne, and its close handshake timed out
    grown = rss_bytes(pid) - before

    # What the client can still read: the history, at most the bound, then the end.
    client.settimeout(10)
    readable = 0
    try:
        while chunk_read := client.recv(65536):
            readable += len(chunk_read)
    except (ConnectionResetError, TimeoutError) as exc:
        assert not isinstance(exc, TimeoutError), "the server left the socket open"
    finally:
        client.close()
    assert readable < consumers.MAX_UNACKED_BYTES + 64 * 1024
    assert grown < 10 * 1024 * 1024, f"daphne grew by {grown / 2**20:.1f} MiB"
