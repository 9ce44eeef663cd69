r"""An ImageNet-like benchmark input, made here: JPEGs of ImageNet's size and quality.

  python -m mobilenet_jax.data.imagenet_like --out=/tmp/imagenet_like

writes the same images twice, as an image folder and as a prepared TFDS dataset:

  OUT/folder/{train,val}/<class>/<index>.jpg   (data.name=image_folder, data_dir=OUT/folder)
  OUT/tfds/imagenet_like/...                   (data.name=imagenet_like, data_dir=OUT/tfds)

Each image is a random window of one of the two photographs that ship with
scikit-learn (`load_sample_images`: a temple in China and a flower, 640x427), flipped
and brightened at random and resized to a size ImageNet's training images typically
have (most of them are 500 pixels wide: 500x375, 500x333, 500x500 and portraits
375x500, 333x500), saved as baseline JPEG at quality 90 with 4:2:0 chroma, as
cameras and ImageNet's files mostly are. The content is two scenes only: it is an
input for measuring the decoding and cropping work, not for learning anything.
Generation is seeded: every run writes identical files.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

NAME = "imagenet_like"
QUALITY = 90
# (width, height) and weights: ImageNet's common shapes (an estimate of their shares).
_SHAPES = ((500, 375), (500, 333), (500, 500), (375, 500), (333, 500))
_SHAPE_WEIGHTS = (0.45, 0.25, 0.1, 0.12, 0.08)
_SPLIT_IDS = {"train": 0, "val": 1}


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  return tuple(load_sample_images().images)


def render_jpeg(split: str, index: int, seed: int = 0) -> bytes:
  """The JPEG bytes of example `index` of `split`: the same for the same arguments."""
  rng = np.random.default_rng((seed, _SPLIT_IDS[split], index))
  photo = _photos()[index % 2]
  width, height = _SHAPES[rng.choice(len(_SHAPES), p=_SHAPE_WEIGHTS)]
  # A window of the target's aspect ratio covering 35-100% of the photo's height.
  photo_h, photo_w = photo.shape[:2]
  window_h = int(photo_h * rng.uniform(0.35, 1.0))
  window_w = min(photo_w, int(round(window_h * width / height)))
  window_h = min(window_h, int(round(window_w * height / width)))
  top = rng.integers(0, photo_h - window_h + 1)
  left = rng.integers(0, photo_w - window_w + 1)
  image = Image.fromarray(photo[top:top + window_h, left:left + window_w])
  image = image.resize((width, height), Image.BICUBIC)
  if rng.random() < 0.5:
    image = image.transpose(Image.FLIP_LEFT_RIGHT)
  pixels = np.asarray(image, np.float32) * rng.uniform(0.8, 1.2)
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  out = io.BytesIO()
  image.save(out, "JPEG", quality=QUALITY, subsampling="4:2:0")
  return out.getvalue()


def label_of(index: int, num_classes: int) -> int:
  """The class of example `index`: classes take turns."""
  return index % num_classes


# Not registered with TFDS (running this file as a script would register it twice):
# readers find the prepared files by name in their data_dir, as for any dataset.
class ImagenetLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """ImageNet-sized JPEGs cut from scikit-learn's sample photographs (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  code_path = epath.Path(__file__)  # As in builtin_shapes.py: no importlib_resources.

  def __init__(self, *, num_train: int = 1024, num_val: int = 256,
               num_classes: int = 10, **kwargs):
    self._sizes = {"train": num_train, "val": num_val}
    self._num_classes = num_classes
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(
                names=[class_name(i) for i in range(self._num_classes)]),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, n) for split, n in self._sizes.items()}

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      yield index, {"image": render_jpeg(split, index),
                    "label": label_of(index, self._num_classes)}


def class_name(label: int) -> str:
  """The folder and label name of class `label`: c00, c01, ..."""
  return f"c{label:02d}"


def write_folder(root: str, num_train: int = 1024, num_val: int = 256,
                 num_classes: int = 10) -> None:
  """ROOT/{train,val}/<class>/<index>.jpg: the images the TFDS dataset holds."""
  for split, count in (("train", num_train), ("val", num_val)):
    for index in range(count):
      folder = os.path.join(root, split, class_name(label_of(index, num_classes)))
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, f"{index:06d}.jpg"), "wb") as f:
        f.write(render_jpeg(split, index))


def prepare(out: str, num_train: int = 1024, num_val: int = 256,
            num_classes: int = 10) -> dict[str, str]:
  """Writes both forms under `out` (skipping a form already there); their data_dirs."""
  dirs = {"image_folder": os.path.join(out, "folder"), NAME: os.path.join(out, "tfds")}
  if not os.path.isdir(os.path.join(dirs["image_folder"], "val")):
    write_folder(dirs["image_folder"], num_train, num_val, num_classes)
  builder = ImagenetLike(data_dir=dirs[NAME], num_train=num_train, num_val=num_val,
                         num_classes=num_classes)
  if not builder.is_prepared():
    tfds.disable_progress_bar()
    # TFDS prints "Downloading and preparing ..." though nothing is downloaded.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return dirs


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  dirs = prepare(values.out, values.num_train, values.num_val, values.num_classes)
  for name, data_dir in dirs.items():
    print(f"--config.data.name={name} --config.data.data_dir={data_dir}")


if __name__ == "__main__":
  # pylint: disable=g-import-not-at-top
  from absl import flags
  from mobilenet_jax import errors
  from mobilenet_jax.data import imagenet_like
  flags.DEFINE_string("out", None, "Where to write the folder and the TFDS dataset.")
  flags.DEFINE_integer("num_train", 1024, "Training images.")
  flags.DEFINE_integer("num_val", 256, "Validation images.")
  flags.DEFINE_integer("num_classes", 10, "Classes (examples take turns).")
  flags.mark_flags_as_required(["out"])
  errors.run(imagenet_like.main)
