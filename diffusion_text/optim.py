"""The optax chain: gradient clipping, AdamW, linear warmup then linear/cosine/constant decay."""
import optax

from diffusion_text.errors import ConfigError


def learning_rate_schedule(optim_cfg, num_train_steps: int) -> optax.Schedule:
  peak, warmup = optim_cfg.learning_rate, optim_cfg.warmup_steps
  decay_steps = max(num_train_steps - warmup, 1)
  if optim_cfg.decay == "linear":
    decay = optax.linear_schedule(peak, peak * optim_cfg.final_lr_fraction, decay_steps)
  elif optim_cfg.decay == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=optim_cfg.final_lr_fraction)
  elif optim_cfg.decay == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ConfigError(f"optim.decay must be linear|cosine|constant, got {optim_cfg.decay!r}")
  warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
  return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(optim_cfg, num_train_steps: int) -> optax.GradientTransformation:
  lr = learning_rate_schedule(optim_cfg, num_train_steps)
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip_norm),
      optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay))
