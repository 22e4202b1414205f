"""Experiments, their runs (one per method) and the jobs that carry runs to agents."""
