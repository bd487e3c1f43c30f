"""A synthetic E2E-format dataset the test suite writes for itself (no copy of any corpus).

Lines are ``MR||text `` as in Diffusion-LM's E2E files: an MR of 3-8 ``field : value`` pairs in E2E's
field order, and a text made from one of several phrasings of each field, so the train split has
many distinct MRs and the held-out splits several references per MR, like E2E. Deterministic.
"""
import pathlib
import random

NAMES = ["The Copper Kettle", "Blue Heron", "The Old Mill Inn", "Saffron Garden", "The Lantern",
         "Harbour View", "The Green Door", "Little Paris", "Golden Dragon", "The Oak Room",
         "Bella Vista", "The Salt House"]
FIELDS = [
    ("Type", ["pub", "restaurant", "coffee shop"]),
    ("food", ["Italian", "French", "Chinese", "Indian", "English", "Japanese", "fast food"]),
    ("price", ["cheap", "moderate", "high", "less than £ 20", "more than £ 30", "£ 20 - 25"]),
    ("customer rating", ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"]),
    ("area", ["riverside", "city centre"]),
    ("family friendly", ["yes", "no"]),
    ("near", NAMES),
]
PHRASES = {
    "Type": ["is a {}", "is a {} you can visit", "is a well known {}"],
    "food": ["serving {} food", "that offers {} food", "with a menu of {} food"],
    "price": ["with {} prices", "in the {} price range", "where a meal costs {}"],
    "customer rating": ["rated {} by customers", "with a {} customer rating",
                        "that diners rate {}"],
    "area": ["in the {}", "located in the {}", "found in the {} area"],
    "family friendly": {"yes": ["It is family friendly .", "Children are welcome ."],
                        "no": ["It is not family friendly .", "It is not for children ."]},
    "near": ["near {}", "close to {}", "not far from {}"],
}
SPLITS = {"train": ("src1_train.txt", 264, 1), "validation": ("src1_valid.txt", 150, 12),
          "test": ("src1_test.txt", 150, 7)}  # lines, references per MR


def _mr(rng):
  fields = [("name", rng.choice(NAMES))]
  for k, values in sorted(rng.sample(FIELDS, rng.randint(2, 7)), key=FIELDS.index):
    fields.append((k, rng.choice(values)))
  return fields


def _text(rng, fields):
  name = fields[0][1]
  parts, extra = [name], []
  for k, v in fields[1:]:
    if k == "family friendly":
      extra.append(rng.choice(PHRASES[k][v]))
    else:
      parts.append(rng.choice(PHRASES[k]).format(v))
  if len(parts) == 1:
    parts.append("is a place to eat")
  return " ".join(parts) + " . " + " ".join(extra)


def write(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes ``root/e2e/diffusion_lm_format/src1_{train,valid,test}.txt``; returns that folder."""
  d = root / "e2e" / "diffusion_lm_format"
  d.mkdir(parents=True, exist_ok=True)
  rng = random.Random(seed)
  for split, (name, lines, refs) in SPLITS.items():
    out = []
    while len(out) < lines:
      fields = _mr(rng)
      mr = " | ".join(f"{k} : {v}" for k, v in fields)
      out += [f"{mr}||{_text(rng, fields).strip()} \n" for _ in range(min(refs, lines - len(out)))]
    (d / name).write_text("".join(out), encoding="utf-8")
  return d
