"""The process-wide speed settings: compilation cache, huge-page re-exec, XLA options."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mobilenet_jax import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  default = runtime.cache_dir_from_env()
  assert default.startswith(os.path.join(str(tmp_path), "mobilenet_jax", "jax"))
  monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "elsewhere"))
  assert runtime.cache_dir_from_env() == str(tmp_path / "elsewhere")
  for off in ("0", "off", "false"):
    monkeypatch.setenv(runtime.CACHE_ENV, off)
    assert runtime.cache_dir_from_env() is None


def test_second_compile_is_read_from_the_persistent_cache():
  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
  fn = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
  x = jnp.ones((64, 64))
  with runtime.scratch_compilation_cache() as directory:
    expected = fn.lower(x).compile()(x)
    assert os.listdir(directory)  # Written...
    jax.clear_caches()
    before = len(hits)
    again = fn.lower(x).compile()(x)  # ... and read back.
    assert len(hits) == before + 1
  np.testing.assert_array_equal(again, expected)
  assert jax.config.jax_compilation_cache_dir != directory  # Settings restored.


# A stand-in command-line module: re-executes itself with huge pages, then reports.
_CLI = """
import os, sys
from mobilenet_jax import runtime
runtime.reexec_with_hugepages("probe_cli")
print(os.environ.get("GLIBC_TUNABLES", ""), " ".join(sys.argv[1:]))
"""


@pytest.mark.parametrize("preset, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # The off switch is kept.
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_command_reexecutes_itself_with_huge_pages(tmp_path, preset, expected):
  (tmp_path / "probe_cli.py").write_text(_CLI)
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
  env.pop("GLIBC_TUNABLES", None)
  if preset:
    env["GLIBC_TUNABLES"] = preset
  out = subprocess.run([sys.executable, "-m", "probe_cli", "--flag=1", "x"], env=env,
                       capture_output=True, text=True, check=True).stdout
  assert out.split() == [expected, "--flag=1", "x"]


def test_no_reexec_outside_the_command(monkeypatch):
  # Called from another program (here pytest) it must never restart that program.
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  runtime.reexec_with_hugepages("mobilenet_jax.main")
  assert "GLIBC_TUNABLES" not in os.environ


def test_compiler_options_only_on_cpu():
  assert runtime.compiler_options("inference", "cpu") == {
      "xla_cpu_experimental_ynn_fusion_type": ""}
  assert "CONVOLUTION" not in runtime.compiler_options("train", "cpu")[
      "xla_cpu_experimental_ynn_fusion_type"]
  for backend in ("gpu", "tpu"):
    assert runtime.compiler_options("inference", backend) is None
    assert runtime.compiler_options("train", backend) is None


@pytest.mark.parametrize("purpose", ["train", "inference"])
def test_compiler_options_change_no_result(purpose):
  # Table 4's full-convolution V1 (convolutions and dots), tiny: values and gradients
  # compiled with the purpose's options equal those of XLA's defaults.
  from configs import mobilenet_v1  # pylint: disable=g-import-not-at-top
  from mobilenet_jax import models  # pylint: disable=g-import-not-at-top
  config = mobilenet_v1.get_config("width=0.25,res=32,num_classes=3")
  config.model.block = "full_conv"
  model = models.create(config.model)
  variables = models.init_variables(model, jax.random.key(0))
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

  def loss(params):
    logits = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                         images)
    return jnp.sum(logits ** 2), logits

  fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  options = runtime.compiler_options(purpose, "cpu")
  expected = fn.lower(variables["params"]).compile()(variables["params"])
  actual = fn.lower(variables["params"]).compile(compiler_options=options)(
      variables["params"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               actual, expected)


_V1_TINY = ("--config=configs/mobilenet_v1.py:runlocal", "--config.data.name=shapes10/tiny")


@pytest.mark.parametrize("tool,args,expected", [
    ("evaluate", ("--workdir={tmp}/missing",), "No checkpoint in"),
    ("predict", ("--workdir={tmp}/missing", "{tmp}/x.png"), "No checkpoint in"),
    ("predict", ("--workdir={tmp}/missing", "{tmp}/typo.png"), "Image file not found"),
    ("main", (*_V1_TINY, "--workdir={tmp}/x.png"), "is a file, not a directory"),
    ("main", (*_V1_TINY, "--workdir={tmp}/run", "--config.init_from.workdir={tmp}/none"),
     "does not exist"),
], ids=["evaluate", "predict", "predict_missing_image", "train_workdir_is_a_file",
        "train_init_from_missing"])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_wrong_path_costs_one_jax_import_and_no_tensorflow(tmp_path, tool, args,
                                                            expected):
  # The huge-pages re-execution comes before JAX loads (-X importtime passes to the
  # re-executed process, so a JAX imported first would be listed twice), and
  # TensorFlow waits until the paths are checked and a run is restored: a typo costs
  # ~2 s, not the ~10 s of loading TensorFlow first.
  # TensorFlow loads with stderr silenced, which hides its -X importtime lines too: a
  # sitecustomize records, at exit, whether it was loaded.
  site, record = tmp_path / "site", tmp_path / "modules_at_exit"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
      "import atexit, sys\n"
      f"atexit.register(lambda: open({str(record)!r}, 'a').write("
      "str('tensorflow' in sys.modules) + '\\n'))\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(site)]),
             JAX_PLATFORMS="cpu")
  env.pop("GLIBC_TUNABLES", None)
  (tmp_path / "x.png").write_bytes(b"not read: the run is missing")
  proc = subprocess.run([sys.executable, "-X", "importtime", "-m", f"mobilenet_jax.{tool}",
                         *(a.format(tmp=tmp_path) for a in args)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
  imported = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
              if line.startswith("import time:")]
  assert imported.count("jax") == 1
  assert record.read_text().split() == ["False"]  # One process, without TensorFlow.
  assert not (tmp_path / "run").exists()  # A refused start makes no run directory.
