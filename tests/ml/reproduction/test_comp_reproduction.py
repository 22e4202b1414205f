"""The COMP reproduction: its declaration, the BPE-aware question set, and one pruning run on a
12-block BPE model end to end (a few pre-training steps, in a throw-away data folder)."""
import pytest
import torch

from ml import registry
from ml.data.bpe import train_bpe
from ml.data.text import ByteTokenizer, load_corpus
from ml.eval.lm import next_word_choice_task
from ml.models.pretraining import LM_SIZES
from ml.reproduction import comp
from ml.reproduction.declaration import Regime


def test_declaration_compares_comp_with_llm_pruner_at_three_ratios():
    decl = comp.DECLARATION
    assert [r.settings["ratio"] for r in decl.regimes] == [0.2, 0.1, 0.3]
    assert decl.headline == "ratio-20" and len(decl.seeds) >= 5
    accuracy, memory = (c.comparisons[0] for c in decl.claims)
    assert (accuracy.method, accuracy.baseline, accuracy.claimed) == ("comp", "llm-pruner", 6.13)
    assert memory.kind == "ratio" and memory.claimed == pytest.approx(5.0)
    assert comp.FULL["task_items"] >= 1000 and comp.FULL["model_size"] == "medium"


def test_cpu_setting_keeps_the_declaration_on_the_12_block_deep_small_model():
    cpu, medium = comp.DECLARATION_CPU, comp.DECLARATION
    assert cpu.key != medium.key  # its own results file; the medium one is unchanged
    assert (cpu.claims, cpu.arms, cpu.regimes, cpu.seeds, cpu.headline) == \
        (medium.claims, medium.arms, medium.regimes, medium.seeds, medium.headline)
    assert comp.SETTINGS[comp.DEFAULT_SETTING] == (cpu, comp.DEEP_SMALL)
    assert comp.SETTINGS["medium"] == (medium, comp.FULL)
    spec = LM_SIZES[comp.DEEP_SMALL["model_size"]]
    assert spec.config.n_layers == 12 and comp.DEEP_SMALL["task_items"] >= 1000
    assert comp.DEEP_SMALL["seq_len"] <= spec.config.max_seq_len
    for arm in cpu.arms:  # every arm's config validates with the setting (its own keys)
        method = registry.get(arm.method)
        config = method.parse_config({k: v for k, v in {**comp.DEEP_SMALL, "ratio": 0.3}.items()
                                      if k in method.config.model_fields})
        assert config.model_size == "deep-small" and config.task_items == 1200


def test_question_set_has_1000_items_and_is_deterministic(tmp_path):
    text = load_corpus("pydoc")
    train, held = text[:200_000], text[200_000:300_000]
    tokenizer = train_bpe([train], 400, tmp_path)
    first, again, other = (next_word_choice_task(train, held, tokenizer, items=1200, seed=s,
                                                 attach_space=True) for s in (3, 3, 4))
    assert len(first) == 1200
    assert all(torch.equal(a.context, b.context) and torch.equal(a.choices, b.choices)
               and a.answer == b.answer for a, b in zip(first, again))
    assert [i.answer for i in first] != [i.answer for i in other]  # the seed draws the set
    assert {i.choices.shape[0] for i in first} == {4}


def test_subword_questions_carry_the_leading_space(tmp_path):
    text = load_corpus("pydoc")
    train, held = text[:200_000], text[200_000:260_000]
    tokenizer = train_bpe([train], 400, tmp_path)
    task = next_word_choice_task(train, held, tokenizer, items=50, seed=0, attach_space=True)
    assert len(task) == 50
    spaced = [item for item in task
              if tokenizer.decode(item.choices[item.answer]).startswith(" ")]
    assert len(spaced) > 25  # most words follow a space
    for item in spaced:
        # the question splits where the tokenizer itself splits the text: no lone space token
        answer = item.choices[item.answer]
        whole = tokenizer.encode(tokenizer.decode(item.context) + tokenizer.decode(answer))
        assert torch.equal(whole, torch.cat([item.context, answer]))
        for choice in item.choices:  # distractors take the same form
            assert tokenizer.decode(choice).startswith(" ")
    byte_task = next_word_choice_task(train, held, ByteTokenizer(), items=20, seed=0,
                                      context_chars=40)
    assert all(len(ByteTokenizer().decode(item.context)) == 40 for item in byte_task)


def test_one_comp_run_on_a_12_block_bpe_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    settings = {**comp.QUICK, "pretrain_steps": 4, "seq_len": 32, "calibration_size": 4,
                "eval_windows": 4, "task_items": 20, "latency_repeats": 1}
    record = comp.run_arm(Regime("r", "20%", {"ratio": 0.2}), comp.DECLARATION.arm("comp"), 0,
                          {"settings": settings})
    m = record["metrics"]
    assert record["model"]["size"] == "deep-tiny" and record["task_items"] == 20
    assert 0.15 < m["achieved_ratio"] < 0.25 and 0.0 <= m["accuracy"] <= 1.0
    assert m["removed_blocks"] == 12 - record["model"]["blocks_after_pruning"]
    assert m["prune_peak_memory_bytes"] > m["prune_work_memory_bytes"] > 0
    assert list((tmp_path / "models").glob("deep-tiny-*.safetensors"))
    assert registry.get("comp").config.model_fields["model_size"].default == "tiny"
