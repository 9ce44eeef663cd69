r"""MobileNet V1 or V2 on a dataset of small images (28-64 px): Fashion-MNIST by default.

  python -m mobilenet_jax.data.prepare fashion_mnist     # once, offline
  python -m mobilenet_jax.main --config=configs/small_images.py --workdir=runs/fmnist
  python -m mobilenet_jax.main \
      --config=configs/small_images.py:model=v1,width=0.5,res=40 --workdir=runs/w05_r40
  python -m mobilenet_jax.main \
      --config=configs/small_images.py:dataset=image_folder,num_classes=7,res=48 \
      --config.data.data_dir=/data/my_folder --workdir=runs/mine

Which model: for a quick, steady result at 32 px, V1 0.5 shallow
(`width=0.5,depth=shallow,epochs=6`; the plain config is V1 1.0, full depth).
Fashion-MNIST, 6 epochs, five seeds, EMA test top-1: 0.5 shallow 89.38% (sd 0.25),
0.25 shallow 87.82% (sd 0.48), 0.25 full depth 86.09% (sd 1.09); 2026-12-06,
benchmarks/RESULTS.md. `depth` stays "full" by default: the proxies
(experiments/proxy.py) train the paper's points and name depth only where a point is
shallow.

Arguments: model ("v1" or "v2"), width, res, depth and block (V1), activation (V1),
dataset (any TFDS name, or image_folder), num_classes, flip ("auto", "true",
"false"), batch, epochs, dtype. The experiments' --proxy mode trains every point of a
paper sweep with this config (experiments/proxy.py).

What differs from the ImageNet recipe, and why (the V1 paper's own crops cost
Fashion-MNIST about 5 points: 77.9% in 3 epochs, 82.7% with lighter crops; issue 18):
- Augmentation: resize to res, zero-pad by 1/8 of the side, random crop back to res
  (CIFAR's 4 px at 32), a horizontal flip unless the dataset is one where a flip
  changes the class (digits, characters: `NO_FLIP`); the eval image is the whole
  image resized (eval crop fraction 1.0), as training sees it.
- SGD with momentum and a cosine decay, clipped gradients, EMA over ~100 steps,
  no label smoothing: configs/default.py's short-run recipe, which learns a few
  epochs faster than TF1 RMSprop with staircase decay.
- Decoded images cached in memory (28x28x3 x 60,000 is 141 MB) and shuffled whole.

What one epoch of V1 0.25 at 32 px on Fashion-MNIST reached with other choices
(2026-12-06, one seed each, test top-1): this recipe 76.5%; no clipping 76.4%;
lr.base 0.1 76.7% and 1.2 76.0%; AdamW at 0.008 per 256 images 78.1%; He-initialized
depthwise kernels (std 0.47 instead of 0.09) no faster over the first 100 steps. None
moves the first epoch by more than a seed does, so the recipe stays; what limits a
short run is how many steps it takes, not these settings.
"""

import ml_collections

from mobilenet_jax import config_files
from mobilenet_jax import config_recipes as common
from mobilenet_jax.errors import ConfigError

# The files beside this one, loaded by path: a clone and an installed copy
# (mobilenet_jax/configs) both have them, and neither needs a package named `configs`.
mobilenet_v1 = config_files.load_beside(__file__, "mobilenet_v1.py")
mobilenet_v2 = config_files.load_beside(__file__, "mobilenet_v2.py")

# TFDS datasets whose classes a mirror image changes or makes implausible.
NO_FLIP = ("mnist", "emnist", "kmnist", "svhn_cropped", "binarized_mnist",
           "mnist_corrupted", "omniglot")

ARGS = dict(model="v1", width=1.0, res=32, depth="full", block="separable",
            activation="relu6", dataset="fashion_mnist", num_classes=10, flip="auto",
            batch=128, epochs=10.0, dtype="float32", runlocal=False)


def get_config(arg_string: str | None = None):
  """The config for `arg_string` ("model=v1,width=0.5,res=40,...")."""
  given = common.given_args(arg_string)
  arg = common.parse_arg(arg_string, **ARGS)
  if arg.model not in ("v1", "v2"):
    raise ConfigError(f"Config argument model={arg.model!r} must be v1 or v2.")
  if arg.model == "v2":
    common.reject_args(given, ("depth", "block", "activation"), "MobileNet V2 has no "
                       "depth, block or activation choice")
  config = common.train_config()
  family = mobilenet_v1 if arg.model == "v1" else mobilenet_v2
  config.model = family.model_config(arg)
  config.data = _data(arg)
  config.global_batch_size = arg.batch
  config.num_epochs = arg.epochs
  _recipe(config)
  # A tenth of the run, at most 0.3 epochs: the proxy's short budgets keep most of
  # their steps at the peak rate.
  config.lr.warmup_epochs = min(0.3, round(0.1 * arg.epochs, 4))
  if arg.runlocal:
    common.shrink_for_local_run(config, arg, given)
  return config


def _data(arg) -> ml_collections.ConfigDict:
  data = common.data_config(arg.dataset, arg.res)
  data.train_crop = "pad"
  data.pad_fraction = 0.125
  if arg.flip not in ("auto", "true", "false"):
    raise ConfigError(f"Config argument flip={arg.flip!r} must be auto, true or "
                             "false.")
  data.random_flip = (arg.dataset not in NO_FLIP if arg.flip == "auto"
                      else arg.flip == "true")
  data.eval_crop_fraction = 1.0
  data.cache = True
  data.shuffle_buffer = 60_000
  return data


def _recipe(config: ml_collections.ConfigDict) -> None:
  """configs/default.py's short-run recipe (see there for the measurements)."""
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.grad_clip_norm = 5.0
  config.lr.base = 0.4  # Per 256 images: peak 0.2 at batch 128.
  config.lr.schedule = "cosine"
  config.label_smoothing = 0.0
  config.ema_decay = 0.99
  config.eval_batch_size = 500
  config.log_every_steps = 100
  config.eval_every_steps = 0  # Evaluate at the end only.
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
