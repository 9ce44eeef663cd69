r"""MobileNet V1 on ImageNet, with the V1 paper's width, depth, block and resolution knobs.

Examples:

  python -m mobilenet_jax.main --config=configs/mobilenet_v1.py --workdir=runs/v1
  python -m mobilenet_jax.main \
      --config=configs/mobilenet_v1.py:width=0.5,res=160 --workdir=runs/v1_050_160
  python -m mobilenet_jax.costs --config=configs/mobilenet_v1.py:depth=shallow

Arguments: width (alpha), res (input size), depth ("full" or "shallow", Table 5),
block ("separable" or "full_conv", Table 4), num_classes, activation, dataset,
batch (global batch size), runlocal (a tiny smoke run for a CPU).
"""

import ml_collections

from mobilenet_jax import config_recipes

# The arguments and their defaults (configs/default.py takes them too, less dataset
# and num_classes).
ARGS = dict(width=1.0, res=224, depth="full", block="separable", num_classes=1000,
            activation="relu6", dataset="imagenet2012", batch=1024, dtype="float32",
            runlocal=False)


def get_config(arg_string: str | None = None):
  """Returns the config for `arg` ("width=0.75,res=192,...")."""
  arg = config_recipes.parse_arg(arg_string, **ARGS)
  config = build(arg)
  if arg.runlocal:
    config_recipes.shrink_for_local_run(config, arg,
                                        config_recipes.given_args(arg_string))
  return config


def build(arg) -> ml_collections.ConfigDict:
  """The config for parsed arguments, before any runlocal shrinking."""
  config = config_recipes.train_config()
  config.model = model_config(arg)
  config.data = config_recipes.data_config(arg.dataset, arg.res)
  config.global_batch_size = arg.batch
  return config


def model_config(arg):
  """The `config.model` section for MobileNet V1 (V1 paper, Table 1; TF-slim's ReLU6, SAME padding, BatchNorm epsilon 1e-3)."""
  model = ml_collections.ConfigDict()
  model.name = "mobilenet_v1"
  model.width = arg.width
  model.depth = arg.depth
  model.block = arg.block
  model.num_classes = arg.num_classes
  # The reference code uses ReLU6; the paper text says ReLU.
  model.activation = arg.activation
  model.dropout_rate = 0.001  # TF-slim V1: keep probability 0.999.
  # None: chosen from the run length T (mobilenet_jax/train/batchnorm.py):
  # 1 - 40 / T, at least 0.9 and at most TF-slim V1's batch-norm decay 0.9997 (reached
  # from ~133k steps: the ImageNet recipe), so that short runs evaluate with running
  # statistics of their final weights. A number fixes it.
  model.bn_momentum = ml_collections.FieldReference(None, field_type=float)
  model.bn_epsilon = 1e-3  # Every reference implementation.
  model.dtype = arg.dtype
  # Depthwise convolution implementation (mobilenet_jax/models/depthwise.py).
  model.depthwise_impl = "auto"
  # 1x1 convolution implementation: "auto", "xla" or "dot" (models/layers.py).
  model.pointwise_impl = "auto"
  # Full 3x3 convolution implementation: "auto", "xla" or "patches"
  # (models/kernels/spatial_conv.py).
  model.spatial_conv_impl = "auto"
  return model
