"""E2E NLG (restaurant MR -> text; Novikova et al. 2017) as a TFDS builder.

Reads Diffusion-LM's ``src1_{train,valid,test}.txt`` (``MR||text``) from the manual dir's
``e2e/diffusion_lm_format/``; without them, downloads the challenge's original CSVs (``E2E_URL``) and
converts them to the same form.
"""
import os

import tensorflow_datasets as tfds

from diffusion_text.data import sources
from diffusion_text.data.builders import common


class E2eMrText(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Diffusion-LM MR||text format."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Optional: a dir holding e2e/diffusion_lm_format/src1_*.txt."

  def _info(self):
    return self.dataset_info_from_configs(
        features=common.features(),
        homepage="https://github.com/tuetschek/e2e-dataset",
        citation="Novikova, Dusek & Rieser (2017). The E2E Dataset. SIGDIAL.")

  def _split_generators(self, dl_manager):
    local = common.manual_dir_or_none(dl_manager)
    if local:
      local = os.path.join(local, "e2e", "diffusion_lm_format")
    if local and all(os.path.exists(os.path.join(local, f))
                     for f in sources.E2E_SPLIT_FILES.values()):
      return {split: self._generate_examples(sources.read_e2e_lines(os.path.join(local, f)))
              for split, f in sources.E2E_SPLIT_FILES.items()}
    root = os.path.join(os.fspath(dl_manager.download_and_extract(sources.E2E_URL)), "e2e-dataset")
    return {split: self._generate_examples(sources.e2e_csv_records(os.path.join(root, f)))
            for split, f in sources.E2E_CSV_FILES.items()}

  def _generate_examples(self, records):
    yield from common.keyed(records)
