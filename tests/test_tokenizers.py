import os
import pickle

import numpy as np
import pytest

from diffusion_text import runs
from diffusion_text.data import tokenizers as tk
from diffusion_text.errors import DataError

TEXTS = ["the cat sat on the mat .", "the dog sat .", "a cat and a dog ."] * 20


def test_word_round_trip_and_specials():
  tok = tk.WordTokenizer.train(TEXTS, min_count=1)
  assert tok.itos[: len(tk.SPECIALS)] == list(tk.SPECIALS)
  ids = tok.encode_padded("the cat sat on the mat .", 12)
  assert ids[0] == tk.BOS and ids[8] == tk.EOS and np.all(ids[9:] == tk.PAD)
  assert tok.decode(ids) == "the cat sat on the mat ."


def test_word_min_count_maps_rare_words_to_unk():
  tok = tk.WordTokenizer.train(TEXTS + ["zebra"], min_count=2)
  assert "zebra" not in tok.stoi
  assert tok.encode("zebra cat") == [tk.UNK, tok.stoi["cat"]]
  assert tok.decode([tk.BOS, tk.UNK, tok.stoi["cat"], tk.EOS]) == "<unk> cat"


def test_truncation_keeps_eos():
  tok = tk.WordTokenizer.train(TEXTS)
  ids = tok.encode_padded(" ".join(["cat"] * 50), 8)
  assert len(ids) == 8 and ids[0] == tk.BOS and ids[-1] == tk.EOS


def test_decode_stops_at_eos_and_drops_pad():
  tok = tk.WordTokenizer.train(TEXTS)
  cat = tok.stoi["cat"]
  assert tok.decode([tk.BOS, cat, tk.PAD, cat, tk.EOS, cat]) == "cat cat"


@pytest.mark.parametrize("kind", ["word", "sentencepiece"])
def test_save_load_and_pickle(kind, tmp_path):
  tok = tk.train_tokenizer(kind, TEXTS, vocab_size=30, min_count=1)
  runs.save_tokenizer(str(tmp_path), tok)
  assert not [p for p in os.listdir(tmp_path) if p != runs.TOKENIZER_FILE]  # no temporary left
  for other in (runs.load_tokenizer(str(tmp_path)), pickle.loads(pickle.dumps(tok))):
    assert other.vocab_size == tok.vocab_size
    text = "the dog sat on the mat ."
    np.testing.assert_array_equal(other.encode_padded(text, 16), tok.encode_padded(text, 16))
    assert other.decode(other.encode_padded(text, 16)) == text


def test_sentencepiece_special_ids():
  tok = tk.SentencePieceTokenizer.train(TEXTS, vocab_size=30)
  sp = tok.sp
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (tk.PAD, tk.UNK, tk.BOS, tk.EOS)
  assert sp.piece_to_id("<sep>") == tk.SEP


def test_corrupt_tokenizer_file(tmp_path):
  p = tmp_path / "tok.json"
  p.write_text("{not json")
  with pytest.raises(DataError, match="corrupt"):
    tk.load_tokenizer(str(p))
  with pytest.raises(DataError, match="not found"):
    tk.load_tokenizer(str(tmp_path / "missing.json"))
