"""IMB-NAS (arXiv 2210.00136): adapting a supernet trained on balanced data to a long-tailed
target, and its baselines.

Importing this package registers ``imb-nas``, ``imb-nas-full-search``, ``imb-nas-finetune-ce``
and ``imb-nas-finetune-rw`` (methods.py); one run is in runner.py.
"""
from ml.algorithms.neural_architecture_search import methods  # noqa: F401  (registers them)
from ml.algorithms.neural_architecture_search.config import ImbNasConfig
from ml.algorithms.neural_architecture_search.runner import run_strategy

__all__ = ["ImbNasConfig", "run_strategy"]
