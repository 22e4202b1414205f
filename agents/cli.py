"""``python -m agents run ...``: parse and check the arguments, then run the daemon.

Every expected failure (unreachable server, refused token, unknown profile, bad override) ends
with one ``error:`` line and exit status 2, not a traceback; a refused device credential with
status 3 (see :mod:`agents.exit_status`).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents import exit_status
from agents.client import AgentError
from agents.credentials import NAME_PATTERN, default_state_dir
from agents.daemon import Agent, AgentOptions, CredentialRefused, install_signal_handlers
from ml.testbed.profiles import PROFILES, DeviceProfile

#: A host name or an IP address (the control plane checks it the same way).
ADVERTISE_ADDRESS = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,253}[A-Za-z0-9])?$")

#: Profile fields a device may override (its catalogue name is not one of them).
OVERRIDABLE = {f.name: f for f in dataclasses.fields(DeviceProfile) if f.name != "name"}


def parse_overrides(pairs: list[str], profile: DeviceProfile) -> dict[str, Any]:
    """``["rtt_ms=30", ...]`` → ``{"rtt_ms": 30.0}``, typed like the profile's field."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or key not in OVERRIDABLE:
            raise AgentError(f"--override {pair!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(sorted(OVERRIDABLE))}")
        kind = type(getattr(profile, key))
        try:
            value = kind(raw) if kind is not int else int(raw, 10)
        except ValueError:
            raise AgentError(f"--override {key}: {raw!r} is not a valid {kind.__name__}") from None
        if key == "kind" and value not in ("edge", "cloud"):
            raise AgentError("--override kind: must be edge or cloud")
        if isinstance(value, (int, float)) and (value < 0 or (value == 0 and key != "rtt_ms")):
            raise AgentError(f"--override {key}: must be positive")
        overrides[key] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agents", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="enrol (once) and run this device's agent")
    run.add_argument("--server", required=True, help="control plane URL, e.g. http://host:8000")
    token = run.add_mutually_exclusive_group()
    token.add_argument("--token", help="enrolment token (needed only until a credential is stored)")
    token.add_argument("--token-file", type=Path, help="read the enrolment token from this file")
    run.add_argument("--name", required=True, help="device name, unique among your devices")
    run.add_argument("--profile", required=True, help=f"one of: {', '.join(sorted(PROFILES))}")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="override a profile field, e.g. --override rtt_ms=40")
    run.add_argument("--state-dir", type=Path, default=None,
                     help=f"credentials and spooled points (default {default_state_dir()})")
    run.add_argument("--broker", dest="broker_url", default=None,
                     help="another address (redis://host:port/db, no user or password) of the "
                          "broker the server names, if that one is not reachable from here")
    run.add_argument("--advertise-address", default=None, metavar="HOST",
                     help="the address other agents of a distributed run reach this one at "
                          "(default: the local address of its connection to the server)")
    run.add_argument("--shape", action="store_true",
                     help="apply this device's profile (uplink rate, round-trip time) to what "
                          "its distributed roles send")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def options_from(args: argparse.Namespace) -> AgentOptions:
    """Check what can be checked locally before talking to the server."""
    if not NAME_PATTERN.match(args.name):
        raise AgentError(f"--name {args.name!r}: use 1-63 letters, digits, '.', '_' or '-'")
    if args.profile not in PROFILES:
        raise AgentError(f"--profile {args.profile!r} is not a known profile; "
                         f"known: {', '.join(sorted(PROFILES))}")
    if not args.server.startswith(("http://", "https://")):
        raise AgentError(f"--server {args.server!r}: expected an http:// or https:// URL")
    if args.broker_url is not None:
        broker = urlsplit(args.broker_url)
        if broker.scheme not in ("redis", "rediss", "unix"):
            raise AgentError("--broker: expected a redis://, rediss:// or unix:// URL")
        if "@" in broker.netloc:
            raise AgentError("--broker: give only the address; the agent logs in as its "
                             "device's own broker user, with its credential")
    if args.advertise_address is not None and not ADVERTISE_ADDRESS.match(args.advertise_address):
        raise AgentError(f"--advertise-address {args.advertise_address!r}: expected a host name "
                         "or an IP address, without scheme or port")
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise AgentError(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from None
    return AgentOptions(
        server=args.server.rstrip("/"), name=args.name, profile=args.profile,
        state_dir=(args.state_dir or default_state_dir()).expanduser().resolve(),
        token=token or None, overrides=parse_overrides(args.override, PROFILES[args.profile]),
        broker_url=args.broker_url, advertise_address=args.advertise_address,
        shape=args.shape)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent = Agent(options_from(args))
        install_signal_handlers(agent)
        return agent.run()
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, CredentialRefused):
            return exit_status.CREDENTIAL_REFUSED
        return exit_status.USAGE_ERROR
