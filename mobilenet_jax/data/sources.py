"""Where examples come from: a prepared TFDS dataset or a folder of image files.

Both give the pipeline the same thing: split sizes, class names, and a tf.data dataset
of undecoded records {"encoded": bytes, "label": int64, "name": str} for any TFDS split
string ("train", "train[:99%]", a `tfds.split_for_jax_process` sub-split...), plus the
decode function that suits them. Nothing here downloads.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import functools
import importlib
import io
import os
import random
import re
import time

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as splits_lib

from mobilenet_jax.data import builtin_shapes
from mobilenet_jax.data import decode
from mobilenet_jax.data._tf import tf
from mobilenet_jax.data.errors import DatasetNotFoundError
from mobilenet_jax.data.errors import MissingClassError
from mobilenet_jax.data.errors import SplitNotFoundError

IMAGE_FOLDER = "image_folder"
# Compared in lower case. JPEG goes by several names (.jfif from browsers, .jpe).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".pjpeg", ".pjp", ".png", ".bmp",
                    ".gif", ".webp", ".tif", ".tiff")
# When a split named like the key is absent, the first present alternative is used,
# so a config's eval split works on datasets that name their held-out split otherwise
# (an image folder with train/ and val/ only). The split used is the one results.json
# and the final line report, so a "test" read from val/ is never reported as test.
_SPLIT_ALIASES = {"validation": ("val", "test"), "val": ("validation", "test"),
                  "test": ("validation", "val")}
_SPLIT_PART_RE = re.compile(r"^\s*([\w.-]+)(.*)$", re.S)


class Source(abc.ABC):
  """Split sizes, class names and undecoded records of one dataset."""

  name: str
  class_names: tuple[str, ...]
  split_dict: splits_lib.SplitDict

  def resolve_split(self, split: str) -> str:
    """Checks a split string, mapping absent "validation"/"val" to what exists."""
    available = list(self.split_dict.keys())
    parts = []
    for part in str(split).split("+"):
      match = _SPLIT_PART_RE.match(part)
      base, rest = (match.group(1), match.group(2)) if match else (part, "")
      if base not in available:
        alias = next((a for a in _SPLIT_ALIASES.get(base, ()) if a in available), None)
        if alias is None:
          raise SplitNotFoundError(
              f"Dataset {self.name!r} has no split {base!r} (in {split!r}"
              f"{self._absent_split_hint(base)}); available splits: "
              f"{', '.join(available) or 'none'}.")
        logging.info("Dataset %s has no split %r; using %r.", self.name, base, alias)
        base = alias
      parts.append(base + rest)
    return "+".join(parts)

  def _absent_split_hint(self, split: str) -> str:
    del split
    return ""

  def num_examples(self, split) -> int:
    """Number of examples of a (resolved) split string or sub-split."""
    total = 0
    for inst in splits_lib.AbstractSplit.from_spec(split).to_absolute(self.split_dict):
      start, end = self._bounds(inst)
      total += end - start
    return total

  def _bounds(self, inst) -> tuple[int, int]:
    n = self.split_dict[inst.splitname].num_examples
    start = 0 if inst.from_ is None else inst.from_
    end = n if inst.to is None else inst.to
    return start, end

  def classes_without_examples(self, split) -> list[str] | None:
    """Class names with no example in `split`, or None where that is costly to know."""
    del split
    return None

  @abc.abstractmethod
  def records(self, split) -> tf.data.Dataset:
    """Undecoded records of `split` in a fixed order: {"encoded", "label", "name"}."""

  @abc.abstractmethod
  def decode(self, record, on_corrupt: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(RGB uint8 image, error message or "") for one record; see decode.py."""

  def decode_and_crop(self, record, on_corrupt: str, window
                      ) -> tuple[tf.Tensor, tf.Tensor]:
    """(the crop `window(shape)` gives of the RGB uint8 image, error message or "");
    sources whose records hold JPEGs decode only that window."""
    image, error = self.decode(record, on_corrupt)
    begin, size = window(tf.shape(image))
    return tf.slice(image, begin, size), error


class TfdsSource(Source):
  """A prepared TFDS dataset (shapes10 is prepared here on first use)."""

  def __init__(self, name: str, data_dir: str | None):
    self.name = name
    self.builder = _tfds_builder(name, data_dir)
    info = self.builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = dict(info.features.items())
    if not isinstance(features.get(image_key), tfds.features.Image):
      raise ValueError(f"Dataset {name!r} has no image feature {image_key!r}: "
                       f"features are {list(features)}.")
    self._image_key, self._label_key = image_key, label_key
    self._file_key = "file_name" if "file_name" in features else None
    self.class_names = tuple(info.features[label_key].names)
    self.split_dict = info.splits

  def records(self, split) -> tf.data.Dataset:
    decoders = {self._image_key: tfds.decode.SkipDecoding()}
    if self._file_key:
      decoders[self._file_key] = tfds.decode.SkipDecoding()
    ds = self.builder.as_dataset(
        split=split, shuffle_files=False, decoders=decoders,
        read_config=tfds.ReadConfig(add_tfds_id=True, try_autocache=False))

    def to_record(ex):
      name = ex[self._file_key] if self._file_key else ex["tfds_id"]
      return {"encoded": ex[self._image_key], "label": tf.cast(ex[self._label_key],
                                                               tf.int64), "name": name}

    return ds.map(to_record, num_parallel_calls=tf.data.AUTOTUNE)

  def decode(self, record, on_corrupt):
    del on_corrupt  # TFDS validated the images when it prepared the dataset.
    return decode.decode_fast(record["encoded"], record["name"]), tf.constant("")

  def decode_and_crop(self, record, on_corrupt, window):
    del on_corrupt
    return (decode.decode_and_crop_fast(record["encoded"], record["name"], window),
            tf.constant(""))


class ImageFolderSource(Source):
  """`root/<split>/<class_name>/<image>` files; classes are sorted folder names."""

  def __init__(self, root: str | None):
    self.name = f"{IMAGE_FOLDER}:{root}"
    if not root or not tf.io.gfile.isdir(root):
      raise DatasetNotFoundError(
          f"Image folder dataset: data.data_dir={root!r} is not a directory. Set it to "
          "a folder holding train/ and val/ (or test/), each with one sub-folder of "
          "images per class.")
    self._root = root
    self._files = {}  # split -> list of (path, class name)
    for split in sorted(tf.io.gfile.listdir(root)):
      split = split.rstrip("/")
      split_dir = os.path.join(root, split)
      if not tf.io.gfile.isdir(split_dir):
        continue
      files = []
      for label in sorted(tf.io.gfile.listdir(split_dir)):
        label = label.rstrip("/")
        class_dir = os.path.join(split_dir, label)
        if tf.io.gfile.isdir(class_dir):
          files += [(path, label) for path in _image_files(class_dir)]
      if files:
        # A fixed shuffle (as TFDS ImageFolder does) so that slices such as
        # "train[:10%]" and per-process shares mix classes.
        random.Random(split).shuffle(files)
        self._files[split] = files
    if not self._files:
      raise DatasetNotFoundError(
          f"Image folder dataset: no images found under {root!r}; expected "
          "<root>/<split>/<class_name>/<image file>.")
    self.class_names = tuple(sorted({c for fs in self._files.values() for _, c in fs}))
    self.split_dict = splits_lib.SplitDict([
        splits_lib.SplitInfo(name=s, shard_lengths=[len(f)], num_bytes=0)
        for s, f in self._files.items()])

  def records(self, split) -> tf.data.Dataset:
    label_ids = {c: i for i, c in enumerate(self.class_names)}
    paths, labels = [], []
    for inst in splits_lib.AbstractSplit.from_spec(split).to_absolute(self.split_dict):
      start, end = self._bounds(inst)
      for path, label in self._files[inst.splitname][start:end]:
        paths.append(path)
        labels.append(label_ids[label])
    ds = tf.data.Dataset.from_tensor_slices(
        {"name": tf.constant(paths, tf.string), "label": tf.constant(labels, tf.int64)})

    def read(record):
      # Read in Python, not by tf.io.read_file: a file the OS cannot read is then
      # reported by name (per data.on_corrupt_image) instead of failing the pipeline.
      encoded, read_error = decode.read_file(record["name"])
      return {**record, "encoded": encoded, "read_error": read_error}

    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)

  def decode(self, record, on_corrupt):
    return decode.decode_checked(record["encoded"], record["name"], on_corrupt,
                                 record["read_error"])

  def decode_and_crop(self, record, on_corrupt, window):
    return decode.decode_and_crop_checked(record["encoded"], record["name"], on_corrupt,
                                          record["read_error"], window)

  def _absent_split_hint(self, split: str) -> str:
    folder = os.path.join(self._root, split)
    if tf.io.gfile.isdir(folder):
      return f": {folder} holds no image files in class sub-folders"
    return ""

  def classes_without_examples(self, split) -> list[str]:
    present = set()
    for inst in splits_lib.AbstractSplit.from_spec(split).to_absolute(self.split_dict):
      start, end = self._bounds(inst)
      present.update(label for _, label in self._files[inst.splitname][start:end])
    return [c for c in self.class_names if c not in present]


def _image_files(class_dir: str) -> list[str]:
  """The image files of one class folder, sorted; DatasetNotFoundError if the folder
  holds files but none with an image extension (they would vanish silently, and the
  class with them)."""
  names = sorted(n for n in tf.io.gfile.listdir(class_dir)
                 if not n.startswith(".") and not n.endswith("/"))
  images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
  if names and not images:
    others = [n for n in names if not tf.io.gfile.isdir(os.path.join(class_dir, n))]
    if others:
      shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more"
                                       if len(others) > 3 else "")
      raise DatasetNotFoundError(
          f"Image folder dataset: {class_dir} holds no file with an image extension "
          f"({shown}); accepted: {' '.join(IMAGE_EXTENSIONS)} (any case). Rename or "
          "convert the images, or move the folder out of the split.")
  return [os.path.join(class_dir, n) for n in images]


def check_train_classes(source: Source, data_config) -> None:
  """Warns about, or rejects, classes without an example in the train split.

  A class that has images only in val/ of an image folder is otherwise trained as
  a class the model never sees, with no sign of it.
  """
  missing = source.classes_without_examples(
      source.resolve_split(data_config.train_split))
  if not missing:
    return
  mode = data_config.get("classes_without_train_images", "warn")
  message = (f"Dataset {source.name!r}: {len(missing)} of {len(source.class_names)} "
             f"classes have no image in the train split {data_config.train_split!r}: "
             f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
  if mode == "error":
    raise MissingClassError(
        f"{message}. Add training images for them, or set "
        "data.classes_without_train_images=warn to train anyway.")
  logging.warning("%s; the model will never see them in training.", message)


def _default_data_dir() -> str:
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def _tfds_builder(name: str, data_dir: str | None):
  """The builder of a prepared dataset; shapes10 is generated here if absent."""
  where = data_dir or _default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotFoundError(
        f"Unknown dataset {name!r}: TFDS has no builder of that name and found no "
        f"prepared copy under {where!r}. ({str(e).splitlines()[0]})") from None
  if builder.is_prepared():
    return builder
  if isinstance(builder, builtin_shapes.Shapes10):
    _generate_once(builder, name)
    # A builder made while another process was generating the dataset read no
    # splits; one made now reads the finished files.
    return tfds.builder(name, data_dir=data_dir)
  message = [
      f"Dataset {name!r} is not prepared: TFDS looked in {builder.data_dir!r} "
      f"(data.data_dir={data_dir!r}). This pipeline never downloads."]
  if builder.name == "imagenet2012":
    message.append(
        f"ImageNet needs a manual download: put ILSVRC2012_img_train.tar and "
        f"ILSVRC2012_img_val.tar in {os.path.join(where, 'downloads', 'manual')}, "
        f"then run: tfds build imagenet2012 --data_dir={where}")
  elif builder.name in _prepare().DATASETS:
    spec = _prepare().DATASETS[builder.name]
    message.append(
        f"Prepare it from local files (apt-get install -y {spec.apt_package}) with: "
        f"python -m mobilenet_jax.data.prepare {name} --data_dir={where}")
  elif getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    message.append(
        f"It needs a manual download into {os.path.join(where, 'downloads', 'manual')}"
        f" ({' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}), then run: "
        f"tfds build {name} --data_dir={where}")
  else:
    message.append(f"Prepare it first with: tfds build {name} --data_dir={where}")
  raise DatasetNotFoundError(" ".join(message))


def _prepare():
  # Lazy: only an error message needs it.
  return importlib.import_module("mobilenet_jax.data.prepare")


@functools.lru_cache(maxsize=16)
def _get_source(name: str, data_dir: str | None) -> Source:
  if name == IMAGE_FOLDER:
    return ImageFolderSource(data_dir)
  return TfdsSource(name, data_dir)


def get_source(data_config) -> Source:
  """The (cached) source for `config.data`'s name and data_dir."""
  return _get_source(data_config.name, data_config.data_dir)


def _generate_once(builder, name: str) -> None:
  """Generates the built-in dataset under a file lock.

  Several processes may ask for it at once (the processes of a multi-host run, pytest
  workers); the lock makes one generate it and the others reuse its files.
  """
  folder = os.path.dirname(builder.data_dir)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, ".generate.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if builder.is_prepared():
        return
      logging.info("Generating the built-in dataset %s in %s.", name, builder.data_dir)
      start = time.time()
      # TFDS prints "Downloading and preparing dataset ..." to stdout: nothing is
      # downloaded, so our own two lines say what happens instead.
      with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
      logging.info("Generated %s in %.0f s; later runs reuse it.", name,
                   time.time() - start)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
