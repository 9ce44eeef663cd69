"""The train step's asynchronous emulation, accumulation and EMA against references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mobilenet_jax.errors import ConfigError
from mobilenet_jax.train import async_emulation, validation
from mobilenet_jax.train.state import create_train_state
from mobilenet_jax.train.step import make_train_step
from tests import ckpt_helpers as h

LR = 0.1


class Linear(nn.Module):
  """A model without BatchNorm: its batch gradient is the mean of per-example ones."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(4, kernel_init=nn.initializers.normal(0.5))(x.reshape(x.shape[0], -1))


def _config(**kwargs):
  config = ml_collections.ConfigDict(dict(
      staleness=0, num_workers=1, worker_delays="spread", grad_accum_steps=1,
      global_batch_size=16, label_smoothing=0.0, ema_decay=0.0))
  config.update(kwargs)
  return config


def _batches(n, batch=16, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": jnp.asarray(rng.normal(size=(batch, 2, 2, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 4, batch), jnp.int32)} for _ in range(n)]


def _train(config, batches, model=Linear(), optimizer=optax.sgd(LR)):
  variables = model.init(jax.random.key(0), batches[0]["image"])
  state = create_train_state(variables, optimizer, config.staleness, jax.random.key(1))
  step = jax.jit(make_train_step(model, optimizer, config, optax.constant_schedule(LR)))
  for batch in batches:
    state, metrics = step(state, batch)
  return state, metrics


def _loss(params, images, labels):
  logits = Linear().apply({"params": params}, images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def test_staleness_zero_is_bit_identical_to_synchronous():
  batches = _batches(4)
  sync, _ = _train(_config(), batches)
  for workers in (1, 4):
    state, _ = _train(_config(num_workers=workers, worker_delays="sampled"), batches)
    for a, b in zip(jax.tree.leaves(sync.params), jax.tree.leaves(state.params)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("staleness,workers", [(1, 1), (2, 4), (3, 2)])
def test_delayed_updates_match_reference(staleness, workers):
  batches = _batches(6)
  state, _ = _train(_config(staleness=staleness, num_workers=workers), batches)
  delays = np.round(np.linspace(0, staleness, workers)).astype(int) if workers > 1 else [staleness]

  # Reference: keep every parameter version; worker w reads version max(t - d_w, 0)
  # and takes examples w, w + W, w + 2W, ... of the batch.
  history = [Linear().init(jax.random.key(0), batches[0]["image"])["params"]]
  for t, batch in enumerate(batches):
    grads = []
    for w, d in enumerate(delays):
      params = history[max(t - d, 0)]
      grads.append(jax.grad(_loss)(params, batch["image"][w::workers],
                                   batch["label"][w::workers]))
    mean_grad = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
    history.append(jax.tree.map(lambda p, g: p - LR * g, history[-1], mean_grad))
  for a, b in zip(jax.tree.leaves(history[-1]), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # A delayed run really differs from the synchronous one.
  sync, _ = _train(_config(), batches)
  assert not np.allclose(jax.tree.leaves(sync.params)[0], jax.tree.leaves(state.params)[0])


def test_sampled_delays_stay_in_range_and_vary():
  delays = [async_emulation.worker_delays("sampled", 8, 3, jax.random.key(i)) for i in range(20)]
  values = np.stack(delays)
  assert values.min() == 0 and values.max() == 3
  assert len({tuple(v) for v in values}) > 1
  np.testing.assert_array_equal(
      async_emulation.worker_delays("spread", 4, 3, jax.random.key(0)), [0, 1, 2, 3])


def test_gradient_accumulation_equals_one_big_batch():
  """k micro-batches of B/k give the update of one batch of B (no BatchNorm)."""
  big = _batches(3, batch=32)
  one, _ = _train(_config(global_batch_size=32), big, optimizer=optax.adam(0.05))
  accumulated, _ = _train(_config(global_batch_size=32, grad_accum_steps=4), big,
                          optimizer=optax.adam(0.05))
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(accumulated.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ema_follows_tf_num_updates_rule():
  batches = _batches(3)
  state, _ = _train(_config(ema_decay=0.5), batches)
  # With decay min(0.5, (1+t)/(10+t)): t=0 -> 0.1, t=1 -> 2/11, t=2 -> 0.25.
  params = [Linear().init(jax.random.key(0), batches[0]["image"])["params"]]
  for batch in batches:
    grad = jax.grad(_loss)(params[-1], batch["image"], batch["label"])
    params.append(jax.tree.map(lambda p, g: p - LR * g, params[-1], grad))
  ema = params[0]
  for t, decay in enumerate([0.1, 2 / 11, 0.25]):
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params[t + 1])
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(state.ema_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(staleness=-1), "staleness"), (dict(num_workers=0), "num_workers"),
    (dict(worker_delays="random"), "worker_delays"),
    (dict(grad_accum_steps=3), "grad_accum_steps"),
    (dict(staleness=1, num_workers=3), "num_workers=3"),
])
def test_bad_async_settings(kwargs, match):
  # Ranges and divisibility are checked once, by the static validation.
  with pytest.raises(ConfigError, match=match):
    validation.validate(h.config(**kwargs))
