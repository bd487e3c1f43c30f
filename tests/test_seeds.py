"""experiments.seeds: mean and spread over training seeds, refusing evaluations that differ."""
import json
import os
import statistics
import subprocess
import sys

from configs import tiny
from conftest import ROOT
from diffusion_text import runs


def _seeds(*args):
  return subprocess.run([sys.executable, "-m", "experiments.seeds", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def _eval(tmp_path, name, bleu, workdir=None, texts=True, **settings):
  path = tmp_path / f"{name}.json"
  result = {"bleu": bleu, "slot_error_rate": bleu / 1000, "split": "test", "sampler": "beam",
            "steps": 4, "seconds": bleu, "workdir": workdir, **settings}
  path.write_text(json.dumps(result))
  if texts:  # the evaluation's texts beside it, as experiments.evaluate writes them
    (tmp_path / f"{name}.jsonl").write_text("".join(
        json.dumps({"src": src, "hyp": f"{name} {src}", "refs": ["r"]}) + "\n"
        for src in ("name : A", "name : B")))
  return str(path)


def _workdir(tmp_path, name, seed, **train):
  w = tmp_path / name
  w.mkdir()
  c = tiny.get_config("ar")
  c.seed = seed
  c.train.update(train)
  runs.write_config(str(w), c)
  return str(w)


def test_mean_and_spread_over_seeds(tmp_path):
  ws = [_workdir(tmp_path, f"run{s}", s) for s in (0, 1, 2)]
  evals = [_eval(tmp_path, f"e{s}", b, w) for s, b, w in zip((0, 1, 2), (63.0, 64.0, 66.0), ws)]
  out = tmp_path / "seeds.json"
  r = _seeds("--evals", ",".join(evals), "--out", str(out))
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.load(open(out))
  assert got["bleu"] == {"mean": statistics.fmean([63.0, 64.0, 66.0]),
                         "std": statistics.stdev([63.0, 64.0, 66.0]), "min": 63.0, "max": 66.0}
  assert got["slot_error_rate"]["max"] == 0.066 and "cut_off" not in got
  assert [x["seed"] for x in got["runs"]] == [0, 1, 2]
  assert got["settings"] == {"split": "test", "sampler": "beam", "steps": 4}
  rows = [json.loads(l) for l in open(tmp_path / "seeds.jsonl")]  # every run's text per source
  assert rows == [{"src": s, "hyps": [f"e{k} {s}" for k in (0, 1, 2)]}
                  for s in ("name : A", "name : B")]


def test_evaluations_without_their_texts_are_refused(tmp_path):
  a = _eval(tmp_path, "a", 63.0)
  b = _eval(tmp_path, "b", 64.0, texts=False)
  out = tmp_path / "seeds.json"
  r = _seeds("--evals", f"{a},{b}", "--out", str(out))
  last = r.stderr.strip().splitlines()[-1]
  assert r.returncode != 0 and last.startswith("error:") and "b.jsonl" in last
  assert not os.path.exists(out) and not os.path.exists(tmp_path / "seeds.jsonl")


def test_evaluations_or_runs_that_differ_are_refused(tmp_path):
  a = _eval(tmp_path, "a", 63.0)
  b = _eval(tmp_path, "b", 64.0, steps=8)
  out = tmp_path / "seeds.json"
  r = _seeds("--evals", f"{a},{b}", "--out", str(out))
  assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error:")
  assert "['steps']" in r.stderr and not os.path.exists(out)
  same = [_eval(tmp_path, f"s{k}", 63.0, _workdir(tmp_path, f"w{k}", 0)) for k in (0, 1)]
  r = _seeds("--evals", ",".join(same), "--out", str(out))
  assert r.returncode != 0 and "share a training seed" in r.stderr
  other = [_eval(tmp_path, f"o{k}", 63.0, _workdir(tmp_path, f"v{k}", k, num_train_steps=9 + k))
           for k in (0, 1)]
  r = _seeds("--evals", ",".join(other), "--out", str(out))
  assert (r.returncode != 0 and "configured otherwise" in r.stderr
          and "['train.num_train_steps']" in r.stderr)


def test_a_seeded_pipeline_may_keep_its_data_apart(tmp_path):
  """The recipe's seeds: each student reads its own seed's distillation (``data.source_dir``),
  allowed only where ``--may_differ`` names it."""
  evals = [_eval(tmp_path, f"e{s}", 63.0 + s, _workdir(tmp_path, f"run{s}", s))
           for s in (0, 1)]
  c = runs.load_config(str(tmp_path / "run1"))
  c.data.source_dir = "runs/recipe_seed1/data"
  runs.write_config(str(tmp_path / "run1"), c)
  out = tmp_path / "seeds.json"
  r = _seeds("--evals", ",".join(evals), "--out", str(out))
  assert r.returncode != 0 and "['data.source_dir']" in r.stderr and not os.path.exists(out)
  r = _seeds("--evals", ",".join(evals), "--out", str(out), "--may_differ", "data.source_dir")
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.load(open(out))
  assert got["may_differ"] == ["data.source_dir"] and got["bleu"]["mean"] == 63.5


def test_a_dial_an_older_evaluation_lacks_is_at_its_default(tmp_path):
  """A diffusion evaluation from before ``slot_guidance`` existed ran without it: it matches a new
  one at 0, not one at 1."""
  old = _eval(tmp_path, "old", 63.0, rounding="model")
  new = _eval(tmp_path, "new", 64.0, rounding="model", slot_guidance=0.0, cfg_scale=1.0)
  guided = _eval(tmp_path, "guided", 64.0, rounding="model", slot_guidance=1.0, cfg_scale=1.0)
  out = tmp_path / "seeds.json"
  r = _seeds("--evals", f"{old},{new}", "--out", str(out))
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(out))["settings"]["slot_guidance"] == 0.0
  r = _seeds("--evals", f"{old},{guided}", "--out", str(tmp_path / "other.json"))
  assert r.returncode != 0 and "['slot_guidance']" in r.stderr
