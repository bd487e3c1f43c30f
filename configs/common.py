"""The base config every config starts from: ``diffusion_text.defaults`` (every key the code reads,
with its default and meaning)."""
from diffusion_text.defaults import get_config  # noqa: F401
