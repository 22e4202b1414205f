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
