"""Base config: defines every key the code reads. Configs (``configs/``) start from ``get_config()``;
a run's saved ``config.json`` is checked against it when loaded.

Values of "unset" are '' for strings and 0 for numbers (ml_collections keeps types strict).
"""
import ml_collections


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg  # no variants
  c = ml_collections.ConfigDict()
  c.seed = 0  # seeds init, data order and every per-step key

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "e2e"  # e2e | rt_snippets | rt_keywords | rt_cloze | rt_cloze_windows | jsonl:NAME (seq2seq {"src", "trg"} files)
  c.data.task = "lm"  # lm (unconditional, on the target text) | seq2seq (src -> tgt, partial noising)
  c.data.source_dir = ""  # raw files; '' = $DIFFUSION_TEXT_DATA_DIR or ~/.cache/diffusion_text/data
  c.data.tfds_dir = ""  # prepared TFDS data; '' = $DIFFUSION_TEXT_TFDS_DIR or ~/.cache/diffusion_text/tfds
  c.data.tokenizer = "word"  # word | sentencepiece
  c.data.vocab_size = 0  # sentencepiece vocab; for word, a cap (0 = none)
  c.data.min_count = 1  # word tokenizer: minimum count of a kept word
  c.data.max_len = 64  # L: tokens per sequence including BOS/EOS (and SEP), padded with PAD
  c.data.max_src_len = 0  # seq2seq: source tokens kept (0 = max_len // 2); the target gets the rest
  c.data.cut_sources = False  # a longer source is refused (an error), or with True cut to max_src_len
  c.data.target_start = "after_source"  # seq2seq: after_source ([BOS] src [SEP] tgt) | fixed (src
  #   right-aligned, so the target always starts at position max_src_len + 2) | aligned (src from
  #   position 1 and the target at max_src_len + 2: source token k sits a fixed distance before
  #   target token k)
  c.data.delex = ""  # seq2seq, E2E-form sources: slots whose values become placeholder words in
  #   source and target and are copied back after generation, e.g. "name,near" (data/delex.py)
  c.data.delex_keep = ""  # slots of data.delex whose value stays in the source after the
  #   placeholder ("price : <price> cheap"): for values the targets often paraphrase
  c.data.pack_blocks = False  # task=lm: texts joined as [BOS] t1 [EOS] [BOS] t2 [EOS] ... and cut
  #   into max_len blocks with no PAD (Diffusion-LM's padding_mode block); samples split at BOS/EOS
  c.data.max_train_examples = 0  # 0 = all; else the first N of the train split (tests)
  c.data.max_eval_examples = 0  # 0 = all; else the first N of the validation split
  c.data.encode_cache = 250_000  # train examples kept encoded in memory (0 = none; 1-2 KB each)
  c.data.strict = True  # bad raw lines (malformed, empty field, bad UTF-8) are errors; False: skip, count

  c.model = ml_collections.ConfigDict()
  c.model.family = "diffusion"  # diffusion (embedding diffusion LM) | ar (autoregressive baseline)
  c.model.emb_dim = 16  # E: embedding (diffusion latent) dim; Diffusion-LM uses 16 for E2E
  c.model.width = 128  # D: Transformer width
  c.model.num_layers = 2  # Transformer blocks
  c.model.num_heads = 2  # attention heads (width must divide)
  c.model.mlp_dim = 512  # MLP hidden width
  c.model.dropout = 0.1  # dropout rate in [0, 1)
  c.model.emb_init_std = 1.0  # std of the N(0, std^2) init of the embedding table
  c.model.scan_layers = True  # nn.scan over blocks: compile time independent of depth
  c.model.dtype = "float32"  # float32 | bfloat16 (activations; params stay float32)
  c.model.self_cond = False  # self-conditioning: the denoiser also reads its previous x0 estimate
  c.model.x0_head = "linear"  # linear (x0_hat = output vector) | softmax (expected word embedding)
  # single_stack: one bidirectional stack over [BOS] src [SEP] tgt | encoder_decoder: the source
  # encoded once (no noise), the target denoised by a decoder cross-attending to it (needs
  # data.target_start=fixed); each has model.num_layers blocks
  c.model.arch = "single_stack"
  # encoder_decoder: separate (a position table per stack) | shared (one table: target word k starts
  # from source word k's position vector when data.target_start=aligned)
  c.model.positions = "separate"
  c.model.rope = False  # rotary position embeddings in every self-attention (on top of the tables)
  c.model.logits_head = "tied"  # word logits: tied (h . EMB^T, rank E) | full (Dense(V) on the trunk)
  c.model.emb_norm = "none"  # embedding rows as read: none | l2 (norm sqrt(E)) | layernorm (no affine)
  c.model.emb_scale = 1.0  # with emb_norm: per-coordinate RMS of the rows (1/F = noise factor F)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "sqrt"  # sqrt | cosine | linear | tan-<d> (e.g. tan-9)
  c.diffusion.num_steps = 2000  # T
  c.diffusion.loss_on_pad = True  # False: PAD positions are excluded from the loss (both families)
  c.diffusion.pad_weight = 1.0  # with loss_on_pad: weight in [0, 1] of target PAD positions in the loss
  c.diffusion.self_cond_prob = 0.5  # with model.self_cond: fraction of examples trained with x_sc
  c.diffusion.t_power = 1.0  # training t = ceil(T u^p): 1 uniform, < 1 more high-noise examples
  c.diffusion.t_sampler = "uniform"  # uniform | loss_aware (DiffuSeq) | warped (CDCD time warping)
  c.diffusion.absorb_prob = 0.0  # soft absorbing state (DiffuSeq-v2): max replacement rate (at t=T)
  c.diffusion.ce_weight = 0.0  # weight of the denoiser's cross-entropy on the clean words (CDCD-style)
  c.diffusion.cond_drop_prob = 0.0  # seq2seq: source dropped to the null condition (classifier-free)
  c.diffusion.reveal_prob = 0.0  # share of examples with a random share of target words given clean

  c.classifier = ml_collections.ConfigDict()  # model.family = classifier (classifier guidance)
  c.classifier.base_run = ""  # workdir of the diffusion LM whose frozen embeddings it reads
  c.classifier.labels = "words"  # words (multi-label: word present) | label (the dataset's classes)
  c.classifier.num_classes = 0  # labels = label: number of classes
  c.classifier.max_t = -1  # training noise levels t in [0, max_t]; -1 = T (all); 0 = clean text (a judge)

  # progressive distillation (step_distill.py; configs/step_distill.py writes these)
  c.step_distill = ml_collections.ConfigDict()
  c.step_distill.teacher_run = ""  # workdir of the diffusion run (or student) whose 2K-step DDIM it learns
  c.step_distill.steps = 0  # K: the student's sampler steps

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4  # peak learning rate
  c.optim.warmup_steps = 0  # linear warm-up from 0
  c.optim.decay = "linear"  # linear | cosine | constant, after warm-up
  c.optim.final_lr_fraction = 0.0  # final lr / peak lr
  c.optim.weight_decay = 0.0  # AdamW decoupled weight decay
  c.optim.grad_clip_norm = 1.0  # clip by global norm
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # global batch
  c.train.num_train_steps = 10_000
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 3  # newest N kept
  c.train.ema_decay = 0.9999  # Diffusion-LM's EMA rate (with warm-up)
  c.train.skip_nonfinite_steps = False  # True: drop updates with NaN/Inf loss or grads (else stop)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.num_batches = 8  # held-out batches per evaluation
  c.eval.num_samples = 8  # decoded samples logged per evaluation (0 = none)
  c.eval.sampler = "ddim"  # ddpm | ddim | dpm++2m (diffusion); greedy | beam | sample (ar)
  c.eval.sample_steps = 100  # sampler steps for the logged samples (ar + beam: the beam size)
  c.eval.nll_t = 0  # > 0: held-out bits/token at every eval (ELBO with this many stratified t; AR exact)
  c.eval.lm_teacher = ""  # workdir of an AR run (same data/tokenizer): lm-score of evaluated outputs
  c.eval.clamp = False  # clamping trick during sampling (see README: it needs a well-trained model)

  c.sample = ml_collections.ConfigDict()  # defaults of experiments/sample.py and Run.generate
  c.sample.sampler = "ddpm"  # ddpm | ddim | dpm++2m (diffusion); greedy | beam | sample (ar)
  c.sample.steps = 0  # 0 = T (full chain); for ar + beam: the beam size
  c.sample.beam_alpha = 0.0  # ar beam search: final score / length**alpha
  c.sample.clamp = False  # clamping trick (Li et al. 2022 sec. 4.2)
  c.sample.commit = False  # fix generated words a group per step, most confident first (samplers)
  c.sample.score_temp = 1.0  # diffusion samplers: the step reads the score / score_temp (< 1 sharper)
  c.sample.logit_temp = 1.0  # softmax x0 head: x0_hat from logits / logit_temp (< 1 sharper)
  c.sample.grid_power = 1.0  # diffusion samplers: > 1 crowds the steps toward T (process.timestep_grid)
  c.sample.rounding = "model"  # final vectors to words: the model's logits at t=1, or "nearest" row
  c.sample.slot_guidance = 0.0  # E2E seq2seq: step size of guidance toward every MR field (0 = off)
  c.sample.cfg_scale = 1.0  # seq2seq trained with diffusion.cond_drop_prob: classifier-free scale
  c.sample.grid = []  # a distilled student's own timesteps [T, ..., 0]; [] = steps and grid_power
  c.sample.eta = 0.0  # ddim noise scale; ar sample: softmax temperature (0 = greedy)
  c.sample.collapse_repeats = False  # keep one word of each run of a repeated word (NAT post-processing)
  c.sample.batch_size = 64

  c.mesh = ml_collections.ConfigDict()  # sizes; exactly one may be -1 (fill)
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # logical axis -> mesh axis (or None = replicated)
  c.axis_rules = [
      ("vocab", None), ("latent", None), ("len", None), ("layers", None),
      ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv", None),
      ("act_batch", ("data", "fsdp")), ("act_len", None), ("act_emb", None),
  ]
  return c
