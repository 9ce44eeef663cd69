r"""Parameters and Mult-Adds read off the model itself, in the MobileNet paper's convention.

The paper counts the multiply-accumulates of every convolution and of the classifier,
K*K*(C_in/groups)*C_out*H_out*W_out, and as parameters only their weights: no biases,
no BatchNorm, no pooling (V1 paper, section 3.1 and Table 2). Rather than keeping a table by
hand, `count_costs` traces the network abstractly (no FLOPs are spent) and intercepts
every layer that owns a `kernel`, so each width, depth, block and resolution is counted
from the code that runs.

  python -m mobilenet_jax.costs --config=configs/mobilenet_v1.py:width=0.5,res=160
  python -m mobilenet_jax.costs --config=configs/mobilenet_v2.py --json=-

Installed with pip, the same program is `mobilenet-costs`.
"""

from __future__ import annotations

import dataclasses
import math

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax import cli, models
from mobilenet_jax.models.depthwise import DepthwiseConv

# Layer types as the V1 paper's Table 2 names them.
CONV_1X1, CONV_DW, CONV_3X3, CLASSIFIER = "Conv 1x1", "Conv DW 3x3", "Conv 3x3", "Fully Connected"


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One convolution or dense layer: its name, type, output shape, MACs and weights."""
  name: str
  kind: str
  output_shape: tuple[int, ...]
  mult_adds: int
  params: int


@dataclasses.dataclass(frozen=True)
class Costs:
  """Per-layer and total costs of a network at one input resolution."""
  layers: tuple[LayerCost, ...]
  trainable_params: int  # Every parameter: weights, biases, BatchNorm scale and bias.
  total_variables: int  # Parameters plus BatchNorm running statistics.

  @property
  def mult_adds(self) -> int:
    return sum(layer.mult_adds for layer in self.layers)

  @property
  def params(self) -> int:
    """Conv and classifier weights only: the paper's parameter count."""
    return sum(layer.params for layer in self.layers)

  def by_kind(self) -> dict[str, tuple[int, int]]:
    """{layer type: (Mult-Adds, weights)}, as in the paper's Table 2."""
    totals: dict[str, tuple[int, int]] = {}
    for layer in self.layers:
      macs, params = totals.get(layer.kind, (0, 0))
      totals[layer.kind] = (macs + layer.mult_adds, params + layer.params)
    return totals

  def as_dict(self) -> dict:
    """A JSON-ready summary with the totals, the per-type breakdown and every layer."""
    return {
        "mult_adds": self.mult_adds,
        "params": self.params,
        "trainable_params": self.trainable_params,
        "total_variables": self.total_variables,
        "by_kind": {kind: {"mult_adds": m, "params": p}
                    for kind, (m, p) in self.by_kind().items()},
        "layers": [dataclasses.asdict(layer) for layer in self.layers],
    }


def _kind(module: nn.Module, kernel_shape: tuple[int, ...]) -> str:
  if isinstance(module, DepthwiseConv):
    return CONV_DW
  if len(kernel_shape) == 2:
    return CLASSIFIER
  if kernel_shape[0] == kernel_shape[1] == 1:
    return CONV_1X1
  return f"Conv {kernel_shape[0]}x{kernel_shape[1]}"


def count_costs(model: nn.Module, resolution: int) -> Costs:
  """Counts `model`'s costs for one square RGB image of side `resolution`."""
  layers: list[LayerCost] = []

  def record(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != "__call__" or not module.has_variable("params", "kernel"):
      return output
    kernel_shape = tuple(module.get_variable("params", "kernel").shape)
    # Each output position costs one MAC per kernel weight: for a grouped conv the
    # kernel is (K, K, C_in/groups, C_out) and for a dense layer (C_in, C_out).
    positions = math.prod(output.shape[1:-1])
    layers.append(LayerCost(
        name="/".join(module.path), kind=_kind(module, kernel_shape),
        output_shape=tuple(output.shape[1:]),
        mult_adds=math.prod(kernel_shape) * positions,
        params=math.prod(kernel_shape)))
    return output

  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)

  def init():
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), images, train=False)

  # Interception happens while tracing, so an abstract evaluation is enough.
  variables = jax.eval_shape(init)
  size = lambda tree: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
  return Costs(layers=tuple(layers), trainable_params=size(variables["params"]),
               total_variables=size(variables))


def costs_for_config(config) -> Costs:
  """Costs of `config.model` at `config.data.image_size`."""
  return count_costs(models.create(config.model), config.data.image_size)


def format_table(costs: Costs, title: str = "") -> str:
  """A readable per-layer table, the per-type breakdown and the totals."""
  lines = [title] if title else []
  lines.append(f"{'layer':<28} {'type':<16} {'output':>16} {'Mult-Adds':>14} {'weights':>11}")
  for layer in costs.layers:
    shape = "x".join(str(d) for d in layer.output_shape)
    lines.append(f"{layer.name:<28} {layer.kind:<16} {shape:>16} "
                 f"{layer.mult_adds:>14,} {layer.params:>11,}")
  lines.append("")
  lines.append(f"{'type':<28} {'Mult-Adds':>14} {'share':>8} {'weights':>11} {'share':>8}")
  for kind, (macs, params) in costs.by_kind().items():
    lines.append(f"{kind:<28} {macs:>14,} {100 * macs / costs.mult_adds:>7.2f}% "
                 f"{params:>11,} {100 * params / costs.params:>7.2f}%")
  lines.append("")
  lines.append(f"Mult-Adds (paper convention):       {costs.mult_adds:>14,}"
               f"  ({costs.mult_adds / 1e6:.2f} M)")
  lines.append(f"parameters (paper: weights only):   {costs.params:>14,}"
               f"  ({costs.params / 1e6:.2f} M)")
  lines.append(f"trainable parameters (+bias, BN):   {costs.trainable_params:>14,}")
  lines.append(f"all variables (+BN moving stats):   {costs.total_variables:>14,}")
  return "\n".join(lines)


def define_flags() -> None:
  """The flags of `mobilenet-costs`."""
  cli.define_config()
  cli.define_json()
  flags.DEFINE_bool("layers", False, "With --json, include every layer.")


def main(argv):
  """absl entry point: prints the cost table (and/or JSON) of --config."""
  del argv
  config = flags.FLAGS.config
  costs = costs_for_config(config)
  summary = costs.as_dict()
  if not flags.FLAGS.layers:
    del summary["layers"]
  model = config.model
  title = (f"{model.name} width={model.width} res={config.data.image_size}"
           + (f" depth={model.depth} block={model.block}" if "depth" in model else ""))
  cli.print_result(summary, format_table(costs, title), flags.FLAGS.json)


def console_main():
  """The `mobilenet-costs` console script (and `python -m mobilenet_jax.costs`)."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  console_main()
