"""The agent daemon: get a credential (stored, or by enrolling), then heartbeat and work.

Life of an agent:
1. With ``<state-dir>/<name>.json`` from this server, re-enrol with that credential (the
   server refreshes the profile); without one, or if the server refuses it and a token was
   given, enrol with the token and store the new credential (0600). The server enrols a
   name it already has only with its owner's replacement token for that device.
2. Note the broker and heartbeat interval the server returned.
3. Resend whatever the spool kept from an earlier life; start the forkserver its jobs' child
   processes are forked from (it preloads torch and the method catalogue).
4. Heartbeat on a thread; run the Celery worker on ``device.<id>`` in the main thread. Each
   heartbeat says whether the worker consumes (:mod:`agents.consumer_watch`); after a broker
   outage the worker is restarted in-process, since Celery's own may never reconnect.
5. On SIGINT/SIGTERM: flag the running job to stop (it ends as failed, its points flushed),
   then stop the worker. A second signal exits at once.
6. If the control plane refuses the credential (the device was deleted), stop likewise and
   exit with :data:`agents.exit_status.CREDENTIAL_REFUSED`, so a supervisor leaves it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents import exit_status
from agents.client import (
    AgentError,
    AuthRejected,
    Conflict,
    ControlPlane,
    Rejected,
    describe_errors,
)
from agents.child import start_forkserver, warm_up
from agents.consumer_watch import ConsumerWatch
from agents.credentials import Credential, credential_path, load_credential, save_credential
from agents.heartbeat import Heartbeat
from agents.jobs import JobRunner
from agents.resend import resend_spool
from agents.spool import Spool
from agents.tracker import JobTracker
from agents.worker import broker_url_via, build_app, request_stop, run_worker

log = logging.getLogger("agents")


@dataclass(frozen=True)
class AgentOptions:
    """What ``python -m agents run`` was given, already validated."""

    server: str
    name: str
    profile: str
    state_dir: Path
    token: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    broker_url: str | None = None  # another address of the broker the server returned
    # Where the other agents of a distributed run reach this one; None: the local address
    # of this agent's connection to the control plane (:func:`local_address_towards`).
    advertise_address: str | None = None
    shape: bool = False  # apply the profile's uplink rate and RTT to what its roles send


def local_address_towards(server: str) -> str | None:
    """The local IP address this host uses to reach ``server`` (None if unreachable now)."""
    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=5) as connection:
            return connection.getsockname()[0]
    except OSError:
        return None


def _credential_from(answer: dict, server: str, name: str) -> Credential:
    try:
        return Credential(
            server=server, name=name, device_id=str(answer["device_id"]),
            credential=answer["credential"], broker_url=answer["broker_url"],
            queue=answer["queue"], heartbeat_interval_s=float(answer["heartbeat_interval_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AgentError(f"unexpected enrolment answer from {server}: missing {exc}") from None


def enrol(options: AgentOptions) -> Credential:
    """Exchange the enrolment token for a credential and store it (0600)."""
    if not options.token:
        raise AgentError(f"no stored credential for {options.name!r} in {options.state_dir}; "
                         "pass --token to enrol this device")
    client = ControlPlane(options.server, advertise_address=options.advertise_address)
    try:
        answer = client.enrol(options.token, options.name, options.profile, options.overrides)
    except Conflict:
        # The server refuses to hand an enrolled device's name to a token holder (a takeover).
        raise AgentError(
            f"the control plane already has a device named {options.name!r}, and an enrolment "
            "token cannot take it over: run its agent with its stored credential "
            f"({credential_path(options.state_dir, options.name)}), choose another --name, or "
            "ask the device's owner for a replacement token (Devices page: New "
            "credential)") from None
    except Rejected as exc:
        raise AgentError(f"enrolment refused (HTTP {exc.status}): {describe_errors(exc.body)}") from None
    credential = _credential_from(answer, client.server, options.name)
    path = credential_path(options.state_dir, options.name)
    save_credential(path, credential)
    log.info("enrolled as device %s; credential stored in %s", credential.device_id, path)
    return credential


def reenrol(options: AgentOptions, stored: Credential) -> Credential:
    """Present the stored credential: the server refreshes the profile and tells the current
    broker and heartbeat interval, which are stored again."""
    client = ControlPlane(stored.server, stored.credential,
                          advertise_address=options.advertise_address)
    try:
        answer = client.reenrol(options.profile, options.overrides)
    except AuthRejected:
        raise
    except Rejected as exc:
        raise AgentError(f"re-enrolment refused (HTTP {exc.status}): {describe_errors(exc.body)}") from None
    credential = _credential_from({**answer, "credential": stored.credential}, stored.server,
                                  options.name)
    if credential != stored:
        save_credential(credential_path(options.state_dir, options.name), credential)
    log.info("reusing the stored credential of device %s", credential.device_id)
    return credential


def obtain_credential(options: AgentOptions) -> Credential:
    """A credential the server accepts: the stored one if still valid, else a fresh enrolment."""
    path = credential_path(options.state_dir, options.name)
    try:
        stored = load_credential(path)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    if stored is not None and stored.server != options.server.rstrip("/"):
        log.info("%s was issued by %s, not %s; enrolling", path, stored.server, options.server)
        stored = None
    if stored is None:
        return enrol(options)
    try:
        return reenrol(options, stored)
    except AuthRejected as exc:
        if not options.token:
            raise CredentialRefused(
                f"the control plane refused the stored credential in {path} "
                f"({describe_errors(exc.body)}); pass --token to enrol again") from None
        log.warning("stored credential refused (%s); enrolling again", exc)
        return enrol(options)


class CredentialRefused(AgentError):
    """The control plane refuses the stored credential and there is no token to enrol again."""


class Agent:
    """A running agent; :meth:`run` blocks until it is stopped."""

    def __init__(self, options: AgentOptions):
        self.options = options
        self.shutdown = threading.Event()
        self.exit_status = exit_status.STOPPED

    def stop(self, reason: str = "") -> None:
        """Stop the running job (it ends as failed, points flushed), then the worker."""
        if reason:
            log.info("stopping: %s", reason)
        self.shutdown.set()
        request_stop()

    def run(self) -> int:
        if self.options.advertise_address is None:
            self.options = dataclasses.replace(
                self.options, advertise_address=local_address_towards(self.options.server))
        credential = obtain_credential(self.options)
        client = ControlPlane(credential.server, credential.credential,
                              advertise_address=self.options.advertise_address)
        tracker = JobTracker(self.shutdown)
        spool = Spool(self.options.state_dir / "spool" / self.options.name)
        broker_url = credential.broker_url
        if self.options.broker_url:
            broker_url = broker_url_via(self.options.broker_url, broker_url)
        watch = ConsumerWatch(broker_url, restart_worker=request_stop)
        heartbeat = Heartbeat(
            client, tracker, credential.heartbeat_interval_s, worker_state=watch.check,
            after_beat=lambda: resend_spool(client, spool, tracker.active_runs()),
            on_credential_rejected=self._credential_refused)
        heartbeat.start()
        resend_spool(client, spool)

        # Jobs run in child processes forked from a forkserver that imports torch and every
        # method once, now (the agent itself never imports them), not when the first job waits.
        start_forkserver()
        log.info("role processes ready (forkserver preload %.1f s)", warm_up())

        runner = JobRunner(client, tracker, spool, shape=self.options.shape)
        app = build_app(broker_url, runner, credential.queue)
        log.info("agent %s online as device %s, consuming %s, advertising %s%s",
                 self.options.name, credential.device_id, credential.queue,
                 self.options.advertise_address, " (shaped)" if self.options.shape else "")
        try:
            while not self.shutdown.is_set():
                run_worker(app, credential.queue, hostname=f"{self.options.name}@estuary-agent",
                           on_ready=watch.ready)
                if not self.shutdown.wait(1.0):  # (a worker that fails at once must not spin)
                    log.info("worker stopped; starting a new one on %s", credential.queue)
        finally:
            heartbeat.stop()
            heartbeat.join(timeout=credential.heartbeat_interval_s + 5)
        log.info("agent %s stopped", self.options.name)
        return self.exit_status

    def _credential_refused(self, why: str) -> None:
        self.exit_status = exit_status.CREDENTIAL_REFUSED
        self.stop(f"credential refused ({why}); exiting with status {self.exit_status}")


def install_signal_handlers(agent: Agent) -> None:
    """SIGINT/SIGTERM stop the agent cleanly; a second one exits at once."""

    def handle(signum: int, _frame: object) -> None:
        if agent.shutdown.is_set():
            os._exit(128 + signum)
        agent.stop(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
