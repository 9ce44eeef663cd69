"""The shape of the house (shared/DESIGN.md): module and function sizes, the layers'
import directions, and one owner for the run directory's file names. Static: reads
the sources, imports nothing."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("mobilenet_jax", "experiments")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Layer -> the package parts it must not import. Tools (main, evaluate, predict,
# export, benchmark, restore, cli, interop, data/benchmark.py...) sit on top.
_TOOLS = ("mobilenet_jax.main", "mobilenet_jax.evaluate", "mobilenet_jax.predict",
          "mobilenet_jax.export", "mobilenet_jax.benchmark", "mobilenet_jax.restore",
          "mobilenet_jax.cli", "mobilenet_jax.interop")
FORBIDDEN = {
    "mobilenet_jax/rundir": ("mobilenet_jax.train", "mobilenet_jax.models",
                             "mobilenet_jax.data", *_TOOLS),
    "mobilenet_jax/models": ("mobilenet_jax.train", "mobilenet_jax.data",
                             "mobilenet_jax.rundir", *_TOOLS),
    "mobilenet_jax/train": _TOOLS,
    "mobilenet_jax": ("configs", "experiments", "benchmarks"),
}
# Tools that live inside a lower layer's folder.
TOOL_FILES = {"mobilenet_jax/data/benchmark.py", "mobilenet_jax/data/prepare.py"}
RUN_DIRECTORY_NAMES = ("results.json", "metrics.jsonl", "train.log", "run.lock")
LAYOUT_MODULE = "mobilenet_jax/rundir/layout.py"


def _sources():
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      yield path.relative_to(REPO).as_posix(), path.read_text()


def _imports(tree: ast.AST, module: str) -> set[str]:
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # Relative: resolve against the module's package.
        base = module.split(".")[:-node.level]
        prefix = ".".join(base + ([node.module] if node.module else []))
      else:
        prefix = node.module or ""
      names.add(prefix)
      names.update(f"{prefix}.{alias.name}" for alias in node.names)
  return names


def _docstrings(tree: ast.AST) -> set[int]:
  ids = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        ids.add(id(first.value))
  return ids


def test_modules_and_functions_are_small():
  problems = []
  for path, text in _sources():
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
      problems.append(f"{path}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          problems.append(f"{path}:{node.lineno} {node.name}(): {length} lines")
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(folder):
  problems = []
  for path, text in _sources():
    if not path.startswith(folder + "/") or path in TOOL_FILES:
      continue
    module = path[:-3].replace("/", ".")
    for name in _imports(ast.parse(text), module):
      if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
        problems.append(f"{path} imports {name}")
  assert not problems, "\n".join(problems)


def test_run_directory_file_names_are_spelled_in_one_module():
  problems = []
  for path, text in _sources():
    if path == LAYOUT_MODULE:
      continue
    tree = ast.parse(text)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings):
        problems += [f"{path}:{node.lineno} spells {name!r}"
                     for name in RUN_DIRECTORY_NAMES if name in node.value]
  assert not problems, "\n".join(problems)


def test_the_checker_sees_violations(tmp_path):
  """The checks above can fail: a long function and an upward import are caught."""
  text = "from mobilenet_jax.train import trainer\n\ndef f():\n" + "  x = 1\n" * 70
  tree = ast.parse(text)
  assert "mobilenet_jax.train.trainer" in _imports(tree, "mobilenet_jax.rundir.x")
  long = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
  assert long[0].end_lineno - long[0].lineno + 1 > MAX_FUNCTION_LINES
  assert os.path.exists(REPO / LAYOUT_MODULE)


def test_the_long_files_started_first_exist():
  # tests/conftest.py orders them by name; a renamed file would silently fall back to
  # the end of the queue, where it sets the suite's wall time.
  tree = ast.parse((REPO / "tests" / "conftest.py").read_text())
  (names,) = [ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign)
              and getattr(node.targets[0], "id", None) == "_LONG_FILES"]
  assert names and not [n for n in names if not (REPO / "tests" / n).is_file()], names
