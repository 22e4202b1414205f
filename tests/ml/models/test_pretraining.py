"""Deep LM pre-training (ml.models.pretraining): BPE determinism, the cache, resuming after an
interruption, and a clear error for a missing corpus. Tiny settings: 2 blocks, a few steps."""
import dataclasses

import pytest
import torch

from ml.data.bpe import train_bpe
from ml.data.cpython_corpus import cpython_source_files, stdlib_folder
from ml.models.pretrained import PretrainSettings
from ml.models.pretraining import (LM_SIZES, LMSize, PretrainingStopped, pretrained_lm_of_size,
                                   split_documents)
from ml.models.transformer import DecoderConfig, DecoderLM

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}  # a line of code\n"
               for i in range(300))


def tiny_size(steps: int = 12) -> LMSize:
    return LMSize("test", "unused", 300,
                  DecoderConfig(vocab_size=300, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                                max_seq_len=16),
                  PretrainSettings(steps=steps, batch_size=4, lr=1e-2, warmup_steps=2), 4)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bpe_training_is_deterministic_and_round_trips(tmp_path):
    docs = [TEXT[:6000], TEXT[6000:]]
    first = train_bpe(docs, 320, tmp_path / "a")
    second = train_bpe(docs, 320, tmp_path / "b")
    assert first.path.read_text() == second.path.read_text()
    assert first.vocab_size == 320
    ids = first.encode("def f12(x):\n    return x")
    assert len(ids) < len("def f12(x):\n    return x")  # merges learned
    assert first.decode(ids) == "def f12(x):\n    return x"
    assert first.decode(first.encode_documents(docs)) == "\n\n".join(docs)
    again = train_bpe(docs, 320, tmp_path / "a")  # the cache: same file, not retrained
    assert again.path == first.path and again.sha256 == first.sha256


def test_trains_once_then_loads_the_cache(tmp_path, corpus):
    model, tokenizer, info = pretrained_lm_of_size(tiny_size(60), corpus=corpus,
                                                   cache_dir=tmp_path, log=lambda m: None)
    assert not info["cached"] and info["steps"] == 60 and info["params"] > 0
    assert info["val_perplexity"] < info["unigram_perplexity"]  # it learned something
    again, _, info2 = pretrained_lm_of_size(tiny_size(60), corpus=corpus, cache_dir=tmp_path,
                                            log=lambda m: None)
    assert info2["cached"] and info2["path"] == info["path"]
    assert info2["val_perplexity"] == info["val_perplexity"]
    assert same_weights(weights(model), weights(again))
    other, _, info3 = pretrained_lm_of_size(tiny_size(steps=12), corpus=corpus,
                                            cache_dir=tmp_path, log=lambda m: None)
    assert not info3["cached"] and info3["path"] != info["path"]


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path, corpus):
    whole, _, _ = pretrained_lm_of_size(tiny_size(), corpus=corpus, cache_dir=tmp_path / "a",
                                        checkpoint_every=5, log=lambda m: None)

    def crash(step, loss):
        if step == 8:
            raise KeyboardInterrupt  # as a user's Ctrl-C; the state of step 5 is on disk

    with pytest.raises(KeyboardInterrupt):
        pretrained_lm_of_size(tiny_size(), corpus=corpus, cache_dir=tmp_path / "b",
                              checkpoint_every=5, on_step=crash, log=lambda m: None)
    assert list((tmp_path / "b" / "models").glob("*.resume.json"))
    lines = []
    resumed, _, info = pretrained_lm_of_size(tiny_size(), corpus=corpus,
                                             cache_dir=tmp_path / "b", checkpoint_every=5,
                                             log=lines.append)
    assert info["resumed_from"] == 5
    assert any("resuming at step 5/12" in line for line in lines)
    assert same_weights(weights(whole), weights(resumed))
    assert not list((tmp_path / "b" / "models").glob("*.resume*"))  # cleaned up when done


def test_time_limit_stops_with_state_saved_and_a_second_call_finishes(tmp_path, corpus):
    whole, _, _ = pretrained_lm_of_size(tiny_size(), corpus=corpus, cache_dir=tmp_path / "a",
                                        log=lambda m: None)
    with pytest.raises(PretrainingStopped, match="stopped at step 1/12"):
        pretrained_lm_of_size(tiny_size(), corpus=corpus, cache_dir=tmp_path / "b",
                              stop_after_s=0.0, log=lambda m: None)
    resumed, _, info = pretrained_lm_of_size(tiny_size(), corpus=corpus,
                                             cache_dir=tmp_path / "b", log=lambda m: None)
    assert info["resumed_from"] == 1
    assert same_weights(weights(whole), weights(resumed))


def test_progress_lines_give_step_loss_rate_and_eta(tmp_path, corpus):
    lines = []
    pretrained_lm_of_size(tiny_size(), corpus=corpus, cache_dir=tmp_path, log_every=4,
                          log=lines.append)
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 3 and "step 4/12 loss " in steps[0]
    assert "tokens/s (" in steps[0] and "per CPU-second) ETA " in steps[0]


def test_a_missing_corpus_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(FileNotFoundError, match="corpus .*nowhere/corpus.txt.* is neither"):
        pretrained_lm_of_size(tiny_size(), corpus=str(missing), cache_dir=tmp_path)


def test_cpython_corpus_files_are_sorted_library_sources_without_tests():
    root = stdlib_folder()
    files = [p.relative_to(root).as_posix() for p in cpython_source_files()]
    assert files == sorted(files) and "os.py" in files and "asyncio/tasks.py" in files
    assert not [f for f in files if f.startswith(("test/", "encodings/", "pydoc_data/",
                                                  "site-packages/"))]
    assert not [f for f in files if "/tests/" in f or "/idle_test/" in f]


def test_documents_split_every_tenth_held_out():
    docs = [str(i) for i in range(25)]
    train, held = split_documents(docs)
    assert held == ["9", "19"] and len(train) == 23


def test_deep_sizes_have_12_to_16_blocks():
    assert {s.config.n_layers for s in LM_SIZES.values()} <= set(range(8, 17))
    assert LM_SIZES["medium"].config.n_layers == 12
    assert dataclasses.replace(LM_SIZES["medium"].settings).steps == 1500


def test_deep_small_is_a_12_block_cpython_size_whose_blocks_are_a_small_share():
    spec = LM_SIZES["deep-small"]
    assert (spec.corpus, spec.config.n_layers, spec.vocab_size) == ("cpython", 12, 2048)
    model = DecoderLM(spec.config)
    share = sum(p.numel() for p in model.blocks[0].parameters()) / model.num_parameters()
    assert share < 0.07  # so 20% pruning can remove whole blocks (COMP's coarse step)
    assert spec.settings.warmup_steps < spec.settings.steps


def test_cli_pretrain_quick_trains_then_loads(tmp_path, monkeypatch, capsys):
    import json

    from ml.cli import main

    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    assert main(["pretrain", "--size", "deep-tiny", "--quick", "--threads", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["size"] == "deep-tiny" and first["steps"] == 20 and not first["cached"]
    assert main(["pretrain", "--size", "deep-tiny", "--quick"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"]
    assert main(["pretrain", "--size", "huge"]) == 2
    assert "--size must be one of deep-tiny, hat-12, hat-12-cpython, deep-small, medium, large" in capsys.readouterr().err
