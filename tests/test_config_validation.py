"""`validation.validate` and the config files' argument handling, in-process."""

import pytest

from configs import default
from configs import mobilenet_v1
from configs import mobilenet_v2
from mobilenet_jax import config_recipes
from mobilenet_jax.train import validation as config_validation
from mobilenet_jax.errors import ConfigError
from tests import ckpt_helpers as h


@pytest.mark.parametrize("make", [
    default.get_config, mobilenet_v1.get_config, mobilenet_v2.get_config,
    lambda: mobilenet_v1.get_config("runlocal"), lambda: mobilenet_v2.get_config("runlocal"),
    lambda: mobilenet_v1.get_config("depth=shallow,block=full_conv,activation=relu")])
def test_shipped_configs_are_valid(make):
  config_validation.validate(make())


@pytest.mark.parametrize("key,value,allowed", [
    ("data.image_size", -32, "an integer >= 32"),
    ("data.image_size", 31, "an integer >= 32"),
    ("data.on_corrupt_image", "ignore", "one of 'error', 'skip'"),
    ("data.classes_without_train_images", "no", "one of 'warn', 'error'"),
    ("data.crop_area_range", (0.0, 1.0), "0 < min <= max <= 1"),
    ("data.crop_aspect_range", (1.5, 1.0), "0 < min <= max"),
    ("data.eval_crop_fraction", 0.0, "> 0 and <= 1"),
    ("data.shuffle_buffer", 0, "an integer >= 1"),
    ("data.train_split", "", "a non-empty string"),
    ("model.name", "mobilenet_v3", "'mobilenet_v1', 'mobilenet_v2'"),
    ("model.width", 0.0, "a number > 0"),
    ("model.depth", "medium", "'full', 'shallow'"),
    ("model.block", "dense", "'separable', 'full_conv'"),
    ("model.activation", "gelu", "'relu6', 'relu'"),
    ("model.dtype", "float16", "'float32', 'bfloat16'"),
    ("model.dropout_rate", 1.0, ">= 0 and < 1"),
    ("model.depthwise_impl", "fast", "'auto', 'xla', 'shift', 'shift_vjp'"),
    ("optimizer.name", "adam", "'rmsprop_tf', 'sgd', 'adamw'"),
    ("optimizer.momentum", 1.5, ">= 0 and < 1"),
    ("lr.schedule", "linear", "'exponential', 'cosine', 'constant'"),
    ("lr.base", -0.1, "a number >= 0"),
    ("lr.base", float("nan"), "a number >= 0"),
    ("global_batch_size", 0, "an integer >= 1"),
    ("eval_batch_size", -1, "an integer >= 1"),
    ("label_smoothing", 1.0, ">= 0 and < 1"),
    ("ema_decay", 1.0, ">= 0 and < 1"),
    ("staleness", -1, "an integer >= 0"),
    ("num_workers", 0, "an integer >= 1"),
    ("worker_delays", "random", "'spread', 'sampled'"),
    ("grad_accum_steps", 0, "an integer >= 1"),
    ("log_every_steps", 0, "an integer >= 1"),
    ("keep_checkpoints", 0, "an integer >= 1"),
    ("checkpoint_every_steps", -5, "an integer >= 0"),
    ("init_from.step", -2, "an integer >= -1"),
])
def test_bad_value_names_key_and_allowed_values(key, value, allowed):
  config = h.config(**{key: value})
  with pytest.raises(ConfigError) as error:
    config_validation.validate(config)
  message = str(error.value)
  assert f"{key}={value!r}" in message and allowed in message
  assert "\n" not in message


def test_every_problem_in_one_message():
  config = h.config(**{"data.image_size": -32, "optimizer.name": "adam"})
  config.num_epochs, config.num_train_steps = 0.0, -1  # Neither sets the length.
  with pytest.raises(ConfigError, match=r"bad config values: data.image_size=-32 .*"
                     r"num_epochs=0.0 .*optimizer.name='adam'"):
    config_validation.validate(config)


def test_async_settings_must_split_the_batch():
  config = h.config(staleness=2, num_workers=5)  # runlocal: batch 32.
  with pytest.raises(ConfigError, match="num_workers=5"):
    config_validation.validate(config)


def test_init_from_must_hold_a_checkpoint(tmp_path):
  from mobilenet_jax.train import run_plan  # pylint: disable=g-import-not-at-top
  config = h.config(**{"init_from.workdir": str(tmp_path / "typo")})
  config_validation.validate(config)  # Static: the directory is not read.
  with pytest.raises(ConfigError, match=r"--config.init_from.workdir=\S+typo does not "
                     "exist: name the workdir of a finished run"):
    run_plan._check_init_from(config)  # pylint: disable=protected-access
  config.init_from.workdir = str(tmp_path)
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    run_plan._check_init_from(config)  # pylint: disable=protected-access
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  run_plan._check_init_from(config)  # pylint: disable=protected-access
  config.init_from.step = 5
  with pytest.raises(ConfigError, match=r"init_from.step=5 .*one of \[10\]"):
    run_plan._check_init_from(config)  # pylint: disable=protected-access


def test_default_config_honours_its_arguments():
  config = default.get_config("width=0.75,res=160,batch=64,depth=full")
  assert (config.model.width, config.data.image_size, config.global_batch_size,
          config.model.depth) == (0.75, 160, 64, "full")
  config = default.get_config()  # Its own defaults otherwise.
  assert (config.model.width, config.data.image_size, config.global_batch_size,
          config.model.depth) == (0.5, 32, 128, "shallow")
  for arg in ("dataset=mnist", "num_classes=5"):
    with pytest.raises(ConfigError, match="cannot be used here"):
      default.get_config(arg)


def test_runlocal_honours_explicit_size_arguments():
  config = mobilenet_v1.get_config("runlocal,width=0.5,res=64,batch=16")
  assert (config.model.width, config.data.image_size, config.global_batch_size,
          config.data.name) == (0.5, 64, 16, "shapes10")
  assert mobilenet_v2.get_config("runlocal,res=48").data.image_size == 48
  with pytest.raises(ConfigError, match="dataset cannot be used"):
    mobilenet_v2.get_config("runlocal,dataset=imagenet2012")


@pytest.mark.parametrize("arg,match", [
    ("width=abc", "width='abc' must be a number"),
    ("res=1.5", "res='1.5' must be an integer"),
    ("runlocal=maybe", "must be true or false"),
    ("res", "needs a value"),
    ("widht=0.5", "Unknown config argument 'widht'"),
])
def test_config_arguments_are_typed(arg, match):
  with pytest.raises(ConfigError, match=match):
    mobilenet_v1.get_config(arg)


def test_given_args():
  assert config_recipes.given_args("runlocal, width=0.5,,") == {"runlocal", "width"}
  assert config_recipes.given_args(None) == set()


def test_batch_larger_than_the_train_split_names_a_batch_that_fits():
  from mobilenet_jax.train import run_plan  # pylint: disable=g-import-not-at-top
  config = mobilenet_v1.get_config("num_classes=5")  # global batch 1024
  with pytest.raises(ConfigError, match=r"\(600 examples\).*--config.global_batch_size=32 "):
    run_plan.plan(config, 600)
  config.global_batch_size = 32
  assert run_plan.plan(config, 600).steps_per_epoch == 18
