"""Corpora, tokenizers and next-token windows for the language-model methods."""
import pytest
import torch

from ml.data.text import (
    ByteTokenizer, CharTokenizer, SequenceDataset, load_corpus, shard, tokenizer_from_dict,
    train_val_split,
)


def test_pydoc_corpus_is_deterministic_english_text():
    text = load_corpus("pydoc")
    assert len(text) > 400_000 and text == load_corpus()
    assert "assert" in text[:100]


def test_corpus_from_a_file_and_a_clear_error_when_absent(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("héllo wörld", encoding="utf-8")
    assert load_corpus(str(path)) == "héllo wörld"
    with pytest.raises(FileNotFoundError, match="neither 'pydoc' nor an existing text file"):
        load_corpus(str(tmp_path / "missing.txt"))


def test_a_bare_file_name_is_read_from_the_data_folder_else_says_where_to_put_it(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_corpus("shakespeare.txt")
    assert f"put a UTF-8 text file at {tmp_path / 'shakespeare.txt'} or " \
           f"{tmp_path / 'data' / 'shakespeare.txt'}" in str(err.value)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shakespeare.txt").write_text("To be, or not to be", encoding="utf-8")
    assert load_corpus("shakespeare.txt") == "To be, or not to be"
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus("bad.txt")


def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    ids = tok.encode("naïve ☃")
    assert ids.dtype == torch.long and int(ids.max()) < tok.vocab_size == 256
    assert tok.decode(ids) == "naïve ☃"


def test_char_tokenizer_maps_unseen_characters_to_the_unknown_id():
    tok = CharTokenizer.fit("abcab")
    assert tok.vocab_size == 4
    assert tok.encode("abz").tolist() == [1, 2, CharTokenizer.UNKNOWN_ID]
    assert tok.decode(tok.encode("cab")) == "cab"
    assert tokenizer_from_dict(tok.to_dict()).encode("cab").tolist() == tok.encode("cab").tolist()


def test_sequence_dataset_targets_are_inputs_shifted_by_one():
    ds = SequenceDataset(torch.arange(11), seq_len=4)
    assert len(ds) == 2
    x, y = ds[1]
    assert x.tolist() == [4, 5, 6, 7] and y.tolist() == [5, 6, 7, 8]
    xb, yb = ds.sample_batch(3, torch.Generator().manual_seed(0))
    assert xb.shape == (3, 4) and torch.equal(xb[:, 1:], yb[:, :-1])


def test_split_and_shards_are_contiguous_and_cover_the_stream():
    tokens = torch.arange(103)
    train, val = train_val_split(tokens, 0.1)
    assert torch.equal(torch.cat([train, val]), tokens) and len(val) == 10
    shards = [shard(tokens, 4, w) for w in range(4)]
    assert torch.equal(torch.cat(shards), tokens)
    assert [len(s) for s in shards] == [26, 26, 26, 25]
    with pytest.raises(ValueError, match="worker must be in"):
        shard(tokens, 4, 4)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(tokens, 1.0)
