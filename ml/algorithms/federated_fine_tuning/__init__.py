"""Federated fine-tuning: FedSpine (arXiv 2501.02438), federated LoRA fine-tuning with iterative
structured pruning and an online bandit, with its baselines FedLoRA, HetLoRA and
prune-then-fine-tune — four strategies of one role program.

Modules: :mod:`.config` (configs), :mod:`.roles` (the server's round loop and the client role:
the program of every method), :mod:`.methods` (registration), :mod:`.strategies` (what each
method's server decides), :mod:`.training` (the client's prune-and-recover local round),
:mod:`.evaluation` (deployed models and their cost), :mod:`.task` (the pretrain-then-fine-tune
tasks and classifier), :mod:`.structure` (kept heads/channels, physically pruned models),
:mod:`.importance` (LoRA-gradient Taylor scores with EMA), :mod:`.adapters`
(heterogeneous-rank slices and aggregation), :mod:`.bandit` (S-UCB and the reward),
:mod:`.measure` (memory, latency, message sizes). See docs/methods/fedspine.md.
"""
from ml.algorithms.federated_fine_tuning.methods import (FEDLORA, FEDSPINE, HETLORA,
                                                         PRUNE_THEN_FINETUNE)

__all__ = ["FEDLORA", "FEDSPINE", "HETLORA", "PRUNE_THEN_FINETUNE"]
