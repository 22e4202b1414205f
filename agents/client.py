"""HTTP calls from an agent to the control plane (``/api/v1/agents/...`` and run metrics/logs).

Every call has a timeout. Failures become one of the error classes below, so callers decide
what to retry (:class:`Retryable`) and users see one line instead of a traceback.
"""
from __future__ import annotations

import re
import threading
from typing import Any

import requests

#: (connect, read) seconds for every request.
DEFAULT_TIMEOUT = (5.0, 30.0)


class AgentError(Exception):
    """A failure the agent reports to its user as one line."""


class Retryable(AgentError):
    """The call may succeed later: the server is unreachable, overloaded or failed (5xx/429)."""


class ServerUnreachable(Retryable):
    """No HTTP answer: connection refused, DNS failure or timeout."""


class ServerError(Retryable):
    """The server answered 5xx or 429."""


class Rejected(AgentError):
    """The server refused the request (4xx); retrying the same request will not help."""

    def __init__(self, status: int, message: str, body: Any = None):
        self.status = status
        self.body = body
        super().__init__(message)


class AuthRejected(Rejected):
    """401/403: the token or the device credential is not (or no longer) valid."""


class Conflict(Rejected):
    """409: the object is not in a state that allows this (e.g. a cancelled job)."""


def describe_errors(body: Any) -> str:
    """Flatten DRF's ``{"field": ["message"]}`` (possibly nested) into ``field: message; ...``."""
    if isinstance(body, dict):
        if set(body) == {"detail"}:
            return str(body["detail"])
        parts = []
        for key, value in body.items():
            inner = describe_errors(value)
            parts.append(inner if key in ("non_field_errors", "detail") else f"{key}: {inner}")
        return "; ".join(parts)
    if isinstance(body, list):
        return "; ".join(describe_errors(item) for item in body)
    return str(body)


def _network_reason(exc: Exception) -> str:
    """The useful part of a requests/urllib3 error ("Connection refused"), not its repr chain."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


class ControlPlane:
    """The control plane as an agent sees it. Safe to share between threads."""

    def __init__(self, server: str, credential: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 advertise_address: str | None = None):
        self.server = server.rstrip("/")
        self.credential = credential
        #: Where other agents reach this one (sent at enrolment and with each heartbeat).
        self.advertise_address = advertise_address
        self.timeout = timeout
        self._local = threading.local()  # one requests.Session per thread

    # -- enrolment and liveness -------------------------------------------------------------
    def enrol(self, token: str, name: str, profile: str, overrides: dict[str, Any]) -> dict:
        """Exchange an enrolment token for a device credential (201 response body)."""
        body = {"token": token, "name": name, "profile": profile, "overrides": overrides,
                **self._advertised()}
        return self._post("/api/v1/agents/enrol/", body, authenticated=False)

    def reenrol(self, profile: str, overrides: dict[str, Any]) -> dict:
        """A restarted agent presents its credential: the server refreshes the device's profile
        and answers like enrolment (same device and credential, current broker and interval)."""
        return self._post("/api/v1/agents/enrol/", {"profile": profile, "overrides": overrides,
                                                    **self._advertised()})

    def heartbeat(self, running_jobs: list[str], worker: dict[str, Any] | None = None,
                  resources: dict[str, Any] | None = None,
                  timeout: tuple[float, float] | None = None) -> list[str]:
        """Report the running jobs, whether the worker consumes its queue
        (``{"consuming": bool, "detail": str}``) and the machine's resource use
        (:func:`agents.resources.resource_usage`); returns the ids of the jobs the server wants
        cancelled. ``timeout``: (connect, read) seconds, else the client's."""
        body: dict[str, Any] = {"running_jobs": running_jobs, **self._advertised()}
        if worker is not None:
            body["worker"] = worker
        if resources is not None:
            body["resources"] = resources
        answer = self._post("/api/v1/agents/heartbeat/", body, timeout=timeout)
        return [str(job) for job in answer.get("cancel_jobs", [])]

    # -- jobs -------------------------------------------------------------------------------
    def start_job(self, job_id: str, provenance: dict[str, Any] | None = None) -> dict:
        """Mark the job running, recording what runs it (:func:`agents.provenance.agent_provenance`);
        returns ``{"config", "method", "run_id"}``. 409: cancelled."""
        body = {"provenance": provenance} if provenance is not None else {}
        return self._post(f"/api/v1/agents/jobs/{job_id}/start/", body)

    def finish_job(self, job_id: str, state: str, error: str = "", result: dict | None = None) -> dict:
        body = {"state": state, "error": error, "result": result or {}}
        return self._post(f"/api/v1/agents/jobs/{job_id}/finish/", body)

    def report_store_port(self, job_id: str, port: int) -> dict:
        """The coordinator's agent opened its run's store on ``port``."""
        return self._post(f"/api/v1/agents/jobs/{job_id}/rendezvous/", {"port": port})

    def rendezvous(self, job_id: str) -> dict:
        """``{"state", "rendezvous": {host, port, prefix, timeout_s} | None}`` of a distributed
        run's job; 409 once the job is finished."""
        return self._request("GET", f"/api/v1/agents/jobs/{job_id}/rendezvous/", None)

    def post_metrics(self, run_id: str, points: list[dict]) -> dict:
        """Send a batch; returns ``{"accepted": n, "cancelled": bool}``. Idempotent server side."""
        return self._post(f"/api/v1/runs/{run_id}/metrics/", {"points": points})

    def post_logs(self, run_id: str, first_seq: int, lines: list[str]) -> dict:
        """Send lines ``first_seq``, ``first_seq + 1``, ... of the run's log. Idempotent server
        side on (run, seq); answers like :meth:`post_metrics`."""
        return self._post(f"/api/v1/runs/{run_id}/logs/",
                          {"first_seq": first_seq, "lines": lines})

    # -- plumbing ---------------------------------------------------------------------------
    def _advertised(self) -> dict[str, str]:
        return {"advertise_address": self.advertise_address} if self.advertise_address else {}

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, path: str, body: dict, authenticated: bool = True,
              timeout: tuple[float, float] | None = None) -> dict:
        return self._request("POST", path, body, authenticated, timeout)

    def _request(self, method: str, path: str, body: dict | None,
                 authenticated: bool = True,
                 timeout: tuple[float, float] | None = None) -> dict:
        headers = {}
        if authenticated:
            if not self.credential:
                raise AgentError("no device credential: the agent has not enrolled")
            headers["Authorization"] = f"Device {self.credential}"
        url = self.server + path
        try:
            response = self._session().request(method, url, json=body, headers=headers,
                                               timeout=timeout or self.timeout)
        except requests.Timeout:
            raise ServerUnreachable(f"the control plane at {self.server} did not answer in time") from None
        except requests.RequestException as exc:
            raise ServerUnreachable(
                f"cannot reach the control plane at {self.server} ({_network_reason(exc)})") from None
        return self._answer(response)

    @staticmethod
    def _answer(response: requests.Response) -> dict:
        status = response.status_code
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = response.text[:300]
        if status < 300:
            return body if isinstance(body, dict) else {"data": body}
        where = f"{response.request.method} {response.request.path_url}"
        if status >= 500 or status == 429:
            raise ServerError(f"{where} failed with HTTP {status}")
        message = f"{where}: HTTP {status}: {describe_errors(body)}"
        if status in (401, 403):
            raise AuthRejected(status, message, body)
        if status == 409:
            raise Conflict(status, message, body)
        raise Rejected(status, message, body)
