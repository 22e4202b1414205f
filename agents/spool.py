"""Points and job outcomes the control plane could not take yet, kept on disk until it can.

One directory per device. ``<run_id>.points.json`` holds a run's unsent points,
``<run_id>.logs.json`` its unsent log lines as ``[seq, line]`` pairs, ``<job_id>.finish.json`` a
finish report that must follow them. Files are replaced atomically, so a crash leaves either
the old or the new content, never half of one. Resending is safe: ingestion is idempotent on
(run, name, step) for points and on (run, seq) for log lines.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_POINTS = ".points.json"
_LOGS = ".logs.json"
_FINISH = ".finish.json"


def _checked(object_id: str) -> str:
    """Ids come from the server; they still must not be able to name another file."""
    if not _ID.match(object_id):
        raise ValueError(f"unexpected id {object_id!r}")
    return object_id


class Spool:
    """Unsent points and finish reports of one device."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def points(self, run_id: str) -> list[dict]:
        path = self.directory / (_checked(run_id) + _POINTS)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return []

    def replace_points(self, run_id: str, points: list[dict]) -> None:
        """Make ``points`` the run's spooled points (an empty list removes the file)."""
        path = self.directory / (_checked(run_id) + _POINTS)
        if points:
            self._write(path, points)
        else:
            path.unlink(missing_ok=True)

    def set_aside(self, run_id: str) -> Path:
        """Keep points the server refused (4xx) out of the resend path, for a person to inspect."""
        path = self.directory / (_checked(run_id) + _POINTS)
        target = path.with_name(f"{run_id}.rejected.json")
        os.replace(path, target)
        return target

    def runs_with_points(self) -> list[str]:
        return sorted(p.name[: -len(_POINTS)] for p in self._glob("*" + _POINTS))

    def lines(self, run_id: str) -> list[tuple[int, str]]:
        """The run's spooled log lines as ``(seq, line)``, in order."""
        path = self.directory / (_checked(run_id) + _LOGS)
        try:
            return [(int(seq), str(line)) for seq, line in json.loads(path.read_text())]
        except FileNotFoundError:
            return []

    def replace_lines(self, run_id: str, lines: list[tuple[int, str]]) -> None:
        """Make ``lines`` the run's spooled log lines (an empty list removes the file)."""
        path = self.directory / (_checked(run_id) + _LOGS)
        if lines:
            self._write(path, [list(pair) for pair in lines])
        else:
            path.unlink(missing_ok=True)

    def runs_with_lines(self) -> list[str]:
        return sorted(p.name[: -len(_LOGS)] for p in self._glob("*" + _LOGS))

    def save_finish(self, job_id: str, report: dict) -> None:
        """Keep a finish report (``run_id``, ``state``, ``error``, ``result``) for later."""
        self._write(self.directory / (_checked(job_id) + _FINISH), report)

    def finishes(self) -> dict[str, dict]:
        return {p.name[: -len(_FINISH)]: json.loads(p.read_text()) for p in self._glob("*" + _FINISH)}

    def drop_finish(self, job_id: str) -> None:
        (self.directory / (_checked(job_id) + _FINISH)).unlink(missing_ok=True)

    def _glob(self, pattern: str) -> list[Path]:
        return list(self.directory.glob(pattern)) if self.directory.is_dir() else []

    def _write(self, path: Path, data: object) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        # Private like the credential beside it: run results are the owner's.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
