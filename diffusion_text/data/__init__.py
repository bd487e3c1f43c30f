"""Data: tokenizers, TFDS builders for the datasets, and the batching pipeline."""
