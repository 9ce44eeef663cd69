"""The workers' Python environment: a virtual environment with a Python the pinned jax
supports, the code, and `jax[tpu]`, checked on every worker before any point runs.

Stock TPU VM images (Ubuntu 22.04) ship Python 3.10; jax 0.10 needs 3.11 or newer
(pyproject's requires-python). On every worker `setup_script` (one bash script, run
with `gcloud ... ssh --worker=all`):

  1. unpacks the shipped tarball into ~/mobilenet-jax-<version>;
  2. takes the first of python3.13, python3.12, python3.11, python3 that is >= 3.11;
     if none is, fetches CPython 3.11 with uv (`python3 -m pip install --user uv`
     unless uv is on PATH, then `uv python install 3.11`), which needs the network
     the VM has;
  3. creates ~/mobilenet-jax-venv-py311-<key> with it (`-m venv`, or `uv venv --seed`
     where the venv module is missing), keyed by requirements.txt and the jax
     requirement so that later code versions reuse it;
  4. pip-installs requirements.txt and `jax[tpu]==<the local jax version>` (with
     Google's libtpu index) into it, once;

and then, once every worker is installed, `check_script` lists the points still running
there (a relaunch reattaches to them) and, where none is,

  5. runs a check in the code directory with the venv's Python: the code imports, `jax.distributed.initialize()` (as the trainer's --distributed does)
     succeeds, the backend is TPU and `jax.device_count()` equals the slice's chips.

Each worker prints one line; a failing step ends the script with
"<worker>: environment step '<step>' failed" and the last lines of its log
(~/mobilenet-jax-logs/{setup,check}-<version>.log). The code runs from its directory: points
start `<venv>/bin/python -m mobilenet_jax.main` there. Nothing here runs anything:
these are strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex

import jax

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python (a test keeps them equal).
# Google's index of libtpu wheels, for `pip install jax[tpu]`.
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
LOGS = "$HOME/mobilenet-jax-logs"
READY = "mobilenet-jax ready:"  # What a worker prints when its environment checks out.
RUNNING = "mobilenet-jax running:"  # Then one line per point still running there.


def default_jax_requirement() -> str:
  """`jax[tpu]` at the version tested here."""
  return f"jax[tpu]=={jax.__version__}"


@dataclasses.dataclass(frozen=True)
class RemoteEnv:
  """Where the code and the venv live on a worker, and what the check expects."""
  code: str  # The code version's name (code_archive.CodeVersion.name).
  archive: str  # The tarball's file name, copied into $HOME.
  requirements: bytes  # The shipped requirements.txt.
  jax_requirement: str = dataclasses.field(default_factory=default_jax_requirement)
  devices: int | None = None  # The slice's chips, when known: jax.device_count().

  @property
  def code_dir(self) -> str:
    return f"$HOME/mobilenet-jax-{self.code}"

  @property
  def venv(self) -> str:
    key = hashlib.sha256(self.requirements + self.jax_requirement.encode()).hexdigest()
    return f"$HOME/mobilenet-jax-venv-py{''.join(map(str, MIN_PYTHON))}-{key[:10]}"

  @property
  def python(self) -> str:
    """The venv's interpreter: what trains."""
    return f"{self.venv}/bin/python"

  @property
  def platform(self) -> str | None:
    """The backend the check requires: TPU when jax[tpu] is installed."""
    return "tpu" if "[tpu]" in self.jax_requirement.replace(" ", "") else None

  def train_command(self, train_args: list[str]) -> str:
    """The shell command that trains with the venv's Python (`train_args` after it)."""
    return " ".join([f'"{self.python}"', *map(shlex.quote, train_args)])


# Runs in the code directory with the venv's Python: argv[1] platform ("" for any),
# argv[2] expected device count (0 for any), argv[3] the worker's name.
_CHECK = """
import sys
import jax
jax.distributed.initialize()
import mobilenet_jax.models
platform, want, worker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
backend, count = jax.default_backend(), jax.device_count()
if platform and backend != platform:
  sys.exit(f"jax sees {count} {backend} device(s), not {platform}: is libtpu "
           "installed, or does another process hold the chips?")
if want and count != want:
  sys.exit(f"jax sees {count} devices; the slice has {want} chips")
print(f"%s {worker}: Python {sys.version.split()[0]}, jax "
      f"{jax.__version__}, {count} {backend} devices ({jax.local_device_count()} on "
      f"this worker, process {jax.process_index()} of {jax.process_count()})")
""" % READY


def _python_lines() -> list[str]:
  """Sets PY to a Python >= MIN_PYTHON: one on PATH, else one fetched with uv."""
  version = ".".join(map(str, MIN_PYTHON))
  test = f"import sys; sys.exit(sys.version_info < {MIN_PYTHON})"
  newer = [f"python3.{m}" for m in range(13, MIN_PYTHON[1] - 1, -1)]
  return [
      'PY=""',
      f"for c in {' '.join(newer)} python3; do "
      f'if command -v "$c" >/dev/null 2>&1 && "$c" -c {shlex.quote(test)} '
      '>/dev/null 2>&1; then PY=$(command -v "$c"); break; fi; done',
      'get_uv() { UV=$(command -v uv || echo "$HOME/.local/bin/uv"); '
      '[ -x "$UV" ] || python3 -m pip install --user --quiet uv >> "$LOG" 2>&1 || '
      'fail "install uv (python3 -m pip install --user uv)"; }',
      'if [ -z "$PY" ]; then '
      f'step "no Python >= {version} on PATH: fetching CPython {version} with uv"; '
      f'get_uv; "$UV" python install {version} >> "$LOG" 2>&1 || '
      f'fail "fetch Python {version} (uv python install {version})"; '
      f'PY=$("$UV" python find {version} 2>> "$LOG") || '
      f'fail "find the fetched Python (uv python find {version})"; fi',
      'step "Python: $PY"',
  ]


def _log_lines(env: RemoteEnv, log: str) -> list[str]:
  return [
      "W=$(hostname)", f'L="{LOGS}"', 'mkdir -p "$L"', f'LOG="$L/{log}-{env.code}.log"',
      ': > "$LOG"', 'step() { echo "$W: $1" >> "$LOG"; }',
      "fail() { echo \"$W: environment step '$1' failed (log: $LOG); it ends:\" >&2; "
      'tail -n 8 "$LOG" | sed "s/^/$W:   /" >&2; exit 1; }',
      f'CODE="{env.code_dir}"', f'VENV="{env.venv}"']


def setup_script(env: RemoteEnv) -> str:
  """The bash script that installs one worker (run on all of them at once)."""
  jax_req = shlex.quote(env.jax_requirement)
  index = f" -f {LIBTPU_INDEX}" if env.platform == "tpu" else ""
  lines = [
      *_log_lines(env, "setup"),
      'step "unpack code into $CODE"',
      'if [ ! -f "$CODE/.unpacked" ]; then { mkdir -p "$CODE" && '
      f'tar -xzf "$HOME/{env.archive}" -C "$CODE" && touch "$CODE/.unpacked"; }} '
      f'>> "$LOG" 2>&1 || fail "unpack the code (~/{env.archive})"; fi',
      *_python_lines(),
      'if [ ! -x "$VENV/bin/python" ]; then step "create $VENV"; '
      '"$PY" -m venv "$VENV" >> "$LOG" 2>&1 || { rm -rf "$VENV"; get_uv; '
      '"$UV" venv --seed --python "$PY" "$VENV" >> "$LOG" 2>&1; } || '
      'fail "create the venv ($PY -m venv $VENV)"; fi',
      'if [ ! -f "$VENV/.installed" ]; then step "pip install"; '
      '"$VENV/bin/python" -m pip install --quiet -r "$CODE/requirements.txt" '
      f'{jax_req}{index} >> "$LOG" 2>&1 && touch "$VENV/.installed" || '
      f'fail "pip install -r requirements.txt {jax_req}"; fi',
      'echo "$W: installed"',
  ]
  return "\n".join(lines)


def check_script(env: RemoteEnv) -> str:
  """The bash script that lists the points still running on a worker and, where none
  is (it would hold the chips), checks it. Run once `setup_script` succeeded on every
  worker: jax.distributed.initialize() waits for all of them."""
  return "\n".join([
      *_log_lines(env, "check"), "R=",
      f'for f in "$L"/*.pid; do [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && '
      f'R=1 && echo "{RUNNING} $(basename "$f" .pid)"; done',
      f'if [ -n "$R" ]; then echo "{READY} $W: a point runs here, the check waits"; '
      "exit 0; fi",
      'step "check: jax.distributed.initialize(), devices"',
      f'cd "$CODE" && "$VENV/bin/python" -c {shlex.quote(_CHECK)} '
      f'{shlex.quote(env.platform or "")} {env.devices or 0} "$W" 2>> "$LOG" || '
      'fail "check the devices (jax.device_count() with the venv\'s Python)"',
  ])
