"""MobileNet V1/V2 in PyTorch, channels-last, as a speed reference for the benchmark.

Run through `python -m mobilenet_jax.benchmark ... --torch`, the only importer of this
module; PyTorch is a benchmark-only dependency (`pip install torch==2.13.0`), never
needed by the rest of the package. The networks
match mobilenet_jax/models in layers, channels, strides and width rules; they pad
symmetrically instead of TF "SAME", which changes no speed.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from mobilenet_jax.models.mobilenet_v1 import FULL_BLOCKS, SHALLOW_BLOCKS, scaled_channels
from mobilenet_jax.models.mobilenet_v2 import (BOTTLENECKS, LAST_CONV_CHANNELS,
                                               make_divisible)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
  """Convolution without bias, BatchNorm (eps 1e-3), optional ReLU6."""
  layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3)]
  if act:
    layers.append(nn.ReLU6(inplace=True))
  return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
  """V2 bottleneck: 1x1 expand, 3x3 depthwise, linear 1x1 projection, residual."""

  def __init__(self, cin: int, cout: int, stride: int, expansion: int):
    super().__init__()
    hidden = cin * expansion
    layers = [conv_bn(cin, hidden)] if expansion != 1 else []
    layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
               conv_bn(hidden, cout, act=False)]
    self.body = nn.Sequential(*layers)
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    y = self.body(x)
    return x + y if self.residual else y


def mobilenet_v1(width: float = 1.0, num_classes: int = 1000,
                 depth: str = "full") -> nn.Module:
  """MobileNet V1 (separable blocks) as in mobilenet_jax/models/mobilenet_v1.py."""
  cin = scaled_channels(32, width)
  layers = [conv_bn(3, cin, 3, 2)]
  for stride, channels in (FULL_BLOCKS if depth == "full" else SHALLOW_BLOCKS):
    cout = scaled_channels(channels, width)
    layers += [conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout)]
    cin = cout
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Dropout(0.001), nn.Linear(cin, num_classes))


def mobilenet_v2(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  """MobileNet V2 as in mobilenet_jax/models/mobilenet_v2.py."""
  cin = make_divisible(32 * width)
  layers = [conv_bn(3, cin, 3, 2)]
  for expansion, channels, repeats, first_stride in BOTTLENECKS:
    cout = make_divisible(channels * width)
    for repeat in range(repeats):
      layers.append(InvertedResidual(cin, cout, first_stride if repeat == 0 else 1,
                                     expansion))
      cin = cout
  last = LAST_CONV_CHANNELS if width <= 1.0 else make_divisible(LAST_CONV_CHANNELS * width)
  return nn.Sequential(*layers, conv_bn(cin, last), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes))


def create(model_config) -> nn.Module:
  """The PyTorch twin of `mobilenet_jax.models.create(model_config)`."""
  if model_config.name == "mobilenet_v1":
    if model_config.get("block", "separable") != "separable":
      raise ValueError("The PyTorch reference only has separable V1 blocks.")
    return mobilenet_v1(model_config.width, model_config.num_classes,
                        model_config.get("depth", "full"))
  return mobilenet_v2(model_config.width, model_config.num_classes)


def _median_seconds(fn, runs: int) -> float:
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def benchmark(model_config, res: int, batch: int, steps: int, threads: int,
              warmup: int = 1, latency_runs: int = 10, infer_runs: int = 5) -> dict:
  """Training and inference speed, keyed like mobilenet_jax.benchmark's JAX figures.

  The training step matches the JAX benchmark's: cross-entropy, backward and an
  RMSprop update (alpha 0.9, momentum 0.9, eps 1.0), BatchNorm in train mode, all
  tensors channels-last.
  """
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = create(model_config).to(memory_format=torch.channels_last)
  opt = torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.9, eps=1.0,
                            momentum=0.9)
  images = torch.randn(batch, 3, res, res).to(memory_format=torch.channels_last)
  labels = torch.randint(0, model_config.num_classes, (batch,))
  loss_fn = nn.CrossEntropyLoss()

  def train_step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    return loss

  model.train()
  for _ in range(warmup):
    train_step()
  step_s = _median_seconds(train_step, steps)

  model.eval()
  with torch.inference_mode():
    model(images)
    infer_s = _median_seconds(lambda: model(images), infer_runs)
    one = images[:1].contiguous(memory_format=torch.channels_last)
    model(one)
    latency_s = _median_seconds(lambda: model(one), latency_runs)
  return {
      "train_images_per_sec": batch / step_s,
      "train_step_ms": 1e3 * step_s,
      "infer_images_per_sec": batch / infer_s,
      "latency_ms_batch1": 1e3 * latency_s,
      "threads": threads,
      "torch_version": torch.__version__,
  }
