"""Attribute classifiers on noisy embeddings, the plug-in half of classifier guidance (Li et al. 2022,
sec. 5): ``p(c | x_t, t)`` for x_t in the frozen embedding space of a trained diffusion LM.

A classifier is a model family (``model.family = "classifier"``) trained by the same loop, config
system and checkpoints as the LMs. Its inputs are ``x_t = q_sample(EMB(w), t)`` with EMB the EMA
embedding table of ``classifier.base_run`` (frozen; the run's tokenizer is used too) and t uniform in
{0..T} (0 = clean), so it can judge the sampler's states at every noise level; ``classifier.max_t = 0``
trains on clean text only, which makes a separate judge of finished outputs.

``classifier.labels`` says what it predicts:

* ``words``: which words the sentence contains. The model names the clean word at every position
  (a softmax over the vocabulary per position, trained with cross-entropy: 64 labels per sentence, a
  dense signal), and ``p(v present | x_t) = 1 - prod_l (1 - p_l(v | x_t))``. Semantic-content control
  ("mention food=Italian") ascends ``log p(Italian present | x_t)``. The labels are the text itself,
  so no annotation is needed and any dataset works. Per-position targets give the trunk 64 labels per
  sentence instead of one multi-hot vector, a far denser training signal.
* ``label``: a softmax over ``classifier.num_classes`` classes, the dataset's own labels (e.g. the
  review snippets' fresh/rotten sentiment).

The model is the denoiser's trunk (input projection, positions, timestep MLP, Transformer blocks)
and a linear head at every position: per-position word logits for ``words``; averaged over positions
into ``num_classes`` logits for ``label``.
"""
import collections
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffusion_text import batching, denoiser, embeddings, process
from diffusion_text.data import tokenizers
from diffusion_text.errors import ConfigError

LABELS = ("words", "label")


class NoisyClassifier(nn.Module):
  """(x_t, t) -> class logits (B, num_labels), or per-position word logits (B, L, V)."""
  cfg: denoiser.ModelConfig

  @nn.compact
  def __call__(self, x_t_BxLxE, t_B, deterministic: bool = True):
    cfg = self.cfg
    h = denoiser.trunk(self, cfg, x_t_BxLxE, t_B, deterministic)
    per_position = nn.Dense(cfg.num_labels or cfg.vocab_size, name="head",
                            kernel_init=denoiser._p(nn.initializers.xavier_uniform(),
                                                    ("embed", "vocab")),
                            bias_init=denoiser._p(nn.initializers.zeros, ("vocab",)))(h)
    if cfg.num_labels:  # a sentence-level class: average the positions' votes
      return jnp.mean(per_position, axis=1).astype(jnp.float32)
    return per_position.astype(jnp.float32)  # (B, L, V): the clean word at each position


def init_params(cfg: denoiser.ModelConfig, rng, batch_size: int = 1):
  z = jnp.zeros((batch_size, cfg.max_len, cfg.emb_dim), jnp.float32)
  return NoisyClassifier(cfg).init({"params": rng}, z, jnp.ones((batch_size,), jnp.int32))["params"]


@dataclasses.dataclass(frozen=True)
class Base:
  """What a classifier reads from its frozen base diffusion run: the embedding table as the base
  reads it, the base's noise process, and its config."""
  emb_VxE: jax.Array
  diffusion: process.Diffusion
  config: object


def setup(config, load_run) -> Base:
  """The frozen base run of a classifier config, loaded once with ``load_run(workdir)`` (the run
  loader is passed in, so this module does not depend on it), after checking that the classifier
  reads the same embedding space and layout."""
  workdir = config.classifier.base_run
  if not workdir:
    raise ConfigError("classifier.base_run must name the workdir of a trained diffusion LM")
  run = load_run(workdir)
  if run.config.model.family != "diffusion":
    raise ConfigError(f"classifier.base_run {workdir} is a {run.config.model.family} run, "
                     "not a diffusion LM")
  want = (run.config.model.emb_dim, run.config.data.max_len, run.config.data.task)
  got = (config.model.emb_dim, config.data.max_len, config.data.task)
  if want != got:
    raise ConfigError(f"classifier (model.emb_dim, data.max_len, data.task) = {got} must match its "
                     f"base run {workdir}: {want}")
  return Base(emb_VxE=embeddings.table(run.params, run.config.model), diffusion=run.diffusion,
              config=run.config)


def presence_log_prob(logits_BxLxV):
  """log p(word v appears somewhere) = log(1 - prod_l (1 - p_l(v))), (B, V), stable in float32."""
  log_absent = jnp.sum(jnp.log1p(-jnp.minimum(jax.nn.softmax(logits_BxLxV, -1), 1.0 - 1e-6)), 1)
  return jnp.log(-jnp.expm1(jnp.minimum(log_absent, -1e-12)))


def inputs_and_labels(batch, config):
  """(ids, labels): the clean ids themselves (B, L) for ``words``, the dataset's classes (B,)."""
  ids = batch["ids"]
  return ids, (batch["label"] if config.classifier.labels == "label" else ids)


def loss_terms(model, params, batch, rng, config, deterministic, context: Base = None):
  if context is None:
    raise ValueError("a classifier's loss needs its base run: setup(config, load_run)")
  emb, diffusion = context.emb_VxE, context.diffusion
  ids, labels = inputs_and_labels(batch, config)
  rng_t, rng_eps, rng_drop = jax.random.split(rng, 3)
  B = ids.shape[0]
  max_t = diffusion.num_steps if config.classifier.max_t < 0 else config.classifier.max_t
  t_B = jax.random.randint(rng_t, (B,), 0, max_t + 1)
  x0 = embeddings.embed(emb, ids)
  x_t = process.q_sample(x0, diffusion.alpha_bar[t_B], jax.random.normal(rng_eps, x0.shape))
  logits = model.apply({"params": params}, x_t, t_B, deterministic=deterministic,
                       rngs={"dropout": rng_drop})
  nll = embeddings.nll_of(logits, labels)
  acc = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if config.classifier.labels == "words":  # per position -> per sentence means
    nll, acc = jnp.mean(nll, -1), jnp.mean(acc, -1)
  return {"loss": nll, "accuracy": acc, "weight": jnp.ones((B,), jnp.float32)}


def log_prob_fn(model, params, config):
  """``(x_t, t_B) -> log-probabilities`` of every label: (B, V) ``log p(word v present)`` for
  ``words``, (B, C) class log-probabilities for ``label``. The building block of guidance terms."""
  labels = config.classifier.labels

  def fn(x_t_BxLxE, t_B):
    logits = model.apply({"params": params}, x_t_BxLxE, t_B, deterministic=True)
    return jax.nn.log_softmax(logits) if labels == "label" else presence_log_prob(logits)
  return fn


def accuracy_by_noise(run, batches, t_values) -> dict:
  """Held-out accuracy of a classifier run at fixed noise levels, {t: {...}}: ``label``: top-1
  accuracy; ``words``: per-position top-1 accuracy of the clean word, and precision/recall/F1 of
  "word present" (predicted when p(present) > 0.5) over non-special words."""
  model, params, config = run.model, run.params, run.config
  emb, ab = run.context.emb_VxE, run.context.diffusion.alpha_bar
  words = config.classifier.labels == "words"
  n_special = len(tokenizers.SPECIALS)

  @jax.jit
  def stats(ids, labels, t, rng):
    x0 = embeddings.embed(emb, ids)
    t_B = jnp.full((ids.shape[0],), t, jnp.int32)
    x_t = process.q_sample(x0, ab[t_B], jax.random.normal(rng, x0.shape))
    logits = model.apply({"params": params}, x_t, t_B, deterministic=True)
    out = {"correct": jnp.sum(jnp.argmax(logits, -1) == labels), "n": labels.size}
    if words:
      present = jax.nn.one_hot(ids, emb.shape[0], dtype=bool).any(1)[:, n_special:]
      pred = (presence_log_prob(logits) > jnp.log(0.5))[:, n_special:]
      out.update(tp=jnp.sum(pred & present), fp=jnp.sum(pred & ~present),
                 fn=jnp.sum(~pred & present))
    return out

  out = {}
  for t in t_values:
    tot = collections.Counter()
    for i, batch in enumerate(batches):
      ids, labels = inputs_and_labels({k: jnp.asarray(v) for k, v in batch.items()}, config)
      tot.update({k: int(v) for k, v in stats(ids, labels, int(t), jax.random.PRNGKey(i)).items()})
    res = {"accuracy": tot["correct"] / max(tot["n"], 1)}
    if words:
      p = tot["tp"] / max(tot["tp"] + tot["fp"], 1)
      r = tot["tp"] / max(tot["tp"] + tot["fn"], 1)
      res.update(presence_precision=p, presence_recall=r, presence_f1=2 * p * r / max(p + r, 1e-9))
    out[int(t)] = res
  return out


def judge(run, texts) -> np.ndarray:
  """Class probabilities (N, C) of finished texts under a ``label`` classifier run, read at t=0."""
  if run.config.classifier.labels != "label":
    raise ValueError(f"{run.workdir} is not a label classifier")
  emb = run.context.emb_VxE
  L = run.config.data.max_len
  ids = np.stack([run.tokenizer.encode_padded(t, L) for t in texts])
  fn = jax.jit(lambda p, x: jax.nn.softmax(run.model.apply(
      {"params": p}, embeddings.embed(emb, x), jnp.zeros((x.shape[0],), jnp.int32))))
  return np.concatenate([np.asarray(fn(run.params, b))[:n]
                         for _, n, (b,) in batching.padded_batches(min(64, len(ids)), ids)])


def no_decoder(model, config, sampler, steps, clamp, eta, commit=False):
  del model, config, sampler, steps, clamp, eta, commit

  def decode(*_):
    raise ValueError("a classifier run does not generate text; guide a diffusion run with it "
                     "(experiments.evaluate --evaluators semantic|sentiment --classifier RUN)")
  return decode


def np_word_ids(tok, words) -> np.ndarray:
  """Vocabulary ids of the words of a value string ("The Golden Curry" -> 3 ids); unknown words
  are an error, since a classifier cannot steer towards them."""
  ids = tok.encode(words)
  if not ids or any(i == tokenizers.UNK for i in ids):
    raise ValueError(f"{words!r} has words outside the vocabulary")
  return np.asarray(ids, np.int32)
