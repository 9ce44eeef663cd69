"""BatchNorm running statistics that a run of any length can trust.

Evaluation normalizes with running averages `r <- m * r + (1 - m) * batch_stat`,
which start at mean 0 and variance 1 and trail the weights by about 1 / (1 - m)
steps. TF-slim V1's m = 0.9997 averages over ~3,300 steps: a short run (fine-tuning,
a small dataset) then evaluates with statistics that are mostly the initial ones
(94% of them after 220 steps) or those of much older weights. Measured on 220-step
runs of the default recipe on scikit-learn's digits (train-mode top-1 68%): eval
top-1 21% at m = 0.99 (11% of the initial statistics left), 74% at m = 0.9.

The rule, used when `config.model.bn_momentum` is None (the configs' default):

    m = clip(1 - 1 / (HORIZON_FRACTION * T), MIN_AUTO_MOMENTUM, reference decay)

so the averages span the last 2.5% of the run (the default shapes10 run's hand-tuned
0.99 over 3,750 steps is about that) but at least ~10 batches, and never more than
the reference implementation's horizon (TF-slim V1 0.9997, V2 0.997:
`models.REFERENCE_BN_MOMENTUM`), which paper-length ImageNet runs keep (V1 from
~133k steps, V2 from ~13k). A momentum set by hand is kept; if its horizon exceeds a
tenth of the run, `resolve_momentum` warns.
"""

from __future__ import annotations

import logging

import ml_collections

from mobilenet_jax import models

HORIZON_FRACTION = 0.025  # Average over the last 2.5% of the run ...
MIN_AUTO_MOMENTUM = 0.9  # ... but over at least ~10 batches.
WARN_FRACTION = 0.1  # A horizon over a tenth of the run trails the weights too far.


def auto_momentum(model_name: str, total_steps: int) -> float:
  """The momentum the rule above gives a run of `total_steps` updates."""
  reference = models.REFERENCE_BN_MOMENTUM.get(model_name, 0.99)
  momentum = 1.0 - 1.0 / max(1.0, HORIZON_FRACTION * total_steps)
  return float(min(reference, max(MIN_AUTO_MOMENTUM, momentum)))


def initial_share(momentum: float, updates: int) -> float:
  """The share of the initial value (mean 0, variance 1) left after `updates`."""
  return momentum ** max(0, updates)


def resolve_momentum(config: ml_collections.ConfigDict, total_steps: int
                     ) -> ml_collections.ConfigDict:
  """`config` (a copy when it changes) with `model.bn_momentum` set for the run.

  None becomes `auto_momentum`; a set value is kept, with a warning when the run is
  too short for its averages to forget their start. Frozen BatchNorm (a frozen
  backbone in inference mode) never updates them, so it is left alone.
  """
  momentum = config.model.get("bn_momentum")
  if momentum is None:
    config = config.copy_and_resolve_references()
    config.model.bn_momentum = auto_momentum(config.model.name, total_steps)
    logging.info("model.bn_momentum=%.5g for a run of %d steps (%.2g%% of the initial "
                 "BatchNorm statistics left at the end).", config.model.bn_momentum,
                 total_steps, 100 * initial_share(config.model.bn_momentum, total_steps))
    return config
  if bn_frozen(config):
    return config
  horizon = 1.0 / max(1e-12, 1.0 - momentum)
  if horizon > WARN_FRACTION * total_steps:
    logging.warning(
        "model.bn_momentum=%g averages BatchNorm statistics over ~%.0f steps, more than "
        "a tenth of this %d-step run (%.0f%% of their initial values remain at the "
        "end): evaluation may fall far below training accuracy. Leave "
        "model.bn_momentum unset (None: %.4g for this run) or lower it.",
        momentum, horizon, total_steps, 100 * initial_share(momentum, total_steps),
        auto_momentum(config.model.name, total_steps))
  return config


def bn_frozen(config) -> bool:
  """True when BatchNorm runs in inference mode during training: a frozen backbone
  with `init_from.freeze_bn` (Keras' `base_model(x, training=False)` recipe)."""
  init_from = config.init_from
  return bool(init_from.get("freeze_backbone", False)
              and init_from.get("freeze_bn", True))

