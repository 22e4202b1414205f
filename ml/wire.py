"""Rules both ends of the agent wire share: the task name, metric points, batch and log limits.

The control plane (its serializers and settings), the agent (its Celery worker and HTTP
reporter) and ``python -m ml run`` (the in-memory reporter) all import this module, so a point
the CLI accepts is one an agent's server accepts too. Plain Python, no Django: ``ml`` must run
without the control plane.
"""
from __future__ import annotations

import math
import re

#: The Celery task each agent's worker defines and the control plane sends (only the name travels).
RUN_JOB_TASK = "estuary.run_job"

#: Metric names: the standard ones and per-entity series such as ``waiting_time_s/worker-03``.
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_.:/-]+$"
MAX_METRIC_NAME_CHARS = 100
#: Steps are stored as 64-bit integers and sent as JSON numbers: keep them exact in a double.
MAX_STEP = 2**53

#: Points in one ``POST /api/v1/runs/<id>/metrics/``.
MAX_POINTS_PER_BATCH = 5000
#: Lines in one ``POST /api/v1/runs/<id>/logs/``, and characters in one line.
MAX_LOG_LINES_PER_BATCH = 1000
MAX_LOG_LINE_CHARS = 10_000

#: Deepest nesting of arrays and objects the control plane parses in a request body.
MAX_JSON_DEPTH = 64

_METRIC_NAME = re.compile(METRIC_NAME_PATTERN)


class WireError(ValueError):
    """A value the other end would refuse; ``field`` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        # Crosses process boundaries intact (a process pool re-raises it in the parent).
        return (type(self), (self.field, self.message))


def check_metric_name(name: object) -> str:
    """Return ``name`` if the control plane accepts it as a metric name, else raise WireError."""
    if not isinstance(name, str):
        raise WireError("name", "Must be a string.")
    if not 1 <= len(name) <= MAX_METRIC_NAME_CHARS:
        raise WireError("name", f"Must be 1 to {MAX_METRIC_NAME_CHARS} characters.")
    if not _METRIC_NAME.fullmatch(name):  # match() would let a trailing newline through
        raise WireError("name", "Letters, digits and _ . : / - only.")
    return name


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_point(name: object, step: object, value: object, sim_time_s: object,
                wall_time_s: object = 0.0) -> dict:
    """The point as the wire carries it (``{name, step, value, sim_time_s, wall_time_s}``),
    or WireError naming the first field the control plane would refuse.

    Numbers must be numbers (a bool or a string is not), finite, and the step an integer in
    ``0..MAX_STEP``; times are ``>= 0``. numpy scalars are accepted through ``float``/``int``
    only when they are real numbers of the right kind.
    """
    check_metric_name(name)
    step = _integer("step", step)
    if not 0 <= step <= MAX_STEP:
        raise WireError("step", f"Must be between 0 and {MAX_STEP}.")
    value = _finite("value", value)
    sim_time_s = _finite("sim_time_s", sim_time_s, minimum=0.0)
    wall_time_s = _finite("wall_time_s", wall_time_s, minimum=0.0)
    return {"name": name, "step": step, "value": value, "sim_time_s": sim_time_s,
            "wall_time_s": wall_time_s}


def _integer(field: str, value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise WireError(field, "Must be an integer.")
    return int(value.__index__())


def _finite(field: str, value: object, minimum: float | None = None) -> float:
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise WireError(field, "Must be a number.")
    try:
        number = float(value)  # numpy and torch scalars convert; anything else is refused
    except (TypeError, ValueError):
        raise WireError(field, "Must be a number.") from None
    except OverflowError:  # a JSON integer beyond a double
        raise WireError(field, "Must be a finite number.") from None
    if not math.isfinite(number):
        raise WireError(field, "Must be a finite number.")
    if minimum is not None and number < minimum:
        raise WireError(field, f"Must be at least {minimum:g}.")
    return number
