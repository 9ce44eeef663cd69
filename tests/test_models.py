"""MobileNet V1/V2 modules: shapes, modes, dtypes, variants and argument checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mobilenet_v1, mobilenet_v2
from mobilenet_jax import models
from mobilenet_jax.errors import ConfigError
from mobilenet_jax.models.mobilenet_v1 import MobileNetV1
from mobilenet_jax.models.mobilenet_v2 import MobileNetV2, make_divisible


# The smallest and the paper's size; width 0.5 at 64 px runs in test_bfloat16_jit_forward,
# width 1.4's layer shapes in test_v2_structure.
@pytest.mark.parametrize("name,width,res", [
    ("mobilenet_v1", 0.25, 32), ("mobilenet_v1", 1.0, 224),
    ("mobilenet_v2", 0.35, 32), ("mobilenet_v2", 1.0, 224),
])
def test_output_shapes_in_train_and_eval_mode(name, width, res):
  module = mobilenet_v1 if name == "mobilenet_v1" else mobilenet_v2
  model = models.create(module.get_config(f"width={width},res={res},num_classes=17").model)
  images = jax.random.normal(jax.random.key(0), (2, res, res, 3))
  variables = models.init_variables(model, jax.random.key(1))
  # Jitted: eager dispatch of a deep network op by op is many times slower.
  logits = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  train_logits, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}))(
          variables, images)
  for out in (logits, train_logits):
    assert out.shape == (2, 17) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
  # Training updates every BatchNorm's running statistics.
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         updates["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
  model = MobileNetV1(num_classes=10, width=0.25, dropout_rate=0.5)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  variables = models.init_variables(model, jax.random.key(1))
  evaluate = jax.jit(lambda v, x: model.apply(v, x))
  np.testing.assert_array_equal(evaluate(variables, images), evaluate(variables, images))
  train = jax.jit(lambda v, x, key: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})[0])
  train_logits = [train(variables, images, jax.random.key(s)) for s in (3, 4)]
  assert not np.allclose(train_logits[0], train_logits[1])


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_bfloat16_jit_forward(name):
  module = mobilenet_v1 if name == "mobilenet_v1" else mobilenet_v2
  config = module.get_config("width=0.5,res=64,dtype=bfloat16,num_classes=5")
  model = models.create(config.model)
  images = jnp.ones((2, 64, 64, 3))
  variables = models.init_variables(model, jax.random.key(0))
  # Parameters stay float32 whatever the compute dtype.
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  logits = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  reference = models.create(module.get_config("width=0.5,res=64,num_classes=5").model)
  np.testing.assert_allclose(
      logits, jax.jit(lambda v, x: reference.apply(v, x))(variables, images),
      atol=0.15, rtol=0.1)


def _kernel_shapes(model, res=224):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((1, res, res, 3))))
  return {"/".join(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
          if path[-1].key == "kernel"}


def test_v1_width_rule_and_variants():
  shapes = _kernel_shapes(MobileNetV1(width=0.25))
  assert shapes["conv0/conv/kernel"] == (3, 3, 3, 8)  # max(int(32*0.25), 8)
  assert shapes["block13/pw/conv/kernel"] == (1, 1, 256, 256)
  shallow = _kernel_shapes(MobileNetV1(depth="shallow"))
  assert sum(k.endswith("pw/conv/kernel") for k in shallow) == 8  # 13 - 5
  full_conv = _kernel_shapes(MobileNetV1(block="full_conv"))
  assert full_conv["block2/conv/kernel"] == (3, 3, 64, 128)
  assert not any("depthwise" in k for k in full_conv)


def test_v2_structure():
  shapes = _kernel_shapes(MobileNetV2())
  assert "block1/expand/conv/kernel" not in shapes  # t = 1: no expansion conv.
  assert shapes["block2/expand/conv/kernel"] == (1, 1, 16, 96)
  assert shapes["conv_last/conv/kernel"] == (1, 1, 320, 1280)
  assert _kernel_shapes(MobileNetV2(width=0.5))["conv_last/conv/kernel"][-1] == 1280
  assert _kernel_shapes(MobileNetV2(width=1.4))["conv_last/conv/kernel"][-1] == 1792
  assert [make_divisible(c * 0.35) for c in (32, 16, 24, 64, 320)] == [16, 8, 8, 24, 112]


def test_v2_residuals_only_at_stride_one_with_equal_channels():
  calls = []

  def spy(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if type(context.module).__name__ == "InvertedResidual":
      calls.append((args[0].shape, out.shape))
    return out

  with nn.intercept_methods(spy):
    jax.eval_shape(lambda: MobileNetV2().init(jax.random.key(0),
                                              jnp.zeros((1, 224, 224, 3))))
  residual = [a == b for a, b in calls]
  # Table 2: 17 bottlenecks, of which the repeats (n - 1 per row) keep their shape.
  assert len(calls) == 17 and sum(residual) == 10


@pytest.mark.parametrize("kwargs,argument", [
    (dict(width=0.0), "model.width"),
    (dict(width=-0.5), "model.width"),
    (dict(depth="deep"), "model.depth"),
    (dict(block="mixed"), "model.block"),
    (dict(activation="gelu"), "model.activation"),
    (dict(num_classes=0), "model.num_classes"),
])
def test_bad_arguments_raise_one_clear_error(kwargs, argument):
  with pytest.raises(ConfigError, match=argument):
    MobileNetV1(**kwargs)


def test_bad_config_values():
  with pytest.raises(ConfigError, match="model.width"):
    models.create(mobilenet_v2.get_config("width=0").model)
  with pytest.raises(ConfigError, match="'full', 'shallow'"):
    models.create(mobilenet_v1.get_config("depth=medium").model)
  config = mobilenet_v1.get_config()
  config.model.name = "mobilenet_v3"
  with pytest.raises(ConfigError, match="model.name"):
    models.create(config.model)
  with pytest.raises(ValueError, match="Unknown config argument 'widht'"):
    mobilenet_v1.get_config("widht=0.5")


@pytest.mark.parametrize("model", [MobileNetV1(width=0.25), MobileNetV2(width=0.35)])
def test_resolution_too_small(model):
  init = lambda res: jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + res + (3,))))
  with pytest.raises(ConfigError, match="at least 32x32"):
    init((31, 40))
  # 32 is the smallest allowed and works, as do odd sizes.
  for res in ((32, 32), (33, 33), (97, 45)):
    logits_shape = jax.eval_shape(lambda v: model.apply(
        v, jnp.zeros((1,) + res + (3,))), init(res))
    assert logits_shape.shape == (1, model.num_classes)
