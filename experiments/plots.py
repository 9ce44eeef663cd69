"""The comparison's figures (matplotlib, no display): accuracy vs cost like the V1
paper's Figures 4 and 5, top-1 vs staleness and vs batch size, training curves.
Accuracies carry 95% confidence intervals as error bars, and the chance level is
drawn where it is in view (`y_limits` keeps noise near chance from filling the axis).

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
    # "tight": the saved image grows to hold every legend and caption whole.
    fig.savefig(f, format="png", dpi=120, bbox_inches="tight", pad_inches=0.1)
  _pyplot().close(fig)


def y_limits(lows: Sequence[float], highs: Sequence[float],
             chance: float | None = None, min_span: float = 5.0) -> tuple[float, float]:
  """The y range of accuracies (percent): at least `min_span` points tall, so that the
  noise of runs near chance is not stretched over the whole axis, and reaching down
  to `chance` when the lowest value is within 25 points of it."""
  lo, hi = min(lows), max(highs)
  if chance is not None and lo - chance <= 25:
    lo = min(lo, chance)
  if hi - lo < min_span:
    grow = (min_span - (hi - lo)) / 2
    lo, hi = lo - grow, hi + grow
  pad = 0.06 * (hi - lo)
  return max(0.0, lo - pad), min(100.0, hi + pad)


def draw_chance(ax, chance: float | None) -> str:
  """A dotted line at the chance level when it is in view; else a caption note."""
  if chance is None:
    return ""
  lo, hi = ax.get_ylim()
  if lo <= chance <= hi:
    ax.axhline(chance, ls=":", lw=1.0, color="black", alpha=0.7,
               label=f"chance ({chance:g}%)")
    return ""
  return f"Chance level {chance:g}% is below the axis."


def accuracy_vs_cost(path: epath.Path, *, x: str, paper_lines: dict,
                     released_lines: dict, ours: list[tuple], note: str = "",
                     chance: float | None = None, dataset: str = "") -> None:
  """Top-1 against Mult-Adds (x="mult_adds_m") or params (x="params_m"), log x.

  `paper_lines` / `released_lines`: {label: [(x, top1), ...]} drawn as one line per
  width; `ours`: (x, mean top-1, 95% CI half-width, label, comparable) points, drawn
  with error bars. Ours on another dataset (not comparable) get their own panel, with
  the chance level (percent) drawn.
  """
  plt = _pyplot()
  others = [p for p in ours if not p[4]]
  fig, axes = plt.subplots(1, 2 if others else 1, figsize=(13 if others else 8, 5.5),
                           squeeze=False)
  ax = axes[0][0]
  for label, pts in released_lines.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], ":" if "V2" in label else "--",
            marker=".", lw=0.9, color=_width_color(label), alpha=0.7,
            label=f"released {label}")
  for label, pts in paper_lines.items():
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker="o", ms=4, lw=1.4,
            color=_width_color(label), label=f"paper {label}")
  comparable = [p for p in ours if p[4]]
  _errorbars(ax, comparable, "s", "tab:red", "ours (95% CI)")
  title = ("Accuracy vs Mult-Adds (V1 paper, Figure 4)" if x == "mult_adds_m"
           else "Accuracy vs parameters (V1 paper, Figure 5)")
  _cost_axes(ax, x, title + (", ImageNet" if others else ""))
  ax.legend(fontsize=6, loc="lower right" if others else "center left",
            bbox_to_anchor=None if others else (1.01, 0.5))
  left_out = 0
  reference = [p for pts in (*paper_lines.values(), *released_lines.values())
               for p in pts]
  caption = "Lines join one width's resolutions; released = TF-slim checkpoints."
  if others:
    right = axes[0][1]
    _errorbars(right, others, "o", "tab:red", "ours (95% CI)")
    right.set_ylim(*y_limits([p[1] - p[2] for p in others],
                             [p[1] + p[2] for p in others], chance))
    caption += " " + draw_chance(right, chance)
    _cost_axes(right, x, f"Ours on {dataset or 'another dataset'}: not comparable "
               "with ImageNet")
    right.legend(fontsize=6, loc="lower right")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.93, bottom=0.13, wspace=0.18)
    _, left_out = place_labels(right, [(p[0], p[1], p[3]) for p in others],
                               color="tab:red")
  else:
    fig.subplots_adjust(left=0.08, right=0.74, top=0.93, bottom=0.12)
    _, left_out = place_labels(ax, [(p[0], p[1], p[3]) for p in comparable],
                               color="tab:red", obstacles=reference)
  _save(fig, path, f"{caption} {note}".strip(), left_out)


def _errorbars(ax, points, marker: str, color: str, label: str) -> None:
  if points:
    ax.errorbar([p[0] for p in points], [p[1] for p in points],
                yerr=[p[2] for p in points], fmt=marker, color=color, ms=4, capsize=3,
                lw=0.9, zorder=3, label=label)


def _cost_axes(ax, x: str, title: str) -> None:
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.set_xscale("log")
  lo, hi = ax.get_xlim()
  if hi / lo < 10:  # A narrow log axis: whole-number ticks, not 3.1 x 10^2.
    ax.set_xlim(lo / 1.4, hi * 1.4)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel("Mult-Adds (millions)" if x == "mult_adds_m" else "Parameters (millions)")
  ax.set_ylabel("Top-1 accuracy (%)")
  ax.set_title(title, fontsize=9)
  ax.grid(True, which="both", alpha=0.3)


def lines_plot(path: epath.Path, lines: dict[str, list[tuple]], *, xlabel: str,
               ylabel: str, title: str, log2_x: bool = False, caption: str = "",
               point_labels: dict | None = None, chance: float | None = None) -> None:
  """One line per entry of `lines` ({legend label: [(x, mean, 95% CI half-width)]}),
  with error bars and the chance level (percent) drawn."""
  plt = _pyplot()
  ncol = _legend_columns(len(lines) + 1, 24)
  legend_in = ncol * _legend_width_in(list(lines) + ["chance (10%)"], 7)
  width = 5.5 + legend_in
  fig, ax = plt.subplots(figsize=(width, 5))
  for label, pts in lines.items():
    pts = sorted(pts, key=lambda p: p[0])
    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                marker="o", ms=4, capsize=3, label=label)
  if log2_x:
    ax.set_xscale("log", base=2)
  values = [p for pts in lines.values() for p in pts]
  if values:
    ax.set_ylim(*y_limits([p[1] - p[2] for p in values], [p[1] + p[2] for p in values],
                          chance))
  chance_note = draw_chance(ax, chance)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=ncol)
  fig.subplots_adjust(left=0.75 / width, right=1 - legend_in / width, top=0.92,
                      bottom=0.13)
  left_out = 0
  if point_labels:
    _, left_out = place_labels(ax, [(x, y, t) for (x, y), t in point_labels.items()])
  _save(fig, path, " ".join(filter(None, (caption, chance_note))), left_out)


def _legend_columns(entries: int, rows: int) -> int:
  """Columns so that a legend of `entries` has at most `rows` rows."""
  return max(1, math.ceil(entries / rows))


def _legend_width_in(labels, fontsize: float) -> float:
  """Inches one legend column of `labels` needs (a character is ~0.55 em wide, plus
  the line sample and padding), so that the figure can make room for it."""
  longest = max((len(label) for label in labels), default=0)
  return (longest * 0.55 * fontsize + 3.5 * fontsize) / 72 + 0.3


def training_curves(path: epath.Path, curves: dict[str, list[list[dict]]],
                    caption: str = "") -> None:
  """Train loss and top-1 against images seen: one colour per point, one line per
  seed ({point: [metrics rows with "images" of each seed]})."""
  plt = _pyplot()
  ncol = _legend_columns(len(curves), 30)
  legend_in = ncol * _legend_width_in([f"{n} (99 seeds)" for n in curves], 5.5)
  width = 10 + legend_in
  fig, axes = plt.subplots(1, 2, figsize=(width, 4.8))
  colors = plt.get_cmap("tab20" if len(curves) > 10 else "tab10")
  for index, (name, seeds) in enumerate(curves.items()):
    color = colors(index % colors.N)
    for seed, rows in enumerate(seeds):
      images = [r["images"] for r in rows]
      label = name + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")
      style = dict(lw=0.8, color=color, alpha=0.8,
                   marker="o" if len(rows) < 5 else None, ms=3)  # Few rows: visible.
      axes[0].plot(images, [r["loss"] for r in rows], **style)
      axes[1].plot(images, [100 * r["top1"] for r in rows], **style,
                   label=label if seed == 0 else None)
  for ax, ylabel in zip(axes, ("train loss", "train top-1 (%)")):
    ax.set_xlabel("training images seen")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
  axes[0].set_title("Training loss")
  axes[1].set_title("Training top-1 (batch accuracy)")
  axes[1].legend(fontsize=5.5, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=ncol)
  fig.subplots_adjust(left=0.6 / width, right=1 - (legend_in + 0.1) / width,
                      wspace=0.25, top=0.92, bottom=0.13)
  _save(fig, path, caption)
