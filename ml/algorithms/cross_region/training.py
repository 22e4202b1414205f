"""Setting up and running one cross-region training: corpus, regions, replicas, WAN, metrics.

Shared by the three methods; only the :class:`~.outer_loop.SyncPolicy` differs. The corpus is
byte-tokenised, its last 10% held out, and the rest cut into one contiguous shard per region
(the regions' data differ, as in cross-region training). Every replica starts from the same
initial model. Held-out perplexity is measured on region 0's replica, as the authors' code
evaluates rank 0's model.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ml.algorithms.cross_region.config import DiLoCoConfig
from ml.algorithms.cross_region.outer_loop import OuterLoop, SyncPolicy
from ml.algorithms.cross_region.replica import Replica, held_out_loss
from ml.algorithms.cross_region.wan import EmulatedWorkload, WanEmulator
from ml.data.text import ByteTokenizer, SequenceDataset, load_corpus, shard, train_val_split
from ml.method_run import check_cancelled, generator, seeded_run, torch_device
from ml.models.transformer import DecoderConfig, DecoderLM
from ml.reporting import Reporter
from ml.testbed import Testbed, resolve_testbed

VAL_FRACTION = 0.1
EVAL_BATCH = 64


@dataclass
class Setup:
    """Everything a run trains with, before the policy is chosen."""

    device: torch.device
    model: DecoderLM
    replicas: list[Replica]
    val: SequenceDataset
    wan: WanEmulator


def build_setup(config: DiLoCoConfig) -> Setup:
    """Corpus shards, replicas of one initial model, and the emulated WAN of ``config``."""
    device = torch_device(config.device)
    tokens = ByteTokenizer().encode(load_corpus(config.dataset))
    train, val = train_val_split(tokens, VAL_FRACTION)
    model_cfg = DecoderConfig(vocab_size=ByteTokenizer.vocab_size, d_model=config.d_model,
                              n_layers=config.layers, n_heads=config.heads,
                              d_ff=3 * config.d_model, max_seq_len=config.seq_len)
    with seeded_run(config.seed, device):
        model = DecoderLM(model_cfg)
    total_steps = config.rounds * config.inner_steps
    replicas = [
        Replica(copy.deepcopy(model), SequenceDataset(shard(train, config.workers, m), config.seq_len),
                config.batch_size, generator(config.seed, "batches", m), config.inner_lr,
                config.weight_decay, config.warmup_steps, total_steps, device)
        for m in range(config.workers)]
    testbed = _with_wan_overrides(resolve_testbed(config.testbed, config.workers), config)
    real_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    workload = EmulatedWorkload(
        real_params=real_params,
        params=config.emulated_params or real_params,
        tokens_per_step=config.emulated_tokens_per_step or config.batch_size * config.seq_len)
    return Setup(device, model, replicas, SequenceDataset(val, config.seq_len),
                 WanEmulator(testbed, workload))


def _with_wan_overrides(testbed: Testbed, config: DiLoCoConfig) -> Testbed:
    for region in testbed.workers:
        region.profile = region.profile.with_overrides(
            uplink_mbps=config.wan_bandwidth_mbps, downlink_mbps=config.wan_bandwidth_mbps,
            rtt_ms=config.wan_rtt_ms)
    return testbed


def train(config: DiLoCoConfig, reporter: Reporter,
          make_policy: Callable[[Setup], SyncPolicy]) -> dict:
    """Run ``config.rounds × config.inner_steps`` steps under the policy; report; summarise."""
    setup = build_setup(config)
    policy = make_policy(setup)
    loop = OuterLoop(setup.replicas, policy, setup.wan)
    total = config.rounds * config.inner_steps
    reporter.log(f"{len(setup.replicas)} regions, {len(policy.fragments)} fragment(s), "
                 f"τ = {loop.tau} steps, step {setup.wan.step_seconds:.3f} s emulated, "
                 f"{total} steps")
    wall_start = time.perf_counter()
    loss_sum, loss_count, last = 0.0, 0, {}
    for t in range(1, total + 1):
        loss_sum += loop.step()
        loss_count += 1
        if t % config.eval_every == 0 or t == total:
            last = _report(config, reporter, setup, loop, t, loss_sum / loss_count)
            loss_sum, loss_count = 0.0, 0
        if t % config.eval_every == 0 or t % config.inner_steps == 0:
            check_cancelled(reporter, f"at step {t}")
    return _summary(loop, setup, last, time.perf_counter() - wall_start)


def _report(config: DiLoCoConfig, reporter: Reporter, setup: Setup, loop: OuterLoop,
            step: int, train_loss: float) -> dict[str, float]:
    eval_loss = held_out_loss(setup.replicas[0].model, setup.val, config.eval_windows,
                              EVAL_BATCH, setup.device)
    now = setup.wan.now()
    values = {
        "loss": train_loss,
        "eval_loss": eval_loss,
        "perplexity": math.exp(min(eval_loss, 50.0)),
        "traffic_bytes": float(setup.wan.traffic_bytes),
        "sim_time_s": now,
        "waiting_time_s": loop.stats.blocked_s,
    }
    for name, value in values.items():
        reporter.metric(name, step, value, now)
    for p, staleness in enumerate(loop.staleness()):
        reporter.metric(f"staleness/fragment-{p}", step, staleness, now)
    reporter.log(f"step {step}: loss {train_loss:.3f}, held-out perplexity "
                 f"{values['perplexity']:.2f}, {now:.0f} s emulated")
    return values


def _summary(loop: OuterLoop, setup: Setup, final: dict[str, float], wall_s: float) -> dict:
    policy = loop.policy
    fragments = []
    for p, frag in enumerate(policy.fragments):
        intervals = loop.stats.send_intervals[p]
        fragments.append({
            "params": frag.numel, "payload_bytes": loop.payload[p], "overlap_steps": loop.tau[p],
            "sends": loop.stats.sends[p],
            "mean_staleness": sum(intervals) / len(intervals) if intervals else None,
            "max_staleness": max(intervals, default=None),
        })
    schedule = policy.schedule
    return {
        "final": final,
        "steps": loop.step_count,
        "step_time_s": setup.wan.step_seconds,
        "send_period": getattr(schedule, "period", None),
        "fragments": fragments,
        "wall_time_s": wall_s,
        "testbed": setup.wan.testbed.describe(),
    }
