"""IMB-NAS (papers.md §7): adapting a supernet trained on balanced data to a long-tailed target.

Importing this package registers ``imb-nas`` and its baselines ``imb-nas-full-search``,
``imb-nas-finetune-ce`` and ``imb-nas-finetune-rw`` (see :mod:`ml.algorithms.imbnas.method`).
"""
from ml.algorithms.imbnas.method import ImbNasConfig, run_strategy

__all__ = ["ImbNasConfig", "run_strategy"]
