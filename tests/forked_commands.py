"""Runs command lines in forks of one Python process that has imported JAX once.

  python tests/forked_commands.py '[["/path/bin/mobilenet-costs", "--help"],
                                    ["-m", "mobilenet_jax.export", "--format=onnx"]]'

Each command is a script path or "-m MODULE", then its arguments; it runs as
`__main__` in a fork, so every tool starts with a fresh absl flag registry, as in a
process of its own. Prints a JSON list of {"returncode", "stdout", "stderr"}. Each
tool's start-up is seconds of imports (JAX, Flax, optax) on a 2-core CPU; importing
them once makes ten command lines cost little more than one. Run it by path, so that
only the caller's PYTHONPATH decides what is importable.
"""

import json
import os
import runpy
import sys
import tempfile

# The tools' heavy imports, shared by every fork (none of them defines an absl flag).
import flax.linen  # pylint: disable=unused-import
import jax  # pylint: disable=unused-import
import optax  # pylint: disable=unused-import


def _child(command: list[str], stdout: int, stderr: int) -> None:
  """Runs `command` as __main__ with fds 1 and 2 redirected; never returns."""
  os.dup2(stdout, 1)
  os.dup2(stderr, 2)
  code = 0
  try:
    if command[0] == "-m":
      sys.argv = [command[1], *command[2:]]
      runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    else:
      sys.argv = list(command)
      runpy.run_path(command[0], run_name="__main__")
  except SystemExit as exit_request:  # As Python itself: None is 0, a message is 1.
    code = exit_request.code
    if code is None:
      code = 0
    elif not isinstance(code, int):
      print(code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def run(command: list[str]) -> dict:
  """{"returncode", "stdout", "stderr"} of `command`, run in a fork."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
      _child(command, out.fileno(), err.fileno())
    _, status = os.waitpid(pid, 0)
    texts = []
    for f in (out, err):
      f.seek(0)
      texts.append(f.read().decode("utf-8", "replace"))
  return {"returncode": os.waitstatus_to_exitcode(status), "stdout": texts[0],
          "stderr": texts[1]}


if __name__ == "__main__":
  print(json.dumps([run(command) for command in json.loads(sys.argv[1])]))
