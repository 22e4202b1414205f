"""Template filters of the dashboard."""
from __future__ import annotations

import math

from django import template

register = template.Library()


@register.filter
def metric_value(value: float | None) -> str:
    """A metric for a table: 4 significant digits (0.8123, 1.25), thousands grouped for large
    counts (12,345,678 bytes), an em dash when absent."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: "42 s", "3 min 05 s", "2 h 07 min"."""
    if seconds is None:
        return "—"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def metric_in_unit(value: float | None, unit: str) -> str:
    """A metric with its catalogue unit: a fraction as a percent, bytes in kB/MB/GB, durations
    with their unit; otherwise as :func:`metric_value`."""
    if value is None or not math.isfinite(value):
        return metric_value(value)
    if unit == "fraction":
        return f"{value * 100:.4g}%"
    if unit == "bytes":
        for factor, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= factor:
                return f"{value / factor:.4g} {name}"
        return f"{value:.4g} B"
    if unit in ("s", "ms"):
        return f"{value:.4g} {unit}"
    return metric_value(value)
