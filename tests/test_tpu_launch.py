"""The TPU launcher's parts without a cloud: what is shipped (a dirty tree shipped or
refused), the plan a dry run prints for --create --spot, the requires-python it
installs for, a worker whose environment fails, and the sweep bookkeeping that
cannot lie (a root belongs to one sweep; a point's name to its settings; a truncated
results.json is not a finished point). The full fake-cloud sweep, with a preemption,
is in tests/test_sweep_end_to_end.py."""

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tomllib

from absl import app, flags
from absl.testing import flagsaver
import jax
import pytest

from experiments import code_archive, launch, manifest, remote_env, sweeps
from mobilenet_jax.rundir import layout, results as run_results
from tests import ckpt_helpers as h
from tests import launch_cli
from tests import fake_cloud


_launch = launch_cli.run_launch


def _one_error_line(result) -> str:
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  return errors[0]


# ------------------------------------------------------------------ environment

def test_requires_python_is_what_the_workers_get():
  with open(os.path.join(h.REPO, "pyproject.toml"), "rb") as f:
    requires = tomllib.load(f)["project"]["requires-python"]
  assert requires == ">=" + ".".join(map(str, remote_env.MIN_PYTHON)) == ">=3.11"


def _commands(stdout: str) -> list[list[str]]:
  """The shell commands of a dry run (quoted arguments may span lines)."""
  commands, pending = [], ""
  for line in stdout.splitlines():
    if not pending and line.startswith("#"):
      continue
    pending += line + "\n"
    try:
      commands.append(shlex.split(pending))
      pending = ""
    except ValueError:  # An open quote: the command goes on.
      continue
  assert not pending
  return commands


def _script(command):
  (script,) = [c[len("--command="):] for c in command if c.startswith("--command=")]
  check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
  assert check.returncode == 0, check.stderr
  return script


@pytest.mark.parametrize("sweep", ["table6", "async"])
def test_create_spot_dry_run_is_the_plan_offline(sweep):
  root = "gs://bucket/runs/" + sweep
  result = _launch(f"--sweep={sweep}", f"--root={root}", "--tpu=mn-a,mn-b",
                   "--zone=us-west4-a", "--project=proj", "--create",
                   "--accelerator=v5litepod-8", "--spot", "--dirty=ship", "--dry_run",
                   "--", "--config.data.data_dir=gs://bucket/tfds", offline=True)
  commands = _commands(result.stdout)
  where = ["--zone=us-west4-a", "--project=proj"]
  creates = [c for c in commands if c[3:5] == ["queued-resources", "create"]]
  assert creates == [
      ["gcloud", "compute", "tpus", "queued-resources", "create", name,
       f"--node-id={name}", *where, "--accelerator-type=v5litepod-8",
       "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--async"]
      for name in ("mn-a", "mn-b")]
  deletes = [c for c in commands if c[3:5] == ["queued-resources", "delete"]]
  assert deletes == [["gcloud", "compute", "tpus", "queued-resources", "delete", name,
                      *where, "--force", "--quiet"] for name in ("mn-a", "mn-b")]
  ssh = [c for c in commands if c[3:5] == ["tpu-vm", "ssh"]]
  setup, check, points = ssh[:2], ssh[2:4], ssh[4:]
  for command in setup:
    script = _script(command)
    assert "for c in python3.13 python3.12 python3.11 python3;" in script
    assert "sys.version_info < (3, 11)" in script and "uv python install 3.11" in script
    assert '"$PY" -m venv "$VENV"' in script
    assert f"'jax[tpu]=={jax.__version__}' -f {remote_env.LIBTPU_INDEX}" in script
  for command in check:
    script = _script(command)
    assert "jax.distributed.initialize()" in script and "' tpu 8 \"$W\"" in script
  sweep_points = sweeps.get_sweep(sweep).points
  assert len(points) == len(sweep_points)
  for i, (command, point) in enumerate(zip(points, sweep_points)):
    assert command[5:9] == [("mn-a", "mn-b")[i % 2], *where, "--worker=all"]
    script = _script(command)
    assert '"$HOME/mobilenet-jax-venv-py311-' in script and "/bin/python\" -m mobilenet_jax.main --config=configs/" in script
    assert f"--workdir={root}/{point.name} --distributed" in script
    assert " ".join(point.args()) in script and "setsid nohup bash -c" in script
    assert f"{root}/{point.name}/train.$(hostname).log" in script
  # Nothing depends on this machine: no local path, no local interpreter.
  for local in (sys.executable, h.REPO, os.path.expanduser("~")):
    assert local not in result.stdout
  assert "python3 -m mobilenet_jax" not in result.stdout


@pytest.mark.parametrize("settings, words", [
    ({"create": True, "tpu": "a", "zone": "z"}, "--create needs --accelerator"),
    ({"spot": True}, "--create and --spot need --tpu"),
    ({"tpu": "a", "zone": "z", "create": True, "accelerator": "v9-8"}, "v5litepod-8"),
    ({"tpu": "a", "zone": "z", "root": "/tmp/local"}, "gs:// --root")])
def test_tpu_flags_are_checked_together(settings, words):
  if "accelerator" not in flags.FLAGS:  # Tools define their flags when they run.
    launch.define_flags()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(**{"sweep": "table9", "root": "gs://b/r", **settings}):
    with pytest.raises(app.UsageError, match=re.escape(words)):
      launch._tpu_settings()  # pylint: disable=protected-access


def test_a_tpu_flag_error_is_one_line():
  result = _launch("--sweep=table9", "--root=gs://b/r", "--tpu=a", "--zone=z",
                   "--spot", "--dry_run", status=2)
  assert "--spot applies to slices this launch requests" in _one_error_line(result)


def _git(repo, *args):
  subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
  """A git repository with one commit (a.py, .gitignore ignoring *.log)."""
  path = tmp_path / "repo"
  path.mkdir()
  (path / "a.py").write_text("A = 1\n")
  (path / ".gitignore").write_text("*.log\n")
  _git(path, "init", "-q")
  _git(path, "add", "-A")
  _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
  return path


def _members(path):
  with tarfile.open(path) as tar:
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_dirty_tree_is_refused_in_one_line(repo, tmp_path):
  (repo / "a.py").write_text("A = 2\n")
  version = code_archive.inspect(repo)
  assert version.dirty and version.changed == ("a.py",)
  out = tmp_path / "out"
  out.mkdir()
  with pytest.raises(code_archive.DirtyTreeError) as error:
    code_archive.build(version, str(out), "refuse", repo=repo)
  message = str(error.value)
  assert "\n" not in message and "uncommitted changes (a.py)" in message
  assert "--dirty=ship" in message and version.content_hash[:12] in message
  assert not os.listdir(out)  # Nothing built, nothing replaced by HEAD.


def test_a_dirty_tree_is_shipped_as_it_is_under_a_content_hash(repo, tmp_path):
  clean = code_archive.inspect(repo)
  assert not clean.dirty and clean.name == clean.commit
  assert clean.to_json()["shipped"] == "HEAD"
  head = code_archive.build(clean, str(tmp_path), "refuse", repo=repo)
  assert _members(head)["a.py"] == b"A = 1\n"

  (repo / "a.py").write_text("A = 2\n")
  (repo / "b.py").write_text("B = 1\n")  # Untracked, not ignored: shipped.
  (repo / "debug.log").write_text("x")  # Ignored: not shipped.
  dirty = code_archive.inspect(repo)
  assert dirty.name == f"{clean.commit}-dirty-{dirty.content_hash[:12]}"
  assert dirty.to_json()["shipped"] == "working tree"
  assert dirty.to_json()["uncommitted"] == ["a.py", "b.py"]
  shipped = code_archive.build(dirty, str(tmp_path), "ship", repo=repo)
  assert os.path.basename(shipped) == f"mobilenet-jax-{dirty.name}.tar.gz"
  assert _members(shipped) == {"a.py": b"A = 2\n", "b.py": b"B = 1\n",
                               ".gitignore": b"*.log\n"}
  assert code_archive.read_file(dirty, "a.py", repo=repo) == b"A = 2\n"
  (repo / "b.py").write_text("B = 2\n")  # Other content, other name.
  assert code_archive.inspect(repo).name != dirty.name


# ------------------------------------------------------------------ a failing worker

def test_a_failing_worker_is_named_with_its_step(tmp_path):
  python310 = fake_cloud.python310()
  if python310 is None:
    pytest.skip("no Python 3.10 on this machine to play the TPU VM's python3")
  # An existing two-worker VM; worker 1 has no Python >= 3.11 and cannot fetch one.
  cloud = fake_cloud.make(tmp_path, python310,
                          worker_overrides={"mn-a-w-1": {"no_python311": True}})
  cloud.add_vm("mn-a", workers=2)
  root = tmp_path / "runs"
  result = _launch("--sweep=table9", f"--root={root}", "--tpu=mn-a", "--zone=z",
                   "--shared_root", "--dirty=ship", "--poll_seconds=0.2",
                   f"--remote_jax=jax=={jax.__version__}", env=cloud.env, status=1)
  assert re.search(r"slice mn-a: environment step failed: mn-a-w-1: environment step "
                   r"'install uv \(python3 -m pip install --user uv\)' failed",
                   result.stdout), result.stdout[-3000:]
  assert "it takes no points" in result.stdout
  assert "1 of 1 points did not finish: v1_w0.5_r160" in result.stdout
  # Worker 0 never trained; the VM was not the launcher's to delete.
  assert not any("mobilenet_jax.main" in " ".join(c) for c in cloud.calls())
  assert not any("queued-resources" in c for c in cloud.calls())
  assert cloud.state()["vms"]["mn-a"]["state"] == "READY"
  # The system python3 was only asked its version, and for uv (the fetch path).
  assert all(l.endswith(("sys.exit(sys.version_info < (3, 11))",
                         "-m pip install --user --quiet uv"))
             for l in cloud.python3_calls()), cloud.python3_calls()


# ------------------------------------------------------------------ bookkeeping

def _write_results(job, **config_changes):
  """A finished run of `job` (its settings, changed by `config_changes`)."""
  config = json.loads(json.dumps(job.full_config))
  for key, value in config_changes.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  metrics = {"loss": 1.0, "top1": 0.5, "top5": 0.9, "num_examples": 100}
  results = run_results.Results(
      config=config, final={"raw": run_results.EvalMetrics(**metrics),
                            "ema": run_results.EvalMetrics(**metrics)},
      steps=1, params=1, mult_adds=1, trainable_params=1, wall_time_s=1.0,
      train_images_per_sec=1.0, device_count=1, process_count=1, platform="cpu")
  os.makedirs(job.workdir, exist_ok=True)
  run_results.write_results(job.workdir, results)


def test_a_root_belongs_to_one_sweep(tmp_path):
  root = str(tmp_path / "runs")
  # `true` trains nothing: the launch records its manifest, its points stay unfinished.
  _launch("--sweep=table9", f"--root={root}", "--python=true", status=1)
  before = manifest.read(root)
  assert before["sweep"] == "table9"
  result = _launch("--sweep=table6", f"--root={root}", "--python=true", status=2)
  assert "holds the sweep 'table9'" in _one_error_line(result)
  assert manifest.read(root) == before  # Not rewritten.


def test_a_point_relaunched_with_other_settings_is_refused(tmp_path):
  root = str(tmp_path / "runs")
  _launch("--sweep=table6", f"--root={root}", "--python=true", "--",
          "--config.lr.base=0.1", status=1)
  before = manifest.read(root)
  # Unfinished points: the manifest records their settings.
  result = _launch("--sweep=table6", f"--root={root}", "--python=true", "--",
                   "--config.lr.base=0.2", status=2)
  line = _one_error_line(result)
  assert "point v1_w1_r224" in line and "lr.base: 0.1 there vs 0.2 now" in line
  assert manifest.read(root) == before
  # A finished point's results record its settings (here without a manifest).
  other = str(tmp_path / "other")
  (job,) = launch.make_jobs("table9", other, extra_args=("--config.lr.base=0.1",))
  _write_results(job, **{"lr.base": 0.3})
  result = _launch("--sweep=table9", f"--root={other}", "--dry_run", "--",
                   "--config.lr.base=0.1", status=2)
  assert "results.json records other settings (lr.base: 0.3 there vs 0.1 now)" in \
      _one_error_line(result)


def test_a_truncated_results_json_is_not_a_finished_point(tmp_path):
  root = str(tmp_path / "runs")
  (job,) = launch.make_jobs("table9", root)
  _write_results(job)
  path = layout.results_path(job.workdir)
  path.write_text(path.read_text()[:100])  # What a kill during the write leaves.
  result = _launch("--sweep=table9", f"--root={root}", "--dry_run", "--python=python")
  lines = result.stdout.splitlines()
  assert lines[0].startswith("[1/1] v1_w0.5_r160 is not finished: ")
  assert "is not valid JSON" in lines[0] and "resumes from its last checkpoint" in lines[0]
  assert lines[1].startswith("python -m mobilenet_jax.main ") and len(lines) == 2
