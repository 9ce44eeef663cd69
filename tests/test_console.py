"""The console: one progress line per interval, no third-party INFO noise by default,
rates that are right for short runs."""

import io
import logging
import os
import re
import subprocess
import time

import pytest

from mobilenet_jax import console
from mobilenet_jax.train.metrics_logging import Progress, ProgressLine
from tests import training_runs

SCALARS = {"loss": 1.25, "top1": 0.5, "learning_rate": 0.1}


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_line_plain_and_terminal():
  plain = io.StringIO()
  line = ProgressLine(100, stream=plain)
  line.update(50, SCALARS, {"images_per_sec": 640.0, "eta_s": 125.0})
  line.message("eval at step 50: top-1 0.5")
  text = plain.getvalue()
  assert text.splitlines() == [
      "step 50/100  loss 1.2500  top-1 0.5000  lr 0.1  640 img/s  ETA 2:05",
      "eval at step 50: top-1 0.5"]
  assert "\r" not in text and "\033" not in text  # No escape codes in log files.

  tty = _Tty()
  bar = ProgressLine(100, stream=tty)
  bar.update(50, SCALARS, {"images_per_sec": 640.0, "eta_s": 125.0})
  bar.update(100, SCALARS, {"images_per_sec": 640.0, "eta_s": 0.0})
  assert tty.getvalue().startswith("\r[##########..........] step 50/100")
  assert tty.getvalue().endswith("\n")  # The finished bar ends its line.


def test_rates_of_a_run_shorter_than_one_log_interval():
  progress = Progress(start_step=0, total_steps=3, batch_size=10)
  progress.start_timing(1)  # After the first (compiling) step.
  time.sleep(0.05)
  rates = progress.report(3)
  assert 0 < rates["images_per_sec"] < 2 * 10 / 0.05
  assert progress.images_per_sec == pytest.approx(rates["images_per_sec"])


def test_filter_drops_other_libraries_info_only():
  keep = console._OwnInfoOnly().filter  # pylint: disable=protected-access
  record = lambda level, path: logging.LogRecord("absl", level, path, 1, "m", (), None)
  own = os.path.join(os.path.dirname(console.__file__), "train", "trainer.py")
  assert keep(record(logging.INFO, own))
  assert not keep(record(logging.INFO, "/site-packages/orbax/checkpoint_manager.py"))
  assert keep(record(logging.WARNING, "/site-packages/orbax/checkpoint_manager.py"))


def test_default_console_is_short_and_quiet(shapes_tiny_dir, tmp_path):
  overrides = training_runs.tiny_overrides(
      shapes_tiny_dir, num_train_steps=4, log_every_steps=2, checkpoint_every_steps=2)
  proc = subprocess.run(
      training_runs.main_command(str(tmp_path), overrides), cwd=training_runs.REPO,
      env=training_runs.env_with_devices(1), capture_output=True, text=True,
      timeout=400)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
  # Orbax (and clu, TFDS, TF) INFO lines: absl's "I<date> ... file.py:N]" format.
  foreign = [l for l in err if re.match(r"I\d{4} ", l) and "mobilenet_jax" not in l
             and not re.search(r" (trainer|batchnorm|main|sources)\.py:\d+\]", l)]
  assert not [l for l in err if "orbax" in l.lower() or "checkpoint_manager" in l]
  assert not foreign, foreign
  assert [l.split()[1] for l in out if l.startswith("step ")] == ["2/4", "4/4"]
  assert not [l for l in err + out if "train/loss=" in l]  # No metric twice.
  assert out[-1].startswith("Final test top-1 ")
  assert len(out) + len(err) < 20, "\n".join(err + out)


def test_stderr_shown_only_on_failure(capfd):
  """C-level writes to fd 2 (as TFLite's converter makes) are held back; a failure
  shows them, with the exception."""

  def chatty(fail):
    os.write(2, b"converter chatter\n")
    if fail:
      raise RuntimeError("conversion failed")
    return 7

  assert console.stderr_only_on_failure(lambda: chatty(False)) == 7
  assert "converter chatter" not in capfd.readouterr().err
  with pytest.raises(RuntimeError, match="conversion failed"):
    console.stderr_only_on_failure(lambda: chatty(True))
  assert "converter chatter" in capfd.readouterr().err


def test_captured_stderr_replays_all_but_dropped_lines(capfd):
  with console.stderr_captured() as captured:
    os.write(2, b"keep me\nRuntimeError: Event loop is closed\nand me\n")
  assert capfd.readouterr().err == ""
  captured.replay(drop=lambda line: "Event loop" in line)
  assert capfd.readouterr().err == "keep me\nand me\n"
