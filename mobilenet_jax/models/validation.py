"""Argument checks shared by the networks, each raising one readable ConfigError."""

from __future__ import annotations

from typing import Iterable

from mobilenet_jax.errors import ConfigError

# Five stride-2 stages take 32x32 down to 1x1; below that the network has no pixels.
MIN_RESOLUTION = 32


def check_choice(name: str, value, allowed: Iterable) -> None:
  """Raises unless `value` is one of `allowed`."""
  allowed = tuple(allowed)
  if value not in allowed:
    raise ConfigError(
        f"{name}={value!r} is not allowed; choose one of: "
        f"{', '.join(repr(a) for a in allowed)}.")


def check_width(width: float) -> None:
  """The width multiplier alpha must be a positive number."""
  if not isinstance(width, (int, float)) or not width > 0:
    raise ConfigError(f"model.width (alpha) must be > 0, got {width!r}; the paper "
                      "uses 1.0, 0.75, 0.5 and 0.25.")


def check_num_classes(num_classes: int) -> None:
  """At least one class."""
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ConfigError(f"model.num_classes must be a positive integer, got {num_classes!r}.")


def check_resolution(height: int, width: int) -> None:
  """Inputs must be at least MIN_RESOLUTION pixels on each side."""
  if min(height, width) < MIN_RESOLUTION:
    raise ConfigError(
        f"input resolution {height}x{width} is too small: MobileNets need at least "
        f"{MIN_RESOLUTION}x{MIN_RESOLUTION} (set data.image_size / res >= {MIN_RESOLUTION}).")


def resolve_backend_choice(field: str, name: str, allowed: Iterable[str], cpu_choice: str,
                           accelerator_choice: str, backend: str | None = None) -> str:
  """Maps "auto" to the formulation measured fastest on the backend; checks the name."""
  if name == "auto":
    import jax  # pylint: disable=g-import-not-at-top
    return cpu_choice if (backend or jax.default_backend()) == "cpu" else accelerator_choice
  check_choice(field, name, ("auto", *allowed))
  return name
