"""diffusion_text: continuous embedding-space diffusion language models in JAX/Flax.

Shape letters used in tensor names throughout the package (``z_t_BxLxE`` ...):

  B  batch size             L  sequence length          E  embedding (latent) dim
  D  model width            V  vocabulary size          H  attention heads
  K  head dim               T  number of diffusion steps (timesteps t in 1..T)

Timestep convention: ``alpha_bar[0] == 1`` is the clean embedding sequence ``x0``;
``x_t ~ N(sqrt(alpha_bar[t]) x0, (1 - alpha_bar[t]) I)`` for ``t = 1..T``.
"""

__version__ = "0.1.0"
