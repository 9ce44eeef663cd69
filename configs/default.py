r"""The default run: MobileNet V1 (shallow) on the built-in shapes10 dataset, on any CPU.

  python -m mobilenet_jax.main --config=configs/default.py --workdir=/tmp/mobilenet

No download: shapes10 is generated locally on first use (mobilenet_jax/data). Sized so
that an idle 2-core CPU trains it in a few minutes (measured wall times and accuracies
over seeds: README and benchmarks/RESULTS.md). Keeps the paper's EMA and weight decay
off the depthwise kernels, with gradient clipping and the BatchNorm momentum chosen
from the run length, but uses SGD momentum with a cosine decay, which learn this short
run faster than TF1-style RMSprop with staircase decay. The same recipe trains
scikit-learn's digits as an image folder (tests/test_digits.py). For a paper-size run,
use configs/mobilenet_v1.py.

Why V1 0.5 shallow (the paper's Table 5 variant without the five 512-channel blocks)
at batch 128, and not V1 0.25 at batch 64, which five seeds left between 94.35 and
97.15%. A seed's run either left chance late (the full 28-layer net: train top-1
0.30-0.47 at step 800 over seeds 1-4; the shallow one 0.51-0.62) or lost a stem channel
at 0.25 width (8 channels; seed 3's BatchNorm scale went to -0.8, bias to -2.9), and
neither was made up by the end. At 32 px those five blocks see 2x2 maps, so dropping
them costs little; width 0.5 has channels to spare; batch 128 trains ~20% more images
per second than 64 on this CPU, which pays for the width. Five seeds of each variant:
benchmarks/RESULTS.md.
"""

from mobilenet_jax import config_files, config_recipes

# The file beside this one, loaded by path: a clone and an installed copy
# (mobilenet_jax/configs) both have it, and neither needs a package named `configs`.
mobilenet_v1 = config_files.load_beside(__file__, "mobilenet_v1.py")


def get_config(arg: str | None = None):
  """MobileNet V1 0.5 shallow at 32x32 on shapes10; `arg` as for mobilenet_v1.py.

  width, res, depth, block, activation, batch, dtype and runlocal are honoured (with
  this run's defaults); dataset and num_classes are rejected: the recipe is tuned for
  shapes10.
  """
  given = config_recipes.given_args(arg)
  config_recipes.reject_args(
      given, ("dataset", "num_classes"), "configs/default.py trains shapes10 "
      "(10 classes); use configs/mobilenet_v1.py for others")
  args = config_recipes.parse_arg(arg, **dict(
      mobilenet_v1.ARGS, width=0.5, res=32, depth="shallow", batch=128,
      dataset="shapes10", num_classes=10))
  config = mobilenet_v1.build(args)
  config.data.name = "shapes10"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.shuffle_buffer = 10_000
  config.data.cache = True  # 10k decoded 64x64 images fit in memory; saves CPU.
  # Crops down to half the area: a quarter cut shapes too much for this short run.
  config.data.crop_area_range = (0.5, 1.0)

  config.eval_batch_size = 500
  config.num_epochs = 20.0  # 1,560 steps: about 2 minutes on an idle 2-core CPU.
  # SGD with momentum learned clearly faster than rmsprop_tf (eps 1.0) on this short
  # run (train top-1 0.31 vs 0.15 after 400 steps).
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.lr.base = 0.4  # Per 256 images: peak 0.2 at batch 128.
  config.lr.warmup_epochs = 0.5  # Short warmup that small batches need.
  config.lr.schedule = "cosine"  # Staircase decay at 0.94/3 epochs barely moves here.
  # The first steps' gradient norms are 250-500 (BatchNorm after TF-slim's small
  # 0.09-stddev kernels amplifies them towards the input) and fall to ~10 within
  # ~10 steps; clipping only those steps keeps SGD at lr 0.1 from overshooting
  # (scikit-learn's digits, 220 steps: train top-1 68% -> 79%, eval 74% -> 87%;
  # lr 0.2 unclipped does not learn at all). Not in the paper recipes.
  config.optimizer.grad_clip_norm = 5.0
  config.label_smoothing = 0.0  # The V1 paper used none.
  config.ema_decay = 0.99  # Short run: average over ~100 steps.

  config.log_every_steps = 200  # 8 console lines for the whole run.
  config.eval_every_steps = 0  # Evaluate at the end only.
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  if args.runlocal:
    config_recipes.shrink_for_local_run(config, args, given)
  return config
