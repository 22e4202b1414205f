"""Setting up one cross-region training: corpus, regions' replicas, the emulated WAN.

Shared by the three methods; only the :class:`~.outer_loop.SyncPolicy` differs. The corpus is
byte-tokenised with its last 10% held out, or (``tokenizer="bpe"``) tokenised by a BPE trained on
its training documents with every tenth document held out (:mod:`ml.models.pretraining`'s
split); the training tokens are cut into one contiguous shard per region (the regions' data
differ, as in cross-region training). Every replica starts from the same
initial model. Held-out perplexity is measured on region 0's replica, as the authors' code
evaluates rank 0's model.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ml.algorithms.cross_region.config import DiLoCoConfig
from ml.algorithms.cross_region.replica import Replica, held_out_loss
from ml.algorithms.cross_region.wan import EmulatedWorkload, WanEmulator
from ml.data.text import ByteTokenizer, SequenceDataset, load_corpus, shard, train_val_split
from ml.method_run import generator, seeded_run, torch_device
from ml.models.transformer import DecoderConfig, DecoderLM
from ml.testbed import Testbed, resolve_testbed

VAL_FRACTION = 0.1
EVAL_BATCH = 64


@dataclass
class Setup:
    """Everything a run trains with, before the policy is chosen."""

    device: torch.device
    model: DecoderLM
    replicas: list[Replica]  # the regions built (all by default), in region order
    val: SequenceDataset
    wan: WanEmulator
    train_tokens: torch.Tensor
    config: DiLoCoConfig

    def make_replica(self, region: int) -> Replica:
        """Region ``region``'s replica: a copy of the initial model, its shard, its batches."""
        config = self.config
        return Replica(copy.deepcopy(self.model),
                       SequenceDataset(shard(self.train_tokens, config.workers, region),
                                       config.seq_len),
                       config.batch_size, generator(config.seed, "batches", region),
                       config.inner_lr, config.weight_decay, config.warmup_steps,
                       config.rounds * config.inner_steps, self.device)

    def held_out_loss(self, model: DecoderLM) -> float:
        return held_out_loss(model, self.val, self.config.eval_windows, EVAL_BATCH,
                             self.device)


def build_setup(config: DiLoCoConfig, regions: Iterable[int] | None = None) -> Setup:
    """Corpus shards, the replicas of ``regions`` (default: all) of one initial model, and the
    emulated WAN of every region of ``config``."""
    device = torch_device(config.device)
    train, val, vocab_size = corpus_tokens(config)
    model_cfg = DecoderConfig(vocab_size=vocab_size, d_model=config.d_model,
                              n_layers=config.layers, n_heads=config.heads,
                              d_ff=3 * config.d_model, max_seq_len=config.seq_len)
    with seeded_run(config.seed, device):
        model = DecoderLM(model_cfg)
    testbed = _with_wan_overrides(resolve_testbed(config.testbed, config.workers), config)
    real_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    workload = EmulatedWorkload(
        real_params=real_params,
        params=config.emulated_params or real_params,
        tokens_per_step=config.emulated_tokens_per_step or config.batch_size * config.seq_len)
    setup = Setup(device, model, [], SequenceDataset(val, config.seq_len),
                  WanEmulator(testbed, workload), train, config)
    setup.replicas = [setup.make_replica(m)
                      for m in (range(config.workers) if regions is None else regions)]
    return setup


def corpus_tokens(config: DiLoCoConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(train tokens, held-out tokens, vocabulary size)`` of ``config``'s corpus and tokenizer."""
    if config.tokenizer == "bpe":
        from ml.data.images import default_data_dir
        from ml.models.pretraining import corpus_splits

        splits = corpus_splits(config.dataset, config.vocab_size,
                               default_data_dir() / "tokenizers")
        return splits.train_tokens, splits.val_tokens, splits.tokenizer.vocab_size
    tokens = ByteTokenizer().encode(load_corpus(config.dataset))
    train, val = train_val_split(tokens, VAL_FRACTION)
    return train, val, ByteTokenizer.vocab_size


def _with_wan_overrides(testbed: Testbed, config: DiLoCoConfig) -> Testbed:
    for region in testbed.workers:
        region.profile = region.profile.with_overrides(
            uplink_mbps=config.wan_bandwidth_mbps, downlink_mbps=config.wan_bandwidth_mbps,
            rtt_ms=config.wan_rtt_ms)
    return testbed
