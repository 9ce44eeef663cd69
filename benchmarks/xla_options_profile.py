r"""Train-step and inference time of one config under several XLA:CPU option sets.

  python -m benchmarks.xla_options_profile --config=configs/mobilenet_v1.py:res=128 \
      --batch_size=32 --rounds=3 --sets=default,no_ynn,ynn_dot_reduce

Compiles the benchmark's train step (mobilenet_jax/benchmark.py) and the inference
function at --batch_size and at batch 1 once per option set, then times them round-robin
(every set once per round, `--rounds` rounds), so that a loaded machine slows every
set alike. Prints the median milliseconds per set: the measurements behind
`mobilenet_jax.runtime.compiler_options`. Run it under
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, as the commands do.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import flags
import jax
import jax.numpy as jnp

from mobilenet_jax import benchmark, cli, models

_YNN = "xla_cpu_experimental_ynn_fusion_type"
_TYPES = {"dot": "LIBRARY_FUSION_TYPE_DOT", "idot": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
          "reduce": "LIBRARY_FUSION_TYPE_REDUCE", "eltwise": "LIBRARY_FUSION_TYPE_ELTWISE",
          "conv": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}


def option_set(name: str) -> dict | None:
  """"default", "no_ynn", or "ynn_" + types joined by "_" (e.g. ynn_dot_reduce)."""
  if name == "default":
    return None
  if name == "no_ynn":
    return {_YNN: ""}
  return {_YNN: ",".join(_TYPES[t] for t in name.removeprefix("ynn_").split("_"))}


def _time(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def profile(config, batch: int, sets: list[str], rounds: int) -> dict:
  """{set: {"train_ms", "infer_ms", "latency_ms"}}, medians over the rounds."""
  res = config.data.image_size
  model = models.create(config.model)
  variables = models.init_variables(model, jax.random.key(0))
  tx = benchmark.optimizer()
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  images = jax.random.normal(jax.random.key(1), (batch, res, res, 3), jnp.float32)
  labels = jnp.zeros((batch,), jnp.int32)
  key = jax.random.key(3)
  step = benchmark.make_train_step(model, tx)
  infer = jax.jit(lambda v, x: model.apply(v, x, train=False))
  compiled = {}
  for name in sets:
    options = option_set(name)
    compiled[name] = (
        step.lower(state, images, labels, key).compile(compiler_options=options),
        infer.lower(variables, images).compile(compiler_options=options),
        infer.lower(variables, images[:1]).compile(compiler_options=options))
  times = {name: {"train_ms": [], "infer_ms": [], "latency_ms": []} for name in sets}
  for _ in range(rounds + 1):  # The first round only warms up.
    for name, (train_fn, infer_fn, latency_fn) in compiled.items():
      # A fresh copy each call: the compiled step donates its state.
      fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
      train_s = _time(train_fn, fresh, images, labels, key)
      infer_s = _time(infer_fn, variables, images)
      latency_s = min(_time(latency_fn, variables, images[:1]) for _ in range(5))
      for k, v in (("train_ms", train_s), ("infer_ms", infer_s), ("latency_ms", latency_s)):
        times[name][k].append(1e3 * v)
  return {name: {k: statistics.median(v[1:]) for k, v in t.items()}
          for name, t in times.items()}


def define_flags() -> None:
  """The flags of the XLA options profile."""
  cli.define_config()
  cli.define_batch_size(32, "Training and batched-inference batch size.")
  flags.DEFINE_integer("rounds", 3, "Timed rounds (after one warm-up round).")
  flags.DEFINE_string("sets", "default,no_ynn", "Comma-separated option sets.")


def main(argv):
  """absl entry point: the median times per option set."""
  del argv
  f = flags.FLAGS
  print(f"load average at start: {os.getloadavg()}")
  for name, result in profile(f.config, f.batch_size, f.sets.split(","),
                              f.rounds).items():
    print(f"{name:28} " + "  ".join(f"{k} {v:8.1f}" for k, v in result.items()))
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  cli.run(main, define_flags)
