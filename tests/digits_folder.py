"""scikit-learn's bundled handwritten digits as a real image folder (no download).

1,797 greyscale 8x8 images (16 grey levels), written as PNG files under
ROOT/{train,val}/<digit>/, 80/20 per a fixed shuffle: a small, tightly framed, real
dataset that no other test uses.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def write_digits(root: str, classes=tuple(range(10)), val_fraction: float = 0.2,
                 seed: int = 0) -> dict[str, int]:
  """Writes the digits of `classes` as PNGs; returns {split: number of images}."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  keep = np.isin(digits.target, classes)
  images = digits.images[keep]
  labels = digits.target[keep]
  order = np.random.default_rng(seed).permutation(len(labels))
  num_val = int(round(len(order) * val_fraction))
  counts = {}
  for split, indices in (("val", order[:num_val]), ("train", order[num_val:])):
    for i in indices:
      folder = os.path.join(root, split, str(labels[i]))
      os.makedirs(folder, exist_ok=True)
      # 16 grey levels (0..16) to 0..255.
      pixels = np.round(images[i] * 255.0 / 16.0).astype(np.uint8)
      Image.fromarray(pixels, mode="L").save(os.path.join(folder, f"{i:04d}.png"))
    counts[split] = len(indices)
  return counts
