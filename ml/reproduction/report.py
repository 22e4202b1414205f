"""What a reproduction shows: the verdict table, the plots and docs/reproductions.md.

Everything here reads the results JSON (:func:`ml.reproduction.harness.results_document`), never
the runs themselves, so the docs and the dashboard show exactly what was saved.

- :func:`verdict_table`: one row per regime, claim and comparison (the benches print it last);
- :func:`arm_table`: per regime and arm, the mean of each reported metric over seeds;
- :func:`plot_accuracy_vs_time`: accuracy against emulated time, one line per arm (mean over
  seeds on a common grid, each seed faint); the declaration's target may name another curve
  (``value_axis``, ``value_scale``, ``lower_is_better``: e.g. perplexity against steps);
- :func:`plot_effects`: each comparison's effect against the regime, with its 95% interval,
  zero and the claimed bound (:func:`effects_figure` draws it; log axes get ticks that keep
  their labels apart, :func:`log_ticks`);
- :func:`write_markdown`: docs/reproductions.md from every results JSON in a folder
  (``python -m ml.reproduction.report`` regenerates it).
"""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np

from ml.reproduction.harness import default_results_dir, extensions, load, mode_text, supersessions


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def _effect(row: dict) -> str:
    shown = row.get("shown")
    if not shown:
        return "-"
    digits = 2 if row["kind"] == "ratio" else 1
    unit = "x" if row["kind"] == "ratio" else ""
    low = _num(shown["low"], digits) if shown["low"] is not None else "-inf"
    high = _num(shown["high"], digits) if shown["high"] is not None else "inf"
    return f"{_num(shown['mean'], digits)}{unit} [{low}, {high}]"


def _claimed(row: dict) -> str:
    unit = "x" if row["kind"] == "ratio" else " " + row.get("unit", "points")
    return f">= {row['claimed']:.3g}{unit}"


def _means(row: dict) -> str:
    def one(mean, censored):
        text = _num(mean)
        return f"{text} ({censored} cens.)" if censored else text
    return (f"{one(row['method_mean'], row['method_censored'])} vs "
            f"{one(row['baseline_mean'], row['baseline_censored'])}")


def verdict_rows(document: dict) -> list[list[str]]:
    """Rows of the verdict table: regime, claim, comparison, means, effect [CI], bound, n,
    verdict."""
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    rows = []
    for key, regime in document["evaluation"]["regimes"].items():
        for claim_key, claim in regime["claims"].items():
            for row in claim["comparisons"]:
                rows.append([labels.get(key, key), claim_key,
                             f"{row['method']} vs {row['baseline']}: {row['metric']}",
                             _means(row), _effect(row), _claimed(row), str(row["n"]),
                             row["verdict"]])
            if len(claim["comparisons"]) > 1:
                rows.append([labels.get(key, key), claim_key, "(all comparisons)", "", "", "",
                             "", claim["verdict"]])
    return rows


VERDICT_HEADERS = ["regime", "claim", "comparison", "method vs baseline (mean)",
                   "effect [95% CI]", "claimed", "n", "verdict"]


def verdict_table(document: dict) -> str:
    from ml.cli import format_table
    return format_table(VERDICT_HEADERS, verdict_rows(document))


def arm_rows(document: dict, metrics: list[str]) -> list[list[str]]:
    """Per regime and arm: seeds and the mean (with censored count) of each metric."""
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    rows = []
    for regime in [r["key"] for r in document["declaration"]["regimes"]]:
        for arm in [a["label"] for a in document["declaration"]["arms"]]:
            runs = [r for r in document["runs"] if r["regime"] == regime and r["arm"] == arm]
            if not runs:
                continue
            failed = sum(1 for r in runs if r.get("error"))
            cells = [labels[regime], arm,
                     str(len(runs)) + (f" ({failed} failed)" if failed else "")]
            for metric in metrics:
                values = [r["metrics"].get(metric) for r in runs]
                values = [v for v in values if v is not None]
                censored = sum(metric in r.get("censored", ()) for r in runs)
                text = _num(float(np.mean(values))) if values else "-"
                if len(values) > 1:
                    text += f" ± {_num(float(np.std(values, ddof=1)))}"
                cells.append(text + (f" ({censored} cens.)" if censored else ""))
            rows.append(cells)
    return rows


def arm_table(document: dict, metrics: list[str]) -> str:
    from ml.cli import format_table
    return format_table(["regime", "arm", "seeds", *metrics], arm_rows(document, metrics))


# -- plots ----------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    return pyplot


def plot_accuracy_vs_time(document: dict, regime: str, path: Path, *,
                          xlabel: str = "emulated time (s)") -> Path | None:
    """Accuracy against time in ``regime``, one colour per arm; None if nothing ran there."""
    runs = [r for r in document["runs"] if r["regime"] == regime and r.get("curve")
            and r["curve"].get("time_s")]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    horizon = max(max(r["curve"]["time_s"]) for r in runs)
    grid = np.linspace(0, horizon, 200)
    arms = [a["label"] for a in document["declaration"]["arms"]]
    for i, arm in enumerate(a for a in arms if any(r["arm"] == a for r in runs)):
        colour = f"C{i % 10}"
        curves = []
        for r in (r for r in runs if r["arm"] == arm):
            t, acc = r["curve"]["time_s"], r["curve"]["accuracy"]
            ax.plot(t, acc, color=colour, alpha=0.2, linewidth=0.8)
            idx = np.searchsorted(t, grid, side="right") - 1
            curves.append(np.where(idx >= 0, np.asarray(acc)[np.clip(idx, 0, None)], np.nan))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.vstack(curves), axis=0)
        ax.plot(grid, mean, color=colour, linewidth=2,
                label=f"{arm} (mean of {len(curves)})")
    declared = document["declaration"]["target"]
    # a curve of a lower-is-better metric (e.g. perplexity) names its axis, scale and targets
    for key in ("accuracy", "perplexity", "mid_perplexity"):
        target = declared.get(key)
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1,
                       label=f"target {target:g}")
    label = next(r["label"] for r in document["declaration"]["regimes"] if r["key"] == regime)
    ax.set(xlabel=xlabel, ylabel=declared.get("value_axis", "test accuracy"), title=label)
    if declared.get("value_scale") == "log":
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right" if declared.get("lower_is_better") else
              "lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


#: Tick values of a log axis, densest first: (mantissas labelled in a decade, every how many
#: decades), e.g. 1-9 in every decade, then 1, 2, 5, 10, 20, 50, ..., then 1, 10, 100, ...,
#: then 1, 100, 10,000, ...
LOG_TICK_SETS = (((1, 2, 3, 4, 5, 6, 7, 8, 9), 1), ((1, 2, 5), 1), ((1, 3), 1), ((1,), 1),
                 ((1,), 2), ((1,), 3), ((1,), 5), ((1,), 10))


def log_ticks(low: float, high: float, pixels: float, spacing_px: float) -> list[float]:
    """Tick values for a log axis from ``low`` to ``high`` (both > 0) drawn ``pixels`` long,
    no two closer than ``spacing_px``: the densest of :data:`LOG_TICK_SETS` that keeps them
    apart, or evenly spaced values where those give more (a range within a decade or so:
    0.8, 1, 1.2, 1.4 rather than 0.8, 0.9, 1)."""
    from matplotlib.ticker import MaxNLocator

    per_decade = pixels / math.log10(high / low)

    def apart(values: list[float]) -> bool:
        return all(math.log10(b / a) * per_decade >= spacing_px
                   for a, b in zip(values, values[1:]))

    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    best: list[float] = []
    for mantissas, step in LOG_TICK_SETS:
        values = [m * 10.0 ** e for e in range(first, last + 1) if e % step == 0
                  for m in mantissas]
        values = [v for v in values if low <= v <= high]
        if values and apart(values):
            best = values
            break
    for bins in range(max(1, int(pixels // spacing_px)), 0, -1):
        even = [float(v) for v in MaxNLocator(bins, steps=[1, 2, 2.5, 5, 10]).tick_values(
            low, high) if low <= v <= high and v > 0]
        if apart(even):
            return even if len(even) > len(best) else best
    return best


def _tick_spacing_px(ax) -> float:
    """The least distance between two y tick labels of ``ax``: 1.5 label heights."""
    size = ax.yaxis.get_ticklabels()[0].get_fontsize() if ax.yaxis.get_ticklabels() else 10
    return 1.5 * 1.2 * size * ax.figure.dpi / 72


def _set_log_ticks(ax) -> None:
    """Label a log y axis with :func:`log_ticks` for its current height: every minor tick
    labelled (matplotlib's ScalarFormatter on a log axis) overlapped once the axis spanned a
    few decades."""
    from matplotlib.ticker import LogLocator, NullFormatter

    low, high = ax.get_ylim()
    values = log_ticks(low, high, ax.get_window_extent().height, _tick_spacing_px(ax))
    ax.set_yticks(values, [f"{v:g}" for v in values])
    ax.yaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def hide_overlapping_tick_labels(fig) -> int:
    """Hide every y tick label of ``fig`` that overlaps one kept below it (measured on the
    drawn figure); returns how many. A last guard: the effect plot's ticks are chosen apart."""
    fig.draw_without_rendering()  # places the tick labels where the next draw will
    renderer = fig.canvas.get_renderer()
    hidden = 0
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        low, high = sorted(ax.get_ylim())
        labels = [t for t in ax.yaxis.get_ticklabels(which="both")
                  if t.get_visible() and t.get_text() and low <= t.get_position()[1] <= high]
        kept = []
        for label in sorted(labels, key=lambda t: t.get_window_extent(renderer).y0):
            box = label.get_window_extent(renderer)
            if any(box.overlaps(other) for other in kept):
                label.set_visible(False)
                hidden += 1
            else:
                kept.append(box)
    return hidden


def effects_figure(document: dict):
    """The figure :func:`plot_effects` saves (None if nothing ran); the caller closes it."""
    evaluation = document["evaluation"]["regimes"]
    if not evaluation:
        return None
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    regimes = [k for k in labels if k in evaluation]
    claims = document["declaration"]["claims"]
    plt = _pyplot()
    cols = 2 if len(claims) > 1 else 1
    rows = math.ceil(len(claims) / cols)
    width = max(4.5, 0.9 * len(regimes) + 3.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows), dpi=100,
                             squeeze=False)
    colours = {"holds": "C2", "weaker": "C1", "not shown": "C7", "reversed": "C3"}
    markers = "osD^v<>"
    log_axes = []
    for ax, claim in zip(axes.flat, claims):
        comparisons = claim["comparisons"]
        kind, bound = comparisons[0]["kind"], comparisons[0]["claimed"]
        neutral = 1.0 if kind == "ratio" else 0.0
        means, spans = [neutral, bound], []
        for i, comparison in enumerate(comparisons):
            offset = (i - (len(comparisons) - 1) / 2) * 0.12
            for x, key in enumerate(regimes):
                row = evaluation[key]["claims"][claim["key"]]["comparisons"][i]
                shown = row.get("shown")
                if not shown or shown["mean"] is None:
                    continue
                mean = shown["mean"]
                low = shown["low"] if shown["low"] is not None else -math.inf
                high = shown["high"] if shown["high"] is not None else math.inf
                means.append(mean)
                spans.append((x + offset, mean, low, high, row["verdict"], i))
        top, bottom = max(means), min(means)
        pad = 0.6 * (top - bottom or abs(top) or 1.0)
        y_low, y_high = bottom - pad, top + pad
        if kind == "ratio":
            y_low = max(y_low, min(m for m in means if m > 0) / 2)
        for x, mean, low, high, verdict_, i in spans:
            low, high = max(low, y_low), min(high, y_high)
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt=markers[i % 7],
                        color=colours[verdict_], capsize=3, markersize=5)
        for i, comparison in enumerate(comparisons):
            ax.plot([], [], markers[i % 7], color="black", label=f"vs {comparison['baseline']}")
        ax.axhline(neutral, color="black", linewidth=0.8)
        ax.axhline(bound, color="C2", linestyle="--", linewidth=0.8, label="claimed bound")
        ax.set_ylim(y_low, y_high)
        ax.set_xlim(-0.5, len(regimes) - 0.5)
        if kind == "ratio":
            ax.set_yscale("log")
            log_axes.append(ax)
        ax.set_xticks(range(len(regimes)), [labels[k] for k in regimes], rotation=25,
                      ha="right", fontsize=7)
        metric = comparisons[0]["metric"]
        unit = "ratio baseline / method (x)" if kind == "ratio" else comparisons[0].get(
            "units") or "points"
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(f"{claim['key']}: {comparisons[0]['method']} ({metric})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(claims):]:
        ax.set_visible(False)
    fig.suptitle("Effect per regime, 95% interval; green holds, orange weaker, grey not shown, "
                 "red reversed", fontsize=8)
    # log ticks need the axis height, which the layout decides (and their labels' width moves)
    for ax in log_axes:
        _set_log_ticks(ax)
    fig.tight_layout()
    for ax in log_axes:
        _set_log_ticks(ax)
    fig.tight_layout()
    hide_overlapping_tick_labels(fig)
    return fig


def plot_effects(document: dict, path: Path) -> Path | None:
    """One panel per claim: each comparison's effect (points or x) per regime with its 95%
    interval (colour: the verdict; marker: the baseline), zero and the claimed bound. Intervals
    wider than the panel (few seeds) are cut at its edge. A log axis (ratios) gets labels that
    never overlap, however many decades it spans (:func:`log_ticks`)."""
    fig = effects_figure(document)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def write_plots(document: dict, folder: Path) -> list[str]:
    """The accuracy-vs-time plot of every regime that ran and the effect plot; file names."""
    key = document["declaration"]["key"]
    names = []
    effects = plot_effects(document, folder / f"{key}-effects.png")
    if effects:
        names.append(effects.name)
    for regime in document["evaluation"]["regimes"]:
        out = plot_accuracy_vs_time(document, regime, folder / f"{key}-{regime}-accuracy.png",
                                    xlabel=document["declaration"]["target"].get(
                                        "time_axis", "emulated time (s)"))
        if out:
            names.append(out.name)
    return names


# -- docs/reproductions.md ------------------------------------------------------------------------

HEADER = """# Reproductions

Generated by `python -m ml.reproduction.report` from the results JSON in `docs/reproductions/`
(written by `bench/reproduce_<paper>.py`); do not edit by hand. Each section gives the paper's
claim, the setting, the verdict per regime, plots, and what differs from the paper.

Verdict rule (fixed before the runs, `ml/reproduction/verdict.py`): per comparison, the paired
per-seed effects (method minus baseline; for times and traffic the ratio baseline / method) get a
95% Student t-interval. **holds**: the interval excludes zero in the claimed direction and the
mean effect reaches the claimed lower bound; **weaker**: excludes zero, smaller than claimed;
**not shown**: the interval includes zero; **reversed**: it excludes zero the other way. A claim
against several baselines gets the weakest of its comparisons' verdicts. A run that never reached
the target within the budget counts with the budget as its time (a lower bound, marked
"cens.").
"""


#: Target keys that only style the plots (not printed as part of the declared target).
PLOT_KEYS = ("time_axis", "report_metrics", "value_axis", "value_scale", "lower_is_better")


def markdown_section(document: dict, superseded: dict | None = None,
                     successor_extended_by: tuple[str, ...] = ()) -> str:
    """One paper's section of docs/reproductions.md; ``superseded`` (from
    :func:`~ml.reproduction.harness.supersessions`) marks results a later declaration replaces,
    and ``successor_extended_by`` names the declarations that extend that later one (their
    sections stand between it and this one)."""
    from ml.cli import format_table
    decl = document["declaration"]
    ev = document["evaluation"]
    labels = {r["key"]: r["label"] for r in decl["regimes"]}
    version = decl.get("version", 1)
    extends = decl.get("extends") or {}
    title = f"{decl['paper']}, declaration v{version}" if version > 1 or superseded \
        else decl["paper"]
    if extends:
        title += ", more regimes"
    lines = [f"## {title}{' (superseded)' if superseded else ''} (arXiv {decl['arxiv']})", ""]
    if superseded:
        where = ("the section before this one" if not successor_extended_by else
                 "above, followed by "
                 + ", ".join(f"`{k}`" for k in successor_extended_by) + ", which extends it")
        lines += [f"**Superseded** by declaration v{superseded['version']} "
                  f"(`{superseded['by']}`, {where}): {superseded['why']} "
                  f"Kept as it ran; where both declare a regime, the later one's verdicts are "
                  f"the current ones.", ""]
    for base, why in extends.items():
        lines += [f"**Extends** `{base}` (the section before this one) with more regimes under "
                  f"its rules, in a declaration of its own (a declaration is never edited "
                  f"after its runs): {why}", ""]
    if decl.get("supersedes"):
        lines += ["Supersedes " + "; ".join(f"`{k}`" for k in decl["supersedes"])
                  + " (named in this declaration before its runs; that section follows, marked).", ""]
    lines += [f"Mode: **{mode_text(document)}**; "
              f"seeds {', '.join(map(str, decl['seeds']))}; "
              f"{len(document['runs'])} runs; wall time {document['wall_s'] / 60:.0f} min on "
              f"{document['machine']}; finished {document['finished']}.", ""]
    lines += _provenance(document)
    lines += _partial(document)
    lines += _run_walls(document)
    lines += _failures(document)
    lines += ["**Setting.** " + decl["setting"], ""]
    if document.get("context"):
        lines += ["**Measured context.**", ""] + [f"- {line}" for line in document["context"]]
        lines.append("")
    target = ", ".join(f"{k} = {v}" for k, v in decl["target"].items()
                       if k not in PLOT_KEYS)
    if target:
        lines += [f"**Target and budget (declared).** {target}.", ""]
    seeds_run = sorted({r["seed"] for r in document["runs"]})
    if seeds_run != sorted(decl["seeds"]):
        lines += [f"Seeds with runs: {', '.join(map(str, seeds_run))} (the rest of the declared "
                  f"seeds did not run in the time available).", ""]
    lines += ["**Claims and verdicts.**", ""]
    for claim in decl["claims"]:
        summary = ev["claims"].get(claim["key"], {})
        closest = summary.get("closest_regime")
        # an extension's "headline" is only its first regime; the paper's is the base's
        first = "first regime" if extends else "headline regime"
        lines.append(f"- `{claim['key']}`: {claim['text']} — {first} "
                     f"({labels[decl['headline']]}): **{summary.get('headline_verdict') or 'not run'}**"
                     + (f"; closest regime: {labels[closest]}, **{summary['closest_verdict']}**."
                        if closest else "."))
    lines.append("")
    ran = [r for r in decl["regimes"] if r["key"] in ev["regimes"]]
    missing = [r for r in decl["regimes"] if r["key"] not in ev["regimes"]]
    lines += ["**Regimes.** " + "; ".join(
        f"{r['label']}" + (f" (`{_settings(r['settings'])}`)" if r["settings"] else "")
        for r in ran) + "."]
    if missing:
        lines += ["", "Declared but not run in this results file: "
                  + "; ".join(r["label"] for r in missing) + "."]
    lines += ["", "Verdict per claim and regime:", "", "```",
              format_table(["claim", *[r["label"] for r in ran]],
                           [[c["key"], *[ev["regimes"][r["key"]]["claims"][c["key"]]["verdict"]
                                         for r in ran]] for c in decl["claims"]]), "```", ""]
    lines += ["Every comparison (effect: points, or the ratio baseline / method for times and "
              "traffic; 95% t-interval over paired seeds):", ""]
    lines += ["```", format_table(VERDICT_HEADERS, verdict_rows(document)), "```", ""]
    metrics = decl["target"].get("report_metrics")
    if metrics:
        lines += ["Per arm (mean ± sd over seeds):", "", "```",
                  format_table(["regime", "arm", "seeds", *metrics],
                               arm_rows(document, metrics)), "```", ""]
    for name in document.get("plots", []):
        lines += [f"![{name}](reproductions/{name})", ""]
    if decl["differences"]:
        lines += ["**What differs from the paper.**", ""]
        lines += [f"- {d}" for d in decl["differences"]]
        lines.append("")
    for note in document.get("notes", []):
        lines += [f"> {note}", ""]
    return "\n".join(lines)


def _provenance(document: dict) -> list[str]:
    """Which commit each invocation ran (declaration included), and uncommitted changes."""
    parts = []
    for run in document.get("code", []):
        if not run.get("commit"):
            continue
        dirty = run.get("uncommitted") or []
        parts.append(f"`{run['commit'][:10]}` (started {run.get('started', '?')}"
                     + (f"; uncommitted changes in {', '.join(dirty)}" if dirty else
                        "; no uncommitted changes under ml/ and bench/") + ")")
    if not parts:
        return []
    return ["Code and declaration as run: commit " + ", then ".join(parts) + ".", ""]


def partial_status(document: dict) -> list[str]:
    """What of the declared sweep (regimes x arms x seeds) has no runs: empty when complete."""
    decl = document["declaration"]
    arms = [a["label"] for a in decl["arms"]]
    have = {(r["regime"], r["arm"], r["seed"]) for r in document["runs"]}
    missing, incomplete = [], []
    for regime in decl["regimes"]:
        count = sum((regime["key"], a, s) in have for a in arms for s in decl["seeds"])
        if count == 0:
            missing.append(regime["label"])
        elif count < len(arms) * len(decl["seeds"]):
            incomplete.append(f"{regime['label']} ({count} of "
                              f"{len(arms) * len(decl['seeds'])} runs)")
    lines = []
    if missing:
        lines.append(f"{len(decl['regimes']) - len(missing)} of {len(decl['regimes'])} declared "
                     f"regimes have runs; not run: {'; '.join(missing)}")
    if incomplete:
        lines.append("Stopped inside a regime: " + "; ".join(incomplete))
    return lines


def _run_walls(document: dict) -> list[str]:
    """Per regime: runs, the sum of their wall times (runs overlap with --jobs), and how many
    stopped before a round that could not end within the budget."""
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    parts = []
    for key, label in labels.items():
        runs = [r for r in document["runs"] if r["regime"] == key]
        if not runs:
            continue
        early = sum(1 for r in runs if r.get("stopped_before_budget"))
        cpu = [r["cpu_s"] for r in runs if r.get("cpu_s") is not None]
        parts.append(f"{label}: {len(runs)} runs, {sum(r['wall_s'] for r in runs) / 60:.1f} "
                     f"min" + (f" ({sum(cpu) / 60:.1f} CPU-min over the {len(cpu)} runs that "
                               f"recorded it)" if cpu else "")
                     + (f", {early} stopped before a round that could not end within "
                               f"the budget" if early else ""))
    if not parts:
        return []
    jobs = document.get("jobs", 2)  # older results files ran two at once and did not say
    words = {2: "two", 3: "three", 4: "four"}
    at_once = (f"{words.get(jobs, jobs)} run at once with `--jobs {jobs}`" if jobs > 1
               else "one at a time")
    return ["Run wall times (sum over the runs of a regime, on the machine above, shared, under "
            f"`nice -n 19`; {at_once}; CPU time is the runs' own, "
            "independent of the load): " + "; ".join(parts) + ".", ""]


def _failures(document: dict) -> list[str]:
    """Runs that raised instead of finishing (e.g. a diverged model's non-finite loss)."""
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    failed = [r for r in document["runs"] if r.get("error")]
    diverged = [r for r in document["runs"] if r.get("diverged_at_s") is not None]
    lines = []
    if diverged:
        lines += ["**Diverged runs** (a non-finite loss from the given emulated time on; the "
                  "run went on to its budget and its measured accuracy counts): "
                  + "; ".join(f"{labels.get(r['regime'], r['regime'])}, {r['arm']}, seed "
                              f"{r['seed']} at {r['diverged_at_s']:.1f} s" for r in diverged)
                  + ".", ""]
    if failed:
        lines += ["**Failed runs** (no metrics; their seeds drop out of the pairs, so n falls): "
                  + "; ".join(f"{labels.get(r['regime'], r['regime'])}, {r['arm']}, seed "
                              f"{r['seed']}: {r['error']}" for r in failed) + ".", ""]
    return lines


def _partial(document: dict) -> list[str]:
    status = partial_status(document)
    if not status:
        return []
    return ["**Partial sweep.** " + ". ".join(status) + ". Verdicts below cover only the runs "
            "that finished.", ""]


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def write_markdown(folder: Path, out: Path) -> Path:
    """docs/reproductions.md from every ``*.json`` results file in ``folder``, in name order,
    except that a declaration that extends another follows it, and superseded results follow
    the declaration that replaces them (after its extensions)."""
    documents = {p.stem: load(p) for p in sorted(folder.glob("*.json"))}
    replaced = supersessions(documents.values())
    extending = {k: e for k, e in extensions(documents.values()).items()
                 if e["of"] in documents and k not in replaced}
    extended_by = {base: tuple(k for k, e in extending.items() if e["of"] == base)
                   for base in documents}
    order = []
    for key in documents:
        if key in replaced and replaced[key]["by"] in documents or key in extending:
            continue  # placed after its successor, or after the declaration it extends
        order.append(key)
        order += extended_by[key]
        for old, s in replaced.items():
            if s["by"] == key and old in documents:
                order += [old, *extended_by[old]]
    sections = [markdown_section(documents[k], replaced.get(k),
                                 extended_by.get(replaced[k]["by"], ()) if k in replaced else ())
                for k in order]
    out.write_text(HEADER + "\n" + "\n".join(sections))
    return out


def main() -> None:
    import argparse

    from ml.reproduction.harness import save

    parser = argparse.ArgumentParser(description="Regenerate docs/reproductions.md from the "
                                                 "results JSON in docs/reproductions/")
    parser.add_argument("--plots", action="store_true",
                        help="also redraw every results file's plots (e.g. after a sweep was "
                             "stopped before it drew them)")
    parser.add_argument("--effects", action="store_true",
                        help="also redraw the effect plot each results file lists (e.g. after "
                             "a change to how it is drawn), leaving the results files as "
                             "they are")
    args = parser.parse_args()
    folder = default_results_dir()
    if args.effects:
        for path in sorted(folder.glob("*.json")):
            document = load(path)
            name = f"{document['declaration']['key']}-effects.png"
            if name in document.get("plots", []):
                plot_effects(document, folder / name)
    if args.plots:
        for path in sorted(folder.glob("*.json")):
            document = load(path)
            document["plots"] = write_plots(document, folder)
            save(document, path)
    out = write_markdown(folder, folder.parent / "reproductions.md")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
