"""Faults: SIGTERM, NaN/Inf, unreadable checkpoints, config changes on resume; arbitrary text input."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from configs import tiny
from conftest import ROOT, require_synthetic_e2e
from diffusion_text import generate, runs, train
from diffusion_text.data import packing, tokenizers
from diffusion_text.errors import CheckpointError, NumericsError

pytestmark = pytest.mark.slow


def _cfg(**overrides):
  c = tiny.get_config()
  with c.unlocked():
    for k, v in overrides.items():
      section, name = k.split(".")
      c[section][name] = v
  return c


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, tfds_dir, sig):
  """SIGTERM, or a first Ctrl-C, checkpoints the current step and exits 0."""
  require_synthetic_e2e()
  w = str(tmp_path / "term")
  cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py", "--workdir", w,
         "--config.train.num_train_steps=100000", "--config.train.log_every_steps=1",
         "--config.eval.num_samples=0", "--config.train.eval_every_steps=100000"]
  p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(w, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.5)
  p.send_signal(sig)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-2000:]
  assert f"{sig.name} received" in err and "Traceback" not in err
  run = generate.load_run(w)
  last = json.loads(open(metrics).read().splitlines()[-1])["step"]
  assert run.step == last >= 1


def test_nonfinite_loss_stops_with_the_step_and_batch(tmp_path, tfds_dir):
  """A learning rate of 1e38 makes the params overflow after the first update."""
  require_synthetic_e2e()
  w = str(tmp_path / "nan")
  with pytest.raises(NumericsError, match=r"non-finite .*at step 2"):
    train.train_and_evaluate(_cfg(**{"optim.learning_rate": 1e38, "optim.warmup_steps": 0}), w)
  info = json.load(open(os.path.join(w, "nonfinite_step2.json")))
  assert info["step"] == 2 and "loss" in info["terms"] and len(info["example_indices"]) == 8
  assert not os.listdir(os.path.join(w, "checkpoints"))  # no checkpoint of a broken state


def test_skip_nonfinite_steps_keeps_training(tmp_path, tfds_dir):
  require_synthetic_e2e()
  w = str(tmp_path / "skip")
  train.train_and_evaluate(_cfg(**{"optim.learning_rate": 1e38, "optim.warmup_steps": 0,
                                   "train.skip_nonfinite_steps": True,
                                   "eval.num_samples": 0}), w)
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert sum(d.get("train/skipped", 0) for d in lines) == 5  # every step after the first
  run = generate.load_run(w)
  assert run.step == 6


def test_unreadable_checkpoint_and_latest_valid(tmp_path, tfds_dir):
  require_synthetic_e2e()
  ref, w = str(tmp_path / "ref"), str(tmp_path / "w")
  cfg = _cfg(**{"eval.num_samples": 0})
  train.train_and_evaluate(cfg, ref)
  train.train_and_evaluate(cfg, w)
  for f in glob.glob(os.path.join(w, "checkpoints", "6", "state", "**", "*"), recursive=True):
    if os.path.isfile(f) and "ocdbt" in f:
      open(f, "wb").close()  # truncate the array data of the newest checkpoint
  before = open(os.path.join(w, runs.CONFIG_FILE)).read()
  with pytest.raises(CheckpointError, match=r"checkpoint 6 .*latest_valid"):
    train.train_and_evaluate(cfg, w)
  with pytest.raises(CheckpointError, match=r"checkpoint 6 .*latest_valid"):  # a resumable change
    train.train_and_evaluate(_cfg(**{"eval.num_samples": 0, "train.num_train_steps": 9}), w)
  assert open(os.path.join(w, runs.CONFIG_FILE)).read() == before  # a failed resume changes nothing
  train.train_and_evaluate(cfg, w, resume="latest_valid")  # restores 3, redoes steps 4..6
  assert os.listdir(os.path.join(w, "unreadable_checkpoints"))
  a, b = generate.load_run(ref), generate.load_run(w)
  assert a.step == b.step == 6
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


def test_config_change_needs_the_override(tmp_path, tfds_dir):
  require_synthetic_e2e()
  w = str(tmp_path / "cfg")
  train.train_and_evaluate(_cfg(**{"eval.num_samples": 0}), w, stop_at_step=3)
  changed = _cfg(**{"eval.num_samples": 0, "optim.learning_rate": 5e-4})
  with pytest.raises(CheckpointError, match="optim.learning_rate.*--allow_config_change"):
    train.train_and_evaluate(changed, w)
  train.train_and_evaluate(changed, w, allow_config_change=True)
  assert runs.load_config(w).optim.learning_rate == 5e-4
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any(d.get("config_changed") == ["optim.learning_rate"] for d in lines)
  # a resumable change (a longer run) needs no override but is recorded all the same
  longer = _cfg(**{"eval.num_samples": 0, "optim.learning_rate": 5e-4,
                   "train.num_train_steps": 8})
  train.train_and_evaluate(longer, w)
  assert runs.load_config(w).train.num_train_steps == 8 and generate.load_run(w).step == 8
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any(d.get("config_changed") == ["train.num_train_steps"] for d in lines)


_WORD_TOK = tokenizers.WordTokenizer.train(["a b c", "d e f"])
_SP_TOK = tokenizers.SentencePieceTokenizer.train(
    ["the quick brown fox", "jumps over the lazy dog", "näive café ünïcode"] * 10, vocab_size=40)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.integers(8, 40))
def test_tokenizers_and_packing_on_arbitrary_unicode(src, tgt, max_len):
  for tok in (_WORD_TOK, _SP_TOK):
    ids = tok.encode_padded(tgt, max_len)  # never raises, always the right shape
    assert ids.shape == (max_len,) and ids[0] == tokenizers.BOS and tokenizers.EOS in ids
    assert isinstance(tok.decode(ids), str)
    s_ids, t_ids = tok.encode(src), tok.encode(tgt)
    packed, mask = packing.pack(s_ids, t_ids, max_len, max_len // 2)
    s2, t2 = packing.unpack(packed)
    assert s2 == s_ids[: max_len // 2] and t2 == t_ids[: len(t2)]
    assert mask.sum() == max_len - len(s2) - 2
  # special-token strings in text are unknown words, never control ids (PAD/SEP would corrupt packing)
  for tok in (_WORD_TOK, _SP_TOK):
    assert tokenizers.UNK in tok.encode("<pad> <sep> <s>") and min(tok.encode("<sep> <pad>")) >= 1
    assert not set(tok.encode(src + " <sep> <pad> </s>")) & {tokenizers.PAD, tokenizers.SEP,
                                                             tokenizers.BOS, tokenizers.EOS}
  # the word tokenizer round-trips whitespace-normalised text made of known (non-special) words
  known = " ".join(w for w in tgt.split()
                   if w in _WORD_TOK.stoi and w not in tokenizers.SPECIALS)
  if len(known.split()) <= max_len - 2:
    assert _WORD_TOK.decode(_WORD_TOK.encode_padded(known, max_len)) == known


def test_sigkill_at_random_points_resumes_exactly(tmp_path, tfds_dir):
  """SIGKILL (no chance to save) at 10 random points, resuming each time: the final state equals an
  uninterrupted run's. A checkpoint (asynchronous) every step and an evaluation with samples every
  5 steps, so the kills land inside train steps, checkpoint writes and evaluations."""
  require_synthetic_e2e()
  rng = np.random.default_rng(0)
  ref, w = str(tmp_path / "ref"), str(tmp_path / "killed")
  flags = ["--config.train.num_train_steps=150", "--config.train.checkpoint_every_steps=1",
           "--config.train.log_every_steps=1", "--config.train.eval_every_steps=5",
           "--config.eval.num_batches=1", "--config.eval.sample_steps=4"]
  cmd = lambda wd: [sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py",
                    "--workdir", wd, *flags]
  assert subprocess.run(cmd(ref), cwd=ROOT, capture_output=True, timeout=600).returncode == 0
  metrics = os.path.join(w, "metrics.jsonl")
  kills, finished = [], False
  while len(kills) < 10 and not finished:
    before = os.path.getsize(metrics) if os.path.exists(metrics) else 0
    p = subprocess.Popen(cmd(w), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not (
        os.path.exists(metrics) and os.path.getsize(metrics) > before):
      time.sleep(0.05)  # this process has trained (and logged) a step
    time.sleep(rng.uniform(0.0, 1.0))
    finished = p.poll() is not None
    if not finished:
      p.kill()
      kills.append(os.path.getsize(metrics))
    p.wait(timeout=60)
  r = subprocess.run(cmd(w), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert len(kills) >= 10, kills
  logged = lambda wd: {d["step"]: d["train/loss"] for d in map(json.loads, open(
      os.path.join(wd, "metrics.jsonl"))) if "train/loss" in d}
  assert logged(w) == logged(ref)  # every step's logged loss, whichever process trained it
  a, b = generate.load_run(ref), generate.load_run(w)
  assert a.step == b.step == 150
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


def test_checkpoint_write_failure_stops_training_with_a_clear_error(tmp_path, tfds_dir, monkeypatch):
  """A save that fails (here the disk-full error orbax reports, injected into its async error check
  after the first checkpoint) stops training at the next log step with a CheckpointError naming the
  checkpoint; it does not train on without checkpoints, and the committed checkpoint stays usable.

  By hand on a 300 KiB tmpfs, the real disk-full case reached the same error path
  (orbax: "RESOURCE_EXHAUSTED ... No space left on device")."""
  require_synthetic_e2e()
  import orbax.checkpoint as ocp
  w = str(tmp_path / "full")
  real_check = ocp.CheckpointManager.check_for_errors

  def failing_check(self):
    real_check(self)
    if self.latest_step() is not None:
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ocdbt: No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "check_for_errors", failing_check)
  with pytest.raises(CheckpointError, match=r"cannot write checkpoint 3 to .*No space left"):
    train.train_and_evaluate(_cfg(**{"eval.num_samples": 0}), w)  # checkpoint 3, log every 2
  monkeypatch.undo()
  assert generate.load_run(w).step == 3
  lines = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert max(d["step"] for d in lines) <= 4  # stopped at the first log step after the failure


def test_checkpoint_save_error_is_translated(tmp_path, monkeypatch):
  from diffusion_text import checkpointing
  ck = checkpointing.Checkpointer(str(tmp_path / "c"), async_save=False)

  def no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(ck.manager, "save", no_space)
  with pytest.raises(CheckpointError, match=r"cannot write checkpoint 7 .*No space left"):
    ck.save(7, {"w": np.zeros(2)}, {"next_batch": 7}, force=True)
  ck.close()


def test_metrics_log_tolerates_a_torn_last_line(tmp_path, caplog):
  """A process killed while appending leaves a torn last line: resume drops it with a warning and
  keeps every whole line up to the restored step; a bad line before the last is refused."""
  from diffusion_text import train
  path = tmp_path / runs.METRICS_FILE
  whole = [json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)]
  path.write_text("".join(whole) + '{"step": 4, "x"')
  log = runs.MetricsLog(str(tmp_path), resume_step=2)
  assert path.read_text() == "".join(whole[:2])
  assert "torn last line" in caplog.text
  assert (tmp_path / runs.REWOUND_FILE).read_text() == whole[2]  # redone steps: kept aside
  log.write(3, x=3.0)
  assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [1, 2, 3]
  path.write_text(whole[0] + "garbage\n" + whole[1])
  with pytest.raises(CheckpointError, match=r"metrics.jsonl:2"):
    runs.MetricsLog(str(tmp_path), resume_step=5)


def test_write_atomic_replaces_whole_files_of_text_or_bytes(tmp_path, monkeypatch):
  """Text (UTF-8) and bytes land whole, with no temporary file left beside them; a write that fails
  before its rename leaves the old file as it was."""
  path = tmp_path / "sub" / "f.txt"
  runs.write_atomic(str(path), "é\n")
  assert path.read_bytes() == "é\n".encode("utf-8")
  runs.write_atomic(str(path), b"\x89PNG")
  assert path.read_bytes() == b"\x89PNG" and os.listdir(path.parent) == ["f.txt"]

  def fail(*_):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError):
    runs.write_atomic(str(path), b"new")
  assert path.read_bytes() == b"\x89PNG"


def test_one_writer_per_run_directory(tmp_path, caplog):
  """A live holder of the lock makes a second writer fail naming it; a lock file left by a dead
  process (unlocked but not emptied) is taken over with a warning; a clean release leaves none."""
  from diffusion_text import runs
  w = str(tmp_path / "run")
  with runs.WorkdirLock(w):
    with pytest.raises(runs.WorkdirBusyError, match=rf"pid {os.getpid()} on "):
      runs.WorkdirLock(w).acquire()
    with pytest.raises(runs.WorkdirBusyError, match="in use by"):
      train.train_and_evaluate(_cfg(), w)
    assert sorted(os.listdir(w)) == [runs.LOCK_FILE]  # refused before writing anything
  assert open(os.path.join(w, runs.LOCK_FILE)).read() == ""
  with runs.WorkdirLock(w):
    pass
  assert "taking over" not in caplog.text
  with open(os.path.join(w, runs.LOCK_FILE), "w") as f:  # what a SIGKILLed holder leaves
    f.write(json.dumps({"pid": 999999, "host": "h", "started": "t"}))
  with runs.WorkdirLock(w):
    assert "taking over" in caplog.text and "pid 999999 on h" in caplog.text


def test_two_training_commands_on_one_workdir(tmp_path, tfds_dir):
  """The second of two identical training commands exits non-zero with one line naming the
  first, and the first run's history is intact."""
  require_synthetic_e2e()
  w = str(tmp_path / "two")
  cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py", "--workdir", w,
         "--config.train.num_train_steps=100000", "--config.train.log_every_steps=1",
         "--config.eval.num_samples=0", "--config.train.eval_every_steps=100000"]
  first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    metrics = os.path.join(w, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
      time.sleep(0.5)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"error: {w} is in use by pid {first.pid} on ")
    steps = [json.loads(l)["step"] for l in open(metrics)]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
  finally:
    first.terminate()
    first.wait(timeout=120)


def test_history_is_never_truncated(tmp_path, tfds_dir):
  """With its checkpoints gone, a run directory's history is refused rather than started over;
  --restart moves the old files aside and starts a new run."""
  require_synthetic_e2e()
  import shutil
  w = str(tmp_path / "hist")
  cfg = _cfg(**{"eval.num_samples": 0})
  train.train_and_evaluate(cfg, w)
  metrics = os.path.join(w, "metrics.jsonl")
  before = open(metrics).read()
  shutil.rmtree(os.path.join(w, "checkpoints"))  # as if every checkpoint had been moved aside
  with pytest.raises(CheckpointError, match=r"history of a run up to step 6 .*--restart"):
    train.train_and_evaluate(cfg, w)
  assert open(metrics).read() == before
  train.train_and_evaluate(cfg, w, restart=True)
  (previous,) = [d for d in os.listdir(w) if d.startswith("previous-")]
  assert open(os.path.join(w, previous, "metrics.jsonl")).read() == before
  assert os.path.exists(os.path.join(w, previous, "config.json"))
  assert generate.load_run(w).step == 6


def test_bad_batch_split_is_refused_before_anything_is_written(tmp_path, tfds_dir):
  """A batch that does not divide over the devices fails before the workdir exists, so the
  corrected command is not refused as a config change."""
  from diffusion_text.errors import ConfigError
  require_synthetic_e2e()
  w = str(tmp_path / "batch")
  n = jax.device_count()
  with pytest.raises(ConfigError, match=rf"train.batch_size={n + 1} does not divide"):
    train.train_and_evaluate(_cfg(**{"train.batch_size": n + 1}), w)
  assert not os.path.exists(w)


def test_full_disk_is_one_error_line(tmp_path, tfds_dir):
  """Training with a 300 KiB limit on any file it writes (``ulimit -f``; the checkpoint of 1.6M
  parameters exceeds it, as on a full disk) exits non-zero with the ``error:`` line last and no traceback from
  the CLI or from orbax's background writers, and what was written before is whole."""
  require_synthetic_e2e()
  w = str(tmp_path / "full")
  cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/tiny.py", "--workdir", w,
         "--config.eval.num_samples=0", "--config.model.width=256", "--config.model.mlp_dim=1024"]

  limited = ["bash", "-c", 'ulimit -f 300 && exec "$@"', "bash", *cmd]  # 300 blocks of 1 KiB
  p = subprocess.run(limited, cwd=ROOT, capture_output=True, text=True, timeout=300)
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 1, p.stderr[-3000:]
  assert lines[-1].startswith("error: ") and "File too large" in lines[-1], lines[-5:]
  assert "Traceback" not in p.stderr, p.stderr[-3000:]
  for line in open(os.path.join(w, "metrics.jsonl")):
    json.loads(line)


def test_ignored_exceptions_are_one_warning_except_asyncio_shutdown_leftovers(caplog):
  """Without --debug an exception Python ignores (``__del__``, shutdown callbacks) is one warning
  line naming it; orbax's "Event loop is closed" leftovers of a finished run are dropped."""
  import types
  from experiments import common as cli
  caplog.set_level("WARNING")
  cli._unraisable(types.SimpleNamespace(exc_type=RuntimeError, object="loop",
                                        exc_value=RuntimeError("Event loop is closed")))
  assert not caplog.records
  cli._unraisable(types.SimpleNamespace(exc_type=OSError, object="Writer.__del__",
                                        exc_value=OSError("disk full")))
  assert len(caplog.records) == 1
  assert "exception ignored in Writer.__del__: OSError: disk full" in caplog.records[0].getMessage()


@pytest.mark.parametrize("debug", [False, True])
def test_unawaited_coroutines_of_an_aborted_write_print_nothing_after_the_error_line(debug):
  """An asynchronous checkpoint write aborted by a full disk leaves orbax's coroutines unawaited;
  Python's RuntimeWarning about them, printed at exit, would follow the ``error:`` line. Without
  --debug the CLIs drop it; with --debug it is shown."""
  code = ("from experiments import common\n"
          f"common.quiet_libraries({debug})\n"
          "async def write_fragment():\n  pass\n"
          "c = write_fragment()\ndel c\n"
          "print('error: disk full')\n")
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "error: disk full"
  assert ("was never awaited" in p.stderr) == debug, p.stderr
