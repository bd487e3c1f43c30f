"""E2E evaluation: slot errors (does a text say each field of its MR, once, and nothing else?) and
the breakdown of an evaluation by the MR's number of fields.

The method of the E2E cleaning work (Dusek et al. 2019): match each field's value in the text by
hand-written rules, then count per MR field

    missing    the field's value is not said
    wrong      another value of the field is said instead (a pub called a coffee shop)
    added      the MR lacks the field but the text says a value of it
    repeated   the right value is said twice or more (the name excepted: texts repeat it)

and the slot error rate ``(missing + wrong + added + repeated) / MR fields``. The rules were
written from the E2E training texts (how each value is phrased: "kid friendly", "not
family-friendly", "£20-25", "moderately priced", "rated 5 out of 5", "by the river"); venue names
are matched word for word, and taken out of the text before the other fields are read, so "Raja
Indian Cuisine" does not say Indian food and "Café Rouge" does not say coffee shop.

Also per text: ``cut_off``, the text stops on a word that cannot end a sentence ("... is located
near Express by Holiday Inn in", "It is not kid friendly and ."); ``no_final_stop``; and
``doubled_word``, a word written twice in a row ("serves Fast food food").
"""
import collections
import re
from typing import Optional

import numpy as np

from diffusion_text import metrics
from diffusion_text.data import mr

# every venue named by an E2E name or near field (train, dev and test)
VENUES = (
    "Alimentum", "All Bar One", "Aromi", "Avalon", "Bibimbap House", "Blue Spice",
    "Browns Cambridge", "Burger King", "Café Adriatic", "Café Brazil", "Café Rouge",
    "Café Sicilia", "Clare Hall", "Clowns", "Cocum", "Cotto", "Crowne Plaza Hotel",
    "Express by Holiday Inn", "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne",
    "Midsummer House", "Rainbow Vegetarian Café", "Raja Indian Cuisine", "Ranch", "Strada",
    "Taste of Cambridge", "The Bakers", "The Cambridge Blue", "The Cricketers",
    "The Dumpling Tree", "The Eagle", "The Golden Curry", "The Golden Palace", "The Mill",
    "The Olive Grove", "The Phoenix", "The Plough", "The Portland Arms", "The Punter",
    "The Rice Boat", "The Six Bells", "The Twenty Two", "The Vaults", "The Waterman",
    "The Wrestlers", "Travellers Rest Beefeater", "Wildwood", "Yippee Noodle Bar", "Zizzi")

_RATED = r"(?:customer |user |average customer )?(?:rat\w*|reviews?|scores?|feedback)"
_PRICED = r"(?:pric\w*|costs?|prices? range)"

# field -> value class -> patterns (on ``normalise``d text); the MR's value maps to a class by
# ``VALUE_CLASS`` (E2E has two spellings of each price and rating level)
PATTERNS = {
    "Type": {
        "pub": [r"pubs?"],
        "coffee shop": [r"coffee[- ]?(?:shop|house|place|bar)s?", r"caf[eé]s?", r"coffee-?shops?"],
        "restaurant": [r"restaurants?"],
    },
    "food": {
        "english": [r"english", r"british"],
        "italian": [r"italian"], "french": [r"french"], "chinese": [r"chinese"],
        "japanese": [r"japanese", r"sushi"], "indian": [r"indian"],
        "fast food": [r"fast[- ]?food", r"burgers?"],
    },
    "price": {
        "low": [r"cheap\w*", r"inexpensive", r"affordabl[ey]", r"budget", r"low[- ]?(?:cost|pric\w*)",
                r"(?:less than|under|below) (?:£20|20 (?:british )?(?:pounds|gbp|euros?|dollars?))", r"£20 or less",
                r"pric\w*(?: range)? (?:is |are )?(?:in the )?(?:low|cheap)(?: range)?", r"low (?:price )?range",
                r"price range (?:of |is )?(?:low|cheap)"],
        "mid": [r"moderat\w*(?![- ]rat)", r"(?:average|medium|mid)[- ]?(?:pric\w*|rang\w*|cost)",
                r"pric\w*(?: range)? (?:is |are )?(?:in the )?(?:average|moderate|medium)(?: range)?",
                r"£20-£?25", r"20-25 (?:british )?(?:pounds|gbp|euros?|dollars?)", r"reasonabl[ey] pric\w*",
                r"(?:fairly|reasonably|sensibly) priced",
                r"price range (?:of |is )?(?:average|moderate|medium)"],
        "high": [r"(?<!in)expensive", r"high(?:ly)?[- ]?(?:pric\w*|cost)", r"pricey", r"costly",
                 r"(?:more than|over|above) (?:£30|30 (?:british )?(?:pounds|gbp|euros?|dollars?))", r"£30 (?:plus|\+)",
                 r"high[- ]end", r"upscale", r"high price range",
                 r"pric\w*(?: range)? (?:is |are )?(?:in the )?high(?: range)?"],
    },
    "customer rating": {
        "low": [r"low(?:ly)?[- ]" + _RATED, r"poor(?:ly)?[- ]?" + _RATED, r"badly rated",
                r"rat\w* (?:is |as |of )?(?:low|poor|bad)", r"1 out (?:of )?5", r"one out of five",
                r"(?<!out of )(?<!out )(?:1|one)[- ]stars?", r"rated (?:a )?(?:1|one)\b", r"(?:rating|score) of (?:1|one)\b"],
        "mid": [r"average[- ]" + _RATED, r"rat\w* (?:is |as |of )?(?:an )?average", r"averagely",
                r"3 out (?:of )?5", r"three out of five", r"(?<!out of )(?<!out )(?:3|three)[- ]stars?", r"rated (?:a )?(?:3|three)\b",
                r"(?:rating|score) of (?:3|three)\b", r"(?:mid|medium|decent(?:ly)?|moderate(?:ly)?)[- ]" + _RATED],
        "high": [r"high(?:ly)?[- ]" + _RATED, r"rat\w* (?:is |as |of )?(?:high|excellent|great)",
                 r"5 out (?:of )?5", r"five out of five", r"(?<!out of )(?<!out )(?:5|five)[- ]stars?", r"rated (?:a )?(?:5|five)\b",
                 r"(?:rating|score) of (?:5|five)\b", r"(?:top|well|best)[- ]rated",
                 r"(?:excellent|great|perfect|outstanding|higher)[- ]" + _RATED],
    },
    "area": {
        "city centre": [r"(?:(?:in|near) the )?(?:city[- ]?|town )?cent(?:re|er)"
                        r"(?: of (?:the )?(?:city|town|cambridge))?",
                        r"downtown", r"central", r"(?:in|near) the city"],
        "riverside": [r"river\w*", r"waterfront", r"water's edge"],
    },
    "family friendly": {
        "yes": [r"(?:family|families|kids?|child|children|children's)[- ]?(?:friendly|oriented|orientated|welcoming)",
                r"(?:friendly|welcoming|suitable|good|great|ideal|perfect|open|appropriate|fit|conducive|geared) (?:to|for|towards) "
                r"(?:the (?:whole )?)?(?:famil\w+|kids|children|child)",
                r"(?:kids|children|families|family) (?:are |is )?(?:very |always )?(?:welcome|allowed)",
                r"(?:allows?|permits?) (?:kids|children|families)",
                r"welcomes? (?:kids|children|families)", r"cater\w* (?:to|for) (?:young )?(?:kids|children|families)",
                r"(?:bring\w*|take) (?:the |your )?(?:kids|children|family)",
                r"for (?:the (?:whole )?)?(?:family|families|kids|children)",
                r"family[- ]?(?:coffee shop|pub|restaurant|venue|place|establishment|atmosphere|environment)"],
        "no": [r"adults? only", r"adults?[- ]oriented", r"(?:family|kids?|child|children)[- ]?unfriendly", r"child[- ]?free", r"no (?:kids|children)(?![- ]friendly)",
               r"(?:kids|children|families) (?:are )?not (?:welcome|allowed|permitted)"],
    },
}
VALUE_CLASS = {
    "price": {"cheap": "low", "less than £20": "low", "moderate": "mid", "£20-25": "mid",
              "high": "high", "more than £30": "high"},
    "customer rating": {"low": "low", "1 out of 5": "low", "average": "mid", "3 out of 5": "mid",
                        "high": "high", "5 out of 5": "high"},
    "family friendly": {"yes": "yes", "no": "no"},
}
GENERIC = {"Type": {"restaurant"}}  # said of any venue: not an added or wrong type
# field -> value class -> words any one of which, in a text, goes with saying the value: the
# targets of slot guidance (``anchor_groups``), coarser than ``PATTERNS`` since a guidance term sees
# single words. Price and rating share some ("high"); a negated "family" is not a "no".
ANCHORS = {
    "Type": {"pub": ["pub"], "coffee shop": ["coffee"], "restaurant": ["restaurant"]},
    "price": {"low": ["cheap", "inexpensive", "low", "less"], "mid": ["moderate", "moderately",
              "average", "25"], "high": ["high", "expensive", "30"]},
    "customer rating": {"low": ["low", "1", "poor"], "mid": ["average", "3"],
                        "high": ["high", "highly", "5"]},
    "area": {"city centre": ["centre", "center"], "riverside": ["riverside", "river"]},
    "family friendly": {"yes": ["family", "kid", "child", "children", "kids"],
                        "no": ["not", "adults", "non"]},
}
FIELDS = ("name", "Type", "food", "price", "customer rating", "area", "family friendly", "near")
OUTCOMES = ("ok", "missing", "wrong", "added", "repeated")
_NEGATIONS = {"not", "no", "non", "never", "nor", "without"}
_CLAUSE_BREAKS = {"and", "but", ",", ".", ";", "while", "although", "though", "which", "that"}
_DANGLING = set("""a an the and or but of in on at by near with to for from is are was its their
which that who where serving located offers has have than very also""".split())


def normalise(text: str) -> str:
  """Lower case, one space between words, and the E2E files' tokenisation undone where the rules
  need it: ``family - friendly`` -> ``family-friendly``, ``£ 20 - 25`` -> ``£20-25``, ``is n't``
  and ``isn 't`` -> ``isn't``."""
  t = " " + " ".join(text.lower().split()) + " "
  t = re.sub(r"\s*-\s*", "-", t)
  t = re.sub(r"£\s+", "£", t)
  t = re.sub(r"(\w)\s+n't\b", r"\1n't", t)
  t = re.sub(r"n\s+'t\b", "n't", t)
  return " ".join(t.split())


def _find(patterns, text: str) -> list[re.Match]:
  """Non-overlapping whole-word matches of any of ``patterns``, in order."""
  rx = re.compile(r"(?<![\w£])(?:" + "|".join(patterns) + r")(?![\w])")
  return list(rx.finditer(text))


def _negated(text: str, start: int) -> bool:
  """Whether a negation word stands in the four words before ``start`` with no clause break
  between (``not a family-friendly``, ``isn't very kid friendly``, ``non family-friendly``)."""
  words = re.findall(r"[\w']+|[,.;]", text[:start].replace("-", " "))[-4:]
  for w in reversed(words):
    if w in _CLAUSE_BREAKS:
      return False
    if w in _NEGATIONS or w.endswith("n't"):
      return True
  return False


def _venues(value: str, text: str) -> int:
  return len(_find([re.escape(normalise(value))], text))


def said(field: str, text: str, extra=()) -> collections.Counter:
  """value class -> mentions in ``text`` (normalised, venue names taken out) of ``field``; two
  mentions of one class at most two words apart are one; for family friendly a negated positive
  phrase counts as "no". ``extra``: values without a rule, matched word for word as classes of
  their own."""
  out = collections.Counter()
  rules = {**PATTERNS[field], **{normalise(v): [re.escape(normalise(v))] for v in extra}}
  last_end = {}
  for cls, pats in rules.items():
    for m in _find(pats, text):
      cls_m = "no" if field == "family friendly" and cls == "yes" and _negated(text, m.start()) \
          else cls
      # one phrase, one mention: "low customer rating of 1 out of 5", "average price range is £20-25"
      near = cls_m in last_end and len(text[last_end[cls_m]:m.start()].split()) <= 2
      out[cls_m] += not near
      last_end[cls_m] = m.end()
  return out


def _venue_outcome(field: str, value: Optional[str], text: str, others: list[str]) -> Optional[str]:
  if value is None:  # only near can be added: another venue than the name
    return "added" if field == "near" and others else None
  n = _venues(value, text)
  if n == 0:
    return "wrong" if others else "missing"
  return "repeated" if field == "near" and n > 1 else "ok"


def _value_class(field: str, value: str) -> str:
  value = normalise(value)
  return VALUE_CLASS.get(field, {}).get(value, value)


def _outcome(field: str, value: Optional[str], mentions: collections.Counter) -> Optional[str]:
  generic = GENERIC.get(field, set())
  if value is None:
    return "added" if any(c not in generic for c in mentions) else None
  want = _value_class(field, value)
  others = [c for c in mentions if c != want and c not in generic]
  if mentions[want] == 0:
    return "wrong" if others else "missing"
  if others:
    return "wrong"
  return "repeated" if mentions[want] > 1 else "ok"


def check(source: str, text: str) -> dict[str, str]:
  """field -> outcome (``OUTCOMES``) for each field the MR gives or the text adds."""
  fields = dict(mr.fields(source))  # values are compared after ``normalise``, as the text
  unknown = sorted(set(fields) - set(FIELDS))
  if unknown:
    raise ValueError(f"not an E2E MR field: {unknown} in {source!r}")
  t = normalise(text)
  mine = {normalise(fields[k]) for k in ("name", "near") if k in fields}
  others = [v for v in VENUES if normalise(v) not in mine and _venues(v, t)]
  out = {}
  for field in ("name", "near"):
    o = _venue_outcome(field, fields.get(field), t, others)
    if o:
      out[field] = o
  for v in sorted(VENUES, key=len, reverse=True):  # venue names say no type, food or area
    t = re.sub(r"(?<!\w)" + re.escape(normalise(v)) + r"(?!\w)", " <venue> ", t)
  for field in FIELDS:
    if field not in ("name", "near"):
      value = fields.get(field)
      extra = [value] if value and _value_class(field, value) not in PATTERNS[field] else []
      o = _outcome(field, value, said(field, t, extra))
      if o:
        out[field] = o
  return out


def anchor_groups(source: str) -> list[list[str]]:
  """One group of words per field of the MR, any of which in a text goes with saying the field's
  value (``ANCHORS``). A value without anchors (a venue, a food) is its own words; a
  delexicalisation placeholder (``<near>``) is itself and its lower-cased form, plus the anchors of
  a value kept after it (``price : <price> moderate``)."""
  groups = []
  for field, value in mr.fields(source):
    words = []
    if value.startswith("<"):
      ph, _, value = value.partition(" ")
      words += [ph, ph[:-1] + ":lower>"]
    if value:
      words += ANCHORS.get(field, {}).get(_value_class(field, value)) or [value]
    groups.append(words)
  return groups


def errors(source: str, text: str) -> int:
  """The text's slot errors (every non-``ok`` field) plus one if it is cut off: a reranking cost."""
  return sum(v != "ok" for v in check(source, text).values()) + cut_off(text)


def rerank(sources, candidates) -> list[str]:
  """Of each source's candidate texts, the first with the fewest ``errors``: for an n-best list
  best first, the most likely of the most faithful (TGen's slot-coverage rerank)."""
  return [c[int(np.argmin([errors(s, x) for x in c]))] for s, c in zip(sources, candidates)]


def cut_off(text: str) -> bool:
  """The text stops mid-sentence: its last word (a final ``.``, ``!``, ``?`` or ``,`` aside) is one
  that cannot end a sentence ("... near Express by Holiday Inn in", "It is not kid friendly and
  ."), or it ends on a comma, or it is empty."""
  words = normalise(text).split()
  if words and words[-1] == ",":
    return True
  while words and words[-1] in (".", "!", "?"):
    words.pop()
  return not words or words[-1] in _DANGLING


def no_final_stop(text: str) -> bool:
  """The text does not end with ``.``, ``!`` or ``?`` (a tenth of E2E's own references do not)."""
  words = normalise(text).split()
  return not words or words[-1] not in (".", "!", "?")


def doubled_word(text: str) -> bool:
  """A word written twice in a row (punctuation aside): "serves Fast food food"."""
  words = normalise(text).split()
  return any(a == b and re.match(r"\w", a) for a, b in zip(words, words[1:]))


def score(rows, checks=None) -> dict:
  """Slot errors of evaluation lines (``src``, ``hyp``): the slot error rate and its parts, per
  field and in all, the share of texts with every field right, cut off, without a final stop and
  with a doubled word. ``checks``: the rows' ``check`` outcomes, when the caller has them."""
  counts = collections.Counter()
  per_field = collections.defaultdict(collections.Counter)
  all_right = cut = unstopped = doubled = 0
  for r, outcomes in zip(rows, checks or [check(r["src"], r["hyp"]) for r in rows]):
    for field, o in outcomes.items():
      counts[o] += 1
      per_field[field][o] += 1
    counts["mr_fields"] += len(mr.fields(r["src"]))
    all_right += all(o == "ok" for o in outcomes.values())
    cut += cut_off(r["hyp"])
    unstopped += no_final_stop(r["hyp"])
    doubled += doubled_word(r["hyp"])
  n = max(len(rows), 1)
  errors = sum(counts[o] for o in OUTCOMES[1:])
  return {
      "slot_error_rate": errors / max(counts["mr_fields"], 1),
      **{o: counts[o] for o in OUTCOMES[1:]}, "mr_fields": counts["mr_fields"],
      "all_fields_right": all_right / n, "cut_off": cut / n,
      "no_final_stop": unstopped / n, "doubled_word": doubled / n,
      "per_field": {f: dict(per_field[f]) for f in FIELDS if f in per_field},
  }


E2E_VERBATIM_KEYS = ("name", "near", "food", "Type", "area")  # values a text names word for word


def breakdown(rows) -> dict:
  """An E2E MR->text evaluation's lines (``src``, ``hyp``, ``refs``) taken apart: corpus BLEU against
  all references by the MR's number of fields; for each slot whose value a text names word for word
  (``E2E_VERBATIM_KEYS``), the share of outputs that name it (case-insensitive); the mean length in
  words of the outputs and of the references; the slot errors (``score``)."""
  by_fields = collections.defaultdict(list)
  named, having = collections.Counter(), collections.Counter()
  for r in rows:
    fields = dict(mr.fields(r["src"]))
    by_fields[len(fields)].append(r)
    hyp = " ".join(r["hyp"].lower().split())
    for key in E2E_VERBATIM_KEYS:
      if key in fields:
        having[key] += 1
        named[key] += " ".join(fields[key].lower().split()) in hyp
  bleu = {n: metrics.bleu([r["hyp"] for r in g], [r["refs"] for r in g])
          for n, g in sorted(by_fields.items())}
  return {
      "inputs": len(rows),
      "bleu_by_fields": {n: {"inputs": len(by_fields[n]), "bleu": b["bleu"]}
                         for n, b in bleu.items()},
      "bleu_signature": next(iter(bleu.values()))["bleu_signature"],
      "value_named": {k: {"inputs": having[k], "share": named[k] / having[k]}
                      for k in E2E_VERBATIM_KEYS if having[k]},
      "words": float(np.mean([len(r["hyp"].split()) for r in rows])),
      "reference_words": float(np.mean([np.mean([len(t.split()) for t in r["refs"]])
                                        for r in rows])),
      "slots": score(rows),
  }


HEADLINE = ("slot_error_rate", "all_fields_right", "cut_off")  # beside BLEU in evaluation JSONs


def is_e2e(srcs) -> bool:
  """Whether every source is an E2E MR: a name and only E2E fields."""
  parsed = [dict(mr.fields(s)) for s in srcs]
  return bool(parsed) and all("name" in f and set(f) <= set(FIELDS) for f in parsed)


def agreement(rows, labels) -> dict:
  """How ``check`` agrees with a person's labels of the same texts: ``rows`` (``src``, ``hyp``),
  ``labels`` one dict per row with an outcome (``OUTCOMES`` or ``absent``) per field of ``FIELDS``
  and ``cut_off``. Decisions are the fields either side says something about (MR fields, and
  fields the text adds)."""
  confusion = collections.Counter()
  texts = cut = 0
  errors = {"auto": 0, "hand": 0}
  for r, lab in zip(rows, labels, strict=True):
    auto = check(r["src"], r["hyp"])
    pairs = [(lab[f], auto.get(f, "absent")) for f in FIELDS
             if (lab[f], auto.get(f, "absent")) != ("absent", "absent")]
    confusion.update(pairs)
    errors["hand"] += sum(h not in ("ok", "absent") for h, _ in pairs)
    errors["auto"] += sum(a not in ("ok", "absent") for _, a in pairs)
    texts += (all(h == "ok" for h, _ in pairs if h != "absent")
              == all(a == "ok" for _, a in pairs if a != "absent"))
    cut += cut_off(r["hyp"]) == bool(lab["cut_off"])
  fields = sum(len(mr.fields(r["src"])) for r in rows)
  decisions = sum(confusion.values())
  return {
      "texts": len(rows), "decisions": decisions,
      "agreement": sum(c for (h, a), c in confusion.items() if h == a) / decisions,
      "all_fields_right_agreement": texts / len(rows), "cut_off_agreement": cut / len(rows),
      "slot_error_rate_hand": errors["hand"] / fields, "slot_error_rate_auto": errors["auto"] / fields,
      "disagreements": {f"{h} -> {a}": c for (h, a), c in sorted(confusion.items()) if h != a},
  }
