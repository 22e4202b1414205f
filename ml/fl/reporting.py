"""Per-round metrics and log lines of a federated run, reported against the testbed's clock."""
from __future__ import annotations

from ml.metrics_catalogue import summary_line
from ml.method_run import check_cancelled
from ml.reporting import Reporter
from ml.testbed.emulator import Testbed


class RoundLog:
    """Reports points at the testbed's time, remembers the last value of each metric, and
    writes one log line per round (what a researcher scans the run's log for)."""

    def __init__(self, reporter: Reporter, testbed: Testbed):
        self.reporter = reporter
        self.testbed = testbed
        self.final: dict[str, float] = {}

    def check_cancelled(self) -> None:
        check_cancelled(self.reporter)

    def metric(self, name: str, step: int, value: float, sim_time_s: float | None = None) -> None:
        """Report one point at ``sim_time_s`` (default: the testbed's time now, a pass over
        every device: give it when reporting one point per worker)."""
        self.reporter.metric(name, step, value,
                             self.testbed.now() if sim_time_s is None else sim_time_s)
        self.final[name] = float(value)

    def round(self, step: int, round_time_s: float, train_loss: float,
              evaluation: tuple[float, float] | None = None) -> None:
        """The standard points of one round: time, traffic (total and per kind), losses,
        and test accuracy/loss when ``evaluation`` is given."""
        self.metric("round_time_s", step, round_time_s)
        self.metric("sim_time_s", step, self.testbed.now())
        self.metric("traffic_bytes", step, self.testbed.traffic.total())
        for kind, nbytes in self.testbed.traffic.by_kind().items():
            self.metric(f"traffic_bytes/{kind}", step, nbytes)
        self.metric("train_loss", step, train_loss)
        shown = {"train_loss": train_loss}
        if evaluation is not None:
            accuracy, loss = evaluation
            self.metric("accuracy", step, accuracy)
            self.metric("loss", step, loss)
            shown = {"accuracy": accuracy, "loss": loss, **shown}
        shown.update(round_time_s=round_time_s, traffic_bytes=self.testbed.traffic.total())
        self.reporter.log(f"round {step}: {summary_line(shown)} "
                          f"(emulated time {self.testbed.now():.4g} s)")
