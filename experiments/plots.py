"""The comparison's figures (matplotlib, no display): accuracy vs cost like the V1
paper's Figures 4 and 5, top-1 vs staleness and vs batch size, training curves.

Point labels are placed by `place_labels`, which tries positions around each point
(farther out, with a leader line, when the near ones are taken) and never lets two
labels overlap: a label with no free position is left out and counted in the caption.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

from etils import epath


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # No display on a TPU VM or in CI.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


_DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]


def place_labels(ax, points: Sequence[tuple[float, float, str]], *, fontsize=6,
                 color="black", obstacles: Sequence[tuple[float, float]] = ()
                 ) -> tuple[list, int]:
  """Annotates (x, y, text) points without overlaps (with each other, with the points'
  markers and with the `obstacles` markers); returns the placed texts' boxes (display
  coordinates) and how many labels found no free place and were left out."""
  fig = ax.figure
  fig.canvas.draw()  # Fixes the transforms so that text extents are final.
  renderer = fig.canvas.get_renderer()
  # Markers count as taken space too, so a label never covers another point.
  taken = [_marker_box(ax, x, y) for x, y, _ in points]
  taken += [_marker_box(ax, x, y) for x, y in obstacles]
  placed, left_out = [], 0
  for x, y, text in points:
    for radius, (dx, dy) in itertools.product((4, 12, 24, 40), _DIRECTIONS):
      offset = (dx * radius, dy * radius - (3 if dy == 0 else 0))
      ha = "left" if dx > 0 else "right" if dx < 0 else "center"
      va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
      arrow = dict(arrowstyle="-", lw=0.4, color=color) if radius > 4 else None
      label = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points",
                          fontsize=fontsize, color=color, ha=ha, va=va, arrowprops=arrow)
      box = label.get_window_extent(renderer).expanded(1.05, 1.1)
      if _inside(box, ax.get_window_extent(renderer)) and not any(
          box.overlaps(other) for other in taken + placed if other is not None):
        placed.append(box)
        break
      label.remove()
    else:
      left_out += 1
  return placed, left_out


_WIDTH_COLORS = {1.4: "tab:purple", 1.3: "tab:pink", 1.0: "tab:blue", 0.75: "tab:orange",
                 0.5: "tab:green", 0.35: "tab:olive", 0.25: "tab:brown"}


def _width_color(label: str) -> str:
  """One colour per width multiplier ("V1 width 0.75"), gray for other models."""
  try:
    return _WIDTH_COLORS.get(float(label.rsplit("width ", 1)[1]), "tab:gray")
  except (IndexError, ValueError):
    return "tab:gray" if "Shallow" in label else "black"


def _marker_box(ax, x, y):
  from matplotlib.transforms import Bbox  # pylint: disable=g-import-not-at-top
  px, py = ax.transData.transform((x, y))
  if not (math.isfinite(px) and math.isfinite(py)):
    return None
  return Bbox.from_extents(px - 3, py - 3, px + 3, py + 3)


def _inside(box, frame) -> bool:
  return (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
          and box.y1 <= frame.y1)


def _save(fig, path: epath.Path, caption: str = "", left_out: int = 0) -> None:
  if left_out:
    caption = (caption + " " if caption else "") + (
        f"({left_out} point label(s) left out: no free space; see the table.)")
  if caption:
    fig.text(0.01, 0.005, caption, fontsize=6, va="bottom")
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)
  _pyplot().close(fig)


def accuracy_vs_cost(path: epath.Path, *, x: str, paper_lines: dict,
                     released_lines: dict, ours: list[tuple[float, float, str, bool]],
                     note: str = "") -> None:
  """Top-1 against Mult-Adds (x="mult_adds_m") or params (x="params_m"), log x.

  `paper_lines` / `released_lines`: {label: [(x, top1), ...]} drawn as one line per
  width; `ours`: (x, top1, label, comparable) points.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5.5))
  for label, pts in released_lines.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], ":" if "V2" in label else "--",
            marker=".", lw=0.9, color=_width_color(label), alpha=0.7,
            label=f"released {label}")
  for label, pts in paper_lines.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker="o", ms=4, lw=1.4,
            color=_width_color(label), label=f"paper {label}")
  for comparable, style in ((True, dict(marker="s", color="tab:red", label="ours")),
                            (False, dict(marker="x", color="tab:gray",
                                         label="ours, not ImageNet (not comparable)"))):
    group = [p for p in ours if p[3] == comparable]
    if group:
      ax.scatter([p[0] for p in group], [p[1] for p in group], zorder=3, **style)
  ax.set_xscale("log")
  ax.set_xlabel("Mult-Adds (millions)" if x == "mult_adds_m" else "Parameters (millions)")
  ax.set_ylabel("Top-1 accuracy (%)")
  ax.set_title("Accuracy vs Mult-Adds (V1 paper, Figure 4)" if x == "mult_adds_m"
               else "Accuracy vs parameters (V1 paper, Figure 5)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.subplots_adjust(left=0.08, right=0.74, top=0.93, bottom=0.12)
  reference = [p for pts in (*paper_lines.values(), *released_lines.values())
               for p in pts]
  _, left_out = place_labels(ax, [(p[0], p[1], p[2]) for p in ours], color="tab:red",
                             obstacles=reference)
  _save(fig, path, "Lines join one width's resolutions; released = TF-slim "
        "checkpoints (experiments/slim_checkpoints.csv). " + note, left_out)


def lines_plot(path: epath.Path, lines: dict[str, list[tuple[float, float]]], *,
               xlabel: str, ylabel: str, title: str, log2_x: bool = False,
               caption: str = "", point_labels: dict | None = None) -> None:
  """One line per entry of `lines` ({legend label: [(x, y), ...]})."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 5))
  for label, pts in lines.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label)
  if log2_x:
    ax.set_xscale("log", base=2)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.subplots_adjust(left=0.1, right=0.7, top=0.92, bottom=0.13)
  left_out = 0
  if point_labels:
    _, left_out = place_labels(ax, [(x, y, t) for (x, y), t in point_labels.items()])
  _save(fig, path, caption, left_out)


def training_curves(path: epath.Path, curves: dict[str, list[dict]], caption="") -> None:
  """Train loss and top-1 against step, one line per run ({run: metrics rows})."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
  for name, rows in curves.items():
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["loss"] for r in rows], lw=0.9, label=name)
    axes[1].plot(steps, [100 * r["top1"] for r in rows], lw=0.9, label=name)
  for ax, ylabel in zip(axes, ("train loss", "train top-1 (%)")):
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
  axes[0].set_title("Training loss")
  axes[1].set_title("Training top-1 (batch accuracy)")
  ncol = 1 if len(curves) <= 14 else 2
  axes[1].legend(fontsize=5.5, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=ncol)
  right = 0.8 if len(curves) <= 6 else 0.68 if ncol == 1 else 0.55
  fig.subplots_adjust(left=0.06, right=right, wspace=0.25, top=0.92, bottom=0.13)
  _save(fig, path, caption)
