r"""Prepares TFDS's own datasets from local files, offline: Fashion-MNIST from IDX files.

  apt-get install dataset-fashion-mnist   # /usr/share/datasets/fashion-mnist/*.gz
  python -m mobilenet_jax.data.prepare fashion_mnist [--source_dir=DIR] [--data_dir=DIR]

`tfds build fashion_mnist` would download (and needs apache_beam), and TFDS rejects
Debian's files: they are recompressed, so the .gz checksums TFDS knows do not match,
although the decompressed IDX data is the original. This reads the four IDX files
(.gz or plain), checks them (the SHA-256 of the decompressed content against the
digests recorded below, the image and label counts, the image shape, the label range)
before writing anything, then writes the dataset with TFDS's own builder (same name,
version, features and example keys), so `tfds.load("fashion_mnist", data_dir=...)` and
`--config.data.name=fashion_mnist` read it like a downloaded copy. Nothing is
downloaded; an already prepared copy is left as it is.

Installed with pip, the same program is `mobilenet-prepare`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
import time
from typing import Mapping

from absl import flags
from etils import epath
import numpy as np

from mobilenet_jax import errors
from mobilenet_jax.data import idx
from mobilenet_jax.data.errors import DatasetNotFoundError


@dataclasses.dataclass(frozen=True)
class IdxDataset:
  """A TFDS dataset published as IDX files: what to read and what it must hold."""
  name: str  # TFDS's name.
  apt_package: str  # The Debian package that installs the files.
  source_dir: str  # Where that package puts them.
  files: Mapping[str, tuple[str, str]]  # split -> (images file, labels file), no .gz.
  num_examples: Mapping[str, int]  # split -> images.
  image_shape: tuple[int, int]
  num_classes: int
  sha256: Mapping[str, str]  # file -> SHA-256 of its decompressed content.


# Digests computed on 2026-12-06 from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1. Each .gz is exactly 24 bytes shorter than the one in
# TFDS's url_checksums/fashion_mnist.txt: the original gzip header's file-name field,
# which Debian's recompression leaves out.
FASHION_MNIST = IdxDataset(
    name="fashion_mnist", apt_package="dataset-fashion-mnist",
    source_dir="/usr/share/datasets/fashion-mnist/",
    files={"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    num_examples={"train": 60_000, "test": 10_000}, image_shape=(28, 28),
    num_classes=10,
    sha256={
        "train-images-idx3-ubyte":
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte":
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte":
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte":
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    })

DATASETS = {FASHION_MNIST.name: FASHION_MNIST}


def find_file(source_dir: str, stem: str) -> str | None:
  """`stem` or `stem.gz` in `source_dir` (the plain file first), or None."""
  for name in (stem, stem + ".gz"):
    path = os.path.join(source_dir, name)
    if os.path.isfile(path):
      return path
  return None


def read_verified(spec: IdxDataset, source_dir: str
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (uint8 images [N, H, W], labels [N])}, every check passed.

  Raises:
    DatasetNotFoundError: a file is missing (the message names the apt package) or
      is not the dataset's (digest, count, shape or label range).
  """
  stems = [stem for pair in spec.files.values() for stem in pair]
  paths = {stem: find_file(source_dir, stem) for stem in stems}
  missing = [stem for stem, path in paths.items() if path is None]
  if missing:
    raise DatasetNotFoundError(
        f"{spec.name}: {', '.join(m + '[.gz]' for m in missing)} not found in "
        f"{source_dir}. Install them with: apt-get install -y {spec.apt_package} (they "
        f"go to {spec.source_dir}), or pass --source_dir=DIR holding the "
        f"{len(stems)} IDX files.")
  arrays = {}
  for split, (images_stem, labels_stem) in spec.files.items():
    images = _checked(spec, idx.read_idx(paths[images_stem]), images_stem)
    labels = _checked(spec, idx.read_idx(paths[labels_stem]), labels_stem)
    _check_contents(spec, split, images, labels)
    arrays[split] = (images.values, labels.values)
  return arrays


def _checked(spec: IdxDataset, array: idx.IdxArray, stem: str) -> idx.IdxArray:
  if array.sha256 != spec.sha256[stem]:
    raise DatasetNotFoundError(
        f"{array.path}: the SHA-256 of its decompressed content is {array.sha256}, not "
        f"{spec.name}'s {spec.sha256[stem]}: it is not the original file. Reinstall "
        f"it (apt-get install --reinstall {spec.apt_package}) or point --source_dir "
        "at the original files.")
  return array


def _check_contents(spec, split: str, images: idx.IdxArray, labels: idx.IdxArray):
  """Counts, shapes and label range; a digest match makes these hold, but a digest
  override (tests) or a new dataset entry should not skip them."""
  count = spec.num_examples[split]
  problems = []
  if images.values.shape != (count, *spec.image_shape):
    problems.append(f"{images.path} holds images {images.values.shape}, expected "
                    f"{(count, *spec.image_shape)}")
  if labels.values.shape != (count,):
    problems.append(f"{labels.path} holds labels {labels.values.shape}, expected "
                    f"({count},)")
  elif labels.values.size and labels.values.max() >= spec.num_classes:
    problems.append(f"{labels.path} has label {labels.values.max()}, outside 0.."
                    f"{spec.num_classes - 1}")
  if problems:
    raise DatasetNotFoundError(f"{spec.name} {split} split: {'; '.join(problems)}.")


def _builder(spec: IdxDataset, data_dir: str | None, arrays=None):
  """TFDS's builder of `spec.name`, made to read `arrays` instead of downloading."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = tfds.builder_cls(spec.name)
  if arrays is None:
    return base(data_dir=data_dir)

  class FromLocalFiles(base, skip_registration=True):
    """The registered builder, fed the verified arrays; same name, so same files."""
    name = spec.name
    # TFDS would find the base's checksums through the `importlib_resources`
    # backport, not among our dependencies; nothing is downloaded, so none are needed.
    code_path = epath.Path(__file__)

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return {split: _examples(*pair) for split, pair in arrays.items()}

  # dataset_info.json records the builder's module: the same as a TFDS-built copy's.
  FromLocalFiles.__module__ = base.__module__
  return FromLocalFiles(data_dir=data_dir)


def _examples(images: np.ndarray, labels: np.ndarray):
  # TFDS's MNIST builders key each example by its index in the file: the same keys
  # give the same (hash-ordered) records as a downloaded copy.
  for index, (image, label) in enumerate(zip(images, labels)):
    yield index, {"image": image[..., None], "label": int(label)}


def prepare(spec: IdxDataset, source_dir: str | None = None,
            data_dir: str | None = None) -> tuple[str, bool]:
  """Prepares `spec` in `data_dir` (TFDS's default if None) from `source_dir`.

  Returns (the dataset's directory, whether it was written now: False when it was
  already prepared, in which case the sources are not even read).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  existing = _builder(spec, data_dir)
  if existing.is_prepared():
    return str(existing.data_dir), False
  arrays = read_verified(spec, source_dir or spec.source_dir)
  builder = _builder(spec, data_dir, arrays)
  try:
    with tempfile.TemporaryDirectory() as downloads, \
        contextlib.redirect_stdout(io.StringIO()):  # TFDS's "Downloading ..." line.
      builder.download_and_prepare(
          download_dir=downloads,
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False,
              compute_stats=tfds.download.ComputeStatsMode.SKIP))
  except OSError as e:  # A read-only or full data directory.
    raise errors.DataError(
        f"cannot write {spec.name} to {os.path.dirname(builder.data_dir)} "
        f"({type(e).__name__}: {e}); pass --data_dir=a writable folder with ~40 MB "
        "free.") from None
  return str(builder.data_dir), True


def main(argv):
  """absl entry point: argv[1] names the dataset."""
  if len(argv) != 2 or argv[1] not in DATASETS:
    raise errors.UserError(f"name one dataset to prepare: "
                           f"python -m mobilenet_jax.data.prepare "
                           f"{{{','.join(DATASETS)}}} [--source_dir=DIR] [--data_dir=DIR]"
                           f" (got {' '.join(argv[1:]) or 'none'}).")
  from mobilenet_jax import console  # pylint: disable=g-import-not-at-top
  console.configure()
  spec = DATASETS[argv[1]]
  start = time.time()
  source_dir, data_dir = flags.FLAGS.source_dir, flags.FLAGS.data_dir
  where, written = prepare(spec, source_dir, data_dir)
  data_dir_flag = f" --config.data.data_dir={data_dir}" if data_dir else ""
  counts = " / ".join(f"{n:,} {s}" for s, n in spec.num_examples.items())
  print((f"Prepared {spec.name} ({counts} images, SHA-256 of every file checked) in "
         f"{where} in {time.time() - start:.0f} s." if written else
         f"{spec.name} is already prepared in {where}; nothing to do.")
        + f" Train on it with --config.data.name={spec.name}{data_dir_flag}.")


def define_flags() -> None:
  """The flags of `mobilenet-prepare` (the dataset is the one argument)."""
  flags.DEFINE_string(
      "source_dir", None, "The folder holding the IDX files (default: where the Debian "
      "package puts them).")
  flags.DEFINE_string(
      "data_dir", None, "TFDS data directory (default: TFDS's, $TFDS_DATA_DIR or "
      "~/tensorflow_datasets).")


def console_main():
  """The `mobilenet-prepare` console script (and `python -m mobilenet_jax.data.prepare`)."""
  from mobilenet_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
