"""Registration of ``fedspine`` and its baselines: one entry per catalogue name, each the
family's one role program with its strategy (ml.algorithms.federated_fine_tuning.roles)."""
from __future__ import annotations

from functools import partial

from ml.algorithms.federated_fine_tuning.config import (FedLoRAConfig, FedSpineConfig,
                                                        HetLoRAConfig, PruneThenFinetuneConfig)
from ml.algorithms.federated_fine_tuning.roles import program_for
from ml.algorithms.federated_fine_tuning.strategies import (FedSpineStrategy,
                                                            FixedRankStrategy, HetLoRAStrategy,
                                                            PruneFirstStrategy)
from ml.distributed.run import run_emulated
from ml.registry import Method, register

METRICS = ("accuracy", "loss", "train_loss", "sparsity", "sparsity/<client>", "rank/<client>",
           "ratio/<client>", "completion_time_s/<client>", "round_time_s", "sim_time_s",
           "traffic_bytes", "traffic_bytes/lora", "waiting_time_s", "memory_bytes",
           "memory_bytes/<client>", "inference_latency_ms", "inference_latency_ms/<client>",
           "inference_wall_ms", "params", "flops")


def _entry(name: str, strategy, **fields) -> Method:
    """One catalogue entry: the family's program with ``strategy`` on the server; the
    emulated run executes every role of it in one process."""
    program = program_for(name, strategy)
    return register(Method(name=name, family="federated-fine-tuning", metrics=METRICS,
                           run=partial(run_emulated, program), program=program, **fields))


FEDLORA = _entry(
    "fedlora", FixedRankStrategy,
    paper="FedIT / federated LoRA (Zhang et al., arXiv 2305.05644), homogeneous rank",
    summary="Clients fine-tune LoRA adapters of one rank on the frozen pre-trained base; the "
            "server averages the adapters (no pruning unless target_sparsity > 0).",
    config=FedLoRAConfig)

HETLORA = _entry(
    "hetlora", HetLoRAStrategy,
    paper="Cho et al., Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation "
          "Models, EMNLP 2024",
    summary="Ranks by device capability, rank self-pruning, zero-padded sparsity-weighted "
            "aggregation of the adapters.",
    config=HetLoRAConfig)

PRUNE_THEN_FINETUNE = _entry(
    "prune-then-finetune", PruneFirstStrategy,
    paper="Baseline (FedSpine, arXiv 2501.02438; details ours): structured pruning at a fixed "
          "ratio, then federated LoRA",
    summary="The base is pruned once (whole heads and FFN channels, by weight magnitude) at a "
            "fixed ratio, then clients fine-tune LoRA of one rank.",
    config=PruneThenFinetuneConfig)

FEDSPINE = _entry(
    "fedspine", FedSpineStrategy,
    paper="Yao et al., FedSpine: Federated Fine-tuning of LLMs with LoRA, Iterative Structured "
          "Pruning and a Bandit (arXiv 2501.02438)",
    summary="Clients fine-tune LoRA on the frozen base and iteratively prune whole heads and "
            "FFN channels ranked by smoothed LoRA-gradient importance; a smooth-UCB bandit on "
            "the server picks each client's pruning ratio and LoRA rank per round.",
    config=FedSpineConfig,
    baselines=("fedlora", "hetlora", "prune-then-finetune"))
