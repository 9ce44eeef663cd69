r"""MobileNet V2 on ImageNet (V2 paper, Table 2), with width and resolution knobs.

Examples:

  python -m mobilenet_jax.main --config=configs/mobilenet_v2.py --workdir=runs/v2
  python -m mobilenet_jax.costs --config=configs/mobilenet_v2.py:width=1.4,res=224

Arguments: width (alpha), res, num_classes, dataset, batch, dtype, runlocal.
"""

import ml_collections

from mobilenet_jax import config_recipes


def get_config(arg_string: str | None = None):
  """Returns the config for `arg` ("width=1.4,res=224,...")."""
  arg = config_recipes.parse_arg(
      arg_string, width=1.0, res=224, num_classes=1000, dataset="imagenet2012",
      batch=1536, dtype="float32", runlocal=False)

  config = config_recipes.train_config()
  config.model = model_config(arg)
  config.data = config_recipes.data_config(arg.dataset, arg.res)

  # V2 paper: 16 asynchronous GPU workers with batch 96 each (1536 in all), RMSprop
  # decay 0.9 momentum 0.9, weight decay 4e-5, learning rate 0.045 decayed by 0.98
  # per epoch. TF-slim V2: label smoothing 0.1, moving-average decay 0.9999.
  config.global_batch_size = arg.batch
  config.num_workers = 16
  config.lr.base = 0.045 * 16  # TF-slim: 0.045 x number of GPUs ...
  config.lr.reference_batch = 1536  # ... at 96 images per GPU.
  config.lr.decay_rate = 0.98
  config.lr.decay_epochs = 1.0
  config.optimizer.epsilon = 1.0  # TF-slim default for RMSprop in its train script.
  config.weight_decay = 4e-5
  config.label_smoothing = 0.1
  config.ema_decay = 0.9999
  if arg.runlocal:
    config_recipes.shrink_for_local_run(config, arg,
                                        config_recipes.given_args(arg_string))
  return config


def model_config(arg):
  """The `config.model` section for MobileNet V2 (V2 paper, Table 2; TF-slim's make_divisible widths)."""
  model = ml_collections.ConfigDict()
  model.name = "mobilenet_v2"
  model.width = arg.width
  model.num_classes = arg.num_classes
  model.dropout_rate = 0.2  # TF-slim V2: keep probability 0.8.
  # None: chosen from the run length T (mobilenet_jax/train/batchnorm.py):
  # 1 - 40 / T, at least 0.9 and at most TF-slim V2's batch-norm decay 0.997
  # (reached from ~13k steps). A number fixes it.
  model.bn_momentum = ml_collections.FieldReference(None, field_type=float)
  model.bn_epsilon = 1e-3
  model.dtype = arg.dtype
  model.depthwise_impl = "auto"
  # 1x1 convolution implementation: "auto", "xla" or "dot" (models/layers.py).
  model.pointwise_impl = "auto"
  # Full 3x3 convolution implementation: "auto", "xla" or "patches"
  # (models/kernels/spatial_conv.py).
  model.spatial_conv_impl = "auto"
  return model
