"""``python -m estuary_client``: Estuary from a terminal (README.md, "Scripts").

Every command talks to the server through :class:`estuary_client.Client`. Exit statuses:
0 done, 1 the server refused (a 400 prints one line per field at fault), 2 bad usage,
3 not logged in or the token was refused, 4 the server is unreachable, 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import sys
from typing import Any, Iterable, TextIO

from estuary_client import credentials
from estuary_client.client import Client, Experiment
from estuary_client.errors import (
    ApiError,
    AuthFailed,
    EstuaryError,
    InvalidInput,
    ServerUnreachable,
)
from estuary_client.progress import ProgressBoard

DEFAULT_SERVER = "http://127.0.0.1:8000"
EXIT_REFUSED, EXIT_USAGE, EXIT_AUTH, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
SERIES_COLUMNS = ["run", "method", "name", "step", "value", "sim_time_s", "wall_time_s"]


class UsageError(Exception):
    """Bad arguments, found after argparse (e.g. a malformed --set)."""


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON when it parses (``3``, ``0.1``, ``true``, ``[..]``),
    else as a string (``dataset=digits``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected key=value")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m estuary_client",
                                     description="Estuary from a terminal.")
    parser.add_argument("--server", help="server URL (default: the logged-in one, "
                        f"$ESTUARY_SERVER, else {DEFAULT_SERVER})")
    parser.add_argument("--token", help="API token (default: the logged-in one, "
                        "$ESTUARY_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="store a token for later commands (0600 file)")
    login.add_argument("--username", help="exchange a password for the token (prompted)")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input")

    commands.add_parser("devices", help="list your devices")
    commands.add_parser("algorithms", help="list the catalogue")
    algorithm = commands.add_parser("algorithm", help="an algorithm's config keys")
    algorithm.add_argument("name")

    experiments = commands.add_parser("experiments", help="list your experiments")
    experiments.add_argument("--status")
    experiments.add_argument("--algorithm")
    experiments.add_argument("--name")

    create = commands.add_parser("create", help="launch an experiment")
    create.add_argument("--algorithm", required=True)
    create.add_argument("--name", help="default: the algorithm's name")
    create.add_argument("--baseline", action="append", default=[], help="repeatable")
    create.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="settings", help="a config value (repeatable)")
    testbed = create.add_mutually_exclusive_group()
    testbed.add_argument("--devices", help="comma-separated device ids: the testbed")
    testbed.add_argument("--preset", help="a named testbed, e.g. jetson80")
    create.add_argument("--host", help="the device that runs it (default: chosen)")
    create.add_argument("--seed", type=int)
    create.add_argument("--execution", choices=["emulated", "distributed"],
                        help="distributed: each role on its own device's agent "
                             "(default: emulated, the whole testbed on one host)")
    create.add_argument("--watch", action="store_true", help="then watch it until it ends")

    for name, text in (("watch", "follow it live until it ends (Ctrl-C stops watching)"),
                       ("cancel", "cancel its runs"), ("show", "its state and runs")):
        command = commands.add_parser(name, help=text)
        command.add_argument("experiment")

    rerun = commands.add_parser("rerun", help="run it again: same methods, config, seed, testbed")
    rerun.add_argument("experiment")
    rerun.add_argument("--watch", action="store_true")

    export = commands.add_parser("export", help="per-step series, or final results")
    export.add_argument("experiment")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--final", action="store_true",
                        help="the final value of each metric of each run instead")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidInput as exc:
        for field, messages in exc.fields.items():
            print(f"{field}: {' '.join(messages)}", file=sys.stderr)
        return EXIT_REFUSED
    except AuthFailed as exc:
        print(f"error: {exc} (log in with: python -m estuary_client login)", file=sys.stderr)
        return EXIT_AUTH
    except ServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (ApiError, EstuaryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def client_for(args: argparse.Namespace) -> Client:
    stored = credentials.load()
    server = args.server or os.environ.get("ESTUARY_SERVER") or stored.get("server") \
        or DEFAULT_SERVER
    token = args.token or os.environ.get("ESTUARY_TOKEN")
    if token is None and stored.get("server", "").rstrip("/") == server.rstrip("/"):
        token = stored.get("token")
    if not token:
        raise AuthFailed(401, f"no token for {server}")
    return Client(server, token)


# -- commands -------------------------------------------------------------------------------
def cmd_login(args: argparse.Namespace, out: TextIO) -> int:
    server = args.server or os.environ.get("ESTUARY_SERVER") or DEFAULT_SERVER
    client = Client(server)
    if args.username:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin \
            else getpass.getpass(f"Password for {args.username}: ")
        token = client.login(args.username, password)
    else:
        token = args.token or os.environ.get("ESTUARY_TOKEN") or getpass.getpass("API token: ")
        client = Client(server, token)
        next(iter(client.list_algorithms()), None)  # a refused token raises AuthFailed
    path = credentials.save(server, token)
    print(f"Logged in to {server}; token kept in {path}", file=out)
    return 0


def cmd_devices(args: argparse.Namespace, out: TextIO) -> int:
    rows = [(d["name"], d["status"], d["kind"], d.get("profile_name", ""), d["id"])
            for d in client_for(args).list_devices()]
    _table(out, ("NAME", "STATUS", "KIND", "PROFILE", "ID"), rows)
    return 0


def cmd_algorithms(args: argparse.Namespace, out: TextIO) -> int:
    rows = [(a["name"], ", ".join(a["baselines"]) or "-", a["paper"])
            for a in client_for(args).list_algorithms()]
    _table(out, ("NAME", "BASELINES", "PAPER"), rows)
    return 0


def cmd_algorithm(args: argparse.Namespace, out: TextIO) -> int:
    algorithm = client_for(args).get_algorithm(args.name)
    print(f"{algorithm['name']}: {algorithm['summary']}", file=out)
    print(f"baselines: {', '.join(algorithm['baselines']) or 'none'}", file=out)
    properties = algorithm["schema"].get("properties", {})
    rows = [(key, _type_of(spec), json.dumps(algorithm["defaults"].get(key)),
             spec.get("description", "")) for key, spec in properties.items()]
    _table(out, ("KEY", "TYPE", "DEFAULT", "DESCRIPTION"), rows)
    return 0


def cmd_experiments(args: argparse.Namespace, out: TextIO) -> int:
    filters = {k: v for k, v in (("status", args.status), ("algorithm", args.algorithm),
                                 ("name", args.name)) if v}
    rows = [(e.name, e.data["algorithm"], e.status, e.data["created"][:16], e.id)
            for e in client_for(args).list_experiments(**filters)]
    _table(out, ("NAME", "ALGORITHM", "STATUS", "CREATED", "ID"), rows)
    return 0


def cmd_create(args: argparse.Namespace, out: TextIO) -> int:
    config = dict(parse_setting(text) for text in args.settings)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices \
        else None
    client = client_for(args)
    experiment = client.create_experiment(
        name=args.name or args.algorithm, algorithm=args.algorithm, config=config,
        baselines=args.baseline, devices=devices, preset=args.preset, host=args.host,
        seed=args.seed, execution=args.execution)
    print(f"Created experiment {experiment.id} ({', '.join(experiment.data['methods'])})",
          file=out)
    return _watch(experiment, out) if args.watch else 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    experiment = client_for(args).get_experiment(args.experiment)
    print(f"{experiment.name} ({experiment.id}): {experiment.status}"
          f" [{experiment.data.get('execution', 'emulated')}]", file=out)
    if experiment.data.get("rerun_of"):
        differs = experiment.data.get("code_version_differs")
        note = {None: "code version not known yet", True: "ran another code version",
                False: "same code version"}[differs]
        print(f"rerun of {experiment.data['rerun_of']} ({note})", file=out)
    rows = [(r["method"], r["state"], (r.get("provenance") or {}).get("code_version", "-"),
             r["id"]) for r in experiment.runs]
    _table(out, ("METHOD", "STATE", "CODE", "RUN"), rows)
    for run in experiment.runs:
        if run.get("placement"):
            print(f"\nplacement of {run['method']}:", file=out)
            _table(out, ("RANK", "ROLE", "DEVICE", "WORKERS"), [
                (slot["rank"], slot["role"], slot["name"], _workers(slot["workers"]))
                for slot in run["placement"]])
        if run.get("waiting_for"):
            names = ", ".join(f"{w['name']} ({w['why']})" for w in run["waiting_for"])
            print(f"{run['method']} is waiting for devices: {names}", file=out)
    return 0


def _workers(workers: list[int]) -> str:
    """``0, 3, 6`` (the first eight, then how many more)."""
    shown = ", ".join(map(str, workers[:8]))
    return shown + (f" … (+{len(workers) - 8})" if len(workers) > 8 else "") if workers else "-"


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    return _watch(client_for(args).get_experiment(args.experiment), out)


def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    experiment = client_for(args).cancel_experiment(args.experiment)
    print(f"Experiment {experiment.id} is {experiment.status}", file=out)
    return 0


def cmd_rerun(args: argparse.Namespace, out: TextIO) -> int:
    experiment = client_for(args).rerun_experiment(args.experiment)
    print(f"Created experiment {experiment.id}, a rerun of {args.experiment}", file=out)
    return _watch(experiment, out) if args.watch else 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    experiment = client_for(args).get_experiment(args.experiment)
    target = open(args.output, "w", newline="") if args.output else out
    try:
        if args.final:
            _write_final(experiment, args.format, target)
        else:
            _write_series(experiment, args.format, target)
    finally:
        if args.output:
            target.close()
    return 0


COMMANDS = {"login": cmd_login, "devices": cmd_devices, "algorithms": cmd_algorithms,
            "algorithm": cmd_algorithm, "experiments": cmd_experiments, "create": cmd_create,
            "show": cmd_show, "watch": cmd_watch, "cancel": cmd_cancel, "rerun": cmd_rerun,
            "export": cmd_export}


# -- helpers --------------------------------------------------------------------------------
def _watch(experiment: Experiment, out: TextIO) -> int:
    """Follow ``experiment`` until it ends; Ctrl-C stops watching and leaves it running."""
    methods = {str(run["id"]): run["method"] for run in experiment.runs}
    metrics = {}
    for method in set(methods.values()):
        catalogued = experiment.client.get_algorithm(method)["metrics"]
        metrics[method] = catalogued[0] if catalogued else "loss"
    board = ProgressBoard(experiment.runs, metrics, out)
    try:
        for event in experiment.watch():
            board.update(event)
    except KeyboardInterrupt:
        board.close()
        print(f"Stopped watching; experiment {experiment.id} goes on "
              f"(cancel it with: python -m estuary_client cancel {experiment.id})", file=out)
        return EXIT_INTERRUPTED
    board.close()
    print(f"Experiment {experiment.id} {experiment.status}", file=out)
    return 0 if experiment.status == "succeeded" else EXIT_REFUSED


def series_rows(experiment: Experiment) -> list[dict[str, Any]]:
    """Every point of every run, as the export writes them (run order, then name and step)."""
    rows = []
    for run in experiment.runs:
        for point in experiment.client.run_metrics(run["id"]):
            rows.append({"run": str(run["id"]), "method": run["method"], **point})
    return rows


def _write_series(experiment: Experiment, fmt: str, target: TextIO) -> None:
    rows = series_rows(experiment)
    if fmt == "json":
        json.dump({"experiment": experiment.id, "name": experiment.name, "points": rows},
                  target, indent=1)
        target.write("\n")
        return
    writer = csv.DictWriter(target, SERIES_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _write_final(experiment: Experiment, fmt: str, target: TextIO) -> None:
    results = experiment.results()
    if fmt == "json":
        json.dump(results, target, indent=1)
        target.write("\n")
        return
    writer = csv.writer(target)
    writer.writerow(["run", "method", "state", *results["metrics"]])
    for run in results["runs"]:
        writer.writerow([run["run"], run["method"], run["state"],
                         *(run["final"].get(name, "") for name in results["metrics"])])


def _type_of(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return "|".join(map(str, spec["enum"]))
    if "type" in spec:
        return str(spec["type"])
    kinds = [option.get("type", "object") for option in spec.get("anyOf", [])]
    return "|".join(kinds) or "object"


def _table(out: TextIO, header: Iterable[str], rows: list[Iterable[Any]]) -> None:
    lines = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(),
              file=out)
