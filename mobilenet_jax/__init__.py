"""mobilenet-jax: MobileNet V1 and V2 in JAX/Flax, trained the way the papers did."""

__version__ = "0.1.0"


def load(workdir: str, step: int | None = None, ema: bool = False, **kwargs):
  """(model, variables, config) of a trained run; see `mobilenet_jax.restore.load`."""
  # Imported on call so that `import mobilenet_jax` does not pull in JAX and Orbax.
  from mobilenet_jax import restore  # pylint: disable=g-import-not-at-top
  return restore.load(workdir, step=step, ema=ema, **kwargs)
