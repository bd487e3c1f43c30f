r"""E2E's real references with the unfaithful train texts dropped (``distill.faithful_references``).

    python -m experiments.faithful_refs --out runs/data/e2e_faithful_refs
    python -m experiments.train --config configs/e2e_ar_baseline.py:cpu --workdir runs/clean/ar_delex \
        --config.data.dataset=jsonl:e2e_faithful_refs --config.data.source_dir=runs/data \
        --config.data.delex=name,near,food --stop_at_step 1200

``train.jsonl`` keeps the train references that say every field of their MR once and add none
(docs/results/faithfulness.md); ``valid.jsonl`` and ``test.jsonl`` hold every reference.
"""
import json

from absl import flags

from diffusion_text import defaults, distill
from experiments import common

_OUT = flags.DEFINE_string("out", None, "New directory for {train,valid,test}.jsonl.")
_DATASET = flags.DEFINE_string("dataset", "e2e", "The dataset whose references are filtered.")
flags.mark_flags_as_required(["out"])


def run():
  data_cfg = defaults.get_config().data
  data_cfg.dataset = _DATASET.value
  print(json.dumps(distill.faithful_references(data_cfg, _OUT.value), indent=2))


if __name__ == "__main__":
  common.run_app(run)
