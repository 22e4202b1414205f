"""Metric points as agents post them."""


def point(name: str = "accuracy", step: int = 1, value: float = 0.5) -> dict:
    """A point whose clocks follow its step (sim 2 s, wall 0.25 s per step)."""
    return {"name": name, "step": step, "value": value, "sim_time_s": step * 2.0,
            "wall_time_s": step * 0.25}
