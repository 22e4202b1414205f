"""The harness end to end on constructed runs: pairing, evaluation, JSON, table, docs."""
import json

import pytest

from ml.reproduction import harness, report
from ml.reproduction.curves import first_crossing
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime

DECLARATION = Declaration(
    key="toy", paper="Toy paper", arxiv="0000.00000", setting="constructed runs",
    claims=(
        Claim("acc", "A beats B by 5 points.",
              (Comparison("a", "b", "accuracy", "difference", "higher", 5.0, 100.0),)),
        Claim("speed", "A is 1.5x faster than B.",
              (Comparison("a", "b", "time_s", "ratio", "lower", 1.5),)),
        Claim("tau", "tau is below 0.5.",
              (Comparison("a", "tau = 0.5", "tau", "difference", "lower", 0.0,
                          reference=0.5, units="tau"),)),
    ),
    arms=(Arm("a", "method-a"), Arm("b", "method-b")),
    regimes=(Regime("easy", "easy regime"), Regime("hard", "hard regime")),
    headline="hard", seeds=(0, 1, 2, 3, 4), target={"accuracy": 0.9},
    differences=("nothing is real",))


def record(regime, arm, seed, accuracy, time_s, tau=0.2):
    return {"regime": regime, "arm": arm, "seed": seed,
            "metrics": {"accuracy": accuracy, "time_s": time_s, "tau": tau},
            "censored": [], "curve": {"time_s": [1.0, 2.0], "accuracy": [0.5, accuracy]},
            "wall_s": 0.1}


def runs():
    out = []
    for seed in range(5):
        jitter = 0.002 * (seed - 2)
        # easy: A is 8 points better and twice as fast; hard: A is 1 point worse
        out.append(record("easy", "a", seed, 0.90 + jitter, 10.0 + seed))
        out.append(record("easy", "b", seed, 0.82 + 2 * jitter, 2 * (10.0 + seed) * 1.01))
        out.append(record("hard", "a", seed, 0.80 + jitter, 10.0 + seed))
        out.append(record("hard", "b", seed, 0.81 - jitter, 10.0 + seed + 0.1 * (seed - 2)))
    return out


def test_evaluation_pairs_by_seed_and_applies_the_rule():
    evaluation = harness.evaluate(DECLARATION, runs())
    easy = evaluation["regimes"]["easy"]["claims"]
    hard = evaluation["regimes"]["hard"]["claims"]
    assert easy["acc"]["verdict"] == "holds"
    assert easy["acc"]["comparisons"][0]["shown"]["mean"] == pytest.approx(8.0)
    assert easy["speed"]["verdict"] == "holds"
    assert easy["speed"]["comparisons"][0]["shown"]["mean"] == pytest.approx(2.02)
    assert hard["acc"]["verdict"] == "reversed"
    assert hard["speed"]["verdict"] == "not shown"
    assert easy["tau"]["verdict"] == "holds"  # tau 0.2 in every seed, against the constant 0.5
    assert easy["tau"]["comparisons"][0]["shown"]["mean"] == pytest.approx(0.3)
    summary = evaluation["claims"]["acc"]
    assert summary["headline_verdict"] == "reversed"
    assert (summary["closest_regime"], summary["closest_verdict"]) == ("easy", "holds")


def test_a_seed_missing_from_one_arm_is_left_out_of_the_pairs():
    partial = [r for r in runs() if not (r["arm"] == "b" and r["seed"] == 4)]
    row = harness.evaluate(DECLARATION, partial)["regimes"]["easy"]["claims"]["acc"]
    assert row["comparisons"][0]["seeds"] == [0, 1, 2, 3]


def test_results_round_trip_and_render(tmp_path):
    document = harness.results_document(DECLARATION, runs(), mode="full", wall_s=12.0)
    document["plots"] = report.write_plots(document, tmp_path)
    path = tmp_path / "toy.json"
    harness.save(document, path)
    loaded = harness.load(path)
    assert loaded["evaluation"]["claims"]["acc"]["closest_regime"] == "easy"
    assert json.loads(path.read_text())["declaration"]["seeds"] == [0, 1, 2, 3, 4]
    assert sorted(loaded["plots"]) == ["toy-easy-accuracy.png", "toy-effects.png",
                                       "toy-hard-accuracy.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in loaded["plots"])
    table = report.verdict_table(loaded)
    assert table.splitlines()[0].startswith("regime")
    assert "reversed" in table and "holds" in table
    markdown = report.write_markdown(tmp_path, tmp_path / "reproductions.md").read_text()
    assert "## Toy paper (arXiv 0000.00000)" in markdown
    assert "`acc`: A beats B by 5 points. — headline regime (hard regime): **reversed**; " \
           "closest regime: easy regime, **holds**." in markdown
    assert "![toy-effects.png](reproductions/toy-effects.png)" in markdown
    assert "Partial sweep" not in markdown


def test_a_partial_sweep_is_marked_in_the_docs(tmp_path):
    complete = harness.results_document(DECLARATION, runs(), mode="full", wall_s=1.0)
    assert report.partial_status(complete) == []
    assert "Partial sweep" not in report.markdown_section(complete)
    # the sweep stopped inside "hard": seeds 3 and 4 of arm b, and all of seed 4, missing
    stopped = [r for r in runs() if not (r["regime"] == "hard" and r["seed"] >= 3
                                         and (r["arm"] == "b" or r["seed"] == 4))]
    document = harness.results_document(DECLARATION, stopped, mode="full", wall_s=1.0)
    assert report.partial_status(document) == ["Stopped inside a regime: hard regime (7 of 10 "
                                                "runs)"]
    only_easy = [r for r in runs() if r["regime"] == "easy"]
    document = harness.results_document(DECLARATION, only_easy, mode="subset", wall_s=1.0)
    document["code"] = [{"commit": "0123456789abcdef", "uncommitted": [],
                         "started": "2026-01-01T00:00:00+00:00"}]
    section = report.markdown_section(document)
    assert "**Partial sweep.** 1 of 2 declared regimes have runs; not run: hard regime." \
        in section
    assert "(sum over the runs of a regime" in section and "easy regime: 10 runs, 0.0 min" \
        in section
    for run in document["runs"][:4]:
        run["cpu_s"] = 30.0
    assert "easy regime: 10 runs, 0.0 min (2.0 CPU-min over the 4 runs that recorded it)" \
        in report.markdown_section(document)
    failed = document["runs"][0]
    failed.update(error="WireError: value: Must be a finite number.",
                  metrics=dict.fromkeys(failed["metrics"]))
    section = report.markdown_section(document)
    assert "**Failed runs** (no metrics; their seeds drop out of the pairs, so n falls): easy " \
           "regime, a, seed 0: WireError: value: Must be a finite number." in section
    assert report.arm_rows(document, ["accuracy"])[0][:3] == ["easy regime", "a", "5 (1 failed)"]
    document["runs"][1]["diverged_at_s"] = 3.3
    assert "**Diverged runs** (a non-finite loss from the given emulated time on; the run went " \
           "on to its budget and its measured accuracy counts): easy regime, b, seed 0 at 3.3 s" \
        in report.markdown_section(document)
    assert "commit `0123456789` (started 2026-01-01T00:00:00+00:00; no uncommitted changes" \
        in section


def test_the_mode_says_what_of_the_declared_sweep_ran():
    """A sweep stopped part-way, or run with a regime skipped, is not called plainly full."""
    complete = harness.results_document(DECLARATION, runs(), mode="full", wall_s=1.0)
    assert harness.mode_text(complete) == "full"
    assert "Mode: **full**; seeds 0, 1, 2, 3, 4; 20 runs;" in report.markdown_section(complete)
    stopped = harness.results_document(DECLARATION, runs()[:17], mode="full", wall_s=1.0)
    assert harness.completion(stopped) == {"declared": 20, "done": 17, "skipped": [],
                                           "missing": 3}
    assert harness.mode_text(stopped) == "full, stopped: 17 of 20 declared runs"
    assert "Mode: **full, stopped: 17 of 20 declared runs**; seeds 0, 1, 2, 3, 4; 17 runs;" \
        in report.markdown_section(stopped)
    easy = [r for r in runs() if r["regime"] == "easy"]
    # a regime the bench could not run (its note, as bench.run_bench writes it)
    skipped = harness.results_document(DECLARATION, easy, mode="full", wall_s=1.0,
                                       notes=[harness.skip_note("hard regime", "no data")])
    assert harness.mode_text(skipped) == "full, 1 regime skipped: 10 of 20 declared runs"
    skipped["runs"] = skipped["runs"][:-1]  # ... and stopped before the last run of the other
    assert harness.mode_text(skipped) == \
        "full, stopped, 1 regime skipped: 9 of 20 declared runs"
    # a subset chose what to leave out: not called stopped
    subset = harness.results_document(DECLARATION, easy, mode="subset", wall_s=1.0)
    assert harness.mode_text(subset) == "subset: 10 of 20 declared runs"
    failed = [dict(r, error="RuntimeError: x") if r["seed"] == 0 else r for r in runs()]
    assert harness.mode_text(harness.results_document(DECLARATION, failed, mode="full",
                                                      wall_s=1.0)) == "full"  # they ran


def test_the_time_to_target_is_interpolated_between_evaluations():
    crossing = first_crossing([2.0, 4.0, 6.0], [0.5, 0.7, 0.9], [10.0, 20.0, 30.0], 0.8, 10.0)
    assert (crossing.time_s, crossing.traffic, crossing.censored) == (5.0, 25.0, False)
    never = first_crossing([2.0, 4.0, 12.0], [0.5, 0.7, 0.95], [10.0, 20.0, 30.0], 0.8, 10.0)
    assert (never.time_s, never.traffic, never.censored) == (10.0, 20.0, True)


def test_a_declaration_rejects_unknown_arms_and_headlines():
    with pytest.raises(ValueError, match="unknown arm"):
        Declaration(key="x", paper="x", arxiv="x", setting="x",
                    claims=(Claim("c", "c", (Comparison("a", "zz", "m", "difference", "higher",
                                                        1.0),)),),
                    arms=(Arm("a", "a"),), regimes=(Regime("r", "r"),), headline="r",
                    seeds=(0,), target={})
    with pytest.raises(ValueError, match="headline"):
        Declaration(key="x", paper="x", arxiv="x", setting="x", claims=(), arms=(),
                    regimes=(Regime("r", "r"),), headline="q", seeds=(0,), target={})


def test_a_superseded_declaration_follows_its_successor_marked(tmp_path):
    """A new declaration names the results it replaces; the old section stays, after it."""
    from dataclasses import replace

    old = harness.results_document(DECLARATION, runs(), mode="full", wall_s=1.0)
    old["declaration"].pop("version"), old["declaration"].pop("supersedes")  # a v1-era file
    harness.save(old, tmp_path / "toy.json")
    new = replace(DECLARATION, key="toy_v2", version=2,
                  supersedes={"toy": "its budget fitted no round."})
    harness.save(harness.results_document(new, runs(), mode="full", wall_s=1.0),
                 tmp_path / "toy_v2.json")
    harness.save(harness.results_document(replace(DECLARATION, key="aaa"), runs(),
                                          mode="full", wall_s=1.0), tmp_path / "aaa.json")
    markdown = report.write_markdown(tmp_path, tmp_path / "reproductions.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Toy paper (arXiv 0000.00000)",
                        "## Toy paper, declaration v2 (arXiv 0000.00000)",
                        "## Toy paper, declaration v1 (superseded) (arXiv 0000.00000)"]
    assert "**Superseded** by declaration v2 (`toy_v2`, the section before this one): its " \
           "budget fitted no round. Kept as it ran" in markdown
    assert harness.supersessions([harness.load(tmp_path / "toy.json")]) == {}


def test_split_fl_v2_is_a_new_declaration_with_the_fixes():
    from ml.reproduction import split_fl, split_fl_v2

    v1, v2 = split_fl.DECLARATION, split_fl_v2.DECLARATION
    assert v1.arm("mergesfl").overrides["top_lr_scaling"] == "linear"  # as it ran
    assert v2.key != v1.key and v2.version == 2 and v1.key in v2.supersedes
    assert not set(v2.seeds) & (set(v1.seeds) | {0, 1, 2, 3, 4, 100, 101, 102})
    assert len(v2.seeds) >= 5
    for label in ("mergesfl", "parallelsfl"):
        assert v2.arm(label).overrides["top_lr_scaling"] == "none"
    budgets = {r.key: r.settings.get("budget_s", v2.target["budget_s"]) for r in v2.regimes}
    workers = {r.key: r.settings.get("workers", split_fl.BASE["workers"]) for r in v2.regimes}
    assert all(budgets[k] == split_fl_v2.budget_for(workers[k]) for k in budgets)
    assert (budgets["workers-40"], budgets["workers-80"]) == (40.0, 80.0)


def test_split_fl_v2_regimes_extends_v2_with_v1s_other_regimes_under_its_rules():
    from ml.reproduction import split_fl, split_fl_v2, split_fl_v2_regimes

    v1, v2, more = (split_fl.DECLARATION, split_fl_v2.DECLARATION,
                    split_fl_v2_regimes.DECLARATION)
    assert more.key not in (v1.key, v2.key) and v2.key in more.extends and not more.supersedes
    assert (more.claims, more.arms, more.seeds) == (v2.claims, v2.arms, v2.seeds)
    assert {k: v for k, v in more.target.items() if k != "budget_rule"} == \
        {k: v for k, v in v2.target.items() if k != "budget_rule"}
    declared = {r.key for r in v1.regimes} - {r.key for r in v2.regimes} - {"cifar10-resnet"}
    assert {r.key for r in more.regimes} == declared
    budgets = {r.key: r.settings.get("budget_s", more.target["budget_s"]) for r in more.regimes}
    assert budgets == {"link-50": 40.0, "link-1000": 12.0, "dirichlet": 20.0,
                       "equal-participation": 20.0, "label-pattern": 20.0, "patho-1": 20.0}
    for regime in more.regimes:  # only the budget differs from v1's regime
        old = {k: v for k, v in v1.regime(regime.key).settings.items() if k != "budget_s"}
        assert {k: v for k, v in regime.settings.items() if k != "budget_s"} == old
    assert "equal-participation regime" in more.setting and "merged top step at lr" in \
        more.setting


def test_a_declaration_cannot_extend_what_it_supersedes():
    from dataclasses import replace

    with pytest.raises(ValueError, match="extends"):
        replace(DECLARATION, key="toy_more", extends={"toy_v2": "x"}, supersedes={"toy_v2": "y"})
    with pytest.raises(ValueError, match="extends"):
        replace(DECLARATION, extends={"toy": "itself"})


def test_an_extending_declaration_follows_the_one_it_extends(tmp_path):
    """More regimes under v2's rules: their section right after v2's, before v1 (superseded)."""
    from dataclasses import replace

    def save(declaration, stem):
        harness.save(harness.results_document(declaration, runs(), mode="full", wall_s=1.0),
                     tmp_path / f"{stem}.json")

    save(DECLARATION, "toy")
    save(replace(DECLARATION, key="toy_v2", version=2, supersedes={"toy": "it collapsed."}),
         "toy_v2")
    save(replace(DECLARATION, key="toy_v2_regimes", version=2,
                 extends={"toy_v2": "two more regimes."}), "toy_v2_regimes")
    save(replace(DECLARATION, key="toy_v2_a", paper="Other paper"), "toy_v2_a")  # sorts between
    markdown = report.write_markdown(tmp_path, tmp_path / "reproductions.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Toy paper, declaration v2 (arXiv 0000.00000)",
                        "## Toy paper, declaration v2, more regimes (arXiv 0000.00000)",
                        "## Toy paper, declaration v1 (superseded) (arXiv 0000.00000)",
                        "## Other paper (arXiv 0000.00000)"]
    assert "**Extends** `toy_v2` (the section before this one) with more regimes under its " \
           "rules" in markdown and "two more regimes." in markdown
    assert "(`toy_v2`, above, followed by `toy_v2_regimes`, which extends it): it collapsed." \
        in markdown
    assert "first regime (hard regime): **reversed**" in markdown
    assert harness.extensions([harness.load(tmp_path / "toy_v2_regimes.json")]) == \
        {"toy_v2_regimes": {"of": "toy_v2", "why": "two more regimes."}}


def test_a_regime_without_pairs_is_never_the_closest():
    """A sweep stopped after one arm's run in a regime: that regime gives no claim a verdict."""
    stopped = runs() + [record("zzz", "a", 0, 0.99, 1.0)]
    declaration = Declaration(**{**DECLARATION.__dict__, "regimes": (
        *DECLARATION.regimes, Regime("zzz", "stopped regime"))})
    summary = harness.evaluate(declaration, stopped)["claims"]["speed"]
    assert "zzz" not in summary["verdicts"] and summary["closest_regime"] == "easy"


def run_in_which_process(regime, arm, seed, context):
    """A module-level run (spawned processes import it) that records its process id."""
    import os
    return {"regime": regime.key, "arm": arm.label, "seed": seed,
            "metrics": {"pid": os.getpid()}, "wall_s": 0.0}


def test_parallel_runs_each_get_a_fresh_process_and_keep_the_job_order():
    jobs = harness.plan_jobs(DECLARATION, ["easy"], [0, 1])
    records = harness.run_all(DECLARATION, run_in_which_process, jobs, {}, processes=2,
                              log=lambda line: None)
    assert [(r["regime"], r["arm"], r["seed"]) for r in records] == [
        (regime.key, arm.label, seed) for regime, arm, seed in jobs]
    pids = [r["metrics"]["pid"] for r in records]
    assert len(set(pids)) == len(jobs)  # no process ran two jobs
