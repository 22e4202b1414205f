"""``python -m ml``: list, run with --set/--config, JSON result, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
#: A quick pruning job (the tiny LM, briefly pre-trained) on local-3.
COMP_FAST = {"model_size": "tiny", "pretrain_steps": 30, "seq_len": 32, "calibration_size": 8,
             "batch_size": 4, "eval_windows": 4, "task_items": 20, "latency_repeats": 1,
             "testbed": "local-3"}


def ml(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ml", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_list_shows_every_method_with_paper_and_baselines(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["method", "family", "baselines", "paper"]
    splitfed = next(line for line in lines if line.startswith("splitfed"))
    assert "fedavg" in splitfed and "AAAI 2022" in splitfed
    assert any(line.startswith("fedavg ") and "McMahan" in line for line in lines)


def test_python_m_ml_run_writes_the_json_result_with_every_point(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": "digits", "rounds": 5, "testbed": "local-3"}))
    out = tmp_path / "out" / "result.json"
    done = ml("run", "fedavg", "--config", str(config), "--set", "rounds=2",
              "--set", "workers=3", "--set", 'testbed=[{"profile": "jetson-nx"}, '
              '{"profile": "jetson-tx2"}, {"profile": "h100"}]', "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["method"] == "fedavg"
    assert document["config"]["rounds"] == 2 and document["config"]["dataset"] == "digits"
    assert document["config"]["testbed"][1]["profile"] == "jetson-tx2"
    points = document["points"]
    accuracy = [p for p in points if p["name"] == "accuracy"]
    assert [p["step"] for p in accuracy] == [1, 2]
    assert document["result"]["final"]["accuracy"] == accuracy[-1]["value"]
    assert set(points[0]) == {"name", "step", "value", "sim_time_s", "wall_time_s"}
    # the summary table on stdout, the progress bar on stderr
    assert any(line.split()[:2] == ["accuracy", "2"] for line in done.stdout.splitlines())
    assert "2/2" in done.stderr


def test_quiet_prints_nothing(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "splitfed", "--set", "dataset=digits", "--set", "rounds=1",
                 "--set", "local_iterations=2", "--set", "testbed=local-3", "--out", str(out),
                 "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert json.loads(out.read_text())["result"]["final"]["traffic_bytes/features"] > 0


@pytest.mark.parametrize("args, message", [
    (["--set", "rounds=0"], "error: config.rounds: Input should be greater than or equal to 1"),
    (["--set", "rounds=many"], "error: config.rounds: "),
    (["--set", "colour=blue"], "error: config.colour: Extra inputs are not permitted"),
    (["--set", "testbed=jetson-9000"], "error: config.testbed: unknown testbed preset"),
    (["--set", "rounds"], "error: --set expects KEY=VALUE"),
])
def test_a_bad_value_exits_2_naming_the_field(args, message, tmp_path, capsys):
    assert main(["run", "fedavg", *args, "--out", str(tmp_path / "r.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_run_time_config_error_exits_2_naming_the_field(capsys):
    assert main(["run", "splitfed", "--set", "dataset=digits", "--set", "split_point=fc9",
                 "--set", "testbed=local-3"]) == 2
    assert "error: config.split_point: unknown split point 'fc9'" in capsys.readouterr().err


def test_an_unknown_method_exits_2(capsys):
    assert main(["run", "fedsgd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'fedsgd'; known: ")
    assert "fedavg" in err and "splitfed" in err


def test_distributed_roles_need_two_ranks(capsys):
    assert main(["run", "fedavg", "--distributed", "1"]) == 2
    assert "at least 2 ranks" in capsys.readouterr().err


def test_a_single_device_method_runs_distributed_in_one_rank_and_says_so(capsys, tmp_path):
    out = tmp_path / "comp.json"
    assert main(["run", "comp", "--distributed", "3", "--out", str(out),
                 *sum((["--set", f"{k}={json.dumps(v)}"] for k, v in COMP_FAST.items()), [])
                 ]) == 0
    assert "single-device method" in capsys.readouterr().err
    result = json.loads(out.read_text())["result"]
    assert result["execution"] == "distributed"
    assert result["single_device"] == "jetson-nx-01"  # local-3's first edge device
    assert 0 < result["final"]["achieved_ratio"] <= 1
