"""One progress line per run while watching: ``fedavg [####----] round 2/3 accuracy 0.8123
ETA 4s``. On a terminal the lines are redrawn in place; elsewhere (a pipe, a log) a line is
printed each time a run's round or state changes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from estuary_client.watch import Ended, Event, Point, RunChanged

BAR_WIDTH = 20


@dataclass
class RunProgress:
    method: str
    metric: str
    rounds: int | None
    state: str
    step: int = 0
    value: float | None = None
    wall_time_s: float | None = None

    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (the run's own wall time per round)."""
        if not self.rounds or not self.step or self.wall_time_s is None \
                or self.state != "running":
            return None
        return self.wall_time_s / self.step * max(self.rounds - self.step, 0)

    def line(self, width: int) -> str:
        total = self.rounds or 0
        done = min(self.step / total, 1.0) if total else 0.0
        filled = int(done * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        parts = [self.method.ljust(width), f"[{bar}]",
                 f"round {self.step}/{total or '?'}", self.state]
        if self.value is not None:
            parts.append(f"{self.metric} {self.value:.4g}")
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return "  ".join(parts)


class ProgressBoard:
    """The progress lines of an experiment's runs, updated by :meth:`update` with watch events."""

    def __init__(self, runs: list[dict[str, Any]], metrics: dict[str, str], out: TextIO):
        self.out = out
        self.live = hasattr(out, "isatty") and out.isatty()
        self.runs = {str(run["id"]): RunProgress(run["method"], metrics[run["method"]],
                                                 run["config"].get("rounds"), run["state"])
                     for run in runs}
        self.order = list(self.runs)
        self.width = max((len(p.method) for p in self.runs.values()), default=0)
        self.drawn = 0
        self.printed: dict[str, str] = {}

    def update(self, event: Event) -> None:
        changed = None
        if isinstance(event, Point) and event.run in self.runs:
            progress = self.runs[event.run]
            if event.name == progress.metric and event.step >= progress.step:
                progress.step, progress.value = event.step, event.value
                progress.wall_time_s = event.wall_time_s
                changed = event.run
        elif isinstance(event, RunChanged) and str(event.run["id"]) in self.runs:
            changed = str(event.run["id"])
            self.runs[changed].state = event.run["state"]
        elif isinstance(event, Ended):
            for run in event.experiment["runs"]:
                if str(run["id"]) in self.runs:
                    self.runs[str(run["id"])].state = run["state"]
            changed = "all"
        if changed is not None:
            self._show(changed)

    def close(self) -> None:
        self.out.flush()

    def _show(self, changed: str) -> None:
        if self.live:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            for run_id in self.order:
                self.out.write("\x1b[2K" + self.runs[run_id].line(self.width) + "\n")
            self.drawn = len(self.order)
            self.out.flush()
            return
        for run_id in self.order if changed == "all" else [changed]:
            line = self.runs[run_id].line(self.width)
            # ETA moves with every point; print when the round or state changes.
            key = line.split("  ETA ")[0]
            if self.printed.get(run_id) != key:
                self.printed[run_id] = key
                print(line, file=self.out, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
