"""FedSpine's mechanisms: physically pruned models, LoRA-gradient importance, iterative
pruning, the S-UCB bandit, heterogeneous-rank aggregation, and end-to-end runs of the methods.

Everything uses the ``tiny`` pre-trained base, trained once into a temporary cache.
"""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ml import registry
from ml.algorithms.federated_fine_tuning import FEDLORA, FEDSPINE, HETLORA, PRUNE_THEN_FINETUNE
from ml.algorithms.federated_fine_tuning.adapters import (EntryMeanAggregator, ZeroPadAggregator,
                                             scatter_state, slice_state)
from ml.algorithms.federated_fine_tuning.bandit import SmoothUCB, reward
from ml.algorithms.federated_fine_tuning.training import ClientData, Plan, Workspace, local_round
from ml.algorithms.federated_fine_tuning.importance import ImportanceTracker, least_important
from ml.algorithms.federated_fine_tuning.measure import deployed_params, merged
from ml.algorithms.federated_fine_tuning.structure import Structure, build_client_model, sparsity
from ml.algorithms.federated_fine_tuning.task import load_base, load_topic_data
from ml.fl.batches import BatchStream
from ml.models.flops import count_flops
from ml.models.lora import LoRALinear, lora_state_dict
from ml.reporting import MemoryReporter


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ESTUARY_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    torch.set_num_threads(1)
    model, info = load_base("tiny")
    yield model
    mp.undo()


@pytest.fixture(scope="module")
def data():
    return load_topic_data(seq_len=64, max_test=60)


def test_source_kinds_task_is_balanced_stratified_and_distinct_from_topics(data):
    # Five kinds, every one present in train and test, windows of raw bytes of the right length.
    assert data.classes == ("prose", "python", "c-header", "rest", "test-vectors")
    assert data.train_x.shape[1] == 64 and data.train_x.max() < 256
    counts = torch.bincount(data.train_y, minlength=5)
    assert (counts > 100).all() and counts.max() <= 1500
    assert set(data.test_y.tolist()) == set(range(5)) and len(data.test_y) == 60
    # No window is both in train and in test (the split is by window index).
    train_rows = {tuple(r) for r in data.train_x.tolist()}
    assert sum(tuple(r) in train_rows for r in data.test_x.tolist()) <= 2  # duplicates in files
    # The Python class really is Python source and the C class C headers.
    py = bytes(data.train_x[data.train_y == 1].flatten().tolist())
    c = bytes(data.train_x[data.train_y == 2].flatten().tolist())
    assert py.count(b"def ") > py.count(b"#define") and c.count(b"#define") > c.count(b"def ")
    topics = load_topic_data(seq_len=64, max_test=60, task="pydoc-topics")
    assert topics.classes[0] == "statements" and len(topics.train_y) != len(data.train_y)


def _pruned_structure(base) -> Structure:
    full = Structure.full(base)
    return full.without({(0, 1), (0, 3), (1, 0)}, {(b, c) for b in range(2) for c in range(0, 64, 2)})


def test_pruned_model_is_really_smaller_and_still_runs(base, data):
    head = torch.nn.Linear(base.cfg.d_model, 5)
    full, pruned = Structure.full(base), _pruned_structure(base)
    big = merged(build_client_model(base, head.state_dict(), full, 4, 1.0))
    small = merged(build_client_model(base, head.state_dict(), pruned, 4, 1.0))
    assert deployed_params(small) < deployed_params(big)
    x = data.test_x[:3]
    assert count_flops(small, x[:1]) < count_flops(big, x[:1])
    out = small(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert small.decoder.blocks[0].attn.q_proj.weight.shape[0] == 2 * base.head_dim
    assert small.decoder.blocks[1].mlp.gate_proj.weight.shape[0] == 32
    # 3 of 8 heads and half the channels: the exact fraction of projection parameters.
    d, hd = base.cfg.d_model, base.head_dim
    removed = 3 * 4 * d * hd + 64 * 3 * d
    total = 8 * 4 * d * hd + 128 * 3 * d
    assert sparsity(base, pruned) == pytest.approx(removed / total)


def test_pruning_a_silent_head_leaves_the_output_unchanged(base, data):
    # A head whose o columns are zero contributes nothing: removing it must not change outputs,
    # so the pruned model computes the same function on the structures it keeps.
    import copy
    silent = copy.deepcopy(base)
    hd = base.head_dim
    with torch.no_grad():
        silent.blocks[0].attn.o_proj.weight[:, 2 * hd:3 * hd] = 0
        silent.blocks[1].mlp.down_proj.weight[:, 5] = 0
    head = torch.nn.Linear(base.cfg.d_model, 5)
    keep = Structure.full(base).without({(0, 2)}, {(1, 5)})
    a = build_client_model(silent, head.state_dict(), Structure.full(base), None, 1.0).eval()
    b = build_client_model(silent, head.state_dict(), keep, None, 1.0).eval()
    x = data.test_x[:4]
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-4)


def test_importance_gradient_is_the_weight_gradient_projected_on_lora_a():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(6, 5, bias=False), rank=3, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(8, 6)
    (layer(x) ** 2).sum().backward()
    w_eff = (layer.weight + layer.delta_weight()).detach().requires_grad_(True)
    (F.linear(x, w_eff) ** 2).sum().backward()
    g = w_eff.grad
    a = layer.lora_A.detach()
    g_hat = layer.lora_B.grad @ a / layer.scaling
    torch.testing.assert_close(g_hat, g @ a.T @ a, atol=1e-5, rtol=1e-4)


def test_least_important_removes_lowest_scores_but_never_empties_a_block():
    scores = torch.tensor([[0.1, 0.2, 5.0, 6.0], [0.05, 0.06, 0.07, 0.08]])
    kept = ((0, 1, 2, 3), (0, 1, 2, 3))
    removed = least_important(scores, kept, keep_total=2)
    # The lowest four are all in block 1, which keeps its best; then block 0's lowest go.
    assert removed == {(1, 0), (1, 1), (1, 2), (0, 0), (0, 1), (0, 2)}


def _client(base, data, index=0):
    shard = torch.arange(index * 200, index * 200 + 200)
    return ClientData(index, BatchStream(shard, 8, torch.Generator().manual_seed(index)),
                      data.train_x[shard[:16]], data.train_y[shard[:16]],
                      ImportanceTracker(2, base.cfg.n_heads, base.cfg.d_ff, beta=0.8))


def test_local_round_prunes_step_by_step_to_the_target(base, data):
    head = torch.nn.Linear(base.cfg.d_model, 5).state_dict()
    full = Structure.full(base)
    global_lora = lora_state_dict(build_client_model(base, head, full, 4, 1.0))
    ws = Workspace(base, data.train_x, data.train_y, lr=3e-3, scaling=1.0, prune_every=2,
                   local_steps=6, adapter_shapes=global_lora)
    client = _client(base, data)
    result = local_round(ws, client, full, global_lora, head,
                         Plan(rank=4, target_sparsity=0.5, track_importance=True))
    assert result.sparsity_before == 0.0
    assert result.sparsity_after == pytest.approx(0.5, abs=0.03)
    assert result.structure.num_heads() == 4
    # The adapters came back in the pruned shapes; scores exist for every structure.
    assert result.state["decoder.blocks.0.attn.q_proj.lora_B"].shape[0] == \
        len(result.structure.heads[0]) * base.head_dim
    assert torch.isfinite(client.tracker.heads).all()
    # The cost of pruned iterations is lower: FLOPs < 6 full-size iterations.
    full_flops = 6 * 8 * 3 * ws.forward_flops(Structure.full(base), 4)
    assert result.flops < full_flops
    # A second round at the same target prunes nothing more.
    again = local_round(ws, client, result.structure,
                        slice_state(global_lora, result.structure, 4, base.head_dim), head,
                        Plan(4, 0.5, True))
    assert again.structure == result.structure


def _toy_state(base, rank, structure, seed):
    torch.manual_seed(seed)
    head = torch.nn.Linear(base.cfg.d_model, 5)
    m = build_client_model(base, head.state_dict(), structure, rank, 1.0)
    for p in m.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p)
    return lora_state_dict(m)


def test_aggregation_is_exact_where_ranks_agree(base):
    full = Structure.full(base)
    like = {k: torch.zeros_like(v) for k, v in _toy_state(base, 8, full, 0).items()}
    s4, s8 = _toy_state(base, 4, full, 1), _toy_state(base, 8, full, 2)
    agg = EntryMeanAggregator(like)
    for state, rank, w in ((s4, 4, 1.0), (s8, 8, 3.0)):
        agg.add(*scatter_state(state, full, rank, base.head_dim, like), w)
    out = agg.result(like)
    key_a, key_b = "decoder.blocks.0.attn.q_proj.lora_A", "decoder.blocks.0.attn.q_proj.lora_B"
    torch.testing.assert_close(out[key_a][:4], (s4[key_a] + 3 * s8[key_a][:4]) / 4)
    torch.testing.assert_close(out[key_b][:, :4], (s4[key_b] + 3 * s8[key_b][:, :4]) / 4)
    torch.testing.assert_close(out[key_a][4:], s8[key_a][4:])  # only the rank-8 client has them
    # Equal ranks and structures: exactly FedAvg of the factors.
    agg = EntryMeanAggregator(like)
    t8 = _toy_state(base, 8, full, 3)
    agg.add(*scatter_state(s8, full, 8, base.head_dim, like), 1.0)
    agg.add(*scatter_state(t8, full, 8, base.head_dim, like), 1.0)
    out = agg.result(like)
    for k in like:
        torch.testing.assert_close(out[k], (s8[k] + t8[k]) / 2)


def test_pruned_clients_only_vote_on_what_they_keep(base):
    full, pruned = Structure.full(base), _pruned_structure(base)
    like = _toy_state(base, 4, full, 5)
    a, b = _toy_state(base, 4, full, 6), _toy_state(base, 4, pruned, 7)
    # slice ∘ scatter is the identity on a client's own entries
    back = slice_state(scatter_state(b, pruned, 4, base.head_dim, like)[0], pruned, 4, base.head_dim)
    for k in b:
        torch.testing.assert_close(back[k], b[k])
    agg = EntryMeanAggregator(like)
    agg.add(*scatter_state(a, full, 4, base.head_dim, like), 1.0)
    agg.add(*scatter_state(b, pruned, 4, base.head_dim, like), 1.0)
    out = agg.result(like)
    hd = base.head_dim
    kb = "decoder.blocks.0.attn.q_proj.lora_B"
    torch.testing.assert_close(out[kb][hd:2 * hd], a[kb][hd:2 * hd])  # head 1 pruned by b
    torch.testing.assert_close(out[kb][:hd], (a[kb][:hd] + b[kb][:hd]) / 2)  # head 0 kept by both
    ka = "decoder.blocks.0.attn.o_proj.lora_A"
    torch.testing.assert_close(out[ka][:, 3 * hd:], a[ka][:, 3 * hd:])  # o columns of head 3


def test_hetlora_zero_padding_shrinks_components_few_clients_have(base):
    full = Structure.full(base)
    like = {k: torch.zeros_like(v) for k, v in _toy_state(base, 8, full, 0).items()}
    s4, s8 = _toy_state(base, 4, full, 1), _toy_state(base, 8, full, 2)
    agg = ZeroPadAggregator(like)
    agg.add(*scatter_state(s4, full, 4, base.head_dim, like), 1.0)
    agg.add(*scatter_state(s8, full, 8, base.head_dim, like), 1.0)
    out = agg.result(like)
    k = "decoder.blocks.1.mlp.up_proj.lora_A"
    torch.testing.assert_close(out[k][4:], s8[k][4:] / 2)


def _controlled_bandit_picks(seed: int, pulls: int = 40):
    """Two devices, one 10x slower; an arm's time falls with the pruning ratio and rises with
    the rank, its loss improvement rises with the rank and falls with the ratio."""
    speeds = {"slow": 1.0, "fast": 10.0}
    bandits = {k: SmoothUCB(seed=seed + i) for i, k in enumerate(speeds)}
    cost = {k: [] for k in speeds}
    for _ in range(pulls):
        points = {k: b.select() for k, b in bandits.items()}
        work = {k: (1.0 - 0.7 * p[0]) * (0.5 + 0.5 * p[1]) for k, p in points.items()}
        times = {k: work[k] / speeds[k] for k in speeds}
        for k, p in points.items():
            gain = 0.1 + 0.1 * p[1] - 0.1 * p[0] ** 2
            others = np.mean([times[j] for j in times if j != k])
            bandits[k].update(p, reward(1.0, 1.0 - gain, 0.0, times[k], others, 1.0))
            cost[k].append(work[k])
    return cost


def test_bandit_moves_slow_devices_toward_faster_arms():
    early_slow, late_slow, late_fast = [], [], []
    for seed in range(4):
        cost = _controlled_bandit_picks(seed)
        early_slow.append(np.mean(cost["slow"][:10]))
        late_slow.append(np.mean(cost["slow"][-15:]))
        late_fast.append(np.mean(cost["fast"][-15:]))
    assert np.mean(late_slow) < np.mean(early_slow) - 0.1
    assert np.mean(late_slow) < np.mean(late_fast) - 0.1


def test_bandit_refines_the_partition_around_the_best_arm():
    bandit = SmoothUCB(seed=0)
    for _ in range(60):
        p = bandit.select()
        bandit.update(p, -float(np.linalg.norm(p - np.array([0.8, 0.2]))))
    best = bandit.best_point()
    assert np.linalg.norm(best - np.array([0.8, 0.2])) < 0.2


TINY_RUN = {"base": "tiny", "workers": 3, "rounds": 2, "local_steps": 4, "batch_size": 8,
            "test_samples": 40}


def test_fedspine_end_to_end_reaches_the_target_sparsity(base):
    method = FEDSPINE
    assert "ml.algorithms.federated_fine_tuning" in registry.ALGORITHM_MODULES
    assert set(method.baselines) == {"fedlora", "hetlora", "prune-then-finetune"}
    reporter = MemoryReporter()
    config = method.parse_config({**TINY_RUN, "prune_every": 2, "target_sparsity": 0.4})
    out = method.run(config, reporter)
    final = out["final"]
    assert final["sparsity"] == pytest.approx(0.4, abs=0.03)
    assert 0.0 <= final["accuracy"] <= 1.0
    for name in ("rank/client-00", "ratio/client-02", "memory_bytes/client-01",
                 "inference_latency_ms", "traffic_bytes", "round_time_s", "sim_time_s"):
        assert reporter.series(name), name
    ranks = [p.value for p in reporter.series("rank/client-00")]
    assert all(2 <= r <= 16 for r in ranks)
    assert all(p.sim_time_s > 0 for p in reporter.series("accuracy"))


@pytest.mark.parametrize("method,extra", [(FEDLORA, {}), (HETLORA, {}),
                                          (PRUNE_THEN_FINETUNE, {"target_sparsity": 0.5})])
def test_baselines_run_and_prune_only_when_asked(base, method, extra):
    name = method.name
    reporter = MemoryReporter()
    out = method.run(method.parse_config({**TINY_RUN, "rounds": 1, **extra}), reporter)
    expected = extra.get("target_sparsity", 0.0)
    assert out["final"]["sparsity"] == pytest.approx(expected, abs=0.03)
    if name == "hetlora":  # ranks follow device capability: not all equal on jetson80's mix
        ranks = {reporter.last(f"rank/client-{i:02d}") for i in range(3)}
        assert len(ranks) > 1


def test_fedspine_reaches_the_target_by_prune_rounds_and_then_only_recovers(base):
    # ratio_max 0.01: the bandit alone would prune 1% a round; the floor reaches 0.4 by round 1
    reporter = MemoryReporter()
    config = FEDSPINE.parse_config({**TINY_RUN, "rounds": 3, "prune_every": 2,
                                    "target_sparsity": 0.4, "prune_rounds": 1,
                                    "ratio_min": 0.0, "ratio_max": 0.01})
    FEDSPINE.run(config, reporter)
    per_round = [p.value for p in reporter.series("sparsity")]
    assert per_round[0] == pytest.approx(0.4, abs=0.03)
    assert per_round[1:] == [per_round[0]] * 2
    with pytest.raises(ValueError, match="prune_rounds"):
        FEDSPINE.parse_config({**TINY_RUN, "prune_rounds": 3})
