"""`shapes10`: a built-in, procedurally generated image classification dataset.

Ten classes of filled shapes drawn with random colour, position, scale, rotation and
aspect, over a gentle gradient background with faint line/dot clutter and pixel noise.
It needs no download: `download_and_prepare()` renders it with numpy and PIL (seeded,
so every generation is identical) and writes it as an ordinary TFDS dataset. Bumping
`VERSION` is the only thing that makes TFDS regenerate the files.

Configs: `shapes10` (= `shapes10/default`: 1,000 train and 200 test images per class)
and `shapes10/tiny` (20 and 7 per class, for tests).

To build it with the TFDS CLI:
  tfds build shapes10 --imports=mobilenet_jax.data.builtin_shapes --data_dir=DIR
"""

from __future__ import annotations

import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from mobilenet_jax.data import shapes_render
from mobilenet_jax.data.shapes_render import CLASS_NAMES

_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass
class Shapes10Config(tfds.core.BuilderConfig):
  """Size of a shapes10 variant."""
  train_per_class: int = 1000
  test_per_class: int = 200
  image_size: int = 64
  seed: int = 0


class Shapes10(tfds.core.GeneratorBasedBuilder):
  """Ten classes of randomly drawn shapes, generated locally."""

  VERSION = tfds.core.Version("1.2.0")
  # TFDS would locate this file through the `importlib_resources` backport, which is
  # not among our dependencies; say where the code is instead.
  code_path = epath.Path(__file__)
  RELEASE_NOTES = {
      "1.0.0": "First version.",
      "1.1.0": "Larger, more central shapes: they survive training crops.",
      "1.2.0": ("Clearer images: low-contrast background gradient, strong shape "
                "contrast, fewer and fainter clutter lines and dots, less noise."),
  }
  BUILDER_CONFIGS = [
      Shapes10Config(name="default", description="1,000 train / 200 test per class."),
      Shapes10Config(name="tiny", description="20 train / 7 test per class (tests).",
                     train_per_class=20, test_per_class=7),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.train_per_class),
        "test": self._generate_examples("test", config.test_per_class),
    }

  def _generate_examples(self, split: str, per_class: int):
    # One process on purpose: a "spawn" pool re-imports the caller's __main__, which
    # breaks unguarded scripts, and forking a process running TF threads can deadlock.
    config = self.builder_config
    for label in range(len(CLASS_NAMES)):
      for i in range(per_class):
        # One seed per image: the result does not depend on generation order.
        seed = (config.seed, _SPLIT_IDS[split], label, i)
        png = shapes_render.render_png((label, config.image_size, seed))
        yield f"{label}_{i}", {"image": png, "label": label}
