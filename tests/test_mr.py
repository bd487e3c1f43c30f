"""``data.mr``: the one parser of ``key : value | ...`` meaning representations."""
from diffusion_text.data import mr

E2E = "name : The Eagle | customer rating : 5 out of 5 | area : riverside"


def test_fields_parse_and_join_back():
  pairs = [("name", "The Eagle"), ("customer rating", "5 out of 5"), ("area", "riverside")]
  assert mr.fields(E2E) == pairs
  assert mr.join(pairs) == E2E
  # spaces are normalised; a part without ':' is skipped; anything parses
  assert mr.fields("  name :  The   Eagle |junk| area:riverside ") == [
      ("name", "The Eagle"), ("area", "riverside")]
  assert mr.fields("") == [] and mr.fields("a plain sentence") == []


def test_strict_fields_refuse_malformed_mrs():
  assert mr.strict_fields(E2E) == mr.fields(E2E)
  assert mr.strict_fields("name : The Eagle | junk") is None
  assert mr.strict_fields("name : | area : riverside") is None
  assert mr.strict_fields(" : x") is None
  assert mr.strict_fields("a plain sentence") is None


def test_canonical_ignores_field_order_case_and_spacing():
  assert mr.canonical(E2E) == mr.canonical("AREA:riverside|name :  the eagle | customer rating : 5 out of 5")
  assert mr.canonical(E2E) != mr.canonical("name : The Eagle | area : riverside")
  assert mr.canonical(E2E) != mr.canonical(E2E.replace("riverside", "city centre"))
