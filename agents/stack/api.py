"""The REST calls the stack makes as the demo user (``Authorization: Token <key>``)."""
from __future__ import annotations

import time
from urllib.parse import urlencode
from typing import Any, Callable

import requests

from agents.client import describe_errors
from agents.stack import StackError

#: The demo experiment: a method and its baseline on the three local agents, kept small.
DEMO_ALGORITHM = "splitfed"
DEMO_BASELINES = ["fedavg"]
DEMO_CONFIG: dict[str, Any] = {"rounds": 10, "dataset": "mnist", "workers": 2}
#: The largest page the API serves (controlplane/pagination.py).
MAX_PAGE_SIZE = 500


class UserApi:
    """A user's view of the REST API."""

    def __init__(self, server: str, api_token: str, timeout_s: float = 30.0):
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {api_token}"
        self.timeout_s = timeout_s

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            response = self.session.request(method, self.server + path, json=body,
                                            timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise StackError(f"{method} {path}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = describe_errors(response.json())
            except ValueError:
                detail = response.text[:300]
            raise StackError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response.json() if response.content else None

    # -- what the stack needs ---------------------------------------------------------------
    def issue_enrolment_token(self, ttl_hours: int = 24, note: str = "",
                              replace_device: str | None = None) -> str:
        """A new enrolment token's secret; with ``replace_device`` (a device id) a one-use
        token that gives that device a new credential."""
        return self.post("/api/v1/enrolment-tokens/", {
            "ttl_hours": ttl_hours, "note": note, "replace_device": replace_device})["token"]

    def list(self, path: str, **filters: str) -> list[dict]:
        """Every item of a list endpoint (lists are paginated: this follows their pages)."""
        answer = self.get(f"{path}?{urlencode({'page_size': MAX_PAGE_SIZE, **filters})}")
        items = list(answer["results"])
        while answer["next"]:
            answer = self.get(answer["next"][len(self.server):])  # an absolute URL
            items.extend(answer["results"])
        return items

    def devices(self, **filters: str) -> list[dict]:
        return self.list("/api/v1/devices/", **filters)

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

    def launch_demo_experiment(self, device_ids: list[str]) -> dict:
        """Create the demo experiment on the given devices; returns the experiment."""
        catalogue = {m["name"]: m for m in self.list("/api/v1/algorithms/")}
        if DEMO_ALGORITHM not in catalogue:
            raise StackError(f"the catalogue has no {DEMO_ALGORITHM!r}; known: {', '.join(sorted(catalogue))}")
        known_keys = set(catalogue[DEMO_ALGORITHM]["schema"].get("properties", {}))
        config = {k: v for k, v in DEMO_CONFIG.items() if k in known_keys}
        baselines = [b for b in DEMO_BASELINES if b in catalogue[DEMO_ALGORITHM]["baselines"]]
        return self.post("/api/v1/experiments/", {
            "name": f"Demo: {DEMO_ALGORITHM} vs {', '.join(baselines) or 'no baseline'}",
            "algorithm": DEMO_ALGORITHM,
            "config": config,
            "baselines": baselines,
            "devices": device_ids,
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
