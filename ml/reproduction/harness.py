"""Running a declared reproduction and turning its runs into verdicts.

- :func:`run_all` runs every (regime, arm, seed) job a bench asks for, in worker processes or in
  this one, and hands each run's record to the bench as soon as it is done (saved at once), so
  a long sweep that is stopped keeps what it measured and ``resume`` continues it;
- :func:`evaluate` pairs the runs by seed and computes, for every regime, claim and comparison,
  the paired effects, their 95% t-interval and the verdict (:mod:`ml.reproduction.verdict`);
- :func:`save` / :func:`load` write and read the results JSON (declaration, runs, evaluation);
- :func:`completion` / :func:`mode_text`: how much of the declared sweep a results file holds,
  and the mode as the docs and the dashboard print it ("full, stopped: 42 of 60 declared runs").

A run record is a plain dict: ``regime``, ``arm``, ``seed``, ``metrics`` (name -> value or
None), ``censored`` (metrics whose value is a bound: the target was not reached within the
budget), ``curve`` (``time_s`` and ``accuracy`` lists), ``wall_s`` (and, where the bench
measures it, ``cpu_s``: the run's own CPU time, which the machine's load does not change).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from ml.reproduction.declaration import Arm, Comparison, Declaration, Regime
from ml.reproduction.stats import display, paired_effects, t_interval, to_effect_units
from ml.reproduction.verdict import ORDER, verdict, weakest

RunFn = Callable[[Regime, Arm, int, dict], dict]
Job = tuple[Regime, Arm, int]


def default_results_dir() -> Path:
    """Where benches write results and plots: ``docs/reproductions`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "docs" / "reproductions"


def plan_jobs(declaration: Declaration, regimes: Iterable[str], seeds: Iterable[int],
              done: Iterable[dict] = ()) -> list[Job]:
    """Every (regime, arm, seed) still to run, regime by regime, seed-major within a regime."""
    finished = {(r["regime"], r["arm"], r["seed"]) for r in done}
    return [(declaration.regime(key), arm, seed)
            for key in regimes for seed in seeds for arm in declaration.arms
            if (key, arm.label, seed) not in finished]


def run_all(declaration: Declaration, run: RunFn, jobs: list[Job], context: dict, *,
            processes: int = 1, on_record: Callable[[list[dict]], None] | None = None,
            log: Callable[[str], None] = print) -> list[dict]:
    """Run ``jobs`` with ``run(regime, arm, seed, context)``; return their records in job order.

    ``on_record`` gets all records so far after every finished run (the benches save there, so
    a stopped sweep keeps every run it finished). With ``processes > 1`` each job runs in its own
    spawned process; ``run`` must then be a module-level function.
    """
    records: list[dict] = []

    def collect(record: dict) -> None:
        records.append(record)
        log(f"{record['regime']} {record['arm']} seed {record['seed']}: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in record["metrics"].items())
            + f" ({record['wall_s']:.0f} s)")
        if on_record is not None:
            on_record(list(records))

    if processes > 1:
        # One fresh process per run: a long sweep must not accumulate one run's caches and
        # allocator growth into the next (a FedSpine sweep grew ~1.2 GB per run in one process).
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"),
                                 max_tasks_per_child=1) as pool:
            futures = [pool.submit(run, regime, arm, seed, context) for regime, arm, seed in jobs]
            for future in as_completed(futures):
                collect(future.result())
        order = {(r.key, a.label, s): i for i, (r, a, s) in enumerate(jobs)}
        records.sort(key=lambda rec: order[(rec["regime"], rec["arm"], rec["seed"])])
    else:
        for regime, arm, seed in jobs:
            collect(run(regime, arm, seed, context))
    return records


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _paired(runs: list[dict], regime: str, comparison: Comparison) -> tuple[list, list, list]:
    """Seeds, method values and baseline values of one comparison, aligned by seed."""
    def values(arm: str) -> dict[int, float]:
        return {r["seed"]: r["metrics"].get(comparison.metric) for r in runs
                if r["regime"] == regime and r["arm"] == arm}
    method = values(comparison.method)
    if comparison.reference is not None:
        baseline = {s: comparison.reference for s in method}
    else:
        baseline = values(comparison.baseline)
    seeds = sorted(s for s in method.keys() & baseline.keys()
                   if method[s] is not None and baseline[s] is not None)
    return seeds, [method[s] for s in seeds], [baseline[s] for s in seeds]


def _censored(runs: list[dict], regime: str, arm: str, metric: str, seeds: list[int]) -> int:
    return sum(1 for r in runs if r["regime"] == regime and r["arm"] == arm
               and r["seed"] in seeds and metric in r.get("censored", ()))


def compare(runs: list[dict], regime: str, comparison: Comparison) -> dict:
    """One comparison in one regime: paired effects, interval, verdict (JSON-ready)."""
    seeds, method, baseline = _paired(runs, regime, comparison)
    row = {"method": comparison.method, "baseline": comparison.baseline,
           "metric": comparison.metric, "kind": comparison.kind, "unit": comparison.unit,
           "claimed": comparison.claimed, "seeds": seeds, "n": len(seeds),
           "method_mean": _mean(method), "baseline_mean": _mean(baseline),
           "method_censored": _censored(runs, regime, comparison.method, comparison.metric, seeds),
           "baseline_censored": _censored(runs, regime, comparison.baseline, comparison.metric,
                                          seeds)}
    if not seeds:
        return {**row, "effect": None, "verdict": "not shown"}
    effects = paired_effects(method, baseline, comparison.kind, comparison.better,
                             comparison.scale)
    interval = t_interval(effects)
    shown = {k: display(v, comparison.kind) for k, v in
             (("mean", interval.mean), ("low", interval.low), ("high", interval.high))}
    return {**row, "effects": effects, "effect": interval.as_dict(), "shown": shown,
            "verdict": verdict(interval, to_effect_units(comparison.claimed, comparison.kind))}


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def evaluate(declaration: Declaration, runs: list[dict]) -> dict:
    """Every regime's comparisons and verdicts, and per claim its headline and closest regime.

    The closest regime of a claim is the one with the strongest verdict; among equals, the one
    whose weakest comparison gets nearest its claimed bound (mean effect over bound, in effect
    units). Only regimes with runs count.
    """
    ran = [r.key for r in declaration.regimes if any(x["regime"] == r.key for x in runs)]
    regimes: dict[str, dict] = {}
    for key in ran:
        claims = {}
        for claim in declaration.claims:
            rows = [compare(runs, key, c) for c in claim.comparisons]
            claims[claim.key] = {"comparisons": rows,
                                 "verdict": weakest([r["verdict"] for r in rows])}
        regimes[key] = {"claims": claims}
    summary = {}
    for claim in declaration.claims:
        # a regime stopped before any pair of this claim's arms has no verdict for it
        verdicts = {key: regimes[key]["claims"][claim.key]["verdict"] for key in ran
                    if any(row["n"] for row in regimes[key]["claims"][claim.key]["comparisons"])}
        closest = min(verdicts, key=lambda k: (ORDER.index(verdicts[k]),
                                          -_closeness(regimes[k]["claims"][claim.key])),
                      default=None)
        summary[claim.key] = {
            "headline_verdict": verdicts.get(declaration.headline),
            "closest_regime": closest,
            "closest_verdict": verdicts.get(closest) if closest else None,
            "verdicts": verdicts,
        }
    return {"regimes": regimes, "claims": summary}


def _closeness(claim_result: dict) -> float:
    """How near the weakest comparison comes to its bound (effect mean / bound, effect units)."""
    scores = []
    for row in claim_result["comparisons"]:
        if row["effect"] is None:
            return -math.inf
        bound = to_effect_units(row["claimed"], row["kind"])
        scores.append(row["effect"]["mean"] / bound if bound else row["effect"]["mean"])
    return min(scores) if scores else -math.inf


def results_document(declaration: Declaration, runs: list[dict], *, mode: str, wall_s: float,
                     plots: list[str] | None = None, notes: list[str] | None = None) -> dict:
    """The results JSON: declaration, every run, the evaluation and how it was produced."""
    return {
        "declaration": declaration.as_dict(),
        "mode": mode,
        "runs": runs,
        "evaluation": evaluate(declaration, runs),
        "wall_s": wall_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
                   f"Python {platform.python_version()}",
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "plots": plots or [],
        "notes": notes or [],
    }


def save(document: dict, path: Path) -> None:
    """Write the results JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(document), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """The document with every non-finite float as None (JSON has no infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def skip_note(label: str, reason: str) -> str:
    """The note a bench stores for a declared regime it could not run (:func:`completion`
    reads it back)."""
    return f"Regime {label} skipped: {reason}"


def completion(document: dict) -> dict:
    """How much of the declared sweep (regimes x arms x seeds) a results document holds.

    ``declared``: runs the declaration asks for; ``done``: those with a record (a failed run
    counts: it ran); ``skipped``: labels of the regimes the bench skipped (named in the notes by
    :func:`skip_note`, e.g. no data folder); ``missing``: declared runs with no record outside
    the skipped regimes. The document keeps every finished run at once, so in a sweep over the
    whole declaration (mode ``full``) a missing run is one the sweep was stopped before.
    """
    decl = document["declaration"]
    notes = document.get("notes") or []
    skipped = [r["label"] for r in decl["regimes"]
               if any(n.startswith(skip_note(r["label"], "")) for n in notes)]
    have = {(r["regime"], r["arm"], r["seed"]) for r in document["runs"]}
    declared = done = missing = 0
    for regime in decl["regimes"]:
        for arm in decl["arms"]:
            for seed in decl["seeds"]:
                declared += 1
                if (regime["key"], arm["label"], seed) in have:
                    done += 1
                elif regime["label"] not in skipped:
                    missing += 1
    return {"declared": declared, "done": done, "skipped": skipped, "missing": missing}


def mode_text(document: dict) -> str:
    """The mode as it ran: the bench's mode (``full``, ``subset``, ``quick``) alone when every
    declared run has a record, else with how many did, e.g. ``full, stopped: 42 of 60 declared
    runs`` or ``subset: 300 of 350 declared runs`` (a subset chose its regimes or seeds, so
    what it left out is not called stopped)."""
    mode, state = document["mode"], completion(document)
    if state["done"] == state["declared"]:
        return mode
    how = []
    if mode == "full" and state["missing"]:
        how.append("stopped")
    if state["skipped"]:
        count = len(state["skipped"])
        how.append(f"{count} regime{'s' if count > 1 else ''} skipped")
    return (", ".join([mode, *how]) + f": {state['done']} of {state['declared']} declared runs")


def supersessions(documents: Iterable[dict]) -> dict[str, dict]:
    """Results keys that a later declaration replaces: key -> ``{"by", "version", "why"}``
    (``by``: the replacing declaration's key). Old results files have no ``supersedes``."""
    replaced = {}
    for document in documents:
        decl = document["declaration"]
        for key, why in (decl.get("supersedes") or {}).items():
            replaced[key] = {"by": decl["key"], "version": decl.get("version", 1), "why": why}
    return replaced


def extensions(documents: Iterable[dict]) -> dict[str, dict]:
    """Results keys that declare more regimes under another's rules: key -> ``{"of", "why"}``
    (``of``: the extended declaration's key). Files older than ``extends`` have none."""
    return {document["declaration"]["key"]: {"of": base, "why": why}
            for document in documents
            for base, why in (document["declaration"].get("extends") or {}).items()}
