"""Runs the launcher's command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import ckpt_helpers as h


def run_launch(*args, offline: bool = False, env=None, status: int = 0,
               timeout: float = 300) -> subprocess.CompletedProcess:
  """`python -m experiments.launch ARGS`; `offline`: every socket connection and DNS
  lookup fails. Asserts the exit `status`."""
  code = ("import runpy, socket, sys\n"
          "def refuse(*a, **k): raise OSError('network use in a dry run')\n"
          + ("socket.socket.connect = refuse; socket.getaddrinfo = refuse\n" if offline
             else "")
          + "sys.argv = ['launch'] + sys.argv[1:]\n"
          "runpy.run_module('experiments.launch', run_name='__main__')\n")
  result = subprocess.run([sys.executable, "-c", code, *args], cwd=h.REPO,
                          env=dict(env or os.environ, PYTHONPATH=h.REPO,
                                   JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == status, result.stdout[-3000:] + result.stderr[-3000:]
  return result
