"""Meaning representations of ``key : value`` fields joined by ``|`` (E2E's Diffusion-LM form).

    name : Aromi | Type : pub | area : riverside

The one parser of such sources: the delexicaliser, distillation's recombination, the E2E slot
evaluator and the control tasks all read fields through ``fields``.
"""
from typing import Optional

FIELD_SEP, KEY_SEP = " | ", " : "


def fields(mr: str) -> list[tuple[str, str]]:
  """``name : Aromi | area : city centre`` -> [("name", "Aromi"), ("area", "city centre")], spaces
  normalised; a part without ``:`` is skipped, so any string parses (``""`` -> [])."""
  out = []
  for part in mr.split("|"):
    if ":" in part:
      k, v = part.split(":", 1)
      out.append((" ".join(k.split()), " ".join(v.split())))
  return out


def strict_fields(mr: str) -> Optional[list[tuple[str, str]]]:
  """``fields`` of a well-formed MR: None when a part lacks ``:``, or has an empty key or value."""
  parts = mr.split("|")
  out = fields(mr)
  if len(out) != len(parts) or any(not k or not v for k, v in out):
    return None
  return out


def join(pairs) -> str:
  """[(key, value)] -> ``key : value | ...`` (the inverse of ``fields`` on normalised text)."""
  return FIELD_SEP.join(f"{k}{KEY_SEP}{v}" for k, v in pairs)


def canonical(mr: str) -> tuple:
  """The MR as a set of fields, independent of their order, case and spacing: two sources with
  one canonical form say the same thing."""
  return tuple(sorted((k.lower(), v.lower()) for k, v in fields(mr)))
