"""The REST API as Python calls: :class:`Client` (one method per operation of
:data:`~estuary_client.operations.OPERATIONS`) and :class:`Experiment`, a handle that can watch.

    from estuary_client import Client
    client = Client("http://127.0.0.1:8000", token)
    experiment = client.create_experiment(name="try", algorithm="fedavg",
                                          config={"rounds": 3}, preset="local-3")
    for event in experiment.watch():
        print(event)

Lists follow the server's pages and yield every item. A 400 raises
:class:`~estuary_client.errors.InvalidInput` whose ``fields`` name what is at fault.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import requests

from estuary_client.errors import (
    ApiError,
    AuthFailed,
    Conflict,
    InvalidInput,
    NotFound,
    ServerUnreachable,
)
from estuary_client.operations import OPERATIONS

Json = dict[str, Any]

#: (connect, read) seconds for every request.
DEFAULT_TIMEOUT = (5.0, 60.0)
#: Experiment and run states that never change again.
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class Client:
    """One user's view of an Estuary server, authenticated by their API token."""

    def __init__(self, server: str, token: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    # -- log in -----------------------------------------------------------------------------
    def login(self, username: str, password: str) -> str:
        """Exchange a username and password for the user's API token; this client then uses it."""
        token = self._call("login", body={"username": username, "password": password})["token"]
        self.token = token
        self.session.headers["Authorization"] = f"Token {token}"
        return token

    # -- devices ----------------------------------------------------------------------------
    def list_devices(self, **filters: str) -> Iterator[Json]:
        """The user's devices; filters ``status``, ``kind``, ``name``."""
        return self._pages("list_devices", filters)

    def get_device(self, device_id: str) -> Json:
        return self._call("get_device", id=device_id)

    def update_device(self, device_id: str, **fields: Any) -> Json:
        """PATCH a device (``name`` and profile fields)."""
        return self._call("update_device", id=device_id, body=fields)

    def delete_device(self, device_id: str) -> None:
        """Delete a device (409 while it hosts a running job)."""
        self._call("delete_device", id=device_id)

    # -- algorithms -------------------------------------------------------------------------
    def list_algorithms(self) -> Iterator[Json]:
        """The catalogue: each method's ``name``, ``paper``, ``baselines``, ``defaults`` and
        config ``schema`` (JSON schema)."""
        return self._pages("list_algorithms", {})

    def get_algorithm(self, name: str) -> Json:
        return self._call("get_algorithm", name=name)

    # -- enrolment tokens -------------------------------------------------------------------
    def list_enrolment_tokens(self) -> Iterator[Json]:
        return self._pages("list_enrolment_tokens", {})

    def create_enrolment_token(self, ttl_hours: int = 24, note: str = "",
                               replace_device: str | None = None) -> Json:
        """A new token; its secret (``token``) is in this answer only."""
        body: Json = {"ttl_hours": ttl_hours, "note": note}
        if replace_device is not None:
            body["replace_device"] = replace_device
        return self._call("create_enrolment_token", body=body)

    def revoke_enrolment_token(self, token_id: str) -> Json:
        return self._call("revoke_enrolment_token", id=token_id)

    # -- experiments ------------------------------------------------------------------------
    def list_experiments(self, **filters: str) -> Iterator[Experiment]:
        """The user's experiments, newest first; filters ``status``, ``algorithm``,
        ``method``, ``name``."""
        return (Experiment(self, data) for data in self._pages("list_experiments", filters))

    def create_experiment(self, name: str, algorithm: str, config: Json | None = None,
                          baselines: list[str] | None = None, devices: list[str] | None = None,
                          preset: str | None = None, host: str | None = None,
                          seed: int | None = None, execution: str | None = None) -> Experiment:
        """Validate and launch an experiment (docs/controlplane.md, Experiment create).
        ``execution``: ``"emulated"`` (the server's default) or ``"distributed"``."""
        body: Json = {"name": name, "algorithm": algorithm, "config": config or {},
                      "baselines": baselines or []}
        for key, value in (("devices", devices), ("preset", preset), ("host", host),
                           ("seed", seed), ("execution", execution)):
            if value is not None:
                body[key] = value
        return Experiment(self, self._call("create_experiment", body=body))

    def get_experiment(self, experiment_id: str) -> Experiment:
        return Experiment(self, self._call("get_experiment", id=experiment_id))

    def cancel_experiment(self, experiment_id: str) -> Experiment:
        """Cancel its queued and running jobs (idempotent); returns it as it is now."""
        answer = self._call("cancel_experiment", id=experiment_id)
        return Experiment(self, answer["experiment"])

    def rerun_experiment(self, experiment_id: str) -> Experiment:
        """A new experiment with the same methods, configs, seed and testbed."""
        return Experiment(self, self._call("rerun_experiment", id=experiment_id))

    def experiment_results(self, experiment_id: str) -> Json:
        """The final value of each metric of each run."""
        return self._call("experiment_results", id=experiment_id, params={"format": "json"})

    def experiment_points(self, experiment_id: str) -> list[Json]:
        """Every point of every run, one row per (run, metric, step): ``{run, method, name,
        step, value, sim_time_s, wall_time_s}``."""
        return self._call("experiment_points", id=experiment_id,
                          params={"format": "json"})["points"]

    # -- runs, metrics, logs ----------------------------------------------------------------
    def list_runs(self, **filters: str) -> Iterator[Json]:
        """The user's runs; filters ``experiment``, ``state``, ``method``, ``name``."""
        return self._pages("list_runs", filters)

    def get_run(self, run_id: str) -> Json:
        return self._call("get_run", id=run_id)

    def run_metrics(self, run_id: str, name: str | None = None,
                    since_step: int | None = None) -> list[Json]:
        """The run's points ``{name, step, value, sim_time_s, wall_time_s}``, by name then step."""
        params: Json = {}
        if name is not None:
            params["name"] = name
        if since_step is not None:
            params["since_step"] = since_step
        return self._call("run_metrics", run_id=run_id, params=params)["points"]

    def run_logs(self, run_id: str, after: int | None = None) -> list[Json]:
        """The run's log lines ``{id, line, created}`` (the latest 5,000, or those after ``after``)."""
        params = {} if after is None else {"after": after}
        return self._call("run_logs", run_id=run_id, params=params)["lines"]

    # -- plumbing ---------------------------------------------------------------------------
    def url(self, method_name: str, **path: str) -> str:
        """The absolute URL of ``method_name``'s operation with its path parameters filled."""
        template = OPERATIONS[method_name].path
        missing = set(re.findall(r"{(\w+)}", template)) - set(path)
        if missing:
            raise TypeError(f"{method_name} needs {', '.join(sorted(missing))}")
        return self.server + template.format(**{k: requests.utils.quote(str(v), safe="")
                                                for k, v in path.items()})

    def _call(self, method_name: str, body: Json | None = None, params: Json | None = None,
              **path: str) -> Any:
        operation = OPERATIONS[method_name]
        return self.request(operation.method, self.url(method_name, **path), body, params)

    def request(self, method: str, url: str, body: Json | None = None,
                params: Json | None = None) -> Any:
        """One call to an absolute ``url`` of this server: the parsed answer, or the error
        class of its status (for what no named method covers)."""
        try:
            response = self.session.request(method, url, json=body, params=params,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerUnreachable(f"cannot reach {self.server}: {type(exc).__name__}") from None
        return _answer(response)

    def _pages(self, method_name: str, filters: Json) -> Iterator[Json]:
        """Every item of a paginated list, following ``next`` links."""
        answer = self._call(method_name, params=filters)
        while True:
            yield from answer["results"]
            if not answer.get("next"):
                return
            answer = self.request("GET", answer["next"])

    def watch_url(self, experiment_id: str) -> str:
        """The experiment's WebSocket, ``ws[s]://.../ws/experiments/<id>/``."""
        return re.sub(r"^http", "ws", self.server) + f"/ws/experiments/{experiment_id}/"


def _answer(response: requests.Response) -> Any:
    """The parsed body of a 2xx answer; else the error class for its status."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text[:500]
    if response.status_code < 300:
        return body
    where = f"{response.request.method} {response.request.path_url}"
    status = response.status_code
    if status == 400:
        raise InvalidInput(status, f"{where}: invalid input", body)
    cls = {401: AuthFailed, 403: AuthFailed, 404: NotFound, 409: Conflict}.get(status, ApiError)
    detail = body.get("detail") if isinstance(body, dict) else body
    raise cls(status, f"{where}: HTTP {status}: {detail}", body)


class Experiment:
    """An experiment as last fetched (``data``), with the calls that concern it."""

    def __init__(self, client: Client, data: Json):
        self.client = client
        self.data = data

    def __repr__(self) -> str:
        return f"<Experiment {self.id} {self.name!r} {self.status}>"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def runs(self) -> list[Json]:
        return self.data["runs"]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def refresh(self) -> Experiment:
        """Fetch it again; returns itself."""
        self.data = self.client.get_experiment(self.id).data
        return self

    def cancel(self) -> Experiment:
        self.data = self.client.cancel_experiment(self.id).data
        return self

    def rerun(self) -> Experiment:
        return self.client.rerun_experiment(self.id)

    def results(self) -> Json:
        return self.client.experiment_results(self.id)

    def series(self) -> dict[str, list[Json]]:
        """Every run's points, by run id."""
        return {str(run["id"]): self.client.run_metrics(run["id"]) for run in self.runs}

    def watch(self, *, timeout_s: float | None = None) -> Iterator[Any]:
        """Yield what happens as it happens until the experiment ends (see
        :func:`estuary_client.watch.watch`)."""
        from estuary_client.watch import watch

        return watch(self, timeout_s=timeout_s)
