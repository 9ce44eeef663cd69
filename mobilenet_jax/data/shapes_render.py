"""Drawing of the shapes10 images with numpy and PIL only (no TensorFlow).

Kept apart from the TFDS builder so that generation worker processes import nothing
heavy. Every image is a pure function of its class and a numpy Generator.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent",
               "heart", "arrow", "hourglass")
_SUPERSAMPLE = 2  # The shape mask is drawn at 2x, then box-filtered: smooth edges.


def _polygon(name: str) -> list[np.ndarray]:
  """Vertices of each filled polygon of a shape, in units of its radius."""
  if name == "square":
    a = 0.75
    return [np.array([(-a, -a), (a, -a), (a, a), (-a, a)])]
  if name == "triangle":
    t = np.deg2rad([90, 210, 330])
    return [np.stack([np.cos(t), -np.sin(t)], 1)]
  if name == "star":
    t = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return [np.stack([r * np.cos(t), -r * np.sin(t)], 1)]
  if name == "cross":
    a, b = 0.28, 0.95
    return [np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b),
                      (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])]
  if name == "heart":
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [np.stack([x, -y - 2.5], 1) / 17.0]
  if name == "arrow":
    return [np.array([(-0.95, -0.22), (0.15, -0.22), (0.15, -0.6), (0.95, 0.0),
                      (0.15, 0.6), (0.15, 0.22), (-0.95, 0.22)])]
  raise ValueError(name)


def _draw_mask(name: str, size: int, rng: np.random.Generator) -> Image.Image:
  """Renders one shape as an 'L' mask of side `size` (already supersampled)."""
  mask = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(mask)
  # Large and near the centre, so that training crops (down to a quarter of the
  # area) still show most of the shape.
  radius = rng.uniform(0.28, 0.42) * size
  # Mild anisotropic scaling keeps a class from being one rigid template.
  stretch = np.array([rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)])
  margin = radius * 0.9
  cx, cy = np.clip(rng.uniform(0.3, 0.7, size=2) * size, margin, size - margin)
  angle = rng.uniform(0, 2 * np.pi)
  rot = np.array([[math.cos(angle), -math.sin(angle)],
                  [math.sin(angle), math.cos(angle)]])

  def place(points):
    return [tuple(p) for p in (points * stretch) @ rot.T * radius + (cx, cy)]

  def ellipse_points(r, offset=(0.0, 0.0)):
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    return np.stack([r * np.cos(t) + offset[0], r * np.sin(t) + offset[1]], 1)

  if name == "circle":
    draw.polygon(place(ellipse_points(0.85)), fill=255)
  elif name == "ring":
    draw.polygon(place(ellipse_points(0.9)), fill=255)
    draw.polygon(place(ellipse_points(rng.uniform(0.45, 0.6))), fill=0)
  elif name == "crescent":
    draw.polygon(place(ellipse_points(0.9)), fill=255)
    draw.polygon(place(ellipse_points(0.8, offset=(rng.uniform(0.4, 0.55), 0.0))),
                 fill=0)
  elif name == "hourglass":
    a = 0.7
    draw.polygon(place(np.array([(-a, -0.95), (a, -0.95), (0.0, 0.0)])), fill=255)
    draw.polygon(place(np.array([(-a, 0.95), (a, 0.95), (0.0, 0.0)])), fill=255)
  else:
    for poly in _polygon(name):
      draw.polygon(place(poly), fill=255)
  return mask


def _luminance(rgb: np.ndarray) -> np.ndarray:
  return float(rgb @ np.array([0.299, 0.587, 0.114], np.float32))


def render(label: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
  """Draws one image of class `label` as uint8 [image_size, image_size, 3]."""
  size = image_size
  # Background: a gentle linear gradient from a random colour, at a random angle.
  # Kept low-contrast (at most +-40 per channel) so that the shape stands out.
  c0 = rng.uniform(0, 255, size=3).astype(np.float32)
  c1 = np.clip(c0 + rng.uniform(-40, 40, size=3), 0, 255).astype(np.float32)
  theta = rng.uniform(0, 2 * np.pi)
  coords = np.linspace(-1, 1, size, dtype=np.float32)
  t = (np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None] + 1.5) / 3.0
  background = c0 + t[..., None] * (c1 - c0)

  # Clutter: a few faint thin lines and small dots, too small, thin or faint to pass
  # for a shape; drawn under the shape.
  clutter = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(clutter)
  for _ in range(rng.integers(0, 4)):
    x0, y0, x1, y1 = rng.uniform(0, size, size=4)
    draw.line([(x0, y0), (x1, y1)], fill=int(rng.integers(80, 256)), width=1)
  for _ in range(rng.integers(0, 4)):
    x, y = rng.uniform(0, size, size=2)
    r = rng.uniform(0.5, 0.03 * size)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(80, 256)))
  clutter_colour = rng.uniform(0, 255, size=3).astype(np.float32)
  alpha = np.asarray(clutter, np.float32)[..., None] * (rng.uniform(0.2, 0.5) / 255)
  background += alpha * (clutter_colour - background)

  # Foreground colour with strong contrast to both ends of the background gradient.
  lums = (_luminance(c0), _luminance(c1))
  for _ in range(50):
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    if min(abs(_luminance(colour) - lum) for lum in lums) > 90:
      break
  # The mask alone is drawn supersampled, then box-filtered: anti-aliased edges.
  mask = _draw_mask(CLASS_NAMES[label], size * _SUPERSAMPLE, rng).resize(
      (size, size), Image.BOX)
  mask = np.asarray(mask, np.float32)[..., None] / 255.0
  image = background + mask * (colour - background)
  image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, 6)
  return np.clip(image, 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 image (fast, lossless)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


def render_png(args: tuple[int, int, tuple[int, ...]]) -> bytes:
  """PNG of `render(label, image_size, default_rng(seed))`; args = (label, size, seed)."""
  label, image_size, seed = args
  return encode_png(render(label, image_size, np.random.default_rng(seed)))
