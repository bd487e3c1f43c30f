import importlib.util
import json
import pathlib

import ml_collections
import pytest

from configs import common
from diffusion_text import configuration
from diffusion_text.errors import ConfigError

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
VARIANTS = {"e2e_diffusion_lm.py": [None, "cpu", "cpu_plain"],
            "e2e_diffuseq.py": [None, "ce", "cpu", "cpu_nosc"],
            "e2e_ar_baseline.py": [None, "cpu"],
            "tiny.py": [None, "seq2seq", "ar", "cfg", "classifier"],
            "rt_sentiment_classifier.py": [None, "judge"]}


def _load(path, arg=None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


# step_distill.py reads its teacher's run: test_step_distill_config_reads_its_teacher
CONFIGS = [(p, v) for p in sorted(CONFIG_DIR.glob("*.py"))
           if p.name not in ("__init__.py", "step_distill.py")
           for v in VARIANTS.get(p.name, [None])]


@pytest.mark.parametrize("path,arg", CONFIGS, ids=[f"{p.name}:{a}" for p, a in CONFIGS])
def test_every_config_loads_and_validates(path, arg):
  c = _load(path, arg)
  if c.model.family == "classifier":  # a classifier names its base run on the command line
    with pytest.raises(ConfigError, match="needs classifier.base_run"):
      configuration.validate(c, common.get_config())
    c.unlock()
    c.classifier.base_run = "runs/some_diffusion_run"
  configuration.validate(c, common.get_config())


def test_step_distill_config_reads_its_teacher(tmp_path):
  """configs/step_distill.py:TEACHER,K: the teacher's settings with half its 2K-step grid; the steps
  are required unless the teacher is itself a student (then half of its own)."""
  path = CONFIG_DIR / "step_distill.py"
  with pytest.raises(ValueError, match="use configs/step_distill.py:TEACHER_WORKDIR"):
    _load(path)
  teacher = common.get_config()
  teacher.model.width = 48  # a teacher's setting the student keeps
  (tmp_path / "config.json").write_text(json.dumps(teacher.to_dict()))
  with pytest.raises(ValueError, match="not a distilled student: give the student's steps"):
    _load(path, str(tmp_path))
  c = _load(path, f"{tmp_path},4")
  configuration.validate(c, common.get_config())
  assert c.model.width == 48 and c.step_distill.steps == 4 and c.sample.steps == 4
  assert list(c.sample.grid) == [2000, 1500, 1000, 500, 0] and c.sample.sampler == "ddim"


def test_unknown_key_is_rejected():
  c = common.get_config()
  c.model.widht = 3
  with pytest.raises(ConfigError, match="unknown config key.*model.widht"):
    configuration.validate(c, common.get_config())


@pytest.mark.parametrize("key,value,msg", [
    ("diffusion.schedule", "quadratic", "diffusion.schedule"),
    ("eval.sample_steps", 5000, "eval.sample_steps"),
    ("model.num_heads", 3, "divisible"),
    ("train.batch_size", 0, "train.batch_size"),
    ("diffusion.t_power", 0.0, "diffusion.t_power"),
    ("diffusion.t_sampler", "importance", "diffusion.t_sampler"),
    ("model.emb_dim", 0, "model.emb_dim"),
    ("data.min_count", 0, "data.min_count"),
    ("optim.decay", "step", "optim.decay"),
    ("optim.b2", 1.0, "optim.b2"),
    ("optim.grad_clip_norm", 0.0, "optim.grad_clip_norm"),
    ("eval.num_batches", 0, "eval.num_batches"),
    ("sample.eta", -0.5, "sample.eta"),
    ("sample.score_temp", 0.0, "sample.score_temp must be > 0"),
    ("sample.logit_temp", -1.0, "sample.logit_temp must be > 0"),
    ("sample.logit_temp", 0.8, "sample.logit_temp needs the softmax x0 head"),  # default: linear
    ("sample.rounding", "argmax", "sample.rounding must be one of"),
    ("sample.slot_guidance", 1.0, "a setting of evaluation"),
    ("sample.cfg_scale", 2.0, "needs a seq2seq run trained with condition dropout"),
    ("mesh.fsdp", 0, "mesh sizes"),
    ("eval.sampler", "euler", "eval.sampler"),
    ("model.arch", "transformer", "model.arch"),
    # the default config packs after the source, so there is no fixed source region to encode
    ("model.arch", "encoder_decoder", "needs .*data.target_start=fixed"),
    ("model.positions", "rotary", "model.positions"),
    ("model.positions", "shared", "positions=shared needs model.arch=encoder_decoder"),
    ("data.target_start", "middle", "data.target_start"),
])
def test_bad_values_are_rejected(key, value, msg):
  c = common.get_config()
  section, name = key.split(".")
  c[section][name] = value
  with pytest.raises(ConfigError, match=msg):
    configuration.validate(c, common.get_config())


def test_wrong_type_is_rejected():
  c = ml_collections.ConfigDict(common.get_config().to_dict(), type_safe=False)
  c.model.width = "wide"
  with pytest.raises(ConfigError, match="model.width must be int"):
    configuration.validate(c, common.get_config())


def test_hand_edited_config_json_is_one_clear_error(tmp_path):
  """A run's config.json with a value of the wrong type or a section removed is refused at load,
  naming the file and the keys; a key the code no longer reads is tolerated (older runs)."""
  import json
  from configs import tiny
  from diffusion_text import runs
  saved = tiny.get_config().to_dict()
  path = tmp_path / runs.CONFIG_FILE

  def load(d):
    path.write_text(json.dumps(d))
    return runs.load_config(str(tmp_path))

  load({**saved, "retired": {"key": 1}})
  bad = json.loads(json.dumps(saved))
  bad["train"]["batch_size"] = "eight"
  with pytest.raises(ConfigError, match=r"config.json: config key train.batch_size must be int"):
    load(bad)
  bad = {k: v for k, v in saved.items() if k != "optim"}
  with pytest.raises(ConfigError, match=r"config.json: missing config key\(s\): optim.b1"):
    load(bad)
  with pytest.raises(ConfigError, match="not a config"):
    load([1, 2])


def test_a_run_saved_by_older_code_loads_with_the_old_behaviour(tmp_path):
  """``fixtures/run_config_bb51855.json`` is ``configs/tiny.py`` as the code of commit bb51855 saved
  it, before ``model.rope``. It must load, with every key added since at the value that reproduces
  what that code did (``runs.ADDED_KEYS``): a key added to ``defaults`` without an entry there
  fails here instead of on a user's old run."""
  import shutil
  from diffusion_text import runs
  shutil.copy(pathlib.Path(__file__).parent / "fixtures" / "run_config_bb51855.json",
              tmp_path / runs.CONFIG_FILE)
  config = runs.load_config(str(tmp_path))
  assert config.model.rope is False and config.model.positions == "separate"


def test_ce_is_the_cpu_recipe_at_the_default_trunk_size():
  """``:ce`` takes every lever of ``:cpu`` and only the default config's trunk size (plus bf16 and
  the optimizer and step counts that go with it): a change to the recipe must reach both."""
  path = CONFIG_DIR / "e2e_diffuseq.py"
  ce, cpu, default = (_load(path, a).to_dict() for a in ("ce", "cpu", None))
  size = {"width", "num_layers", "num_heads", "mlp_dim", "scan_layers", "dtype"}
  for section in ce:
    for key, value in (ce[section].items() if isinstance(ce[section], dict) else []):
      if section == "model" and key in size:
        assert value == default["model"][key] or key == "dtype", key
      elif section not in ("optim", "train", "eval"):
        assert value == cpu[section][key], f"{section}.{key}"
  assert ce["model"]["dtype"] == "bfloat16" and ce["model"]["width"] == 768
  with pytest.raises(ValueError, match="now called 'cpu'"):  # one name per configuration
    _load(path, "cpu_ce")
