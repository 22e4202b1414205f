"""COMP (arXiv 2501.15255): post-training hybrid-granularity structured pruning with mask
tuning, and its baselines.

Importing this package registers ``comp``, ``llm-pruner``, ``llm-pruner-lora``,
``wanda-channel`` and ``layer-prune`` (methods.py); one job runs in runner.py.
"""
from ml.algorithms.llm_compression import methods  # noqa: F401  (registers the methods)
from ml.algorithms.llm_compression.config import CompConfig, PruneConfig
from ml.algorithms.llm_compression.runner import load_pruned, run_pruning

__all__ = ["CompConfig", "PruneConfig", "load_pruned", "run_pruning"]
