"""mobilenet-jax: MobileNet V1 and V2 in JAX/Flax, trained the way the papers did."""

__version__ = "0.1.0"


def load(workdir: str, step: int | None = None, ema: bool = False, **kwargs):
  """(model, variables, config) of a trained run; see `mobilenet_jax.restore.load`."""
  # Imported on call so that `import mobilenet_jax` does not pull in JAX and Orbax.
  from mobilenet_jax import restore  # pylint: disable=g-import-not-at-top
  return restore.load(workdir, step=step, ema=ema, **kwargs)


def preprocess(images, size: int, crop_fraction: float = 0.875):
  """The evaluation transform: images -> float32 [N, size, size, 3] in [-1, 1].

  Resizes so that the central crop covers `crop_fraction` of the shorter side, crops
  the centre and scales pixels to [-1, 1], exactly as evaluation does (use the run's
  `config.data.image_size` and `config.data.eval_crop_fraction`). `images`: a uint8
  [H, W, 3] image, a batch [N, H, W, 3], or a list of images of any sizes.
  """
  from mobilenet_jax.data import preprocessing  # pylint: disable=g-import-not-at-top
  return preprocessing.eval_images(images, size, crop_fraction)
