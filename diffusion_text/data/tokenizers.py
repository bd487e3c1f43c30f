"""Tokenizers: a word-level vocabulary (Diffusion-LM style) and sentencepiece, both trained on the data.

Both share the special ids PAD=0, UNK=1, BOS=2, EOS=3, SEP=4, so masks and packing never depend on the
tokenizer. Both are picklable and saved beside the run (``save``/``load``), so sampling decodes with
exactly the vocabulary the model was trained with. Nothing is downloaded.
"""
import collections
import io
import json
import os
from typing import Iterable, Sequence

import numpy as np

from diffusion_text.errors import DataError

PAD, UNK, BOS, EOS, SEP = 0, 1, 2, 3, 4
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<sep>")


class Tokenizer:
  """Common encode/pad/decode logic; subclasses map text <-> ids."""
  kind: str

  @property
  def vocab_size(self) -> int:
    raise NotImplementedError

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode_ids(self, ids: Sequence[int]) -> str:
    raise NotImplementedError

  def encode_padded(self, text: str, max_len: int):
    """[BOS] ids [EOS] truncated (keeping EOS) and padded to ``max_len``; returns int32 (L,)."""
    ids = self.encode(text)[: max_len - 2]
    out = np.full((max_len,), PAD, np.int32)
    seq = [BOS] + ids + [EOS]
    out[: len(seq)] = seq
    return out

  def decode(self, ids: Sequence[int]) -> str:
    """Text of the ids up to the first EOS (or PAD run), without special tokens."""
    keep = []
    for i in np.asarray(ids).tolist():
      if i == EOS:
        break
      if i >= len(SPECIALS) or i == UNK:
        keep.append(i)
    return self.decode_ids(keep)

  def to_json(self) -> dict:
    """What ``load_tokenizer`` reads back (``runs.save_tokenizer`` writes it into a run)."""
    raise NotImplementedError


class WordTokenizer(Tokenizer):
  """Whitespace tokens with a minimum count; rarer words map to UNK (Li et al. 2022, E2E setup)."""
  kind = "word"

  def __init__(self, words: Sequence[str]):
    self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
    self.stoi = {w: i for i, w in enumerate(self.itos)}

  @classmethod
  def train(cls, texts: Iterable[str], min_count: int = 1, max_vocab: int | None = None):
    counts = collections.Counter(w for t in texts for w in t.split())
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_vocab is not None:
      words = words[: max(0, max_vocab - len(SPECIALS))]
    return cls(words)

  @property
  def vocab_size(self) -> int:
    return len(self.itos)

  def encode(self, text: str) -> list[int]:
    # special-token strings in user text ("<pad>", "<sep>") are ordinary unknown words, never the
    # control ids that padding and source/target packing rely on
    return [i if i >= len(SPECIALS) else UNK for i in (self.stoi.get(w, UNK) for w in text.split())]

  def decode_ids(self, ids: Sequence[int]) -> str:
    return " ".join(self.itos[i] for i in ids)

  def to_json(self) -> dict:
    return {"kind": self.kind, "itos": self.itos}

  @classmethod
  def from_json(cls, blob: dict):
    return cls(blob["itos"][len(SPECIALS):])


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece model (unigram or BPE) trained on the training split."""
  kind = "sentencepiece"

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  def __getstate__(self):
    return {"model_proto": self.model_proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int = 8000, model_type: str = "bpe"):
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size,
        model_type=model_type, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        user_defined_symbols=[SPECIALS[SEP]], character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2)
    return cls(buf.getvalue())

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    # "<sep>" is a user-defined piece (so it is one token); in user text it must not become SEP
    return [i if i >= len(SPECIALS) else UNK for i in self.sp.encode(text)]

  def decode_ids(self, ids: Sequence[int]) -> str:
    return self.sp.decode([int(i) for i in ids])

  def to_json(self) -> dict:
    return {"kind": self.kind, "model_proto": self.model_proto.hex()}

  @classmethod
  def from_json(cls, blob: dict):
    return cls(bytes.fromhex(blob["model_proto"]))


TOKENIZERS = {"word": WordTokenizer, "sentencepiece": SentencePieceTokenizer}


def train_tokenizer(kind: str, texts: Sequence[str], *, vocab_size: int, min_count: int) -> Tokenizer:
  if kind == "word":
    return WordTokenizer.train(texts, min_count=min_count, max_vocab=vocab_size or None)
  if kind == "sentencepiece":
    return SentencePieceTokenizer.train(texts, vocab_size=vocab_size)
  raise DataError(f"unknown tokenizer {kind!r}; choose one of {sorted(TOKENIZERS)}")


def load_tokenizer(path: str) -> Tokenizer:
  if not os.path.exists(path):
    raise DataError(f"tokenizer file not found: {path}")
  try:
    with open(path, encoding="utf-8") as f:
      blob = json.load(f)
    return TOKENIZERS[blob["kind"]].from_json(blob)
  except (json.JSONDecodeError, KeyError, ValueError) as e:
    raise DataError(f"tokenizer file {path} is corrupt: {e}") from e
