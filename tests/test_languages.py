"""The bench's synthetic languages: exact probabilities, and scores that tell a language from its
per-position marginals."""
import collections
import itertools
import math

import numpy as np
import pytest

from diffusion_text import languages
from diffusion_text.languages import _SLOTS, _TEMPLATES


def test_templates_probabilities_sum_to_one():
  lang = languages.templates()
  total = 0.0
  for t in _TEMPLATES:
    words = t.split()
    slots = [_SLOTS[w] if w in _SLOTS else (w,) for w in words]
    total += sum(math.exp(lang.log_prob(list(s))) for s in itertools.product(*slots))
  assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", sorted(languages.LANGUAGES))
def test_sample_frequencies_match_log_prob(name):
  lang = languages.get(name)
  n = 20_000
  counts = collections.Counter(tuple(s) for s in lang.sample(np.random.default_rng(1), n))
  for sent, c in counts.most_common(20):
    p = math.exp(lang.log_prob(list(sent)))
    assert abs(c / n - p) < 4.5 * math.sqrt(p * (1 - p) / n), (sent, c / n, p)


@pytest.mark.parametrize("name", sorted(languages.LANGUAGES))
def test_real_samples_score_as_the_language(name):
  lang = languages.get(name)
  real = lang.sample(np.random.default_rng(0), 400)
  s = languages.score(lang, lang.sample(np.random.default_rng(1), 400), real)
  assert s["valid_fraction"] == 1.0 and s["coverage"] == 1.0
  assert s["true_nll"] == pytest.approx(s["real_true_nll"], rel=0.08)
  assert 0.85 < s["distinct"] < 1.15


@pytest.mark.parametrize("name", sorted(languages.LANGUAGES))
def test_marginals_fail(name):
  """Words drawn per position from the real marginals (right words, no order) are invalid."""
  lang = languages.get(name)
  real = lang.sample(np.random.default_rng(0), 400)
  fake = languages.marginal_sampler(lang, real)(np.random.default_rng(1), 400)
  assert languages.score(lang, fake, real)["valid_fraction"] < 0.05


def test_mode_collapse_shows_in_coverage_not_validity():
  lang = languages.templates()
  real = lang.sample(np.random.default_rng(0), 400)
  one = [s for s in real if lang.mode(s) == 0][:1] * 400
  s = languages.score(lang, one, real)
  assert s["valid_fraction"] == 1.0
  assert s["coverage"] == pytest.approx(1 / 6) and s["distinct"] < 0.01


def test_grammar_agreement_is_required():
  lang = languages.grammar()
  assert math.isfinite(lang.log_prob("the dogs near a cat sleep .".split()))
  assert lang.log_prob("the dogs near a cat sleeps .".split()) == -math.inf
  assert lang.log_prob("a dogs sleep .".split()) == -math.inf
  assert lang.log_prob("the dog sees the cat".split()) == -math.inf


def test_unknown_language_is_a_config_error():
  with pytest.raises(languages.ConfigError, match="unknown language"):
    languages.get("klingon")
