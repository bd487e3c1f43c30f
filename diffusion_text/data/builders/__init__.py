"""TFDS builders (array_record output, read without TensorFlow through ``tfds.data_source``)."""
from diffusion_text.data.builders.e2e import E2eMrText
from diffusion_text.data.builders.jsonl_seq2seq import JsonlSeq2seq
from diffusion_text.data.builders.rt_snippets import RtCloze, RtClozeWindows, RtKeywords, RtSnippets

BUILDERS = {"e2e": E2eMrText, "rt_snippets": RtSnippets, "rt_keywords": RtKeywords,
            "rt_cloze": RtCloze, "rt_cloze_windows": RtClozeWindows}


def make_builder(dataset: str, tfds_dir: str):
  """The builder for a ``data.dataset`` name: a key of BUILDERS, or ``jsonl:NAME``."""
  import tensorflow_datasets as tfds
  if dataset.startswith("jsonl:"):
    name = dataset.split(":", 1)[1]
    return JsonlSeq2seq(data_dir=tfds_dir, file_format="array_record",
                        config=tfds.core.BuilderConfig(name=name, description=f"{name} JSON Lines"))
  return BUILDERS[dataset](data_dir=tfds_dir, file_format="array_record")
