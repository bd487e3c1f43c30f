"""Noise schedules: ``alpha_bar[t]`` for t = 0..T with ``alpha_bar[0] == 1``.

Each schedule is a continuous function ``alpha_bar(u)`` on u in [0, 1]. Following Nichol & Dhariwal
(2021, eq. 17) the discrete schedule is built through betas, ``beta_t = 1 - alpha_bar(t/T) /
alpha_bar((t-1)/T)`` clipped to ``max_beta``, and ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``.

* ``sqrt``: Diffusion-LM (Li et al. 2022, sec. 4.2), ``alpha_bar(u) = 1 - sqrt(u + s)``, s = 1e-4. Noise
  rises quickly at small t, which the paper found matters for text embeddings.
* ``cosine``: Nichol & Dhariwal (2021), ``cos^2((u + s) / (1 + s) * pi / 2)``, s = 0.008.
* ``linear``: Ho et al. (2020), betas linear from 1e-4 to 0.02, scaled by 1000 / T (and clipped,
  which matters for T < 50).
* ``tan-<d>`` (e.g. ``tan-9``): TEncDM's tan-d (Shabalin et al. 2024),
  ``alpha_bar(u) = 1 / (1 + d^2 tan^2(pi u / 2))``: the signal-to-noise ratio of the cosine schedule
  (d = 1, without its offset) divided by d^2 at every u, so words are hidden at lower t.
"""
import re
from typing import Callable

import numpy as np

_CONTINUOUS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sqrt": lambda u: 1.0 - np.sqrt(u + 1e-4),
    "cosine": lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2,
}
# Every name here is a valid schedule (tan-9 stands for the tan-<d> family); NAMES is for messages.
SCHEDULES = ("sqrt", "cosine", "linear", "tan-9")
NAMES = "sqrt, cosine, linear or tan-<d> (d > 0)"


def _tan_d(name: str):
  """``alpha_bar(u)`` of ``tan-<d>``, or None when ``name`` is not of that form."""
  m = re.fullmatch(r"tan-(\d+(?:\.\d+)?)", name)
  if m is None or float(m.group(1)) <= 0:
    return None
  d2 = float(m.group(1)) ** 2
  return lambda u: 1.0 / (1.0 + d2 * np.tan(np.minimum(u, 1.0 - 1e-9) * np.pi / 2) ** 2)


def _continuous(name: str):
  return _CONTINUOUS.get(name) or _tan_d(name)


def is_known(name: str) -> bool:
  return name == "linear" or _continuous(name) is not None


def betas(name: str, num_steps: int, max_beta: float = 0.999) -> np.ndarray:
  """Per-step betas, shape (T,), float64; ``betas[t-1]`` is beta_t."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if name == "linear":
    scale = 1000.0 / num_steps
    return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64),
                      max_beta)
  f = _continuous(name)
  if f is None:
    raise ValueError(f"unknown noise schedule {name!r}; choose {NAMES}")
  u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  a = f(u)
  # The sqrt schedule has alpha_bar(0) = 0.99 < 1; the ratio form makes alpha_bar[0] exactly 1.
  return np.minimum(1.0 - a[1:] / a[:-1], max_beta)


def alpha_bar(name: str, num_steps: int) -> np.ndarray:
  """``alpha_bar[t]`` for t = 0..T, shape (T+1,), float64, ``alpha_bar[0] == 1``, decreasing."""
  return np.concatenate([[1.0], np.cumprod(1.0 - betas(name, num_steps))])

