"""Fixed-size batches over rows, for every loop that runs a compiled function over N inputs."""
from typing import Iterator

import numpy as np


def padded_batches(batch_size: int, *arrays) -> Iterator[tuple[int, int, list[np.ndarray]]]:
  """Yields ``(start, n, batch)`` over the rows of ``arrays`` (equal lengths) in batches of exactly
  ``batch_size`` rows: the last batch is padded with copies of its last row, so one compiled shape
  serves every batch. ``start`` is the first row's index, ``n`` how many rows are real (the caller
  keeps ``out[:n]``)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  total = len(arrays[0])
  if any(len(a) != total for a in arrays):
    raise ValueError(f"arrays differ in length: {[len(a) for a in arrays]}")
  for start in range(0, total, batch_size):
    batch = [np.asarray(a[start:start + batch_size]) for a in arrays]
    n = len(batch[0])
    if n < batch_size:
      batch = [np.concatenate([b, np.repeat(b[-1:], batch_size - n, 0)]) for b in batch]
    yield start, n, batch
