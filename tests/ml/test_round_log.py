"""RoundLog: the standard points of a round, and one readable log line per round."""
from ml.fl.reporting import RoundLog
from ml.reporting import MemoryReporter
from ml.testbed.presets import resolve_testbed


def test_it_writes_one_readable_line_per_round():
    reporter = MemoryReporter()
    testbed = resolve_testbed("local-3", workers=2)
    log = RoundLog(reporter, testbed)
    log.round(1, 0.32224428714666, 1.61264, evaluation=(0.587, 1.87))
    log.round(2, 4.5, 1.2)
    assert reporter.logs[0].startswith(
        "round 1: accuracy 58.7% · test loss 1.87 · training loss 1.613 · round latency 322 ms"
        " · traffic ")
    assert reporter.logs[1].startswith("round 2: training loss 1.2 · round latency 4.5 s")
    assert {p.name for p in reporter.points} >= {"accuracy", "loss", "train_loss",
                                                 "round_time_s", "traffic_bytes", "sim_time_s"}
