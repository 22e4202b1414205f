"""COMP (papers.md §3): post-training hybrid-granularity structured pruning with mask tuning.

Importing this package registers ``comp`` and its baselines ``llm-pruner``, ``llm-pruner-lora``,
``wanda-channel`` and ``layer-prune`` (see :mod:`ml.algorithms.comp.method`).
"""
from ml.algorithms.comp.method import CompConfig, PruneConfig, load_pruned, run_pruning

__all__ = ["CompConfig", "PruneConfig", "load_pruned", "run_pruning"]
