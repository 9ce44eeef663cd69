"""Where `--config=configs/NAME.py` is found: the working directory, else the install.

In a clone, `configs/` sits next to `mobilenet_jax/` and relative paths just work.
After `pip install`, the config files are installed as the top-level package
`configs`; the command-line tools then read `--config=configs/NAME.py[:args]` from
there when no such file exists relative to the working directory. Any other path is
taken as given.
"""

from __future__ import annotations

import importlib.util
import os

_PREFIX = "configs/"


def installed_configs_dir() -> str | None:
  """The directory of the importable `configs` package, or None."""
  spec = importlib.util.find_spec("configs")
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def resolve_config_path(value: str) -> str:
  """`value` ("path.py[:args]") with the path mapped to the installed configs when
  it starts with configs/ and is not a file here."""
  path, sep, args = value.partition(":")
  if os.path.exists(path) or not path.startswith(_PREFIX):
    return value
  folder = installed_configs_dir()
  if folder is None:
    return value
  candidate = os.path.join(folder, path[len(_PREFIX):])
  return candidate + sep + args if os.path.exists(candidate) else value


def resolve_argv(argv: list[str], flag: str = "config") -> list[str]:
  """`argv` with `--FLAG=VALUE` (or `--FLAG VALUE`) resolved by resolve_config_path."""
  out, prefix = list(argv), f"--{flag}="
  for i, arg in enumerate(out):
    if arg.startswith(prefix):
      out[i] = prefix + resolve_config_path(arg[len(prefix):])
    elif arg == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve_config_path(out[i + 1])
  return out
