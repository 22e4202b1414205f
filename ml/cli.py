"""Command line: run any method of the catalogue without the control plane.

    python -m ml list
    python -m ml run METHOD [--set key=value ...] [--config file.json] [--out result.json] [--quiet]
                            [--distributed N [--shape]]

``--set`` values are parsed as JSON when they are valid JSON (``rounds=5``, ``testbed=[...]``),
else taken as strings (``dataset=mnist``); they override ``--config``. A bad config prints
``error: config.<field>: <message>`` for each faulty field and exits with status 2. While the
method runs, a progress bar on stderr advances with the steps of the first metric it reports;
at the end a table gives the final value of each metric. The JSON result file holds the method,
the validated config, the method's summary and every metric point. ``--distributed N`` runs the
method's roles as N local processes over torch.distributed (rank 0 the coordinator, ranks
1..N-1 the workers; ``--shape`` applies each rank's profile link to what it sends) instead of
emulating the testbed in one process.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from ml import registry
from ml.config import ConfigError
from ml.reporting import MemoryReporter, MetricPoint

#: A per-entity metric family (``name/entity``) with more series than this is summarised.
MAX_SERIES_SHOWN = 6
_POSTFIX_METRICS = ("accuracy", "loss", "perplexity", "sim_time_s")


class UsageError(Exception):
    """Bad command-line input; the message is printed after ``error: ``."""


class ProgressReporter:
    """A reporter that keeps every point (:class:`MemoryReporter`) and drives a tqdm bar.

    The bar advances with the steps of the first metric the method reports, whatever it is.
    """

    def __init__(self, total: int | None, enabled: bool):
        self.memory = MemoryReporter()
        self.enabled = enabled
        self.total = total
        self.bar: tqdm | None = None  # opened at the first point, so early errors print cleanly
        self._series: str | None = None
        self._step = 0
        self._postfix: dict[str, str] = {}

    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        self.memory.metric(name, step, value, sim_time_s)
        if self.bar is None:
            self.bar = tqdm(total=self.total, unit="step", file=sys.stderr,
                            disable=not self.enabled, dynamic_ncols=True)
            self._series = name
        if name == self._series and step > self._step:
            self.bar.update(step - self._step)
            self._step = step
        if name in _POSTFIX_METRICS:
            self._postfix[name] = f"{value:.4g}"
            self.bar.set_postfix(self._postfix)

    def log(self, message: str) -> None:
        self.memory.log(message)
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self._postfix, refresh=False)
            self.bar.close()


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["rounds=5", "dataset=mnist"]`` -> ``{"rounds": 5, "dataset": "mnist"}``."""
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read --config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path} must hold a JSON object")
    return values


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with left-aligned columns."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def final_values(points: Sequence[MetricPoint]) -> dict[str, MetricPoint]:
    """The point at the highest step of each metric."""
    last: dict[str, MetricPoint] = {}
    for p in points:
        if p.name not in last or p.step >= last[p.name].step:
            last[p.name] = p
    return last


def summary_table(points: Sequence[MetricPoint]) -> str:
    """Final value of each metric; large per-entity families are summarised in one row."""
    last = final_values(points)
    families: dict[str, list[str]] = defaultdict(list)
    for name in last:
        families[name.split("/", 1)[0]].append(name)
    rows = []
    for name in sorted(last):
        family = families[name.split("/", 1)[0]]
        if "/" in name and len(family) > MAX_SERIES_SHOWN:
            prefix = name.split("/", 1)[0]
            if name == min(n for n in family if "/" in n):
                rows.append((f"{prefix}/*", "", f"{len(family) - (prefix in last)} series",
                             "see the JSON result"))
            continue
        p = last[name]
        rows.append((name, p.step, f"{p.value:.6g}", f"{p.sim_time_s:.4g}"))
    return format_table(("metric", "step", "final value", "sim_time_s"), rows)


def cmd_list() -> int:
    rows = [(m.name, m.family, ", ".join(m.baselines) or "-", m.paper)
            for m in registry.all_methods()]
    print(format_table(("method", "family", "baselines", "paper"), rows))
    return 0


@contextlib.contextmanager
def imports_frozen(enabled: bool) -> Iterator[None]:
    """Import with the garbage collector paused, then freeze every object alive out of its
    reach (``gc.freeze``) and resume it; nothing when not ``enabled``.

    For a process that runs one method and exits (``python -m ml run``). Ours (issue #20's
    profile): importing a method imports torch, ~10^6 objects that live as long as the process;
    the full collections walking them, during the imports and the interpreter's last one at
    exit, took ~0.7 s of a 7 s FedAvg run. Frozen, they are never walked again; the run's own
    objects are collected as usual. Not for a long-lived process (tests, the control plane):
    garbage alive at the freeze would never be collected.
    """
    if not enabled:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def cmd_run(args: argparse.Namespace, own_process: bool = False) -> int:
    try:
        with imports_frozen(own_process):
            method = registry.get(args.method)
    except registry.UnknownMethod:
        known = ", ".join(m.name for m in registry.all_methods())
        raise UsageError(f"unknown method {args.method!r}; known: {known}") from None
    values = load_config_file(args.config) if args.config else {}
    values.update(parse_assignments(args.set))
    config = method.parse_config(values)
    if args.distributed is not None:
        result, points = _run_distributed(method, config, args)
    else:
        reporter = ProgressReporter(getattr(config, "rounds", None), enabled=not args.quiet)
        try:
            result = method.run(config, reporter)
        finally:
            reporter.close()
        points = reporter.memory.points
    if args.out:
        document = {"method": method.name, "config": config.model_dump(mode="json"),
                    "result": result, "points": [p.as_dict() for p in points]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=1) + "\n")
    if not args.quiet:
        print(summary_table(points))
        if args.out:
            print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _run_distributed(method: registry.Method, config, args: argparse.Namespace):
    from ml.distributed import launch_local  # torch.distributed only when asked for

    if not method.distributed:
        if not args.quiet:
            print(f"{method.name} is a single-device method: it runs whole in one local rank",
                  file=sys.stderr)
    elif args.distributed < 2:
        raise UsageError("--distributed needs at least 2 ranks (a coordinator and a worker)")
    elif not args.quiet:
        print(f"{method.name}: {args.distributed} local ranks over torch.distributed"
              f"{' (shaped links)' if args.shape else ''}", file=sys.stderr)
    result, reporter = launch_local(method.name, config.model_dump(mode="json"),
                                    args.distributed, shape=args.shape)
    return result, reporter.points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml",
                                     description="Run Estuary's methods on the emulated testbed.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the catalogue of methods")
    run = commands.add_parser("run", help="run one method and write its metrics")
    run.add_argument("method", help="method name, see `python -m ml list`")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config value (JSON if it parses, else a string); repeatable")
    run.add_argument("--config", type=Path, help="JSON file with config values")
    run.add_argument("--out", type=Path, help="write the JSON result here")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    run.add_argument("--distributed", type=int, metavar="N",
                     help="run the roles as N local processes over torch.distributed")
    run.add_argument("--shape", action="store_true",
                     help="with --distributed: apply each rank's profile uplink and RTT")
    pretrain = commands.add_parser(
        "pretrain", help="pre-train (or resume) one LM size of ml.models.pretraining, cached")
    pretrain.add_argument("--size", default="medium",
                          help="deep-tiny, hat-12, hat-12-cpython, deep-small, medium or large "
                               "(default medium)")
    pretrain.add_argument("--corpus", help="corpus name or UTF-8 file (default: the size's)")
    pretrain.add_argument("--steps", type=int, help="training steps (default: the size's)")
    pretrain.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    pretrain.add_argument("--threads", type=int, help="torch CPU threads")
    pretrain.add_argument("--max-minutes", type=float,
                          help="stop after this long, state saved (run again to resume)")
    pretrain.add_argument("--quick", action="store_true",
                          help="a 20-step check of the pipeline (its own cache entry)")
    return parser


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``python -m ml pretrain``: train, resume or load one size; print its info."""
    import torch

    from ml.models.pretraining import LM_SIZES, PretrainingStopped, pretrained_lm_of_size

    if args.size not in LM_SIZES:
        raise UsageError(f"--size must be one of {', '.join(LM_SIZES)}, got {args.size!r}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this host")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 20 if args.quick else args.steps
    try:
        _, _, info = pretrained_lm_of_size(
            args.size, corpus=args.corpus, steps=steps, device=args.device,
            log_every=5 if args.quick else 10, eval_windows=8 if args.quick else None,
            checkpoint_every=10 if args.quick else 50,
            stop_after_s=args.max_minutes * 60 if args.max_minutes else None)
    except PretrainingStopped as stopped:
        print(str(stopped), file=sys.stderr)
        return 3
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    shown = {k: info[k] for k in ("size", "params", "steps", "val_perplexity",
                                  "unigram_perplexity", "tokens_per_s", "train_time_s",
                                  "device", "cached", "path") if k in info}
    print(json.dumps(shown, indent=1))
    return 0


def main(argv: Sequence[str] | None = None, own_process: bool = False) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status.

    ``own_process``: this call is the whole process (``python -m ml``), which exits after it; a
    run then keeps its imports out of the garbage collector's way (:func:`imports_frozen`).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pretrain":
            return cmd_pretrain(args)
        return cmd_list() if args.command == "list" else cmd_run(args, own_process)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        for field, message in exc.errors.items():
            print(f"error: config.{field}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
