"""Browser fixtures: a real headless Debian Chromium driven by Playwright against the real
daphne server (``asgi_server``), and helpers that act as an agent over HTTP."""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.servers import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
#: Where the tests leave a screenshot of each page (not committed; look at them).
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module.

    Playwright's sync API keeps an asyncio loop running in this thread, which makes Django
    refuse ORM calls ("async context"); the tests and their fixtures use the ORM only between
    browser calls, so Django is told to allow it for as long as the browser lives (and only
    then: the module scope ends it before any other module's tests run).
    """
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package (.ci/run does).")
    expect.set_options(timeout=10_000)  # two shared cores: pages may take a few seconds
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


#: Chromium logs every 4xx answer to fetch() as an error; 400 and 409 are answers the pages
#: show to the user (field errors, state conflicts), so they are not page errors.
HANDLED_ANSWER = re.compile(r"^Failed to load resource: .* status of (400|409) ")


class PageErrors(list):
    """Uncaught page errors and console errors, which fail the test."""


@pytest.fixture(scope="module")
def browser_context(browser, asgi_server):
    """One browser context per module: its HTTP cache keeps plotly.js (4.8 MB) compiled
    between tests; each test gets its own tab and cookies."""
    context = browser.new_context(base_url=asgi_server, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True)
    yield context
    context.close()


def _open_page(context, cookies: list[dict[str, Any]], server: str):
    context.clear_cookies()
    if cookies:
        context.add_cookies(cookies)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = PageErrors()
    # The dashboard works offline: every request goes to its own server (or is inline data).
    own = (server.rstrip("/") + "/", server.replace("http", "ws", 1).rstrip("/") + "/")
    page.on("request", lambda request: request.url.startswith(own + ("data:", "blob:"))
            or errors.append(f"request to another address: {request.url}"))
    page.on("websocket", lambda socket: socket.url.startswith(own)
            or errors.append(f"websocket to another address: {socket.url}"))
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error"
            and not HANDLED_ANSWER.search(message.text)
            and errors.append(f"console: {message.text} at {message.location.get('url')}"))
    return page, errors


@pytest.fixture
def anonymous_page(browser_context, asgi_server):
    """A fresh browser tab with no session."""
    page, errors = _open_page(browser_context, [], asgi_server)
    yield page
    page.close()
    assert not errors, errors


@pytest.fixture
def owner_page(browser_context, asgi_server, owner):
    """A browser tab logged in as ``owner`` (its session made by Django, as a login would)."""
    from django.test import Client

    client = Client()
    client.force_login(owner)
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": asgi_server}
    page, errors = _open_page(browser_context, [cookie], asgi_server)
    yield page
    page.close()
    assert not errors, errors


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot to var/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class Agent:
    """What an agent does over HTTP, for driving the pages without training anything."""

    def __init__(self, base_url: str, credential: str, device_id: str):
        self.base_url = base_url
        self.device_id = device_id
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Device {credential}"
        self.log_lines: dict[str, int] = {}  # per run: lines sent so far (the next seq)
        #: What heartbeats say of the worker, e.g. ``{"consuming": False, "detail": ...}``.
        self.worker: dict[str, Any] | None = None
        #: Jobs it started, listed in its heartbeats as a real agent lists its running jobs
        #: (the reaper fails a running job its device stops listing).
        self.running: list[str] = []

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.base_url}{path}", json=body, timeout=10)
        assert response.ok, (response.status_code, response.text)
        return response.json()

    def heartbeat(self) -> None:
        body: dict[str, Any] = {"running_jobs": list(self.running)}
        if self.worker is not None:
            body["worker"] = self.worker
        self.post("/api/v1/agents/heartbeat/", body)

    def start(self, job_id: str) -> None:
        """Start the job as an agent of commit 0123456789abcdef would."""
        self.post(f"/api/v1/agents/jobs/{job_id}/start/", {"provenance": {
            "code_version": "git:0123456789abcdef", "python": "3.11", "packages": {}}})
        self.running.append(job_id)

    def report(self, run_id: str, points: list[tuple[str, int, float, float]]) -> int:
        """Post (name, step, value, sim_time_s) points; returns how many were accepted."""
        body = {"points": [{"name": name, "step": step, "value": value, "sim_time_s": sim,
                            "wall_time_s": step * 0.5} for name, step, value, sim in points]}
        return self.post(f"/api/v1/runs/{run_id}/metrics/", body)["accepted"]

    def log(self, run_id: str, lines: list[str]) -> None:
        first_seq = self.log_lines.get(run_id, 0)
        self.post(f"/api/v1/runs/{run_id}/logs/", {"first_seq": first_seq, "lines": lines})
        self.log_lines[run_id] = first_seq + len(lines)


@pytest.fixture
def keep_online():
    """``keep_online(agent)``: heartbeat for ``agent`` every half interval until the test ends.

    Once a test has started the control plane's worker, its reaper runs every second and fails
    the jobs of a device silent for 3 s; a browser step on a busy machine can take longer.
    """
    from django.conf import settings

    period_s = settings.ESTUARY["HEARTBEAT_INTERVAL_S"] / 2
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def beat(agent: Agent) -> None:
        while not stop.wait(period_s):
            try:
                agent.heartbeat()
            except (requests.RequestException, AssertionError):
                pass  # the test's own calls report a broken server

    def start(agent: Agent) -> Agent:
        agent.heartbeat()
        thread = threading.Thread(target=beat, args=(agent,), daemon=True)
        thread.start()
        threads.append(thread)
        return agent

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=15)


def user_api(base_url: str, user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {user.api_token}"
    return session


def enrol_agent(base_url: str, user, name: str, profile: str = "h100") -> Agent:
    """Enrol a device through the real endpoints: the user's token, then the agent's enrol."""
    api = user_api(base_url, user)
    token = api.post(f"{base_url}/api/v1/enrolment-tokens/", json={"ttl_hours": 1}, timeout=10)
    assert token.status_code == 201, token.text
    enrolment = requests.post(f"{base_url}/api/v1/agents/enrol/", timeout=10, json={
        "token": token.json()["token"], "name": name, "profile": profile})
    assert enrolment.status_code == 201, enrolment.text
    body = enrolment.json()
    return Agent(base_url, body["credential"], body["device_id"])
