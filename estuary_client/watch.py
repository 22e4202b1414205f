"""Following an experiment live over ``ws/experiments/<id>/`` (messages in docs/architecture.md).

:func:`watch` turns the socket's messages into events: :class:`RunChanged` for each run's
state (every run once at the start, then on every change), :class:`Point` for each metric
point, once, and :class:`LogLines`; it ends with :class:`Ended` when the experiment does.
Live publishing is best-effort on the server, so on a dropped socket it reconnects (the
history fills the gap, minus points already yielded), and at the end it reads each run's
series over REST and yields any point the socket missed: every point arrives exactly once.

The server bounds what a socket may leave unacknowledged (1,000 messages or 1 MiB, then it
closes with 4008): :class:`_Acks` acknowledges each live message once the caller has taken its
events (every 100 messages, 128 kB or 5 s), so a caller that stops iterating is
reconnected from a fresh history rather than buffered without bound on the server.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Union

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from estuary_client.errors import AuthFailed, NotFound, ServerUnreachable

if TYPE_CHECKING:
    from estuary_client.client import Experiment

#: Close codes of the server's consumer (controlplane/metrics/consumers.py).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
#: Acknowledge after this many live messages, characters or seconds (whichever first).
ACK_EVERY, ACK_CHARS, ACK_AFTER_S = 100, 128 * 1024, 5.0
#: Without a message for this long, the experiment is fetched over REST (it may have ended
#: while a live event was lost).
QUIET_CHECK_S = 15.0
#: Reconnections in a row before giving up.
MAX_RECONNECTS = 10
#: The largest message accepted (the history of a long experiment is big).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Point:
    """One metric point of one run."""

    run: str
    name: str
    step: int
    value: float
    sim_time_s: float
    wall_time_s: float


@dataclass(frozen=True)
class RunChanged:
    """A run as it is now (``run["state"]``), and the experiment's status."""

    run: dict[str, Any]
    experiment_status: str


@dataclass(frozen=True)
class LogLines:
    run: str
    lines: list[str]


@dataclass(frozen=True)
class Ended:
    """The experiment ended; ``experiment`` is its final state."""

    experiment: dict[str, Any]

    @property
    def status(self) -> str:
        return self.experiment["status"]


Event = Union[Point, RunChanged, LogLines, Ended]


def watch(experiment: Experiment, *, timeout_s: float | None = None) -> Iterator[Event]:
    """Yield ``experiment``'s events as they happen until it ends (then :class:`Ended`).

    Raises :class:`AuthFailed` (bad token), :class:`NotFound` (no such experiment, or another
    user's), :class:`ServerUnreachable` after :data:`MAX_RECONNECTS` failed connections, and
    ``TimeoutError`` if it has not ended within ``timeout_s``. Breaking out of the loop (or
    Ctrl-C) closes the socket and leaves the experiment running.
    """
    from estuary_client.client import FINISHED

    client = experiment.client
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: set[tuple[str, str, int]] = set()
    failures = 0
    while True:
        try:
            with connect(client.watch_url(experiment.id), open_timeout=10,
                         max_size=MAX_MESSAGE_BYTES,
                         additional_headers={"Authorization": f"Token {client.token}"}) as socket:
                acks = _Acks(socket)
                for message, size in _messages(socket, experiment, deadline):
                    failures = 0
                    yield from _events(message, experiment, seen)
                    acks.note(message, size)
                    if experiment.status in FINISHED:
                        break
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == CLOSE_UNAUTHENTICATED:
                raise AuthFailed(401, "the server refused the token on the live view") from None
            if code == CLOSE_NOT_FOUND:
                raise NotFound(404, f"no experiment {experiment.id} among yours") from None
            failures += 1  # 4503 (unavailable), 4008 (fell behind), a dropped connection
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthFailed(status, f"the live view refused the connection ({status})") \
                    from None
            failures += 1
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and deadline is not None \
                    and time.monotonic() > deadline:
                raise
            failures += 1
        except InvalidURI as exc:
            raise ServerUnreachable(str(exc)) from None
        if experiment.status in FINISHED:
            break
        if failures > MAX_RECONNECTS:
            raise ServerUnreachable(f"lost the live view of {experiment.id} "
                                    f"{MAX_RECONNECTS} times in a row")
        time.sleep(min(2.0 ** failures / 4, 5.0))
    yield from _missed_points(experiment, seen)
    yield Ended(experiment.refresh().data)


class _Acks:
    """The acknowledgements of one socket (the protocol: controlplane/metrics/consumers.py)."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.last: tuple[int, str] | None = None  # (seq, key) processed, not acknowledged
        self.count = self.chars = 0
        self.since = 0.0

    def note(self, message: dict, size: int) -> None:
        """``message`` (``size`` characters) was processed; acknowledge if it is time."""
        if not isinstance(message.get("seq"), int):
            return  # the history
        if self.last is None:
            self.since = time.monotonic()
        self.last = (message["seq"], message.get("key"))
        self.count += 1
        self.chars += size
        if (self.count >= ACK_EVERY or self.chars >= ACK_CHARS
                or time.monotonic() - self.since >= ACK_AFTER_S):
            seq, key = self.last
            self.socket.send(json.dumps({"type": "ack", "seq": seq, "key": key}))
            self.last, self.count, self.chars = None, 0, 0


def _messages(socket, experiment: Experiment,
              deadline: float | None) -> Iterator[tuple[dict, int]]:
    """The socket's messages (parsed, and their size); after :data:`QUIET_CHECK_S` of silence, the experiment is
    refreshed over REST and, if it ended meanwhile, the stream stops."""
    while True:
        wait = QUIET_CHECK_S if deadline is None else \
            min(QUIET_CHECK_S, max(deadline - time.monotonic(), 0.0))
        try:
            raw = socket.recv(timeout=wait)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"experiment {experiment.id} did not end in time") from None
            if experiment.refresh().finished:
                return
            continue
        yield json.loads(raw), len(raw)


def _events(message: dict, experiment: Experiment, seen: set) -> Iterator[Event]:
    kind = message.get("type")
    if kind == "history":
        experiment.data = message["experiment"]
        status = experiment.status
        for run in message["runs"]:
            yield RunChanged(run, status)
        for run_id, rows in message["points"].items():
            yield from _new_points(run_id, rows, seen)
        for run_id, lines in message.get("logs", {}).items():
            if lines:
                yield LogLines(run_id, lines)
    elif kind == "points":
        yield from _new_points(message["run"], message["points"], seen)
    elif kind == "run":
        run = message["run"]
        experiment.data = {**experiment.data, "status": message["experiment"]["status"],
                           "runs": [run if str(r["id"]) == str(run["id"]) else r
                                    for r in experiment.runs]}
        yield RunChanged(run, experiment.status)
    elif kind == "log":
        yield LogLines(message["run"], message["lines"])


def _new_points(run_id: str, rows: list[list], seen: set) -> Iterator[Point]:
    for name, step, value, sim_time_s, wall_time_s in rows:
        key = (run_id, name, step)
        if key not in seen:
            seen.add(key)
            yield Point(run_id, name, step, value, sim_time_s, wall_time_s)


def _missed_points(experiment: Experiment, seen: set) -> Iterator[Point]:
    """Points stored on the server that the socket did not deliver."""
    for run in experiment.runs:
        run_id = str(run["id"])
        for p in experiment.client.run_metrics(run_id):
            yield from _new_points(run_id, [[p["name"], p["step"], p["value"], p["sim_time_s"],
                                             p["wall_time_s"]]], seen)
