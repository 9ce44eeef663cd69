"""Where the shipped config files are, and loading them: from a clone or an install.

In a clone, `configs/` sits next to `mobilenet_jax/` and relative paths just work.
An installed copy carries the same files as `mobilenet_jax/configs` (pyproject.toml
maps the folder), so that no package named `configs` lands in site-packages, where
another project's could collide with it. The command-line tools read
`--config=configs/NAME.py[:args]` from there when no such file exists relative to
the working directory; any other path is taken as given.

Config files are loaded by path, as ml_collections loads `--config` (never imported
as `configs.NAME`): `get_config("mobilenet_v1.py:width=0.5")` for code that needs a
shipped config, `load_beside(__file__, NAME)` for a config file that builds on another.
"""

from __future__ import annotations

import importlib.util
import os
import types

_PREFIX = "configs/"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def configs_dir() -> str:
  """The folder of the shipped config files: the installed package's, else the clone's."""
  spec = importlib.util.find_spec("mobilenet_jax.configs")  # Installed (or editable).
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  return os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")


def resolve_config_path(value: str) -> str:
  """`value` ("path.py[:args]") with the path mapped to the shipped configs when
  it starts with configs/ and is not a file here."""
  path, sep, args = value.partition(":")
  if os.path.exists(path) or not path.startswith(_PREFIX):
    return value
  candidate = os.path.join(configs_dir(), path[len(_PREFIX):])
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


def load_module(path: str) -> types.ModuleType:
  """The config file at `path`, executed as a module of its own."""
  name = "mobilenet_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"No config file {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_beside(config_file: str, name: str) -> types.ModuleType:
  """The config file `name` in the folder of `config_file` (a config's `__file__`)."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def get_config(spec: str):
  """The ConfigDict of a shipped config, "file.py[:args]" (relative to configs/)."""
  file_name, _, arg = spec.partition(":")
  return load_module(os.path.join(configs_dir(), file_name)).get_config(arg)
