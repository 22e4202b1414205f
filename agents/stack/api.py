"""The REST calls the stack makes as the demo user, through :class:`estuary_client.Client`;
every failure becomes a :class:`~agents.stack.StackError`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import requests

from agents.client import describe_errors
from agents.stack import StackError
from estuary_client import Client
from estuary_client.errors import ApiError, EstuaryError

#: The demo experiment: a method and its baseline on the three local agents, kept small.
DEMO_ALGORITHM = "splitfed"
DEMO_BASELINES = ["fedavg"]
DEMO_CONFIG: dict[str, Any] = {"rounds": 10, "dataset": "mnist", "workers": 2}
#: The distributed demo: the same methods, each role on its own local agent, short.
DISTRIBUTED_DEMO_CONFIG: dict[str, Any] = {"rounds": 3, "dataset": "digits", "workers": 2}


@contextmanager
def _as_stack_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ApiError as exc:
        detail = describe_errors(exc.body) if isinstance(exc.body, (dict, list)) else exc.body
        raise StackError(f"{what}: HTTP {exc.status}: {detail}") from None
    except EstuaryError as exc:
        raise StackError(f"{what}: {exc}") from None


class UserApi:
    """A user's view of the REST API."""

    def __init__(self, server: str, api_token: str, timeout_s: float = 30.0):
        self.client = Client(server, api_token, timeout=(5.0, timeout_s))
        self.server = self.client.server

    @property
    def timeout_s(self) -> float:
        return self.client.timeout[1]

    @timeout_s.setter
    def timeout_s(self, seconds: float) -> None:
        self.client.timeout = (min(5.0, seconds), seconds)

    def get(self, path: str) -> Any:
        with _as_stack_errors(f"GET {path}"):
            return self.client.request("GET", self.server + path)

    def post(self, path: str, body: dict) -> Any:
        with _as_stack_errors(f"POST {path}"):
            return self.client.request("POST", self.server + path, body)

    # -- what the stack needs ---------------------------------------------------------------
    def issue_enrolment_token(self, ttl_hours: int = 24, note: str = "",
                              replace_device: str | None = None) -> str:
        """A new enrolment token's secret; with ``replace_device`` (a device id) a one-use
        token that gives that device a new credential."""
        with _as_stack_errors("POST /api/v1/enrolment-tokens/"):
            return self.client.create_enrolment_token(ttl_hours, note, replace_device)["token"]

    def devices(self, **filters: str) -> list[dict]:
        """Every device of the user (the list's pages followed)."""
        with _as_stack_errors("GET /api/v1/devices/"):
            return list(self.client.list_devices(**filters))

    def wait_for_devices(self, names: list[str], timeout_s: float,
                         alive: Callable[[], None] | None = None) -> dict[str, dict]:
        """Block until every device in ``names`` is online (or busy); returns them by name."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = {d["name"]: d for d in self.devices() if d["name"] in names}
            if len(found) == len(names) and all(d["status"] != "offline" for d in found.values()):
                return found
            if time.monotonic() > deadline:
                missing = sorted(set(names) - {n for n, d in found.items() if d["status"] != "offline"})
                raise StackError(f"agents not online after {timeout_s:.0f}s: {', '.join(missing)}")
            if alive:
                alive()
            time.sleep(0.5)

    def launch_demo_experiment(self, device_ids: list[str], distributed: bool = False) -> dict:
        """Create the demo experiment on the given devices (``distributed``: each role on its
        own device, with :data:`DISTRIBUTED_DEMO_CONFIG`); returns the experiment."""
        with _as_stack_errors("GET /api/v1/algorithms/"):
            catalogue = {m["name"]: m for m in self.client.list_algorithms()}
        if DEMO_ALGORITHM not in catalogue:
            raise StackError(f"the catalogue has no {DEMO_ALGORITHM!r}; known: {', '.join(sorted(catalogue))}")
        known_keys = set(catalogue[DEMO_ALGORITHM]["schema"].get("properties", {}))
        wanted = DISTRIBUTED_DEMO_CONFIG if distributed else DEMO_CONFIG
        config = {k: v for k, v in wanted.items() if k in known_keys}
        algorithm = DEMO_ALGORITHM
        baselines = [b for b in DEMO_BASELINES if b in catalogue[DEMO_ALGORITHM]["baselines"]]
        if distributed:  # only what can run distributed (the catalogue says)
            runnable = [m for m in [algorithm, *baselines] if catalogue[m].get("distributed")]
            if not runnable:
                raise StackError(f"neither of {[algorithm, *baselines]} can run distributed")
            algorithm = runnable[0]
            baselines = [b for b in runnable[1:] if b in catalogue[algorithm]["baselines"]]
        return self.post("/api/v1/experiments/", {
            "name": f"Demo{' (distributed)' if distributed else ''}: {algorithm} vs "
                    f"{', '.join(baselines) or 'no baseline'}",
            "algorithm": algorithm,
            "config": config,
            "baselines": baselines,
            "devices": device_ids,
            "execution": "distributed" if distributed else "emulated",
        })


def wait_for_http(url: str, timeout_s: float, alive: Callable[[], None] | None = None) -> None:
    """Block until ``url`` answers with any HTTP status."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise StackError(f"{url} did not answer within {timeout_s:.0f}s") from None
            if alive:
                alive()
            time.sleep(0.2)
