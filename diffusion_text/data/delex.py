"""Delexicalisation of slot values for meaning-representation-to-text data (``data.delex``).

A source in E2E form (``name : Zizzi | Type : pub | near : Burger King``) names values, such as a
venue's name, that the target copies word for word. A model with a closed word head writes such a
value as a class it learned, and on unseen combinations of values it writes another one: on E2E's
test set the encoder-decoder recipe wrote the right name in 23% of its outputs, though every test
name is in the vocabulary and seen 57-337 times in training. Delexicalising replaces each chosen
slot's value by a placeholder word in the source and wherever the target repeats it; after
generation the placeholder is replaced by the source's value again (the standard E2E baselines do
this, e.g. TGen, Dusek & Jurcicek 2016).

The transform is a pure function of the record, applied when a record is encoded (training, the
tokenizer's vocabulary) and when a source is packed for sampling; ``relex`` maps an output back.
References are never touched, so scores are against the real texts.
"""
import re
from typing import Sequence

from diffusion_text.data import mr


def parse_slots(spec: str) -> tuple[str, ...]:
  """``"name,near"`` -> ("name", "near"); ``""`` -> () (off)."""
  return tuple(s.strip() for s in spec.split(",") if s.strip())


def placeholder(slot: str, lower: bool = False, k: int = 1) -> str:
  """The one-word stand-in for ``slot``'s value: ``near`` -> ``<near>``, ``family friendly`` ->
  ``<family_friendly>``; ``lower``: for a mention written with its first letter lower-cased
  (``<food:lower>`` for "fast food" where the source says "Fast food"); ``k``: the slot's k-th
  value in a source that repeats the slot (``<food_2>``)."""
  return "<" + "_".join(slot.split()) + (f"_{k}" if k > 1 else "") + (":lower" if lower else "") + ">"


def _lower_first(value: str) -> str:
  return value[:1].lower() + value[1:]


def _value_pattern(value: str) -> re.Pattern:
  # the whole value as words: case-insensitive, not inside a longer word
  return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, value.split())) + r"(?!\w)",
                    re.IGNORECASE)


def _seam(ph: str, value: str) -> re.Pattern:
  """The placeholder ``ph``, and the value's last word if the output repeats it right after."""
  last = value.split()[-1] if value.split() else ""
  return re.compile(re.escape(ph) + (rf"(?:\s+(?i:{re.escape(last)})(?!\w))?" if last else ""))


class Delexicalizer:
  """Replaces the values of ``slots`` by placeholders in (source, target) and back in outputs.

  ``keep``: slots (of ``slots``) whose value stays in the source after its placeholder
  (``price : <price> moderate``), for slots that the targets often paraphrase rather than copy
  ("moderately priced"): a copied mention is still one placeholder to write, and the model still
  reads the value it must paraphrase."""

  def __init__(self, slots: Sequence[str], keep: Sequence[str] = ()):
    self.slots = tuple(slots)
    self.keep = tuple(keep)
    if not set(self.keep) <= set(self.slots):
      raise ValueError(f"kept slots {sorted(set(self.keep) - set(self.slots))} are not among "
                       f"the delexicalised slots {list(self.slots)}")

  def __bool__(self) -> bool:
    return bool(self.slots)

  def values(self, src: str) -> dict[tuple[str, int], str]:
    """(slot, k) -> the k-th value (from 1) of each chosen slot the source names, non-empty
    values only: a source may repeat a slot (two ``food`` fields), each value has its own
    placeholder."""
    out, seen = {}, {}
    for key, value in mr.fields(src):
      if key in self.slots and value:
        seen[key] = seen.get(key, 0) + 1
        out[(key, seen[key])] = value
    return out

  def source(self, src: str) -> str:
    """The source with each chosen slot's value replaced by its placeholder."""
    if not self.slots:
      return src
    parts, seen = [], {}
    for part in src.split("|"):
      key, sep, value = part.partition(":")
      slot = " ".join(key.split())
      if sep and slot in self.slots and value.strip():
        seen[slot] = seen.get(slot, 0) + 1
        kept = " " + " ".join(value.split()) if slot in self.keep else ""
        part = (f"{key}: {placeholder(slot, k=seen[slot])}{kept}"
                + (" " if part.endswith(" ") else ""))
      parts.append(part)
    return "|".join(parts)

  def target(self, src: str, tgt: str) -> str:
    """The target with every mention of a chosen slot's value (as named by ``src``) replaced by
    the slot's placeholder (its ``lower`` form where the mention lower-cases the value's first
    letter); longer values first, so a value inside another is not split."""
    values = self.values(src)
    for (slot, k), value in sorted(values.items(), key=lambda kv: -len(kv[1])):
      lowered = _lower_first(value) != value
      tgt = _value_pattern(value).sub(
          lambda m, slot=slot, value=value, lowered=lowered, k=k: placeholder(
              slot, lowered and m.group(0) == _lower_first(value), k), tgt)
    return tgt

  def relex(self, src: str, hyp: str) -> str:
    """An output with placeholders replaced by the source's values (first letter lower-cased for a
    ``lower`` placeholder); a placeholder of a slot the source does not name is dropped. Where the
    output goes on with the value's own last word ("<food> food" for "Fast food"), that word is
    written once: the model learned "<food> food" from "Italian food", and "Fast food food" is
    not English."""
    if not self.slots:
      return hyp
    values = self.values(src)
    for slot, k in {*values, *((s, 1) for s in self.slots)}:
      value = values.get((slot, k), "")
      for lower, text in ((True, _lower_first(value)), (False, value)):
        hyp = _seam(placeholder(slot, lower, k), value).sub(lambda _, text=text: text, hyp)
    return " ".join(re.sub(r"<[\w ]+_\d+(?::lower)?>", "", hyp).split())


def of(data_cfg) -> Delexicalizer:
  """The run's delexicaliser (``data.delex``, ``data.delex_keep``; empty = none)."""
  return Delexicalizer(parse_slots(data_cfg.get("delex", "")),
                       parse_slots(data_cfg.get("delex_keep", "")))
