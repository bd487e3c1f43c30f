"""Up-front validation of a run config against the base config (unknown keys, types, ranges)."""
import ml_collections

from diffusion_text import decoding, families, runs, schedules
from diffusion_text.data import delex, packing
from diffusion_text.errors import ConfigError


def validate(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first problem found."""
  runs.check_types(config, base)

  def check(ok, msg):
    if not ok:
      raise ConfigError(msg)

  c = config
  check(schedules.is_known(c.diffusion.schedule),
        f"diffusion.schedule must be {schedules.NAMES}, got {c.diffusion.schedule!r}")
  check(c.diffusion.num_steps >= 1, "diffusion.num_steps must be >= 1")
  check(c.model.family in families.FAMILIES,
        f"model.family must be one of {sorted(families.FAMILIES)}, got {c.model.family!r}")
  decoders = families.FAMILIES[c.model.family].decoders
  for section in ("eval", "sample"):
    s = c[section]
    check(s.sampler in decoders, f"{section}.sampler must be one of {decoders} for model.family="
          f"{c.model.family}, got {s.sampler!r}")
  if c.model.family == "diffusion":
    check(1 <= c.eval.sample_steps <= c.diffusion.num_steps,
          f"eval.sample_steps must be in [1, diffusion.num_steps={c.diffusion.num_steps}]")
    check(0 <= c.eval.nll_t <= c.diffusion.num_steps - 1,
          f"eval.nll_t must be in [0, diffusion.num_steps - 1 = {c.diffusion.num_steps - 1}]")
    check(0 <= c.sample.steps <= c.diffusion.num_steps,
          f"sample.steps must be in [0, diffusion.num_steps={c.diffusion.num_steps}]")
  check(c.model.width % c.model.num_heads == 0, "model.width must be divisible by model.num_heads")
  check(not c.model.get("rope", False) or (c.model.width // c.model.num_heads) % 2 == 0,
        "model.rope needs an even head width (model.width / model.num_heads)")
  check(0.0 < c.diffusion.self_cond_prob <= 1.0, "diffusion.self_cond_prob must be in (0, 1]")
  check(0.0 < c.diffusion.t_power <= 4.0, "diffusion.t_power must be in (0, 4]")
  check(c.diffusion.t_sampler in ("uniform", "loss_aware", "warped"),
        f"diffusion.t_sampler must be uniform|loss_aware|warped, got {c.diffusion.t_sampler!r}")
  check(c.diffusion.t_sampler == "uniform" or c.diffusion.t_power == 1.0,
        f"diffusion.t_sampler={c.diffusion.t_sampler} draws t itself; leave diffusion.t_power at 1")
  check(0.0 <= c.diffusion.absorb_prob <= 1.0, "diffusion.absorb_prob must be in [0, 1]")
  check(c.model.x0_head in ("linear", "softmax"),
        f"model.x0_head must be linear|softmax, got {c.model.x0_head!r}")
  check(c.diffusion.ce_weight >= 0.0, "diffusion.ce_weight must be >= 0")
  check(0.0 <= c.diffusion.cond_drop_prob < 1.0, "diffusion.cond_drop_prob must be in [0, 1)")
  check(0.0 <= c.diffusion.reveal_prob <= 1.0, "diffusion.reveal_prob must be in [0, 1]")
  check(c.diffusion.cond_drop_prob == 0.0 or c.data.task == "seq2seq",
        "diffusion.cond_drop_prob needs data.task=seq2seq (it drops the source)")
  if c.model.family == "classifier":
    check(bool(c.classifier.base_run), "model.family=classifier needs classifier.base_run (the "
          "workdir of a trained diffusion LM)")
    check(c.classifier.labels in ("words", "label"),
          f"classifier.labels must be words|label, got {c.classifier.labels!r}")
    check(c.classifier.labels != "label" or c.classifier.num_classes >= 2,
          "classifier.labels=label needs classifier.num_classes >= 2")
    check(c.classifier.max_t >= -1, "classifier.max_t must be -1 (all noise levels) or >= 0")
  check(0.0 <= c.model.dropout < 1.0, "model.dropout must be in [0, 1)")
  _validate_step_distill(c, check)
  check(c.model.logits_head in ("tied", "full"),
        f"model.logits_head must be tied|full, got {c.model.logits_head!r}")
  check(c.model.arch in ("single_stack", "encoder_decoder"),
        f"model.arch must be single_stack|encoder_decoder, got {c.model.arch!r}")
  check(c.model.arch == "single_stack" or (
      c.model.family == "diffusion" and c.data.task == "seq2seq"
      and c.data.target_start in ("fixed", "aligned")),
        "model.arch=encoder_decoder needs model.family=diffusion, data.task=seq2seq and "
        "data.target_start=fixed|aligned (the source is the first max_src_len + 2 positions)")
  check(c.model.positions in ("separate", "shared"),
        f"model.positions must be separate|shared, got {c.model.positions!r}")
  check(c.model.positions == "separate" or c.model.arch == "encoder_decoder",
        "model.positions=shared needs model.arch=encoder_decoder")
  check(c.model.emb_norm in ("none", "l2", "layernorm"),
        f"model.emb_norm must be none|l2|layernorm, got {c.model.emb_norm!r}")
  check(c.model.emb_scale > 0, "model.emb_scale must be > 0")
  check(0.0 <= c.diffusion.pad_weight <= 1.0, "diffusion.pad_weight must be in [0, 1]")
  check(c.model.dtype in ("float32", "bfloat16"), "model.dtype must be float32 or bfloat16")
  check(isinstance(c.data.encode_cache, int) and c.data.encode_cache >= 0,
        "data.encode_cache must be an integer >= 0")
  check(c.data.max_len >= 3, "data.max_len must be >= 3 (BOS, a token, EOS)")
  check(c.data.tokenizer in ("word", "sentencepiece"), "data.tokenizer must be word|sentencepiece")
  check(c.data.task in ("lm", "seq2seq"), f"data.task must be lm|seq2seq, got {c.data.task!r}")
  check(c.data.task != "seq2seq" or 1 <= (c.data.max_src_len or c.data.max_len // 2) <= c.data.max_len - 4,
        "data.max_src_len must leave room for SEP, a target token and EOS (<= max_len - 4)")
  check(c.data.target_start in packing.TARGET_STARTS,
        f"data.target_start must be {'|'.join(packing.TARGET_STARTS)}, got {c.data.target_start!r}")
  check(c.data.target_start != "in_place" or (c.data.tokenizer == "word" and not c.data.delex
                                               and c.model.family == "diffusion"),
        "data.target_start=in_place needs data.tokenizer=word (one token per word), no data.delex "
        "and model.family=diffusion (the AR baseline writes after a source region)")
  check(not c.data.delex or c.data.task == "seq2seq",
        "data.delex needs data.task=seq2seq (it replaces source slot values in the target)")
  try:
    delex.of(c.data)
  except ValueError as e:
    raise ConfigError(f"data.delex_keep: {e}") from None
  check(c.data.tokenizer != "sentencepiece" or c.data.vocab_size > 5,
        "data.vocab_size must be set (> 5) for the sentencepiece tokenizer")
  for k in ("batch_size", "num_train_steps", "log_every_steps", "eval_every_steps",
            "checkpoint_every_steps", "keep_checkpoints"):
    check(c.train[k] >= 1, f"train.{k} must be >= 1")
  check(0.0 <= c.train.ema_decay < 1.0, "train.ema_decay must be in [0, 1)")
  check(c.optim.learning_rate > 0, "optim.learning_rate must be > 0")
  # every other numeric key: its meaningful range
  for k in ("emb_dim", "width", "num_layers", "num_heads", "mlp_dim"):
    check(c.model[k] >= 1, f"model.{k} must be >= 1")
  check(c.model.emb_init_std > 0, "model.emb_init_std must be > 0")
  for k in ("vocab_size", "max_src_len", "max_train_examples", "max_eval_examples"):
    check(c.data[k] >= 0, f"data.{k} must be >= 0 (0 = unset)")
  check(c.data.min_count >= 1, "data.min_count must be >= 1")
  check(c.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
  check(c.optim.decay in ("linear", "cosine", "constant"),
        f"optim.decay must be linear|cosine|constant, got {c.optim.decay!r}")
  check(0.0 <= c.optim.final_lr_fraction <= 1.0, "optim.final_lr_fraction must be in [0, 1]")
  check(c.optim.weight_decay >= 0, "optim.weight_decay must be >= 0")
  check(c.optim.grad_clip_norm > 0, "optim.grad_clip_norm must be > 0")
  for k in ("b1", "b2"):
    check(0.0 <= c.optim[k] < 1.0, f"optim.{k} must be in [0, 1)")
  for k in ("batch_size", "num_batches"):
    check(c.eval[k] >= 1, f"eval.{k} must be >= 1")
  check(c.eval.num_samples >= 0, "eval.num_samples must be >= 0")
  check(c.sample.batch_size >= 1, "sample.batch_size must be >= 1")
  check(c.sample.eta >= 0, "sample.eta must be >= 0")
  check(c.sample.score_temp > 0, "sample.score_temp must be > 0")
  check(c.sample.logit_temp > 0, "sample.logit_temp must be > 0")
  check(c.sample.grid_power >= 1, "sample.grid_power must be >= 1")
  # the training loop's samples carry no MR word groups: guidance toward the fields is set when
  # a run is evaluated
  check(c.sample.get("slot_guidance", 0.0) == 0,
        "sample.slot_guidance is a setting of evaluation (experiments.evaluate --slot_guidance); "
        "leave it at 0 in a training config")
  cfg = c.sample.get("cfg_scale", 1.0)
  check(cfg >= 0, "sample.cfg_scale must be >= 0")
  check(cfg == 1.0 or (c.data.task == "seq2seq" and c.diffusion.cond_drop_prob > 0),
        "sample.cfg_scale needs a seq2seq run trained with condition dropout "
        "(diffusion.cond_drop_prob > 0)")
  check(c.sample.rounding in decoding.ROUNDINGS,
        f"sample.rounding must be one of {decoding.ROUNDINGS}, got {c.sample.rounding!r}")
  check(c.sample.logit_temp == 1.0 or c.model.x0_head == "softmax",
        "sample.logit_temp needs the softmax x0 head (model.x0_head=softmax)")
  check(c.sample.beam_alpha >= 0, "sample.beam_alpha must be >= 0")
  check(c.classifier.num_classes >= 0, "classifier.num_classes must be >= 0")
  sizes = [c.mesh[a] for a in ("data", "fsdp", "tensor")]
  check(sizes.count(-1) <= 1 and all(s >= 1 or s == -1 for s in sizes),
        f"mesh sizes must be >= 1 with at most one -1 (fill), got {sizes}")


def _validate_step_distill(c, check) -> None:
  """``sample.grid`` (a distilled student's timesteps) and the ``step_distill`` section."""
  grid, T = list(c.sample.grid), c.diffusion.num_steps
  check(not grid or (len(grid) >= 2 and grid[0] == T and grid[-1] == 0
                     and all(a > b for a, b in zip(grid, grid[1:]))),
        f"sample.grid must be strictly decreasing timesteps from T={T} to 0, got {grid}")
  if grid:
    check(c.sample.steps in (0, len(grid) - 1) and c.eval.sample_steps == len(grid) - 1,
          f"a run with sample.grid samples {len(grid) - 1} steps: sample.steps and "
          "eval.sample_steps must say so")
    check(c.sample.grid_power == 1, "sample.grid is the run's own grid: leave sample.grid_power at 1")
  sd = c.step_distill
  if not sd.teacher_run:
    return
  check(c.model.family == "diffusion", "step_distill.teacher_run needs model.family=diffusion")
  check(sd.steps >= 1, "step_distill.steps (the student's sampler steps) must be >= 1")
  check(len(grid) == sd.steps + 1,
        "step_distill needs sample.grid: the student's grid of step_distill.steps steps "
        "(configs/step_distill.py writes it)")
  check(c.optim.weight_decay == 0, "step_distill freezes the embedding table: optim.weight_decay "
        "must be 0")
