"""Per-round metrics of a federated run, reported against the testbed's clock."""
from __future__ import annotations

from ml.reporting import Cancelled, Reporter
from ml.testbed.emulator import Testbed


class RoundLog:
    """Reports points at the testbed's time and remembers the last value of each metric."""

    def __init__(self, reporter: Reporter, testbed: Testbed):
        self.reporter = reporter
        self.testbed = testbed
        self.final: dict[str, float] = {}

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` once the reporter says the run was cancelled."""
        if self.reporter.should_stop():
            raise Cancelled()

    def metric(self, name: str, step: int, value: float) -> None:
        self.reporter.metric(name, step, value, self.testbed.now())
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
        if evaluation is not None:
            accuracy, loss = evaluation
            self.metric("accuracy", step, accuracy)
            self.metric("loss", step, loss)
