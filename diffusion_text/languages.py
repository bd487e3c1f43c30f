"""Synthetic languages whose distribution is known exactly: the bench of ``langbench.py``.

Each language draws sentences (lists of words) and gives the exact log-probability of any word list
(``-inf`` outside its support), so a model's samples are scored with no learned model in the loop:

* ``templates``: one meaning (name, food, area) said in one of several templates with different
  word orders and lengths: the multi-reference case, where a model that averages the ways of saying
  a thing over positions writes none of them.
* ``markov``: a sparse first-order Markov chain (each word has three successors) with a length law:
  local structure only, but every transition must be right.
* ``grammar``: a small probabilistic grammar with subject-verb number agreement across an optional
  prepositional phrase: a dependency over up to six words.

``score`` turns samples into the bench's numbers: the share of valid samples, their true NLL against
that of real samples (the language's entropy), and coverage of the language's modes (templates,
first words, sentence types).
"""
import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from diffusion_text.errors import ConfigError

Sentence = list  # of words (str)


@dataclasses.dataclass(frozen=True)
class Language:
  """A distribution over sentences: ``sample(rng, n)``, exact ``log_prob``, and ``mode`` (a label
  that coverage counts: which template, which sentence type)."""
  name: str
  words: tuple  # the vocabulary, in a fixed order
  max_words: int  # the longest sentence
  sample_one: Callable  # rng -> Sentence
  log_prob: Callable  # Sentence -> float (natural log; -inf outside the support)
  mode: Callable  # Sentence -> hashable (of a valid sentence)

  def sample(self, rng: np.random.Generator, n: int) -> list:
    return [self.sample_one(rng) for _ in range(n)]


def _zipf(n: int, s: float = 1.0) -> np.ndarray:
  p = 1.0 / np.arange(1, n + 1) ** s
  return p / p.sum()


def _choice(rng, items: Sequence, p: np.ndarray):
  return items[int(rng.choice(len(items), p=p))]


# ------------------------------------------------------------------------------------- templates

_SLOTS = {
    "NAME": ("aromi", "zizzi", "cotto", "strada", "loch", "giraffe"),
    "FOOD": ("thai", "french", "indian", "italian", "chinese", "english"),
    "AREA": ("centre", "riverside", "north", "south"),
}
_TEMPLATES = (
    "NAME serves FOOD food in the AREA .",
    "in the AREA , NAME serves FOOD food .",
    "NAME is a FOOD place in the AREA .",
    "there is a FOOD place called NAME in the AREA .",
    "for FOOD food , try NAME in the AREA .",
    "NAME , in the AREA , has FOOD food .",
)


def templates() -> Language:
  tmpl = [t.split() for t in _TEMPLATES]
  p_tmpl = _zipf(len(tmpl), 0.5)
  p_slot = {k: _zipf(len(v), 0.7) for k, v in _SLOTS.items()}
  index = {k: {w: i for i, w in enumerate(v)} for k, v in _SLOTS.items()}
  words = sorted({w for t in tmpl for w in t if w not in _SLOTS} | {w for v in _SLOTS.values()
                                                                     for w in v})

  def sample_one(rng):
    t = tmpl[int(rng.choice(len(tmpl), p=p_tmpl))]
    return [_choice(rng, _SLOTS[w], p_slot[w]) if w in _SLOTS else w for w in t]

  def match(t, sent) -> float:
    if len(t) != len(sent):
      return -math.inf
    lp = 0.0
    for w, s in zip(t, sent):
      if w in _SLOTS:
        if s not in index[w]:
          return -math.inf
        lp += math.log(p_slot[w][index[w][s]])
      elif w != s:
        return -math.inf
    return lp

  def log_prob(sent) -> float:
    lps = [math.log(p) + match(t, sent) for t, p in zip(tmpl, p_tmpl)]
    return float(np.logaddexp.reduce(lps))

  def mode(sent):
    return int(np.argmax([match(t, sent) for t in tmpl]))

  return Language("templates", tuple(words), max(len(t) for t in tmpl), sample_one, log_prob, mode)


# ---------------------------------------------------------------------------------------- markov

def markov(num_words: int = 24, successors: int = 3, min_words: int = 4, max_words: int = 12,
           stop: float = 0.25, seed: int = 0) -> Language:
  """Word w_1 from a Zipf start law; then each word has ``successors`` allowed next words with
  Dirichlet(1) probabilities; after ``min_words`` words the sentence ends with probability ``stop``
  at each word, and always at ``max_words``."""
  rng = np.random.default_rng(seed)
  words = tuple(f"w{i:02d}" for i in range(num_words))
  nxt = np.stack([rng.choice(num_words, successors, replace=False) for _ in range(num_words)])
  p_nxt = rng.dirichlet(np.ones(successors), num_words)
  trans = np.zeros((num_words, num_words))
  for a in range(num_words):
    trans[a, nxt[a]] = p_nxt[a]
  p_start = _zipf(num_words, 1.0)[rng.permutation(num_words)]
  index = {w: i for i, w in enumerate(words)}

  def p_end(n):  # the probability that a sentence of n words ends here
    return 0.0 if n < min_words else 1.0 if n >= max_words else stop

  def sample_one(r):
    ids = [int(r.choice(num_words, p=p_start))]
    while r.random() >= p_end(len(ids)):
      ids.append(int(r.choice(num_words, p=trans[ids[-1]])))
    return [words[i] for i in ids]

  def log_prob(sent) -> float:
    if not min_words <= len(sent) <= max_words or any(w not in index for w in sent):
      return -math.inf
    ids = [index[w] for w in sent]
    p = p_start[ids[0]] * p_end(len(ids))
    for n, (a, b) in enumerate(zip(ids, ids[1:]), start=1):
      p *= (1.0 - p_end(n)) * trans[a, b]
    return math.log(p) if p > 0 else -math.inf

  return Language("markov", words, max_words, sample_one, log_prob, lambda s: s[0])


# --------------------------------------------------------------------------------------- grammar

_NOUNS = {"sg": ("dog", "cat", "bird", "child"), "pl": ("dogs", "cats", "birds", "children")}
_VERBS = {"sg": ("sees", "likes", "follows"), "pl": ("see", "like", "follow")}
_INTRANS = {"sg": ("sleeps", "runs"), "pl": ("sleep", "run")}
_ADJS = ("small", "old", "happy")
_G = {"det": ("the", "a"), "prep": ("near", "behind")}
# rule probabilities
_P_NUM = {"sg": 0.6, "pl": 0.4}
_P_ADJ = 0.3  # NP -> det adj noun (else det noun)
_P_PP = 0.4  # subject NP -> NP PP
_P_TRANS = 0.6  # VP -> verb NP (else intransitive verb)


def grammar() -> Language:
  """S -> NP_n [PP] VP_n '.'; NP -> det [adj] noun (the det 'a' only with a singular noun);
  PP -> prep NP (no further PP); VP_n -> verb_n NP | intrans_n. The verb agrees in number n with
  the subject's noun, across the PP."""
  words = sorted({w for v in (*_NOUNS.values(), *_VERBS.values(), *_INTRANS.values()) for w in v}
                 | set(_ADJS) | {w for v in _G.values() for w in v} | {"."})
  u = lambda xs: 1.0 / len(xs)

  def sample_np(rng):
    n = "sg" if rng.random() < _P_NUM["sg"] else "pl"
    det = _choice(rng, _G["det"], np.full(2, 0.5)) if n == "sg" else "the"
    adj = [_choice(rng, _ADJS, np.full(len(_ADJS), u(_ADJS)))] if rng.random() < _P_ADJ else []
    return [det, *adj, _choice(rng, _NOUNS[n], np.full(4, 0.25))], n

  def sample_one(rng):
    subj, n = sample_np(rng)
    if rng.random() < _P_PP:
      subj += [_choice(rng, _G["prep"], np.full(2, 0.5)), *sample_np(rng)[0]]
    if rng.random() < _P_TRANS:
      return subj + [_choice(rng, _VERBS[n], np.full(3, 1 / 3)), *sample_np(rng)[0], "."]
    return subj + [_choice(rng, _INTRANS[n], np.full(2, 0.5)), "."]

  def parse_np(sent, i):
    """(log p, number, next index) of the NP at ``i``, or None."""
    if i >= len(sent) or sent[i] not in _G["det"]:
      return None
    det, lp, j = sent[i], 0.0, i + 1
    if j < len(sent) and sent[j] in _ADJS:
      lp, j = lp + math.log(_P_ADJ * u(_ADJS)), j + 1
    else:
      lp += math.log(1 - _P_ADJ)
    if j >= len(sent):
      return None
    n = next((k for k, v in _NOUNS.items() if sent[j] in v), None)
    if n is None or (n == "pl" and det != "the"):
      return None
    lp += math.log(_P_NUM[n] * 0.25 * (0.5 if n == "sg" else 1.0))
    return lp, n, j + 1

  def analyse(sent):
    """(log p, mode) of a sentence, or None outside the language."""
    if not sent or sent[-1] != ".":
      return None
    subj = parse_np(sent, 0)
    if subj is None:
      return None
    lp, n, i = subj
    pp = i < len(sent) and sent[i] in _G["prep"]
    if pp:
      obj = parse_np(sent, i + 1)
      if obj is None:
        return None
      lp, i = lp + math.log(_P_PP * 0.5) + obj[0], obj[2]
    else:
      lp += math.log(1 - _P_PP)
    if i < len(sent) and sent[i] in _VERBS[n]:
      obj = parse_np(sent, i + 1)
      if obj is None:
        return None
      lp, i, trans = lp + math.log(_P_TRANS / 3) + obj[0], obj[2], True
    elif i < len(sent) and sent[i] in _INTRANS[n]:
      lp, i, trans = lp + math.log((1 - _P_TRANS) / 2), i + 1, False
    else:
      return None
    return (lp, (n, pp, trans)) if i == len(sent) - 1 else None

  def log_prob(sent) -> float:
    a = analyse(sent)
    return -math.inf if a is None else a[0]

  return Language("grammar", tuple(words), 12, sample_one, log_prob, lambda s: analyse(s)[1])


LANGUAGES = {"templates": templates, "markov": markov, "grammar": grammar}


def get(name: str) -> Language:
  if name not in LANGUAGES:
    raise ConfigError(f"unknown language {name!r}; choose from {sorted(LANGUAGES)}")
  return LANGUAGES[name]()


# --------------------------------------------------------------------------------------- scoring

def marginal_sampler(lang: Language, real: Sequence[Sentence]) -> Callable:
  """``(rng, n) -> sentences`` drawing every position independently from the real sentences'
  per-position word marginals (with the length law of ``real``): a model that learned the
  marginals and not the joint. The bench's scores must call it a failure."""
  lengths = np.array([len(s) for s in real])
  cols = [[s[k] for s in real if len(s) > k] for k in range(lengths.max())]

  def draw(rng, n):
    out = []
    for _ in range(n):
      length = int(rng.choice(lengths))
      out.append([cols[k][int(rng.integers(len(cols[k])))] for k in range(length)])
    return out
  return draw


def score(lang: Language, samples: Sequence[Sentence], real: Sequence[Sentence]) -> dict:
  """The bench's numbers for ``samples`` against ``real`` sentences of ``lang`` (same count best):

  * ``valid_fraction``: share of samples in the language's support;
  * ``true_nll`` / ``real_true_nll``: mean -log p (nats per sentence) of the valid samples / the real
    ones (the latter estimates the language's entropy);
  * ``coverage``: distinct modes among the valid samples over distinct modes among the real ones;
  * ``distinct``: distinct valid samples over distinct real sentences (1 for as diverse as real).
  """
  lps = np.array([lang.log_prob(list(s)) for s in samples])
  ok = np.isfinite(lps)
  real_lps = np.array([lang.log_prob(list(s)) for s in real])
  valid = [tuple(s) for s, v in zip(samples, ok) if v]
  real_modes = {lang.mode(list(s)) for s in real}
  modes = {lang.mode(list(s)) for s in valid}
  return {
      "valid_fraction": float(ok.mean()) if len(ok) else 0.0,
      "true_nll": float(-lps[ok].mean()) if ok.any() else math.inf,
      "real_true_nll": float(-real_lps.mean()),
      "coverage": len(modes & real_modes) / max(len(real_modes), 1),
      "distinct": len(set(valid)) / max(len({tuple(s) for s in real}), 1),
      "num_samples": len(samples),
  }
