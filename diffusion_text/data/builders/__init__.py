"""TFDS builders (array_record output, read without TensorFlow through ``tfds.data_source``)."""
from diffusion_text.data.builders.e2e import E2eMrText
from diffusion_text.data.builders.rt_snippets import RtSnippets

BUILDERS = {"e2e": E2eMrText, "rt_snippets": RtSnippets}
