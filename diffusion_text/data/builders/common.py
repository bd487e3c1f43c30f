"""Features shared by every builder, so the pipeline reads all datasets the same way."""
import os

import numpy as np
import tensorflow_datasets as tfds


def features():
  return tfds.features.FeaturesDict({
      "index": np.int64,  # position in the source file (array_record shards are shuffled on write)
      "src": tfds.features.Text(),
      "tgt": tfds.features.Text(),
      "label": np.int64,  # -1 when the dataset has no label
  })


def keyed(records):
  for i, r in enumerate(records):
    yield i, {"index": i, **r}


def manual_dir_or_none(dl_manager):
  """The manual dir if the user gave one that exists, else None (then the builder fetches)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except (AssertionError, ValueError):
    return None
