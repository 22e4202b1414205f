"""The command line every ``bench/reproduce_<paper>.py`` shares.

``--quick`` runs one regime with 2 seeds (about a minute) into ``var/reproductions/`` and leaves
the committed results alone; the full mode runs the declared regimes and seeds, saves the
results JSON in ``docs/reproductions/`` after every run (``--resume`` continues a stopped
sweep), draws the plots and regenerates ``docs/reproductions.md``. Both print the verdict table
last.
"""
from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ml.reproduction import harness, report
from ml.reproduction.declaration import Declaration


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="one regime, 2 seeds (about a minute)")
    p.add_argument("--regimes", nargs="+", help="run only these regime keys (full mode)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the declared seeds")
    p.add_argument("--jobs", type=int, help="runs at once (processes; default 1, or the "
                                            "bench's own with --quick)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the results file and run only the rest")
    p.add_argument("--out", type=Path, help="results folder (default docs/reproductions, "
                                            "quick: var/reproductions)")
    return p


def code_version() -> dict:
    """The commit this invocation runs and its uncommitted changes under ml/ and bench/ (so a
    reader can check that the declaration was committed before the runs)."""
    root = Path(__file__).resolve().parents[2]

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "ml",
                                                     "bench").splitlines() if line],
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_bench(declaration: Declaration, run: Callable, args: argparse.Namespace, *,
              context: dict, quick_regime: str, quick_seeds: tuple[int, ...],
              quick_context: dict, skip: dict[str, str] | None = None,
              metrics: list[str] | None = None,
              describe: Callable[[list[dict]], list[str]] | None = None,
              quick_note: str | None = None, quick_jobs: int = 1) -> dict:
    """Run the bench described by ``args``; return the results document.

    ``skip`` maps regime keys that cannot run here (e.g. no CIFAR folder) to the reason, which
    is printed and stored in the document's notes. ``describe(runs)`` gives lines about what
    the runs measured beside the comparisons (e.g. the dense model's quality), stored as the
    document's ``context`` and printed under the setting in the docs. ``quick_note`` says in
    a quick run's notes how it differs from the declared setting; ``quick_jobs`` is its default
    number of processes.
    """
    skip = skip or {}
    if args.quick:
        regimes, seeds, ctx = [quick_regime], list(args.seeds or quick_seeds), quick_context
        folder = args.out or Path("var/reproductions")
    else:
        regimes = args.regimes or [r.key for r in declaration.regimes]
        seeds, ctx = list(args.seeds or declaration.seeds), context
        folder = args.out or harness.default_results_dir()
    notes = [harness.skip_note(declaration.regime(k).label, skip[k]) for k in regimes
             if k in skip]
    if args.quick and quick_note:
        notes.append(quick_note)
    processes = args.jobs or (quick_jobs if args.quick else 1)
    for note in notes:
        print(note, file=sys.stderr)
    regimes = [k for k in regimes if k not in skip]
    path = folder / f"{declaration.key}.json"
    done: list[dict] = []
    previous_wall = 0.0
    code = [code_version()]
    if args.resume and path.exists():
        previous = harness.load(path)
        done, previous_wall = previous["runs"], previous.get("wall_s", 0.0)
        code = previous.get("code", []) + code
    jobs = harness.plan_jobs(declaration, regimes, seeds, done)
    mode = "quick" if args.quick else ("full" if not args.regimes and not args.seeds
                                       else "subset")
    start = time.perf_counter()

    def document(runs: list[dict], plots: list[str] | None = None) -> dict:
        doc = harness.results_document(
            declaration, runs, mode=mode, wall_s=previous_wall + time.perf_counter() - start,
            plots=plots, notes=notes)
        if describe is not None:
            doc["context"] = describe(runs)
        doc["code"] = code
        doc["jobs"] = processes
        return doc

    def checkpoint(records: list[dict]) -> None:
        harness.save(document(done + records), path)

    print(f"{declaration.key}: {len(jobs)} runs ({len(done)} already done) in regimes "
          f"{', '.join(regimes)}; seeds {seeds}", file=sys.stderr, flush=True)
    records = harness.run_all(declaration, run, jobs, ctx, processes=processes,
                              on_record=checkpoint,
                              log=lambda line: print(line, file=sys.stderr, flush=True))
    runs = done + records
    doc = document(runs)
    doc["declaration"]["target"] = {**doc["declaration"]["target"],
                                    **{k: v for k, v in ctx.items() if k in ("accuracy",
                                                                               "budget_s")},
                                    **ctx.get("targets", {})}
    doc["plots"] = report.write_plots(doc, folder)
    harness.save(doc, path)
    if not args.quick and folder == harness.default_results_dir():
        report.write_markdown(folder, folder.parent / "reproductions.md")
    if metrics:
        print()
        print(report.arm_table(doc, metrics))
    print()
    for claim in declaration.claims:
        summary = doc["evaluation"]["claims"][claim.key]
        print(f"{claim.key}: {claim.text} -> closest regime {summary['closest_regime']}: "
              f"{summary['closest_verdict']}")
    for line in doc.get("context", []):
        print(line)
    print(f"results: {path}; wall {doc['wall_s']:.0f} s")
    print()
    print(report.verdict_table(doc))
    return doc
