"""The package's import graph has no cycle, counting imports inside functions too."""
import ast
import os

from conftest import ROOT

PKG = "diffusion_text"


def _modules() -> dict:
  """{module name: path} for every .py file of the package."""
  out = {}
  for d, _, files in os.walk(os.path.join(ROOT, PKG)):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
  return out


def import_graph() -> dict:
  mods = _modules()
  graph = {m: set() for m in mods}
  for m, path in mods.items():
    package = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path).read())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        subs = [f"{base}.{a.name}" for a in node.names]
        # ``from pkg import sub`` needs the submodule; ``from mod import obj`` the module itself
        names = [n for n in subs if n in mods] or [base]
      for name in names:
        # a submodule importing its own package's __init__ is how packages load, not a cycle
        if name in mods and name != m and not m.startswith(name + "."):
          graph[m].add(name)
  return graph


def find_cycle(graph: dict):
  """One cycle as a list of modules, or None (iterative DFS with colours)."""
  state = {}
  for root in sorted(graph):
    if state.get(root):
      continue
    stack = [(root, iter(sorted(graph[root])))]
    path = [root]
    state[root] = 1
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        state[node] = 2
        stack.pop()
        path.pop()
      elif state.get(child) == 1:
        return path[path.index(child):] + [child]
      elif not state.get(child):
        state[child] = 1
        stack.append((child, iter(sorted(graph[child]))))
        path.append(child)
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_package_imports_form_no_cycle():
  graph = import_graph()
  assert graph[f"{PKG}.families"] >= {f"{PKG}.classifier", f"{PKG}.denoiser"}  # the graph is read
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
