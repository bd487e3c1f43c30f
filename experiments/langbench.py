r"""The language bench: each arm trained on each synthetic language, sampled, and scored exactly
(``diffusion_text/langbench.py``; the table is docs/results/langbench.md).

    python -m experiments.langbench --arms base,ar --languages templates,markov,grammar
    python -m experiments.langbench --arms base --name my_arm \
        --overrides '{"model.self_cond": true}'   # an arm of your own

Per arm it writes ``<out>/<arm>.json`` (one row per language; rows of languages not run now are
kept) and the sampled texts ``<out>/<arm>.<language>.jsonl``, and prints the table of the rows.
``--table`` prints the Markdown table of every arm file in ``--out``.
"""
import json
import os

from absl import flags, logging

from configs import langbench as bench_config
from diffusion_text import langbench, languages
from experiments import common

_ARMS = flags.DEFINE_list("arms", ["base"], f"Arms to run: {', '.join(langbench.ARMS)}.")
_LANGS = flags.DEFINE_list("languages", ["templates", "markov", "grammar"], "Bench languages.")
_OUT = flags.DEFINE_string("out", "docs/results/langbench", "Directory for the rows and texts.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 20_000, "Training sentences drawn per language.",
                                  lower_bound=1)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 200, "Sequences sampled and scored.",
                                    lower_bound=1)
_OVERRIDES = flags.DEFINE_string("overrides", "", "JSON {dotted.key: value} on top of the arm.")
_NAME = flags.DEFINE_string("name", "", "File name of the arm (default: the arm's).")
_TABLE = flags.DEFINE_bool("table", False, "Only print the Markdown table of every <out>/*.json.")


def _table(rows) -> str:
  head = f"{'arm':<16} {'language':<10} {'valid':>6} {'nll':>7} {'real':>6} {'cover':>6} {'dist':>5}"
  lines = [head]
  for r in rows:
    lines.append(f"{r['arm']:<16} {r['language']:<10} {r['valid_fraction']:>6.3f} "
                 f"{r['true_nll']:>7.2f} {r['real_true_nll']:>6.2f} {r['coverage']:>6.2f} "
                 f"{r['distinct']:>5.2f}")
  return "\n".join(lines)


def _markdown(rows) -> str:
  lines = ["| arm | language | family | valid | true NLL | real NLL | NLL ratio | coverage | "
           "distinct | train s |", "|" + " --- |" * 10]
  for r in rows:
    ratio = r["true_nll"] / r["real_true_nll"] if r["valid_fraction"] else float("nan")
    lines.append(f"| {r['arm']} | {r['language']} | {r['family']} | {r['valid_fraction']:.3f} | "
                 f"{r['true_nll']:.2f} | {r['real_true_nll']:.2f} | {ratio:.2f} | "
                 f"{r['coverage']:.2f} | {r['distinct']:.2f} | {r['train_seconds']:.0f} |")
  return "\n".join(lines)


def _arm_rows(out: str, name: str) -> list:
  path = os.path.join(out, f"{name}.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def _read_rows(out: str) -> list:
  rows = []
  for name in sorted(os.listdir(out)):
    if name.endswith(".json"):
      with open(os.path.join(out, name)) as f:
        rows += json.load(f)
  return sorted(rows, key=lambda r: (r["language"], r["arm"]))


def run():
  if _TABLE.value:
    if not os.path.isdir(_OUT.value):
      raise common.UserError(f"--out {_OUT.value} is not a directory")
    print(_markdown(_read_rows(_OUT.value)))
    return
  overrides = json.loads(_OVERRIDES.value) if _OVERRIDES.value else None
  if overrides is not None and not isinstance(overrides, dict):
    raise common.UserError("--overrides must be a JSON object of dotted config keys")
  if _NAME.value and len(_ARMS.value) != 1:
    raise common.UserError("--name names one arm; give one --arms")
  unknown = [a for a in _ARMS.value if a not in langbench.ARMS]
  if unknown and not (_NAME.value and overrides is not None):
    raise common.UserError(f"unknown arm(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(langbench.ARMS)}")
  for lang in _LANGS.value:
    languages.get(lang)
  common.check_out("--out", os.path.join(_OUT.value, "x"))
  os.makedirs(_OUT.value, exist_ok=True)
  base = bench_config.get_config()
  # an arm's file keeps its rows of the languages not run now
  rows_of = {arm: _arm_rows(_OUT.value, _NAME.value or arm) for arm in _ARMS.value}
  # languages outside, arms inside: arms that differ only in sampling share one trained model
  for lang in _LANGS.value:
    for arm in _ARMS.value:
      name = _NAME.value or arm
      row, texts = langbench.run_arm(lang, arm, base, num_train=_NUM_TRAIN.value,
                                     num_samples=_NUM_SAMPLES.value, overrides=overrides,
                                     log_every=500)
      row["arm"] = name
      rows_of[arm] = [r for r in rows_of[arm] if r["language"] != lang] + [row]
      common.write_atomic(os.path.join(_OUT.value, f"{name}.{lang}.jsonl"),
                          "".join(json.dumps({"text": t}) + "\n" for t in texts))
      common.write_atomic(os.path.join(_OUT.value, f"{name}.json"),
                          json.dumps(rows_of[arm], indent=1))
      logging.info("\n%s", _table([row]))
  every = [r for rows in rows_of.values() for r in rows if r["language"] in _LANGS.value]
  print(_table(every))
  print(f"[langbench] wrote {len(every)} rows to {_OUT.value}")


if __name__ == "__main__":
  common.run_app(run)
