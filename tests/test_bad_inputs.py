"""Every bad input to a command-line tool ends in one line on stderr, status 2.

Each case runs the real program as a subprocess against a copy of a finished tiny
run, and checks: exit status 2, exactly one `error:` line naming the problem, no
traceback (nor the background-thread noise of Orbax or asyncio at exit), and not a
byte of the run's checkpoints changed. Cases marked `only_line` fail while parsing
the command line or validating the config, before TensorFlow or any compilation:
their stderr is that one line and nothing else.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import shutil
import subprocess
import sys

from PIL import Image
import pytest

from tests import training_runs

_NOISE = ("Traceback", "Event loop is closed", "cannot schedule new futures",
          "Exception ignored", "FATAL")


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  args: tuple[str, ...]  # {workdir}, {corrupt}, {data}, {empty} are filled in.
  expected: tuple[str, ...]  # Fragments of the error line.
  tool: str = "main"
  only_line: bool = True  # stderr is the error line alone.
  tiny: bool = True  # Append the trained run's own overrides (main only).


_V1 = "--config=configs/mobilenet_v1.py:runlocal"
CASES = [
    # The command line and the config files.
    Case("unknown_override_key", (_V1, "--config.model.widht=0.5"),
         ("--config.model.widht=0.5", "no key 'widht'", 'did you mean "width"')),
    Case("unknown_section", (_V1, "--config.modle.width=0.5"),
         ("--config.modle.width=0.5", "no key 'modle'")),
    Case("override_not_a_number", (_V1, "--config.model.width=abc"),
         ("--config.model.width=abc", "could not convert")),
    Case("config_arg_not_a_number", ("--config=configs/mobilenet_v1.py:width=abc",),
         ("width='abc' must be a number",), tiny=False),
    Case("unknown_config_arg", ("--config=configs/mobilenet_v1.py:widht=0.5",),
         ("Unknown config argument 'widht'", "known arguments: activation"), tiny=False),
    Case("missing_config_file", ("--config=configs/no_such_config.py",),
         ("configs/no_such_config.py", "No such file"), tiny=False),
    Case("default_rejects_dataset", ("--config=configs/default.py:dataset=mnist",),
         ("dataset cannot be used", "shapes10"), tiny=False),
    Case("runlocal_rejects_num_classes",
         ("--config=configs/mobilenet_v1.py:runlocal,num_classes=5",),
         ("num_classes cannot be used", "runlocal"), tiny=False),
    Case("unknown_flag", (_V1, "--workdri=/tmp/x"), ("Unknown command line flag 'workdri'",)),
    Case("stray_argument", (_V1, "extra"), ("Unexpected arguments", "extra")),
    # Whole-config validation, in the first seconds.
    Case("negative_image_size", (_V1, "--config.data.image_size=-32"),
         ("data.image_size=-32", "an integer >= 32")),
    Case("unknown_on_corrupt_mode", (_V1, "--config.data.on_corrupt_image=ignore"),
         ("data.on_corrupt_image='ignore'", "'error', 'skip'")),
    Case("two_bad_values", (_V1, "--config.optimizer.name=adam",
                            "--config.lr.schedule=linear"),
         ("optimizer.name='adam'", "'rmsprop_tf', 'sgd', 'adamw'", "lr.schedule='linear'",
          "'exponential', 'cosine', 'constant'")),
    Case("unknown_depth", (_V1, "--config.model.depth=medium"),
         ("model.depth='medium'", "'full', 'shallow'")),
    Case("zero_batch", (_V1, "--config.global_batch_size=0"),
         ("global_batch_size=0", "an integer >= 1")),
    Case("eval_crop_above_one", (_V1, "--config.data.eval_crop_fraction=1.5"),
         ("data.eval_crop_fraction=1.5", "a number > 0 and <= 1")),
    Case("workers_do_not_split_batch", (_V1, "--config.staleness=2",
                                        "--config.num_workers=5"),
         ("num_workers=5",)),
    Case("no_checkpoints_kept", (_V1, "--config.keep_checkpoints=0"),
         ("keep_checkpoints=0", "an integer >= 1")),
    Case("init_from_missing_workdir", (_V1, "--config.init_from.workdir=/no/such/run"),
         ("--config.init_from.workdir=/no/such/run does not exist",)),
    Case("classes_mode", (_V1, "--config.data.classes_without_train_images=ignore"),
         ("data.classes_without_train_images='ignore'", "'warn', 'error'")),
    # Data and checkpoints (these import TensorFlow or restore a checkpoint).
    Case("empty_train_folder", (_V1, "--config.data.name=image_folder",
                                "--config.data.data_dir={empty}"),
         ("no split 'train'", "holds no image files", "available splits: val"),
         only_line=False),
    Case("resume_with_other_model", (_V1, "--config.model.width=0.5"),
         ("different config", "model.width: 0.25 (checkpoint) vs 0.5 (now)"),
         only_line=False),
    Case("workdir_is_a_file", (_V1, "--workdir={file}"),
         ("is a file, not a directory", "choose another --workdir")),
    Case("workdir_empty", (_V1, "--workdir="), ("--workdir is empty",)),
    # /sys refuses new directories even to root (as a read-only mount would).
    Case("workdir_not_writable", (_V1, "--workdir=/sys/mobilenet_jax_run"),
         ("--workdir=/sys/mobilenet_jax_run", "cannot write the run directory")),
    Case("every_checkpoint_corrupt", (_V1, "--workdir={corrupt}"),
         ("No usable checkpoint", "could not be restored"), only_line=False),
    Case("evaluate_unknown_split", ("--workdir={workdir}", "--split=tset"),
         ("no split 'tset'", "available splits: train, test"), tool="evaluate",
         only_line=False),
    Case("evaluate_missing_step", ("--workdir={workdir}", "--step=999"),
         ("No checkpoint for step 999", "available steps"), tool="evaluate",
         only_line=False),
    Case("evaluate_missing_workdir", ("--workdir=/no/such/run",),
         ("No checkpoint in /no/such/run",), tool="evaluate", only_line=False),
    Case("evaluate_zero_batch", ("--workdir={workdir}", "--batch_size=0"),
         ("--batch_size=0",), tool="evaluate", only_line=False),
    Case("export_out_is_a_directory",
         ("--workdir={workdir}", "--format=tflite", "--out={data}"),
         ("is a directory", "model.tflite"), tool="export", only_line=False),
    Case("predict_given_a_directory", ("--workdir={workdir}", "{data}"),
         ("is a directory, not an image file",), tool="predict"),
    Case("predict_missing_image", ("--workdir={workdir}", "{data}/missing.png"),
         ("missing.png",), tool="predict"),
]


def _digest(workdir: str) -> dict[str, str]:
  files = sorted(glob.glob(f"{workdir}/checkpoints/**/*", recursive=True))
  return {os.path.relpath(f, workdir): hashlib.sha1(open(f, "rb").read()).hexdigest()
          for f in files if os.path.isfile(f)}


@pytest.fixture(scope="module")
def inputs(trained_tiny_run, tmp_path_factory):
  """Paths the cases refer to: a copy of the trained run, a copy with every
  checkpoint truncated, an image folder whose train/ is empty."""
  trained, overrides = trained_tiny_run
  root = tmp_path_factory.mktemp("bad_inputs")
  workdir, corrupt = str(root / "run"), str(root / "corrupt")
  shutil.copytree(trained, workdir)
  shutil.copytree(trained, corrupt)
  for step_dir in glob.glob(f"{corrupt}/checkpoints/*/state"):
    arrays = glob.glob(f"{step_dir}/**/d/*", recursive=True)
    biggest = max(arrays, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) // 2)
  empty = root / "folder"
  (empty / "train" / "a").mkdir(parents=True)
  (empty / "val" / "a").mkdir(parents=True)
  Image.new("RGB", (40, 40), (9, 9, 9)).save(empty / "val" / "a" / "x.png")
  a_file = root / "a_file"
  a_file.write_text("not a run directory")
  return {"workdir": workdir, "corrupt": corrupt, "data": str(root),
          "empty": str(empty), "file": str(a_file), "overrides": overrides}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_one_line(case, inputs):
  args = [a.format(**inputs) for a in case.args]
  if case.tool == "main":
    if case.tiny:  # After --config (absl needs it first), before the bad value.
      args = args[:1] + inputs["overrides"] + args[1:]
    if not any(a.startswith("--workdir=") for a in args):
      args.append(f"--workdir={inputs['workdir']}")
  touched = next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")),
                 inputs["workdir"])
  before = _digest(touched)
  proc = subprocess.run([sys.executable, "-m", f"mobilenet_jax.{case.tool}", *args],
                        cwd=training_runs.REPO, env=training_runs.env_with_devices(1),
                        capture_output=True, text=True, timeout=300)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(errors) == 1, proc.stderr[-3000:]
  for fragment in case.expected:
    assert fragment in errors[0], errors[0]
  for noise in _NOISE:
    assert noise not in proc.stderr, proc.stderr[-3000:]
  if case.only_line:
    assert proc.stderr.strip() == errors[0], proc.stderr[-3000:]
  assert _digest(touched) == before
