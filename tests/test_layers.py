"""The import graph of optim4rl_tf has no cycle and no import that goes up the layers.

Layers, lowest first. A module may import modules of its own layer or of a lower one, never of a higher one:

  0  utils, optim4rl_tf (the package ``__init__``: its public names are loaded lazily by ``importlib``, not
     imported), optim4rl_tf._version
     -- logging, config checks, workdirs, process set-up, result statistics and learning-curve plots
  1  configs
     -- ml_collections experiment configs: data, importing nothing above utils (``pretrained`` reads the
        meta-training configs of its recipes)
  2  optimizers, envs, pretrained
     -- learned-optimizer math and Keras faces, environments; ``pretrained`` holds the optimizers' shipped
        files (``Optim4RL.from_pretrained`` reads it, it reads ``optimizers.meta_params``), so it shares
        their layer
  3  agents
     -- A2C and PPO: networks, losses, rollouts, trainers and their run functions
  4  meta
     -- meta-training
  5  eval, analysis, benchmarks
     -- experiments and reports built on the layers below
  6  launch, examples
     -- the launchers and the example scripts (top)

So gradient collection (analysis) reaches the A2C trainer only as an object the caller passes in
(``a2c_train.train(..., gradient_probe=...)``), and the trainers' statistics and plots live in utils.

What counts as an import: every ``import`` / ``from ... import`` statement in a file, function-level ones
included (``ast.walk``); ``from P import n`` is an import of the module ``P.n`` when that is a module,
else of ``P``; relative imports are resolved. Importing a submodule runs its parent packages' ``__init__``,
which is not counted (that is how Python packages work, not a dependency). Cycles are checked between
modules (tests/ is not checked).
"""

import ast
import os

import build_graph

LAYERS = (
    ("utils", "<root>", "_version"),
    ("configs",),
    ("optimizers", "envs", "pretrained"),
    ("agents",),
    ("meta",),
    ("eval", "analysis", "benchmarks"),
    ("launch", "examples"),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}

# Cycles that exist on purpose or are owned elsewhere, each a frozenset of the modules of one cycle: none.
KNOWN_EXCEPTIONS = set()
# Upward imports allowed anyway: none.
KNOWN_UPWARD = set()


def module_imports(source, module, is_package, modules):
  """First-party modules (names in ``modules``) that the code ``source`` of ``module`` imports.

  ``is_package``: the source is a package ``__init__`` (relative imports are anchored at the package
  itself). Names that are not first-party modules resolve to their longest prefix in ``modules``.
  """
  package = module if is_package else module.rpartition(".")[0]

  def nearest(name):
    while name and name not in modules:
      name = name.rpartition(".")[0]
    return name or None

  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(nearest(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = build_graph.from_base(node, package)
      for alias in node.names:
        full = f"{base}.{alias.name}"
        found.add(full if full in modules else nearest(base))
  found.discard(None)
  found.discard(module)
  return found


def package_of(module):
  """The layer name of a module: 'optim4rl_tf.agents.a2c' -> 'agents', 'optim4rl_tf.configs.a2c' ->
  'configs', 'launch.train' -> 'launch', 'optim4rl_tf' -> '<root>', 'optim4rl_tf._version' -> '_version'."""
  parts = module.split(".")
  if parts[0] in ("launch", "examples"):
    return parts[0]
  return parts[1] if len(parts) > 1 else "<root>"


def import_graph():
  """{module: set of first-party modules it imports} over optim4rl_tf/, configs/ and launch/."""
  files = [f for f in build_graph.source_files() if not f.startswith("tests/")]
  modules = {build_graph.module_of(f): f for f in files}
  graph = {}
  for module, path in modules.items():
    with open(os.path.join(build_graph.ROOT, path)) as f:
      graph[module] = module_imports(f.read(), module, path.endswith("__init__.py"), modules)
  return graph


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan), each a frozenset."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(frozenset(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def _one_cycle(graph, component):
  """A readable path through a cycle: 'a -> b -> a'."""
  start = min(component)
  path, seen = [start], {start}
  while True:
    nxt = min(w for w in graph[path[-1]] if w in component)
    if nxt in seen:
      return " -> ".join(path[path.index(nxt):] + [nxt])
    path.append(nxt)
    seen.add(nxt)


def test_every_package_has_a_layer():
  unknown = sorted({package_of(m) for m in import_graph()} - set(RANK))
  assert not unknown, f"packages without a layer (add them to LAYERS in tests/test_layers.py): {unknown}"


def test_no_import_cycle():
  graph = import_graph()
  found = cycles(graph)
  new = [c for c in found if c not in KNOWN_EXCEPTIONS]
  assert not new, "import cycles:\n" + "\n".join(_one_cycle(graph, c) for c in new)
  stale = [sorted(c) for c in KNOWN_EXCEPTIONS if c not in found]
  assert not stale, f"KNOWN_EXCEPTIONS lists cycles that are gone (remove them): {stale}"


def test_no_import_goes_up_the_layers():
  graph = import_graph()
  upward = sorted((m, d)
                  for m, deps in graph.items()
                  for d in deps
                  if RANK[package_of(d)] > RANK[package_of(m)] and (m, d) not in KNOWN_UPWARD)
  assert not upward, "imports that go up the layers (see the docstring of tests/test_layers.py):\n" + "\n".join(
      f"{m} ({package_of(m)}) imports {d} ({package_of(d)})" for m, d in upward)


def test_the_import_reader():
  """Function-level and relative imports count; 'from P import module' is that module, not P."""
  modules = {
      "optim4rl_tf", "optim4rl_tf.agents", "optim4rl_tf.agents.a2c", "optim4rl_tf.analysis",
      "optim4rl_tf.analysis.collect", "optim4rl_tf.envs", "optim4rl_tf.envs.catch", "optim4rl_tf.utils.stats"
  }
  source = ("from . import a2c\n"
            "from optim4rl_tf.envs import Catch\n"
            "import numpy as np\n"
            "def f():\n"
            "  from optim4rl_tf.analysis import collect\n"
            "  import optim4rl_tf.utils.stats\n")
  got = module_imports(source, "optim4rl_tf.agents.a2c_train", False, modules)
  assert got == {
      "optim4rl_tf.agents.a2c", "optim4rl_tf.envs", "optim4rl_tf.analysis.collect", "optim4rl_tf.utils.stats"
  }
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [frozenset({"a", "b", "c"})]
  assert _one_cycle(graph, frozenset({"a", "b", "c"})) == "a -> b -> c -> a"
  assert package_of("optim4rl_tf.configs.a2c") == "configs" and package_of("launch.train") == "launch"
