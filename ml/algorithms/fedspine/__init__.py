"""FedSpine (arXiv 2501.02438): federated LoRA fine-tuning with iterative structured pruning and
an online bandit, with its baselines FedLoRA, HetLoRA and prune-then-fine-tune.

Modules: :mod:`.task` (the pretrain-then-fine-tune tasks and classifier), :mod:`.structure`
(kept heads/channels, physically pruned models), :mod:`.importance` (LoRA-gradient Taylor
scores with EMA), :mod:`.adapters` (heterogeneous-rank slices and aggregation), :mod:`.bandit`
(S-UCB and the reward), :mod:`.client` (prune-and-recover local rounds), :mod:`.strategies`
(what each method decides), :mod:`.engine` (the round loop and metrics), :mod:`.methods`
(registration). See docs/methods/fedspine.md.
"""
from ml.algorithms.fedspine.methods import FEDLORA, FEDSPINE, HETLORA, PRUNE_THEN_FINETUNE

__all__ = ["FEDLORA", "FEDSPINE", "HETLORA", "PRUNE_THEN_FINETUNE"]
