"""Copying given words: delexicalised slot values (``data.delex``: placeholders in, source values
out) and the in-place cloze layout (``data.target_start=in_place``: only the slots are written)."""
import numpy as np
import pytest

from configs import common
from diffusion_text import cloze, configuration, generate
from diffusion_text.errors import ConfigError
from diffusion_text.data import delex, pipeline, tokenizers

SRC = "name : Zizzi | Type : coffee shop | customer rating : average | near : Burger King"
TGT = "Zizzi is a coffee shop near burger king . Zizzi 's rating is average . Zizzis"


def test_values_become_placeholders_and_come_back():
  dx = delex.Delexicalizer(["name", "near"])
  assert dx.source(SRC) == ("name : <name> | Type : coffee shop | customer rating : average | "
                            "near : <near>")
  # every mention, case-insensitive, whole words only ("Zizzis" is another word)
  assert dx.target(SRC, TGT) == ("<name> is a coffee shop near <near> . <name> 's rating is "
                                 "average . Zizzis")
  # back with the source's spelling; a placeholder of a slot the source lacks is dropped
  assert dx.relex(SRC, dx.target(SRC, TGT)) == (
      "Zizzi is a coffee shop near Burger King . Zizzi 's rating is average . Zizzis")
  assert dx.relex("name : Aromi | food : Thai", "<name> is near <near> .") == "Aromi is near ."


def test_a_lower_cased_mention_comes_back_lower_cased():
  dx = delex.Delexicalizer(["food"])
  src = "name : Aromi | food : Fast food"
  tgt = dx.target(src, "Fast food at Aromi , the fast food place .")
  assert tgt == "<food> at Aromi , the <food:lower> place ."
  assert dx.relex(src, tgt) == "Fast food at Aromi , the fast food place ."
  # a value whose first letter is already lower-case has one placeholder
  assert dx.target("food : sushi", "Sushi and sushi") == "<food> and <food>"


def test_a_value_ending_in_the_next_word_says_it_once():
  """"<food> food" is how the targets say "Italian food"; for the value "Fast food" relex writes
  "Fast food", not "Fast food food" (upper or lower case); "foods" and other values are untouched."""
  dx = delex.Delexicalizer(["name", "food"])
  fast = "name : Aromi | food : Fast food"
  assert dx.relex(fast, "<name> serves <food> food .") == "Aromi serves Fast food ."
  assert dx.relex(fast, "<name> , a <food:lower> Food place") == "Aromi , a fast food place"
  assert dx.relex(fast, "<name> serves <food> foods .") == "Aromi serves Fast food foods ."
  assert dx.relex("name : Aromi | food : Italian", "<name> serves <food> food .") == (
      "Aromi serves Italian food .")
  # a slot that the source does not name leaves the word that follows its placeholder
  assert dx.relex("name : Aromi", "<name> serves <food> food .") == "Aromi serves food ."


def test_longer_values_are_replaced_first_and_off_means_identity():
  src = "name : The Punter | near : The Punter Inn"
  assert delex.Delexicalizer(["name", "near"]).target(src, "The Punter Inn is by The Punter .") \
      == "<near> is by <name> ."
  off = delex.of(common.get_config().data)
  assert not off and off.source(SRC) == SRC and off.relex(SRC, TGT) == TGT
  assert delex.parse_slots(" name, family friendly ,") == ("name", "family friendly")
  assert delex.placeholder("family friendly") == "<family_friendly>"


def test_a_kept_slot_shows_its_value_beside_the_placeholder():
  # a paraphrased mention ("averagely rated") stays as written; the model still reads the value
  dx = delex.Delexicalizer(["name", "customer rating"], keep=["customer rating"])
  assert dx.source(SRC) == ("name : <name> | Type : coffee shop | customer rating : "
                            "<customer_rating> average | near : Burger King")
  assert dx.target(SRC, "Zizzi is average , averagely rated .") == (
      "<name> is <customer_rating> , averagely rated .")
  assert dx.relex(SRC, "<name> is <customer_rating> .") == "Zizzi is average ."
  cfg = common.get_config().data
  cfg.update(delex="name,customer rating", delex_keep="customer rating")
  assert delex.of(cfg).source(SRC) == dx.source(SRC)
  with pytest.raises(ValueError, match="near"):
    delex.Delexicalizer(["name"], keep=["near"])


def test_encoder_and_tokenizer_read_the_delexicalised_texts():
  cfg = common.get_config().data
  cfg.update(task="seq2seq", max_len=40, max_src_len=17, target_start="fixed", delex="name,near")
  train = [{"src": SRC, "tgt": TGT, "index": 0, "label": -1}]
  tok = pipeline.get_tokenizer(cfg, train)
  assert "<name>" in tok.stoi and "Zizzi" not in tok.stoi  # the value never reaches the vocabulary
  ex = pipeline.make_encoder(tok, cfg)(train[0])
  tgt_ids = ex["ids"][ex["target_mask"] > 0]
  words = tok.decode(tgt_ids).split()
  assert words.count("<name>") == 2 and words.count("<near>") == 1
  assert tokenizers.UNK not in ex["ids"][ex["target_mask"] == 0]  # the source is all in-vocabulary
  # 17 source words delexicalised (19 raw): the length report counts what the model reads
  assert pipeline.length_report(train, tok, cfg) == {"examples": 1, "source_truncated": 0,
                                                     "target_truncated": 0}


def test_delex_needs_a_seq2seq_task():
  c = common.get_config()
  c.data.delex = "name"
  with pytest.raises(ConfigError, match="data.delex needs data.task=seq2seq"):
    configuration.validate(c, common.get_config())
  c.data.update(task="seq2seq", delex_keep="name,price")
  with pytest.raises(ConfigError, match=r"data.delex_keep: kept slots \['price'\] are not among "
                                        r"the delexicalised slots \['name'\]"):
    configuration.validate(c, common.get_config())


def test_in_place_output_copies_unknown_given_words_from_the_source():
  cfg = common.get_config().data
  cfg.update(dataset="rt_cloze", task="seq2seq", max_len=10, target_start="in_place")
  tok = tokenizers.WordTokenizer.train(["_ film _ slow", "the film is slow"])
  rec = {"src": "_ zany _ slow _", "tgt": "the zany is slow .", "index": 0, "label": -1}
  ex = pipeline.make_encoder(tok, cfg)(rec)  # "zany" and "." are not in the vocabulary
  assert ex["target_mask"].tolist() == [0, 1, 0, 1, 0, 1, 0, 0, 0, 0]
  out = ex["ids"].copy()
  out[[1, 3, 5]] = [tok.stoi["the"], tok.stoi["is"], tokenizers.SEP]  # the model's slot words
  # the given UNK word comes back from the source; a special token in a slot is dropped
  assert generate._in_place_text(tok, rec["src"], out) == "the zany is slow"
  with pytest.raises(Exception, match="slot word '_'"):
    pipeline.slot_id(tokenizers.WordTokenizer.train(["the film"]), cfg)


def test_in_place_needs_the_word_tokenizer():
  c = common.get_config()
  c.data.update(task="seq2seq", target_start="in_place", tokenizer="sentencepiece", vocab_size=100)
  with pytest.raises(ConfigError, match="in_place needs data.tokenizer=word"):
    configuration.validate(c, common.get_config())


def test_blank_accuracy_counts_slot_positions_only():
  srcs = ["_ film _ slow _", "_ good"]
  refs = [["the film is slow ."], ["very good"]]
  hyps = ["the film was slow .", "good"]  # 2 of 3 blanks right; the second output lost a word
  got = cloze.blank_accuracy(srcs, hyps, refs, "the")
  assert got == {"blank_accuracy": 0.5, "blank_baseline_word": "the",
                 "blank_baseline_accuracy": 0.25, "blanks": 4}
  train = [{"src": "_ film _", "tgt": "the film ."}, {"src": "_ cat", "tgt": "the cat"}]
  assert cloze.most_common_blank(train) == "the"


def test_neighbour_filler_backs_off_from_both_neighbours_to_one_to_the_most_common_word():
  train = [{"src": "_ film _", "tgt": "a film ."}, {"src": "_ film _", "tgt": "a film ."},
           {"src": "good _ movie", "tgt": "good , movie"}, {"src": "bad _ movie", "tgt": "bad , movie"},
           {"src": "_ cat", "tgt": "the cat"}, {"src": "_ cat", "tgt": "the cat"},
           {"src": "_ cow", "tgt": "the cow"}, {"src": "_ cat", "tgt": "one cat"}]
  fill = cloze.NeighbourFiller(train)
  assert fill.fallback == "the"
  assert fill("_ film _".split(), 0) == "a"   # (<s>, film) seen twice
  assert fill("_ film _".split(), 2) == "."   # (film, </s>) seen twice
  assert fill("nice _ movie".split(), 1) == ","  # (nice, movie) and nice unseen; movie: ","
  assert fill("_ cat".split(), 0) == "the"    # (<s>, cat): "the" twice, "one" once
  assert fill("xx _ yy".split(), 1) == "the"  # no context seen: the most common blank word
  got = cloze.blank_accuracy(["_ film _"], ["a film !"], [["a film ."]], "the", fill)
  assert got["blank_accuracy"] == 0.5 and got["blank_neighbour_accuracy"] == 1.0


def test_run_outputs_come_back_with_the_source_values():
  """``Run.decode_outputs`` (what ``generate``, ``evaluate`` and the CFG task read) relexicalises
  each output with its own source, and packs sources delexicalised."""
  c = common.get_config()
  c.data.update(task="seq2seq", max_len=24, max_src_len=10, target_start="fixed", delex="name")
  tok = tokenizers.WordTokenizer.train(["name : <name> | food : Thai", "<name> serves Thai food ."])
  run = generate.Run(workdir="", config=c, tokenizer=tok, model=None, params={}, step=0)
  srcs = ["name : Aromi | food : Thai", "name : The Punter | food : Thai"]
  ids, mask = run.pack_sources(srcs)
  assert tokenizers.UNK not in ids[0][mask[0] == 0]  # "Aromi" never reaches the model
  tgt = tok.encode("<name> serves Thai food .")  # what the model writes for both
  out = np.stack([pipeline.pack(c.data, tok.encode(delex.of(c.data).source(s)), tgt)[0]
                  for s in srcs])
  assert run.decode_outputs(out, srcs) == ["Aromi serves Thai food .", "The Punter serves Thai food ."]
  assert run.decode_outputs(out) == ["<name> serves Thai food ."] * 2  # no sources: as written


def test_collapse_keeps_one_word_of_each_repeated_run_before_the_values_are_copied():
  assert generate.collapse_repeats("a friendly friendly pub pub pub .  ") == "a friendly pub ."
  assert generate.collapse_repeats("very good , very good") == "very good , very good"
  c = common.get_config()
  c.data.update(task="seq2seq", max_len=24, max_src_len=10, target_start="fixed", delex="name")
  tok = tokenizers.WordTokenizer.train(["name : <name> | food : Thai", "<name> serves Thai food ."])
  run = generate.Run(workdir="", config=c, tokenizer=tok, model=None, params={}, step=0)
  src = "name : The Punter | food : Thai"
  tgt = tok.encode("<name> <name> serves serves Thai food food .")
  out = pipeline.pack(c.data, tok.encode(delex.of(c.data).source(src)), tgt)[0][None]
  assert run.decode_outputs(out, [src]) == ["The Punter The Punter serves serves Thai food food ."]
  assert run.decode_outputs(out, [src], collapse=True) == ["The Punter serves Thai food ."]
  c.sample.collapse_repeats = True  # the run's default
  assert run.decode_outputs(out, [src]) == ["The Punter serves Thai food ."]


def test_a_repeated_slot_keeps_each_of_its_values():
  dx = delex.Delexicalizer(["name", "food"])
  src = "name : Aromi | food : Italian | food : French"
  assert dx.source(src) == "name : <name> | food : <food> | food : <food_2>"
  tgt = dx.target(src, "Aromi serves Italian and French food .")
  assert tgt == "<name> serves <food> and <food_2> food ."
  assert dx.relex(src, tgt) == "Aromi serves Italian and French food ."
  # a second value's placeholder for a source with one value is dropped, as an unknown slot's is
  assert dx.relex("name : Aromi | food : Thai", "<name> serves <food> and <food_2> .") == (
      "Aromi serves Thai and .")
