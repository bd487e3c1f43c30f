"""A generic seq2seq builder for DiffuSeq-format JSON Lines: ``{"src": ..., "trg": ...}`` per line.

``dataset = "jsonl:NAME"`` reads ``<source_dir>/NAME/{train,valid,test}.jsonl`` (QQP, Quasar-T,
Wiki-Auto, ... for users who have them); splits whose file is absent are left out.
"""
import os

import tensorflow_datasets as tfds

from diffusion_text.data import sources
from diffusion_text.data.builders import common

SPLIT_FILES = {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"}


class JsonlSeq2seq(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "DiffuSeq {src, trg} JSON Lines."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "A dir holding NAME/{train,valid,test}.jsonl."

  def _info(self):
    return self.dataset_info_from_configs(features=common.features())

  def _split_generators(self, dl_manager):
    root = common.manual_dir_or_none(dl_manager) or sources.default_source_dir()
    d = os.path.join(root, self.builder_config.name)
    return {split: self._generate_examples(sources.read_jsonl_pairs(os.path.join(d, f)))
            for split, f in SPLIT_FILES.items() if os.path.exists(os.path.join(d, f))}

  def _generate_examples(self, records):
    yield from common.keyed(records)
