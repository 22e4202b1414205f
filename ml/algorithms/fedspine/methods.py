"""Registration of ``fedspine`` and its baselines in the catalogue."""
from __future__ import annotations

from ml.algorithms.fedspine.config import (FedLoRAConfig, FedSpineConfig, HetLoRAConfig,
                                           PruneThenFinetuneConfig)
from ml.algorithms.fedspine.engine import run_method
from ml.algorithms.fedspine.strategies import (FedSpineStrategy, FixedRankStrategy,
                                               HetLoRAStrategy, PruneFirstStrategy)
from ml.registry import Method, register
from ml.reporting import Reporter

METRICS = ("accuracy", "loss", "train_loss", "sparsity", "sparsity/<client>", "rank/<client>",
           "ratio/<client>", "completion_time_s/<client>", "round_time_s", "sim_time_s",
           "traffic_bytes", "memory_bytes", "memory_bytes/<client>", "inference_latency_ms",
           "inference_latency_ms/<client>", "inference_wall_ms", "params", "flops")


def run_fedspine(config: FedSpineConfig, reporter: Reporter) -> dict:
    return run_method("fedspine", config, FedSpineStrategy(config), reporter)


def run_fedlora(config: FedLoRAConfig, reporter: Reporter) -> dict:
    return run_method("fedlora", config, FixedRankStrategy(config), reporter)


def run_hetlora(config: HetLoRAConfig, reporter: Reporter) -> dict:
    return run_method("hetlora", config, HetLoRAStrategy(config), reporter)


def run_prune_then_finetune(config: PruneThenFinetuneConfig, reporter: Reporter) -> dict:
    return run_method("prune-then-finetune", config, PruneFirstStrategy(config), reporter)


FEDLORA = register(Method(
    name="fedlora", family="federated-fine-tuning",
    paper="FedIT / federated LoRA (Zhang et al., arXiv 2305.05644), homogeneous rank",
    summary="Clients fine-tune LoRA adapters of one rank on the frozen pre-trained base; the "
            "server averages the adapters (no pruning unless target_sparsity > 0).",
    config=FedLoRAConfig, run=run_fedlora, metrics=METRICS))

HETLORA = register(Method(
    name="hetlora", family="federated-fine-tuning",
    paper="Cho et al., Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation "
          "Models, EMNLP 2024",
    summary="Ranks by device capability, rank self-pruning, zero-padded sparsity-weighted "
            "aggregation of the adapters.",
    config=HetLoRAConfig, run=run_hetlora, metrics=METRICS))

PRUNE_THEN_FINETUNE = register(Method(
    name="prune-then-finetune", family="federated-fine-tuning",
    paper="Baseline (papers.md §4 [I]): structured pruning at a fixed ratio, then federated LoRA",
    summary="The base is pruned once (whole heads and FFN channels, by weight magnitude) at a "
            "fixed ratio, then clients fine-tune LoRA of one rank.",
    config=PruneThenFinetuneConfig, run=run_prune_then_finetune, metrics=METRICS))

FEDSPINE = register(Method(
    name="fedspine", family="federated-fine-tuning",
    paper="Yao et al., FedSpine: Federated Fine-tuning of LLMs with LoRA, Iterative Structured "
          "Pruning and a Bandit (arXiv 2501.02438)",
    summary="Clients fine-tune LoRA on the frozen base and iteratively prune whole heads and "
            "FFN channels ranked by smoothed LoRA-gradient importance; a smooth-UCB bandit on "
            "the server picks each client's pruning ratio and LoRA rank per round.",
    config=FedSpineConfig, run=run_fedspine,
    baselines=("fedlora", "hetlora", "prune-then-finetune"), metrics=METRICS))
