"""``./estuary up``: the whole stack on this machine, a demo experiment, and Ctrl-C to stop it.

Steps: Redis (``REDIS_URL``, or our own on a free port with data in ``<data>/redis``), migrate,
collectstatic, the demo user, the ASGI server (daphne in ``ESTUARY_WEB_PROCESSES`` processes on
one port, :mod:`controlplane.serve`: 2 on a machine with 2 cores or more), the control plane's
Celery worker and its beat (two processes, so a beat never outlives its worker), an enrolment
token, three agents (two
Jetsons and an A6000 server), then the demo experiments through the REST API: a short
distributed one (splitfed vs fedavg, each role on its own agent: the A6000 coordinates, the
Jetsons train) and the emulated one (the whole testbed emulated on the A6000's agent). Each child logs to
``<data>/log/<name>.log``; ``<data>/stack.json`` lists their current pids while the stack runs.
Once started, children that die are restarted (see :mod:`agents.stack.processes`); only Ctrl-C
or SIGTERM stops the stack.

The server runs as in production (DEBUG off, a secret key made once and kept in
``<data>/secret-key``, static files collected and served gzipped) except for what plain HTTP on
this machine needs: no HTTPS redirect, HSTS or secure-only cookies (``ESTUARY_SECURE=0``, unless
the environment says otherwise). ``--debug`` turns DEBUG on. Everything written under the data
folder is private to the user (folders 0700, files 0600); no secret is ever written to a log.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agents.credentials import credential_path, load_credential
from agents.stack import StackError
from agents.stack.api import UserApi, wait_for_http
from agents.stack.files import make_private, private_dir, secret_key, write_private
from agents.stack.processes import Supervisor
from agents.stack.redis import admin_config, free_port, is_listening, redis_argv, wait_for_redis

#: What agents do not inherit from the stack's environment: a device has no business with the
#: control plane's own Redis identity, database or secret key; it gets its broker user at
#: enrolment.
CONTROL_PLANE_ONLY = ("REDIS_URL", "DATABASE_URL", "SECRET_KEY")

#: (device name, catalogue profile) of the local agents: two Jetsons and one cloud GPU server.
DEMO_AGENTS = [
    ("jetson-nx-1", "jetson-nx"),
    ("jetson-orin-nano-1", "jetson-orin-nano"),
    ("a6000-1", "a6000-server"),
]


@dataclass(frozen=True)
class StackOptions:
    root: Path          # the repository (manage.py lives here)
    data_dir: Path      # ESTUARY_DATA_DIR: database, Redis data, logs, agent credentials
    port: int = 8000
    host: str = "127.0.0.1"
    demo: bool = True   # launch the demo experiment
    debug: bool = False  # DEBUG on: tracebacks and URL lists to anyone who asks; local only
    #: (device name, profile) of the local agents to start (bench scripts start fewer)
    agents: tuple[tuple[str, str], ...] = tuple(DEMO_AGENTS)
    #: ASGI server processes on the one port (None: ESTUARY_WEB_PROCESSES, else
    #: :func:`default_web_processes`)
    web_processes: int | None = None


def default_web_processes() -> int:
    """Server processes when nothing says otherwise: 2 where there are 2 cores or more (one
    daphne runs its Python on one core at a time: issue #20), else 1."""
    return min(2, os.cpu_count() or 1)


def say(message: str) -> None:
    print(message, flush=True)


class Stack:
    """The processes of a local Estuary; :meth:`watch` supervises them until a signal."""

    def __init__(self, options: StackOptions):
        self.options = options
        self.data_dir = options.data_dir
        self.log_dir = self.data_dir / "log"
        self.supervisor = Supervisor(self.log_dir)
        self.server = f"http://{options.host}:{options.port}"
        self.env = dict(os.environ, ESTUARY_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1",
                        DJANGO_SETTINGS_MODULE="controlplane.settings",
                        DEBUG="1" if options.debug else "0")
        # Plain HTTP on this machine: HTTPS-only settings would lock the browser out. Behind a
        # TLS proxy, set ESTUARY_SECURE=1 (and ESTUARY_BEHIND_PROXY=1) in the environment.
        self.env.setdefault("ESTUARY_SECURE", "0")
        if options.web_processes is not None:
            self.env["ESTUARY_WEB_PROCESSES"] = str(options.web_processes)
        self.env.setdefault("ESTUARY_WEB_PROCESSES", str(default_web_processes()))
        if "ALLOWED_HOSTS" not in self.env and options.host not in ("0.0.0.0", "::"):
            self.env["ALLOWED_HOSTS"] = ",".join(
                dict.fromkeys(["localhost", "127.0.0.1", "[::1]", options.host]))
        self.python = sys.executable
        self.experiment_id: str | None = None  # the emulated demo
        self.distributed_id: str | None = None  # the distributed demo
        self.devices: dict[str, dict] = {}  # the agents' devices by name, once online
        self.api: UserApi | None = None
        self.started_at = time.monotonic()

    # -- start --------------------------------------------------------------------------------
    def start(self) -> None:
        # Whatever this process and its children create is the user's alone (0600/0700).
        os.umask(0o077)
        private_dir(self.data_dir)
        make_private(self.log_dir)
        if is_listening(self.options.host, self.options.port):
            raise StackError(f"port {self.options.port} is in use: set PORT to a free port "
                             "or stop what listens there")
        if not self.env.get("SECRET_KEY"):
            self.env["SECRET_KEY"] = secret_key(self.data_dir)
        self._start_redis()
        self._manage("migrate", ["manage.py", "migrate", "--noinput"])
        if not self.options.debug:  # DEBUG serves the apps' files as they are
            self._manage("collectstatic", ["manage.py", "collectstatic", "--noinput", "-v0"])
        # Its output holds the demo password and API token: never logged.
        user = json.loads(self._manage("demo-user", ["-m", "agents.stack.demo_user",
                                                     str(self.data_dir)], log_stdout=False))
        self.api = UserApi(self.server, user["api_token"])

        say(f"starting the ASGI server on {self.server} "
            f"({self.env['ESTUARY_WEB_PROCESSES']} processes)")
        # controlplane.serve reads (and validates) ESTUARY_WEB_PROCESSES.
        self._spawn("web", ["-m", "controlplane.serve", "--host", self.options.host,
                            "--port", str(self.options.port)])
        # The reaper touches <data>/reaper.mark (settings ESTUARY["REAPER_MARK"]) every run: a
        # worker alive but silent for 6 runs (at least a minute) is restarted.
        interval_s = float(self.env.get("ESTUARY_HEARTBEAT_INTERVAL_S", "10"))
        self._spawn("controlplane-worker", [
            "-m", "celery", "-A", "controlplane", "worker", "-Q", "controlplane",
            "-c", "1", "-l", "INFO", "-n", f"controlplane-{self.options.port}@%h"],
            progress_mark=self.data_dir / "reaper.mark", max_silence_s=max(60.0, 6 * interval_s))
        self._spawn("controlplane-beat",
                    ["-m", "celery", "-A", "controlplane", "beat", "-l", "INFO"])
        wait_for_http(f"{self.server}/api/v1/", 90, alive=self._check_children)

        agents = self.options.agents
        say(f"starting {len(agents)} agents: {', '.join(f'{n} ({p})' for n, p in agents)}")
        agent_env = {k: v for k, v in self.env.items() if k not in CONTROL_PLANE_ONLY}
        token_files = self._enrolment_tokens([name for name, _ in agents])
        for name, profile in agents:
            self._spawn(f"agent-{name}", [
                "-m", "agents", "run", "--server", self.server, "--token-file",
                str(token_files[name]), "--name", name, "--profile", profile,
                "--state-dir", str(self.data_dir / "agents")], env=agent_env)
        self.devices = self.api.wait_for_devices([n for n, _ in agents], 120,
                                                 alive=self._check_children)
        if self.options.demo:
            device_ids = [self.devices[n]["id"] for n, _ in agents]
            # Distributed first: its gang takes the three agents at once, and the emulated
            # demo's jobs queue on the cloud agent behind its rank.
            self.distributed_id = str(self.api.launch_demo_experiment(
                device_ids, distributed=True)["id"])
            experiment = self.api.launch_demo_experiment(device_ids)
            self.experiment_id = str(experiment["id"])
        self._write_state()
        self._print_banner(user)

    def _enrolment_tokens(self, names: list[str]) -> dict[str, Path]:
        """The token file each local agent enrols with (files keep tokens out of command lines
        and logs). An agent whose stored credential will not be used (none, or one issued by
        this stack at another address) while the database has its device needs a replacement
        token for that device: a plain token cannot take an enrolled name."""
        agents_dir = self.data_dir / "agents"
        plain = write_private(agents_dir / "enrolment-token",
                              self.api.issue_enrolment_token(note="./estuary up"))
        enrolled = {device["name"]: device["id"] for device in self.api.devices()}
        files = {}
        for name in names:
            try:
                stored = load_credential(credential_path(agents_dir, name))
            except ValueError:
                stored = None
            if name in enrolled and (stored is None or stored.server != self.server):
                files[name] = write_private(
                    agents_dir / f"{name}.replacement-token",
                    self.api.issue_enrolment_token(replace_device=enrolled[name],
                                                   note=f"./estuary up: {name}"))
            else:
                files[name] = plain
        return files

    def _start_redis(self) -> None:
        if self.env.get("REDIS_URL"):
            parts = urlsplit(self.env["REDIS_URL"])
            say(f"using Redis at {parts._replace(netloc=parts.netloc.rpartition('@')[2]).geturl()}")
        else:
            port = free_port()
            redis_dir = private_dir(self.data_dir / "redis")
            config, password = admin_config(redis_dir)
            self.supervisor.start("redis", redis_argv(port, redis_dir, config=config),
                                  env=self.env)
            self.env["REDIS_URL"] = f"redis://:{password}@127.0.0.1:{port}/0"
            say(f"started Redis on port {port} (data in {redis_dir}; a password for the "
                f"control plane, an ACL user per device)")
        wait_for_redis(self.env["REDIS_URL"])

    def _manage(self, name: str, args: list[str], log_stdout: bool = True) -> str:
        """Run a short Python step to completion and return its stdout. Its output goes to
        its log, stdout only with ``log_stdout`` (off for output that holds secrets)."""
        result = subprocess.run([self.python, *args], cwd=self.options.root, env=self.env,
                                capture_output=True, text=True)
        logged = (result.stdout if log_stdout else "") + result.stderr
        fd = os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as log_file:
            log_file.write(logged)
        if result.returncode != 0:
            tail = "\n".join(logged.strip().splitlines()[-15:])
            raise StackError(f"{name} failed (see {self.log_dir / (name + '.log')}):\n{tail}")
        return result.stdout

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
               **watch) -> None:
        """Start a Python child; ``watch`` is the supervisor's progress_mark and
        max_silence_s."""
        self.supervisor.start(name, [self.python, *args], env=env or self.env,
                              cwd=self.options.root, **watch)

    def _check_children(self) -> None:
        child = self.supervisor.exited()
        if child is not None:
            raise StackError(f"{child.name} exited with status {child.process.returncode}; "
                             f"see {child.log_path}")

    def _write_state(self) -> None:
        """Current pids of the running children, and why any is left stopped."""
        children = self.supervisor.children
        state = {"pid": os.getpid(), "server": self.server, "experiment": self.experiment_id,
                 "children": {c.name: c.pid for c in children if c.running},
                 "stopped": {c.name: c.left_stopped for c in children if c.left_stopped}}
        write_private(self.data_dir / "stack.json", json.dumps(state, indent=2))

    def _print_banner(self, user: dict) -> None:
        lines = ["", f"Estuary is running (started in {time.monotonic() - self.started_at:.0f} s)."]
        if self.experiment_id:
            lines.append(f"  Dashboard:  {self.server}/experiments/{self.experiment_id}/")
        if self.distributed_id:
            lines.append(f"  Distributed: {self.server}/experiments/{self.distributed_id}/")
        lines += [
            f"  Devices:    {self.server}/devices/",
            f"  Log in as:  {user['username']} / {user['password']}",
            f"  API token:  {user['api_token']}",
            f"  Logs:       {self.log_dir}/",
            "Press Ctrl-C to stop everything this command started.", ""]
        say("\n".join(lines))

    # -- run and stop -------------------------------------------------------------------------
    def watch(self) -> None:
        """Supervise the children until a signal arrives; report run states."""
        states: dict[str, str] = {}
        next_poll = 0.0
        while True:
            lines = self.supervisor.supervise()
            for line in lines:
                say(line)
            if lines:
                self._write_state()
            if self.experiment_id and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 5
                states = self._report_runs(states)
            time.sleep(0.5)

    def _report_runs(self, seen: dict[str, str]) -> dict[str, str]:
        now: dict[str, str] = {}
        for experiment_id, label in ((self.distributed_id, " (distributed)"),
                                     (self.experiment_id, "")):
            if not experiment_id:
                continue
            try:
                experiment = self.api.get(f"/api/v1/experiments/{experiment_id}/")
            except StackError:
                return seen
            for run in experiment.get("runs", []):
                now[f"{run.get('method')}{label}"] = str(run.get("state"))
        for method, state in now.items():
            if seen.get(method) != state:
                say(f"demo run {method}: {state}")
        return now

    def _cancel_demo(self) -> None:
        """The demo cannot go on without the agents: cancel what is left of it, so it ends as
        cancelled rather than failed or queued for the next start."""
        if self.api is None:
            return
        self.api.timeout_s = 5.0  # stopping must not hang on a stuck server
        for experiment_id, what in ((self.distributed_id, "the distributed demo experiment"),
                                    (self.experiment_id, "the demo experiment")):
            if not experiment_id:
                continue
            try:
                experiment = self.api.get(f"/api/v1/experiments/{experiment_id}/")
                if experiment.get("status") == "running":
                    self.api.post(f"/api/v1/experiments/{experiment_id}/cancel/", {})
                    say(f"cancelled {what}")
            except StackError:
                pass

    def stop(self) -> None:
        """Stop every child, newest first; a second signal meanwhile kills them at once."""
        def hurry(_signum, _frame):
            for child in self.supervisor.children:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

        signal.signal(signal.SIGINT, hurry)
        signal.signal(signal.SIGTERM, hurry)
        self._cancel_demo()
        if self.supervisor.children:
            say("stopping: " + ", ".join(c.name for c in reversed(self.supervisor.children)))
        self.supervisor.stop_all(timeout_s=30)
        (self.data_dir / "stack.json").unlink(missing_ok=True)


def run_stack(options: StackOptions) -> int:
    """Start the stack, supervise it until Ctrl-C or SIGTERM, then stop all of it."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    # Set both explicitly: a parent may have left SIGINT ignored (e.g. a background job).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    stack = Stack(options)
    status = 0
    try:
        stack.start()
        stack.watch()
    except KeyboardInterrupt:
        say("")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        stack.stop()
    say("stopped.")
    return status
