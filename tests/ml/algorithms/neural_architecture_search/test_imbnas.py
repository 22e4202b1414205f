"""IMB-NAS: the elastic supernet, the sandwich rule, the losses, the adaptation strategies, the
long-tailed target, the search, and the registered methods end to end on sklearn digits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ml import registry
from ml.algorithms.neural_architecture_search import runner as imbnas_runner
from ml.algorithms.neural_architecture_search.adapt import (
    STRATEGIES, Optim, adapt_supernet, fresh_supernet, prepare_supernet, steps_per_epoch,
)
from ml.algorithms.neural_architecture_search.data import build_task
from ml.algorithms.neural_architecture_search.evaluate import (
    accuracy_report, balanced_accuracy, per_class_accuracy, shot_groups,
)
from ml.algorithms.neural_architecture_search.losses import (
    class_balanced_weights, inverse_frequency_weights, weighted_cross_entropy,
)
from ml.algorithms.neural_architecture_search.search import evolutionary_search, random_search
from ml.algorithms.neural_architecture_search.supernet import Arch, SearchSpace, SuperNet, sandwich_step
from ml.config import ConfigError
from ml.reporting import Cancelled, MemoryReporter

CPU = torch.device("cpu")
DIGITS_SHAPE = (1, 8, 8)
#: A run small enough for a test: digits, one epoch of everything, a short search.
TINY = {"dataset": "digits", "rho": 10, "supernet_epochs": 1, "adapt_epochs": 1,
        "retrain_epochs": 1, "population": 4, "generations": 1, "parents": 2,
        "val_per_class": 10, "testbed": "local-3"}


@pytest.fixture(scope="module")
def digits_task():
    return build_task("digits", rho=10, seed=0, val_per_class=10)


def a_middle_arch() -> Arch:
    return Arch(depths=(2, 1), widths=(12, 24), kernels=((5, 3), (3,)))


# -- the supernet ------------------------------------------------------------------------------


def test_elastic_subnets_differ_in_parameter_count_and_flops():
    net = SuperNet(10, DIGITS_SHAPE)
    small, middle, large = net.space.smallest(), a_middle_arch(), net.space.largest()
    params = [net.parameter_count(a) for a in (small, middle, large)]
    flops = [net.flops(a) for a in (small, middle, large)]
    assert params[0] < params[1] < params[2] == sum(p.numel() for p in net.parameters())
    assert flops[0] < flops[1] < flops[2]
    # The FLOPs are torch's own count of the subnet's forward pass.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(4, *DIGITS_SHAPE), middle)
    assert counter.get_total_flops() == 4 * flops[1]


def test_each_elastic_dimension_changes_the_subnet():
    net = SuperNet(10, DIGITS_SHAPE)
    base = Arch(depths=(2, 2), widths=(12, 24), kernels=((3, 3), (3, 3)))
    deeper = Arch(depths=(3, 2), widths=(12, 24), kernels=((3, 3, 3), (3, 3)))
    wider = Arch(depths=(2, 2), widths=(16, 24), kernels=((3, 3), (3, 3)))
    larger_kernel = Arch(depths=(2, 2), widths=(12, 24), kernels=((5, 3), (3, 3)))
    for other in (deeper, wider, larger_kernel):
        assert net.parameter_count(other) > net.parameter_count(base)
        assert net.flops(other) > net.flops(base)


def test_subnets_share_weights_with_the_supernet():
    torch.manual_seed(0)
    net = SuperNet(10, DIGITS_SHAPE)
    arch = a_middle_arch()  # stage 1: width 12, kernels 5 then 3
    views = net.active_parameters(arch)
    params = dict(net.named_parameters())
    # Every slice is a view into the supernet's own storage, not a copy.
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert all(v.untyped_storage().data_ptr() in storages for v in views.values())

    x = torch.randn(8, *DIGITS_SHAPE)
    net.train()  # batch statistics: no calibration involved
    before = net(x, arch)
    # Scrambling every weight the subnet does not use leaves its output unchanged ...
    with torch.no_grad():
        saved = {name: p.clone() for name, p in params.items()}
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        for name, view in views.items():
            view.copy_(_slice_like(saved[name], view, params[name]))
    assert torch.allclose(net(x, arch), before, atol=1e-5)
    # ... while changing a shared weight changes it ...
    with torch.no_grad():
        views["stages.0.1.conv.weight"].add_(0.5)
    assert not torch.allclose(net(x, arch), before, atol=1e-3)
    # ... and its gradients land in the supernet, only where the subnet's slices are.
    net.zero_grad()
    net(x, arch).sum().backward()
    grad = net.stages[0][1].conv.weight.grad  # 16 x 16 x 5 x 5 in the supernet
    used = torch.zeros_like(grad, dtype=torch.bool)
    used[:12, :12, 1:4, 1:4] = True  # 12 channels, the 3 x 3 centre of the 5 x 5 kernel
    assert grad[~used].abs().sum() == 0 and grad[used].abs().sum() > 0
    assert net.stages[0][2].conv.weight.grad is None  # the third block is not in the subnet


def _slice_like(saved_full: torch.Tensor, view: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The entries of ``saved_full`` at the positions ``view`` occupies inside ``param``."""
    offset = view.storage_offset() - param.storage_offset()
    return torch.as_strided(saved_full, view.shape, view.stride(), offset)


def test_evaluating_a_subnet_needs_its_batchnorm_calibration(digits_task):
    net = SuperNet(10, DIGITS_SHAPE)
    net.eval()
    with pytest.raises(RuntimeError, match="calibration"):
        net(digits_task.test_x[:4], net.space.smallest())
    net.calibrate(net.space.smallest(), digits_task.target_x)
    assert net(digits_task.test_x[:4], net.space.smallest()).shape == (4, 10)
    with pytest.raises(RuntimeError, match="calibration"):
        net(digits_task.test_x[:4], net.space.largest())


def test_sandwich_step_trains_the_largest_the_smallest_and_random_subnets(digits_task):
    torch.manual_seed(0)
    net = SuperNet(10, DIGITS_SHAPE)
    seen: list[Arch] = []

    def record(module, args, kwargs):
        if torch.is_grad_enabled():  # training passes, not FLOP counting
            seen.append(args[1])

    net.register_forward_pre_hook(record, with_kwargs=True)
    only_largest = net.stages[1][2].conv.weight.detach().clone()  # third block of stage 2
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = digits_task.source_x[:32], digits_task.source_y[:32]
    result = sandwich_step(net, optimizer, x, y, np.random.default_rng(0),
                           torch.nn.functional.cross_entropy, num_random=2)

    space = net.space
    assert seen == result.archs and len(seen) == 4
    assert seen[0] == space.largest() and seen[1] == space.smallest()
    assert all(space.contains(a) for a in seen[2:])
    # Weights only the largest subnet uses moved; so did the ones every subnet shares.
    assert not torch.equal(net.stages[1][2].conv.weight, only_largest)
    assert not torch.equal(net.stem.weight, before["stem.weight"])
    assert result.flops == sum(32 * 3 * net.flops(a) for a in seen)


def test_the_search_space_samples_mutates_and_crosses_within_itself():
    space = SearchSpace()
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(50)]
    archs += [space.mutate(a, rng, 0.5) for a in archs[:25]]
    archs += [space.crossover(a, b, rng) for a, b in zip(archs[:25], archs[25:50])]
    assert all(space.contains(a) for a in archs)
    assert len(set(archs)) > 40
    assert space.size() == len(set(space.all_archs())) == 1764
    assert not space.contains(Arch((4, 1), (16, 32), ((3,) * 4, (3,))))


# -- losses -------------------------------------------------------------------------------------


def test_class_balanced_weights_follow_cui_et_al():
    counts = torch.tensor([500, 50, 5])
    beta = 0.9999
    expected = np.array([(1 - beta) / (1 - beta ** n) for n in (500, 50, 5)])
    expected = expected / expected.sum() * 3
    weights = class_balanced_weights(counts, beta)
    assert np.allclose(weights.numpy(), expected, rtol=1e-6)
    assert math.isclose(float(weights.sum()), 3.0, rel_tol=1e-6)
    # Tail classes weigh more; beta = 0 is plain cross-entropy, beta -> 1 inverse frequency.
    assert weights[2] > weights[1] > weights[0]
    assert torch.allclose(class_balanced_weights(counts, 0.0), torch.ones(3))
    inverse = inverse_frequency_weights(counts)
    raw = torch.tensor([1 / 500, 1 / 50, 1 / 5])
    assert torch.allclose(inverse, raw / raw.sum() * 3, rtol=1e-5)
    assert torch.allclose(class_balanced_weights(counts, 1 - 1e-9), inverse, rtol=1e-3)
    with pytest.raises(ValueError, match="no training sample"):
        class_balanced_weights(torch.tensor([10, 0]))


def test_weighted_cross_entropy_weighs_each_sample_by_its_class():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    weights = torch.tensor([0.2, 0.8, 2.0])
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.isclose(weighted_cross_entropy(logits, labels, weights),
                         (weights[labels] * per_sample).sum() / 6)
    assert torch.isclose(weighted_cross_entropy(logits, labels, None), per_sample.mean())


# -- data ---------------------------------------------------------------------------------------


def test_the_long_tailed_target_follows_the_exp_profile(digits_task):
    task = digits_task
    counts = task.target_counts.tolist()
    n_max = counts[0]
    assert counts == [max(1, math.floor(n_max * 10 ** (-c / 9))) for c in range(10)]
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.15)
    # Source, validation and test are balanced; source, target and validation are disjoint.
    for labels in (task.source_y, task.val_y, task.test_y):
        assert len(set(torch.bincount(labels).tolist())) == 1
    assert len(task.val_y) == 10 * 10
    parts = [set(task.source_idx.tolist()), set(task.target_idx.tolist()),
             set(task.val_idx.tolist())]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    # rho = 100 keeps the same source and a steeper tail.
    steep = build_task("digits", rho=100, seed=0, val_per_class=10)
    assert np.array_equal(steep.source_idx, task.source_idx)
    assert steep.target_counts[-1] == 1 and steep.target_counts[0] == n_max


def test_shot_groups_split_the_classes_by_training_count():
    counts = torch.tensor([5, 200, 20, 90, 2, 60, 1, 150, 40, 10])
    groups = shot_groups(counts)
    assert groups == {"many": [1, 3, 7], "medium": [2, 5, 8, 9], "few": [0, 4, 6]}
    report = accuracy_report(torch.linspace(0, 0.9, 10).double(), counts)
    assert report["accuracy"] == pytest.approx(0.45)
    assert report["few_shot_accuracy"] == pytest.approx((0.0 + 0.4 + 0.6) / 3)


# -- adaptation -----------------------------------------------------------------------------------


def _adapt(strategy_name: str, source: SuperNet, task) -> SuperNet:
    strategy = STRATEGIES[strategy_name]
    net = prepare_supernet(strategy, source, num_classes=10, input_shape=DIGITS_SHAPE,
                           space=source.space, seed=0, device=CPU)
    weights = class_balanced_weights(task.target_counts) if strategy.reweighted else None
    adapt_supernet(strategy, net, task.target_x, task.target_y, steps=3, optim=Optim(lr=0.1),
                   num_random=1, loss_weights=weights, seed=0)
    return net


def test_head_retraining_leaves_the_backbone_bit_identical(digits_task):
    source = fresh_supernet(10, DIGITS_SHAPE, SearchSpace(), 0, "test-source", CPU)
    snapshot = {k: v.clone() for k, v in source.state_dict().items()}

    head_only = _adapt("head-retrain-rw", source, digits_task)
    for name, p in head_only.named_parameters():
        if name.startswith("head."):
            assert not torch.equal(p, snapshot[name]), name
        else:
            assert torch.equal(p, snapshot[name]), name
    # Fine-tuning, by contrast, moves the backbone; neither touches the source itself.
    finetuned = _adapt("finetune-ce", source, digits_task)
    assert not torch.equal(finetuned.stem.weight, snapshot["stem.weight"])
    assert all(torch.equal(v, snapshot[k]) for k, v in source.state_dict().items())


def test_full_search_starts_from_a_fresh_supernet(digits_task):
    source = fresh_supernet(10, DIGITS_SHAPE, SearchSpace(), 0, "test-source", CPU)
    scratch = prepare_supernet(STRATEGIES["full-search"], source, num_classes=10,
                               input_shape=DIGITS_SHAPE, space=source.space, seed=0, device=CPU)
    assert not torch.equal(scratch.stem.weight, source.stem.weight)
    assert all(p.requires_grad for p in scratch.parameters())


# -- search ----------------------------------------------------------------------------------------


def test_search_returns_a_subnet_of_the_space_scored_on_the_balanced_validation_split(digits_task):
    task = digits_task
    net = fresh_supernet(10, DIGITS_SHAPE, SearchSpace(), 0, "test-search", CPU)
    limit = 0.5 * net.flops(net.space.largest())
    scored: list[Arch] = []

    def score(arch: Arch) -> float:
        scored.append(arch)
        return balanced_accuracy(net, arch, task.val_x, task.val_y, task.target_x)

    result = evolutionary_search(net.space, score, np.random.default_rng(0),
                                 allowed=lambda a: net.flops(a) <= limit, cost_fn=net.flops,
                                 population=6, generations=2, parents=2)
    assert net.space.contains(result.best) and net.flops(result.best) <= limit
    assert result.evaluations == len(scored) == len(set(scored)) <= 6 + 2 * 4
    assert result.score == max(s for _, s in result.history)
    # The score is the mean per-class recall on the balanced validation split.
    assert len(set(torch.bincount(task.val_y).tolist())) == 1
    net.calibrate(result.best, task.target_x)
    with torch.no_grad():
        predictions = net(task.val_x, result.best).argmax(dim=1)
    recall = [(predictions[task.val_y == c] == c).double().mean().item() for c in range(10)]
    assert result.score == pytest.approx(np.mean(recall))
    assert result.score == pytest.approx(float(per_class_accuracy(
        net, result.best, task.val_x, task.val_y, task.target_x).mean()))

    randomly = random_search(net.space, score, np.random.default_rng(0),
                             allowed=lambda a: net.flops(a) <= limit, cost_fn=net.flops,
                             evaluations=5)
    assert randomly.evaluations == 5 and net.space.contains(randomly.best)


# -- the registered methods ------------------------------------------------------------------------


def test_imb_nas_and_its_baselines_are_in_the_catalogue():
    method = registry.get("imb-nas")
    assert method.baselines == ("imb-nas-full-search", "imb-nas-finetune-ce",
                                "imb-nas-finetune-rw")
    for name in ("imb-nas", *method.baselines):
        entry = registry.get(name)
        assert entry.config is method.config
        schema = entry.describe()["schema"]["properties"]
        assert schema["rho"]["maximum"] == 1000 and schema["rho"]["description"]


def test_bad_config_values_are_named():
    method = registry.get("imb-nas")
    with pytest.raises(ConfigError) as exc:
        method.parse_config({"dataset": "digits", "val_per_class": 80})
    assert "val_per_class" in exc.value.errors
    with pytest.raises(ConfigError) as exc:
        method.parse_config({"population": 4, "parents": 5})
    assert "parents" in exc.value.errors
    with pytest.raises(ConfigError) as exc:
        method.parse_config({"strategy": "x"})
    assert "strategy" in exc.value.errors


def test_a_run_reports_balanced_and_shot_accuracies_and_search_cost():
    imbnas_runner._SOURCE_CACHE.clear()
    config = registry.get("imb-nas").parse_config(TINY)
    reporter = MemoryReporter()
    result = registry.get("imb-nas").run(config, reporter)
    final = result["final"]
    for name in ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy",
                 "val_accuracy", "search_cost_s", "sim_time_s"):
        assert reporter.last(name) == pytest.approx(final[name])
    assert 0.1 < final["accuracy"] <= 1
    assert 0 < final["search_cost_s"] < final["sim_time_s"]
    largest = SuperNet(10, DIGITS_SHAPE).flops(SearchSpace().largest())
    assert final["search_flops"] > 0 and final["subnet_flops"] <= 0.5 * largest
    assert result["device"] == "a6000-server"
    assert result["source_pretrain"]["flops"] > 0
    # The same run again reuses the cached source supernet and gives the same numbers.
    again = registry.get("imb-nas").run(config, MemoryReporter())
    assert again["final"] == final and again["arch"] == result["arch"]


def test_strategies_share_the_budget_and_full_search_pays_for_its_supernet():
    config = registry.get("imb-nas").parse_config(TINY)
    finetune = registry.get("imb-nas-finetune-rw").run(config, MemoryReporter())
    full = registry.get("imb-nas-full-search").run(config, MemoryReporter())
    head = registry.get("imb-nas").run(config, MemoryReporter())
    assert finetune["budget"]["train_steps"] == head["budget"]["train_steps"]
    assert full["budget"]["train_steps"] == (head["budget"]["train_steps"]
                                             + head["source_pretrain"]["steps"])
    assert full["source_pretrain"] is None
    # Head retraining has no backbone backward pass: it is the cheapest adaptation.
    assert head["final"]["search_flops"] < finetune["final"]["search_flops"] \
        < full["final"]["search_flops"]


def test_a_cancelled_run_stops():
    class CancelAfter(MemoryReporter):
        def should_stop(self) -> bool:
            return len(self.points) >= 2

    config = registry.get("imb-nas-finetune-ce").parse_config({**TINY, "adapt_epochs": 5})
    reporter = CancelAfter()
    with pytest.raises(Cancelled):
        registry.get("imb-nas-finetune-ce").run(config, reporter)
    assert reporter.series("loss") and not reporter.series("accuracy")


def test_steps_per_epoch_rounds_up():
    assert steps_per_epoch(100, 64) == 2 and steps_per_epoch(128, 64) == 2
