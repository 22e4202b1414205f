"""COMP and its baselines: real pruning of small decoder LMs, checked mechanism by mechanism."""
import copy

import pytest
import torch

from ml import registry
from ml.algorithms.llm_compression.baselines import llm_pruner_plan, llm_pruner_prune
from ml.algorithms.llm_compression.blockio import embed, rope_for
from ml.models.hf_llama import UnsupportedCheckpoint, load_llama, save_llama, set_norm_eps
from tests.fixtures.llama import write_bpe_tokenizer
from ml.algorithms.llm_compression.hybrid import comp_prune
from ml.algorithms.llm_compression.importance import condition_removal_order, condition_scores
from ml.algorithms.llm_compression.memory import PeakMemory
from ml.algorithms.llm_compression.runner import load_pruned
from ml.algorithms.llm_compression.pipeline import BlockwiseSettings, prune_blockwise
from ml.algorithms.llm_compression.prune import remove_heads
from ml.algorithms.llm_compression.source import MODEL_SIZES, calibration_set
from ml.config import ConfigError
from ml.data.text import ByteTokenizer, load_corpus, train_val_split
from ml.models.pretrained import pretrained_lm
from ml.models.transformer import DecoderConfig, DecoderLM
from ml.reporting import Cancelled, MemoryReporter

#: A quick job: the tiny LM, briefly pre-trained (cached in the test's data dir), small eval.
FAST = {"model_size": "tiny", "pretrain_steps": 30, "seq_len": 32, "calibration_size": 8,
        "batch_size": 4, "eval_windows": 4, "task_items": 20, "latency_repeats": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("comp-data")
        mp.setenv("ESTUARY_DATA_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def lm(data_dir):
    """The tiny pre-trained LM and calibration windows of the training split."""
    model, _, _ = pretrained_lm("pydoc", cfg=MODEL_SIZES["tiny"], steps=30, seed=0)
    train, _ = train_val_split(ByteTokenizer().encode(load_corpus("pydoc")), 0.1)
    x, y = calibration_set(train, 8, 32, seed=0)
    return model, x, y


def _run(name, **overrides):
    method = registry.get(name)
    reporter = MemoryReporter()
    return method.run(method.parse_config({**FAST, **overrides}), reporter), reporter


def test_catalogue_lists_comp_and_its_baselines():
    comp = registry.get("comp")
    assert set(comp.baselines) == {"llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune"}
    for name in comp.baselines:
        assert registry.get(name).family == "llm-compression"
    with pytest.raises(ConfigError) as err:
        comp.parse_config({"ratio": 0.2, "nope": 1})
    assert "nope" in err.value.errors
    with pytest.raises(ConfigError):
        comp.parse_config({"ratio": 0.95})


def test_comp_job_prunes_saves_and_reloads(data_dir):
    out, reporter = _run("comp", ratio=0.3, output_dir=str(data_dir / "out"))
    final = out["final"]
    assert final["params"] < final["dense_params"]
    assert 0.25 < final["achieved_ratio"] < 0.35
    assert final["flops"] < final["dense_flops"]
    assert final["prune_peak_memory_bytes"] > 0 and final["prune_time_s"] > 0
    assert reporter.series("perplexity")[0].step == 0 and reporter.series("perplexity")[1].step == 1
    # The safetensors file really holds the smaller model and runs after loading.
    model, metadata = load_pruned(out["checkpoint"])
    assert out["checkpoint"].endswith(".safetensors")
    assert model.architecture() == out["architecture"] == metadata["architecture"]
    assert model.num_parameters() == final["params"]
    logits, _ = model(torch.randint(0, 256, (2, 16)))
    assert logits.shape == (2, 16, 256) and torch.isfinite(logits).all()
    assert final["reload_max_abs_diff"] == 0.0


@pytest.mark.parametrize("name,extra", [("llm-pruner", {}), ("llm-pruner-lora", {"recovery_steps": 2}),
                                        ("wanda-channel", {}), ("layer-prune", {})])
def test_baselines_shrink_the_same_model(data_dir, name, extra):
    out, reporter = _run(name, ratio=0.2, output_dir=str(data_dir / "out"), **extra)
    final = out["final"]
    assert final["params"] < final["dense_params"]
    assert final["reload_max_abs_diff"] == 0.0
    if name == "layer-prune":  # whole blocks only: every kept block keeps its full width
        arch = out["architecture"]
        assert len(arch["blocks"]) < arch["config"]["n_layers"]
        assert all(b["d_ff"] == arch["config"]["d_ff"] for b in arch["blocks"])
    else:
        assert abs(final["achieved_ratio"] - 0.2) < 0.05
    if name == "llm-pruner-lora":
        assert len(reporter.series("loss")) == 2


def test_condition_score_is_the_documented_formula():
    """s_j = ||w_j||^2 / [G^-1]_jj = ||w_j||^2 ||h_j||^2 / VIF_j = the rise of the MLP output's
    squared error when neuron j goes and the others are refitted by least squares."""
    g = torch.Generator().manual_seed(0)
    n, d_ff, d = 200, 12, 6
    h = torch.randn(n, d_ff, generator=g, dtype=torch.float64)
    h[:, 3] = h[:, 1] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)  # near-duplicate
    w = torch.randn(d, d_ff, generator=g, dtype=torch.float64)
    gram = h.T @ h
    scores = condition_scores(gram, w, damping=0.0)
    inverse = torch.linalg.inv(gram)
    assert torch.allclose(scores, w.pow(2).sum(0) / inverse.diagonal())
    y = h @ w.T
    for j in range(d_ff):
        others = [k for k in range(d_ff) if k != j]
        fit = torch.linalg.lstsq(h[:, others], y).solution
        refit_error = (h[:, others] @ fit - y).pow(2).sum()
        assert torch.isclose(scores[j], refit_error, rtol=1e-6)
        # VIF_j = 1 / (1 - R^2) of column j regressed on the others.
        coef = torch.linalg.lstsq(h[:, others], h[:, j:j + 1]).solution
        residual = (h[:, others] @ coef - h[:, j:j + 1]).pow(2).sum()
        vif = h[:, j].pow(2).sum() / residual
        assert torch.isclose(scores[j], w[:, j].pow(2).sum() * h[:, j].pow(2).sum() / vif,
                             rtol=1e-6)
    # Greedy removal with Schur downdates equals re-scoring from scratch after each removal:
    # of the two near-duplicate neurons, removing one makes the other important.
    order = condition_removal_order(gram, w, 3, damping=0.0)
    kept = list(range(d_ff))
    for j in order:
        sub = condition_scores(gram[kept][:, kept], w[:, kept], damping=0.0)
        assert kept[int(sub.argmin())] == j
        kept.remove(j)
    assert not {1, 3} <= set(order)


def _block_error(dense: DecoderLM, pruned: DecoderLM, x: torch.Tensor, index: int) -> float:
    """Relative squared error of block ``index``'s output, both fed the dense block's input."""
    with torch.no_grad():
        h = embed(dense, x, 8)
        rope = rope_for(dense, h)
        for b in dense.blocks[:index]:
            h = b(h, rope)[0]
        want = dense.blocks[index](h, rope)[0]
        got = pruned.blocks[index](h, rope)[0]
    return float((got - want).pow(2).sum() / (want - h).pow(2).sum())


def test_mask_tuning_reduces_layer_reconstruction_error(lm):
    model, x, _ = lm
    results = {}
    for tuning in (False, True):
        pruned = copy.deepcopy(model)
        settings = BlockwiseSettings(neuron_score="condition", mask_tuning=tuning,
                                     tune_heads=tuning, batch_size=4)
        out = prune_blockwise(pruned, x, drop=set(), neurons_to_remove=48, settings=settings)
        results[tuning] = (pruned, out)
    untuned, tuned = results[False][0], results[True][0]
    # Block 0 sees the same input either way and loses the same neurons (scores come from the
    # same activations), so the tuned scales alone make the difference.
    assert untuned.blocks[0].mlp.d_ff == tuned.blocks[0].mlp.d_ff == 48
    assert _block_error(model, tuned, x, 0) < 0.9 * _block_error(model, untuned, x, 0)
    for log in results[True][1].blocks:
        assert log.neuron_error_after < log.neuron_error_before
    # And at the model's output (final hidden states against the dense model's).
    with torch.no_grad():
        dense_h = model.forward_blocks(embed(model, x, 8))[0]
    errors = {t: float((results[t][1].hidden - dense_h).pow(2).mean()) for t in (False, True)}
    assert errors[True] < errors[False]


def test_rows_and_columns_are_pruned_together(lm):
    model, x, _ = lm
    dense = model
    pruned = copy.deepcopy(model)
    settings = BlockwiseSettings(neuron_score="wanda", mask_tuning=False, batch_size=4)
    prune_blockwise(pruned, x, drop={2}, neurons_to_remove=30, settings=settings)
    assert len(pruned.blocks) == 3
    for new, old in zip(pruned.blocks, [dense.blocks[i] for i in (0, 1, 3)]):
        mlp, ref = new.mlp, old.mlp
        assert mlp.gate_proj.weight.shape[0] == mlp.up_proj.weight.shape[0] == \
            mlp.down_proj.weight.shape[1] == ref.d_ff - 30
        for k in range(mlp.d_ff):  # kept neuron k is one old neuron j in all three matrices
            j = int((ref.gate_proj.weight == mlp.gate_proj.weight[k]).all(1).nonzero())
            assert torch.equal(ref.up_proj.weight[j], mlp.up_proj.weight[k])
            assert torch.equal(ref.down_proj.weight[:, j], mlp.down_proj.weight[:, k])
    # Heads (LLM-Pruner): q/k/v rows and o columns of a head go together.
    block = copy.deepcopy(dense.blocks[0])
    dim = block.attn.head_dim
    remove_heads(block, [0])
    assert block.attn.n_heads == 1
    for lin in ("q_proj", "k_proj", "v_proj"):
        assert torch.equal(getattr(block.attn, lin).weight,
                           getattr(dense.blocks[0].attn, lin).weight[dim:])
    assert torch.equal(block.attn.o_proj.weight, dense.blocks[0].attn.o_proj.weight[:, dim:])
    logits, _ = pruned(x[:2])
    assert torch.isfinite(logits).all()


def _peaks(n_layers: int) -> tuple[int, int]:
    """Working-memory peaks of COMP (block at a time) and LLM-Pruner (whole-model backward)."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=256, d_model=32, n_layers=n_layers, n_heads=2, d_ff=96,
                        max_seq_len=32)
    x = torch.randint(0, 256, (8, 32))
    y = torch.randint(0, 256, (8, 32))
    settings = BlockwiseSettings(batch_size=8)
    a, b = DecoderLM(cfg).eval(), DecoderLM(cfg).eval()
    with PeakMemory() as comp:
        comp_prune(a, x, y, 0.2, settings, coarse_blocks=0)
    with PeakMemory() as whole:
        llm_pruner_prune(b, x, y, llm_pruner_plan(b, 0.2, 0, 0), batch_size=8)
    return comp.bytes, whole.bytes


def test_block_at_a_time_peak_memory_is_lower_and_flat_in_depth():
    comp4, whole4 = _peaks(4)
    comp8, whole8 = _peaks(8)
    assert comp4 < whole4 and comp8 < whole8
    # Whole-model pruning holds every block's activations and gradients: twice the depth
    # costs much more; block-at-a-time pruning holds one block's worth whatever the depth.
    assert whole8 > 1.5 * whole4
    assert comp8 < 1.25 * comp4


def test_peak_memory_counts_what_is_held_at_once():
    with PeakMemory() as peak:
        a = torch.ones(1000, 250)  # 1 MB
        del a
        b = torch.ones(500, 250)  # 0.5 MB, after the first is freed
        c = torch.ones(500, 250)
        del b, c
    assert peak.bytes == 1_000_000


def test_hf_llama_checkpoint_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                    max_seq_len=64)).eval()
    folder = save_llama(model, tmp_path / "llama", eps=1e-5)
    loaded, eps = load_llama(folder)
    assert eps == 1e-5
    set_norm_eps(model, 1e-5)  # the checkpoint's epsilon, as the loader applies it
    idx = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        assert torch.allclose(loaded(idx)[0], model(idx)[0], atol=1e-4)
    # No tokenizer.json: the job names what is missing.
    with pytest.raises(UnsupportedCheckpoint, match="tokenizer"):
        registry.get("comp").run(registry.get("comp").parse_config(
            {**FAST, "checkpoint": str(folder)}), MemoryReporter())
    # With a subword tokenizer.json (byte-level BPE, as Llama-3's), the job prunes it end to end.
    write_bpe_tokenizer(folder / "tokenizer.json", vocab_size=300)
    method = registry.get("comp")
    result = method.run(method.parse_config({**FAST, "checkpoint": str(folder),
                                             "output_dir": str(tmp_path / "out")}),
                        MemoryReporter())
    final = result["final"]
    assert final["params"] < final["dense_params"] and final["reload_max_abs_diff"] == 0.0
    assert 0.0 <= final["accuracy"] <= 1.0 and final["perplexity"] > 1.0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llama(tmp_path / "absent")
    config = (folder / "config.json").read_text().replace('"num_key_value_heads": 2',
                                                          '"num_key_value_heads": 1')
    (folder / "config.json").write_text(config)
    with pytest.raises(UnsupportedCheckpoint, match="grouped-query"):
        load_llama(folder)


class _StopAfter(MemoryReporter):
    """Says stop once ``points`` metric points were reported."""

    def __init__(self, points: int):
        super().__init__()
        self.after = points

    def should_stop(self) -> bool:
        return len(self.points) >= self.after


def test_a_cancelled_job_stops_between_blocks(data_dir):
    method = registry.get("comp")
    reporter = _StopAfter(5)  # the dense model's five points, then stop
    with pytest.raises(Cancelled):
        method.run(method.parse_config({**FAST, "output_dir": str(data_dir / "cancel")}), reporter)
    assert {p.step for p in reporter.points} == {0}
    assert not (data_dir / "cancel").exists()
