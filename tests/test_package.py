"""The package: pyproject metadata, the wheel (console scripts, configs and experiments
under the package's own name, `--help` of every tool), one-line errors of bad flag
values, and the public eval transform `mobilenet_jax.preprocess`."""

import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import numpy as np
from PIL import Image
import pytest

import mobilenet_jax
from mobilenet_jax import config_files, config_recipes, data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORKED = os.path.join(REPO, "tests", "forked_commands.py")
# Every user-facing tool: console script -> (module, some of its own flags).
TOOLS = {
    "mobilenet-train": ("mobilenet_jax.main", ("config", "workdir", "distributed")),
    "mobilenet-evaluate": ("mobilenet_jax.evaluate", ("workdir", "step", "ema",
                                                       "batch_size", "data_dir")),
    "mobilenet-predict": ("mobilenet_jax.predict", ("workdir", "step", "top_k")),
    "mobilenet-export": ("mobilenet_jax.export", ("workdir", "format", "quantize")),
    "mobilenet-from-keras": ("mobilenet_jax.interop.from_keras", ("arch", "workdir")),
    "mobilenet-costs": ("mobilenet_jax.costs", ("config", "json", "layers")),
    "mobilenet-benchmark": ("mobilenet_jax.benchmark", ("config", "batch_size", "json",
                                                         "torch")),
    "mobilenet-launch": ("mobilenet_jax.experiments.launch", ("sweep", "root", "only")),
    "mobilenet-compare": ("mobilenet_jax.experiments.compare", ("root", "out")),
    "mobilenet-sweeps": ("mobilenet_jax.experiments.sweeps", ("sweep",)),
    "mobilenet-prepare": ("mobilenet_jax.data.prepare", ("source_dir", "data_dir")),
}


def _pyproject():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_pyproject_matches_the_package():
  project = _pyproject()["project"]
  assert project["name"] == "mobilenet-jax"
  assert project["version"] == mobilenet_jax.__version__
  # Dependencies are read from requirements.txt, not kept twice.
  assert project["dynamic"] == ["dependencies"]
  deps = _pyproject()["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
  assert deps == ["requirements.txt"]
  assert sorted(project["scripts"]) == sorted(TOOLS)
  for target in project["scripts"].values():
    module, function = target.split(":")
    # In a clone, experiments/ is the top-level package the wheel maps.
    module = module.replace("mobilenet_jax.experiments.", "experiments.")
    entry = getattr(importlib.import_module(module), function)
    # Console scripts are called with no arguments.
    assert not [p for p in inspect.signature(entry).parameters.values()
                if p.default is inspect.Parameter.empty]


def test_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No configs/ here: the shipped ones are used.
  resolved = config_files.resolve_config_path("configs/default.py:runlocal")
  path, _, args = resolved.partition(":")
  assert os.path.isfile(path) and path.endswith(os.path.join("configs", "default.py"))
  assert args == "runlocal"
  assert config_files.resolve_argv(["prog", "--config=configs/mobilenet_v1.py"])[1] == (
      "--config=" + os.path.join(os.path.dirname(path), "mobilenet_v1.py"))
  # Other paths, and files that exist here, are left alone.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "mine.py").write_text("")
  assert config_files.resolve_config_path("configs/mine.py") == "configs/mine.py"
  assert config_files.resolve_config_path("x/default.py") == "x/default.py"


def test_preprocess_is_the_eval_transform(tmp_path):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
  path = str(tmp_path / "photo.png")
  Image.fromarray(photo).save(path)
  config = config_recipes.data_config("image_folder", 32)
  batch = mobilenet_jax.preprocess([photo, photo[:8, :8]], 32)
  assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32
  assert -1.0 <= batch.min() and batch.max() <= 1.0
  np.testing.assert_array_equal(batch[0], data.load_image_file(path, config))
  grey = mobilenet_jax.preprocess(photo[..., 0], 16, crop_fraction=1.0)
  assert grey.shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_eval_crop_is_centred_on_small_images():
  """A centred dot stays centred: crop-then-resize moved it by a source pixel."""
  image = np.zeros((8, 8), np.uint8)
  image[3:5, 3:5] = 255
  out = mobilenet_jax.preprocess(image, 32)[0, ..., 0]
  np.testing.assert_allclose(out, out[::-1, ::-1], atol=1e-5)
  weights = (out + 1.0).sum(1)
  assert abs(float((weights * np.arange(32)).sum() / weights.sum()) - 15.5) < 1e-3


# ------------------------------------------------------------------ the wheel


def _forked(commands: list[list[str]], cwd: str, pythonpath: str) -> list[dict]:
  """Runs `commands` with tests/forked_commands.py (JAX imported once for all)."""
  env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, FORKED, json.dumps(commands)], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
  """A wheel built from a copy of the repository's sources, offline."""
  source = tmp_path_factory.mktemp("source")
  for name in ("pyproject.toml", "requirements.txt", "README.md"):
    shutil.copy(os.path.join(REPO, name), source)
  for folder in ("mobilenet_jax", "configs", "experiments"):
    shutil.copytree(os.path.join(REPO, folder), source / folder,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
  dist = tmp_path_factory.mktemp("dist")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                  "--no-build-isolation", "--quiet", "-w", str(dist), str(source)],
                 check=True, capture_output=True, timeout=300)
  [name] = os.listdir(dist)
  return str(dist / name)


def _package_files() -> list[str]:
  """The files an installed copy needs, as the wheel names them."""
  paths = []
  for folder, inside in (("mobilenet_jax", "mobilenet_jax"),
                         ("configs", "mobilenet_jax/configs"),
                         ("experiments", "mobilenet_jax/experiments")):
    for root, dirs, files in os.walk(os.path.join(REPO, folder)):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      relative = os.path.relpath(root, os.path.join(REPO, folder))
      paths += [os.path.normpath(os.path.join(inside, relative, f)) for f in files
                if not f.endswith((".pyc", ".so"))]
  return paths


def test_wheel_has_no_top_level_configs_or_experiments(wheel):
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    entry_points = next(archive.read(n).decode() for n in names
                        if n.endswith(".dist-info/entry_points.txt"))
  assert {n.split("/")[0] for n in names} == {
      "mobilenet_jax", f"mobilenet_jax-{mobilenet_jax.__version__}.dist-info"}
  # Every package of the clone, configs/ and experiments/ under the package's name.
  expected = {os.path.relpath(root, REPO) for root, _, files in
              os.walk(os.path.join(REPO, "mobilenet_jax")) if "__init__.py" in files}
  expected |= {"mobilenet_jax/configs", "mobilenet_jax/experiments"}
  packages = {os.path.dirname(n) for n in names if n.endswith("/__init__.py")}
  assert packages == expected, "list new packages in pyproject.toml"
  # Every source and data file (C++ kernels, CSV tables), configs and experiments too.
  missing = [path for path in _package_files() if path not in names]
  assert not missing, "add them to pyproject.toml's package-data: " + ", ".join(missing)
  scripts = [line.split(" = ")[0] for line in entry_points.splitlines() if " = " in line]
  assert sorted(scripts) == sorted(TOOLS)


def test_installed_tools_answer_help_in_the_shared_style(wheel, tmp_path):
  """Each console script of the installed wheel, run outside the clone: its docstring,
  its own flags, status 0; its configs load from the package."""
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                  "--quiet", "--target", str(site), wheel], check=True,
                 capture_output=True, timeout=300)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  probe = tmp_path / "probe.py"
  probe.write_text(
      "import importlib.util, sys\n"
      "from mobilenet_jax import config_files\n"
      "assert importlib.util.find_spec('configs') is None\n"
      "assert importlib.util.find_spec('experiments') is None\n"
      "config = config_files.get_config('default.py:runlocal')\n"
      "print(config_files.resolve_config_path('configs/default.py'), config.data.name)\n")
  commands = [[str(probe)]] + [[str(site / "bin" / s), "--help"] for s in TOOLS]
  results = _forked(commands, cwd=str(elsewhere), pythonpath=str(site))
  assert results[0]["returncode"] == 0, results[0]["stderr"]
  assert results[0]["stdout"].split() == [
      str(site / "mobilenet_jax" / "configs" / "default.py"), "shapes10"]
  for (script, (module, own_flags)), result in zip(TOOLS.items(), results[1:]):
    out = result["stdout"]
    assert result["returncode"] == 0 and not result["stderr"], (script, result)
    summary = importlib.import_module(
        module.replace("mobilenet_jax.experiments.", "experiments.")).__doc__
    assert out.startswith(summary.strip().splitlines()[0]), (script, out[:300])
    assert f"Installed with pip, the same program is `{script}`." in out, script
    own = out.split(f"\n{site / 'bin' / script}:\n")[1]  # The tool's own section.
    for flag in own_flags:
      assert f"--{flag}:" in own or f"--[no]{flag}:" in own, (script, flag, own)
    assert "--verbosity" not in own  # absl's own flags only with --helpfull.
    assert out.rstrip().endswith("Try --helpfull to get a list of all flags.")


# Bad flag values of the tools that once broke the one-line promise: (id, command,
# fragments of the error line). Each fails before any model, data or TensorFlow.
BAD_FLAGS = [
    ("export_format", ["-m", "mobilenet_jax.export", "--workdir=/no/run",
                       "--format=onnx"], ("--format=onnx", "saved_model|tflite")),
    ("export_quantize", ["-m", "mobilenet_jax.export", "--workdir=/no/run",
                         "--quantize=int4"], ("--quantize=int4", "int8")),
    ("from_keras_arch", ["-m", "mobilenet_jax.interop.from_keras", "--arch=v3",
                         "--workdir=/no/run"], ("--arch=v3", "v1|v2")),
    ("from_keras_width", ["-m", "mobilenet_jax.interop.from_keras", "--arch=v1",
                          "--width=wide", "--workdir=/no/run"], ("--width=wide",)),
    ("launch_unknown_point", ["-m", "experiments.launch", "--sweep=table6",
                              "--root=/no/root", "--dry_run", "--only=v1_w9_r224"],
     ("No point v1_w9_r224", "v1_w1_r224")),
    ("launch_tpu_without_zone", ["-m", "experiments.launch", "--sweep=table6",
                                 "--root=gs://b/r", "--dry_run", "--tpu=a"],
     ("--tpu needs --zone",)),
    ("launch_without_sweep", ["-m", "experiments.launch", "--root=/no/root"],
     ("--sweep",)),
]


@pytest.fixture(scope="module")
def bad_flag_results() -> dict:
  """Every command of BAD_FLAGS, run once, in forks of one process."""
  commands = [command for _, command, _ in BAD_FLAGS]
  return dict(zip((name for name, _, _ in BAD_FLAGS),
                  _forked(commands, cwd=REPO, pythonpath=REPO)))


@pytest.mark.parametrize("name,expected", [(n, e) for n, _, e in BAD_FLAGS],
                         ids=[n for n, _, _ in BAD_FLAGS])
def test_bad_flag_value_ends_in_one_line(name, expected, bad_flag_results):
  result = bad_flag_results[name]
  assert result["returncode"] == 2, result
  assert not result["stdout"] and result["stderr"].count("\n") == 1, result
  line = result["stderr"].strip()
  assert line.startswith("error: "), line
  for fragment in expected:
    assert fragment in line, line
