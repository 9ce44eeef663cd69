"""Costs counted off the modules equal the papers' exact and published figures."""

import json
import subprocess
import sys

import pytest

from configs import mobilenet_v1, mobilenet_v2
from experiments.paper import load_config, load_paper_results
from mobilenet_jax import costs
from mobilenet_jax.costs import CLASSIFIER, CONV_1X1, CONV_3X3, CONV_DW


def test_v1_224_exact():
  c = costs.costs_for_config(mobilenet_v1.get_config())
  assert c.mult_adds == 568_740_352
  assert c.params == 4_209_088
  assert c.trainable_params == 4_231_976
  assert c.total_variables == 4_253_864
  by_kind = c.by_kind()
  body_macs = c.mult_adds - by_kind[CLASSIFIER][0]
  body_params = c.params - by_kind[CLASSIFIER][1]
  assert (body_macs, body_params) == (567_716_352, 3_185_088)


def test_v1_table2_breakdown_and_shares():
  c = costs.costs_for_config(mobilenet_v1.get_config())
  by_kind = c.by_kind()
  assert by_kind == {
      CONV_1X1: (539_492_352, 3_139_584),
      CONV_DW: (17_385_984, 44_640),
      CONV_3X3: (10_838_016, 864),
      CLASSIFIER: (1_024_000, 1_024_000),
  }
  mac_share = {k: round(100 * m / c.mult_adds, 2) for k, (m, _) in by_kind.items()}
  param_share = {k: round(100 * p / c.params, 2) for k, (_, p) in by_kind.items()}
  # The paper prints 1.19 for the 3x3 conv: a digit transposition of 1.91.
  assert mac_share == {CONV_1X1: 94.86, CONV_DW: 3.06, CONV_3X3: 1.91, CLASSIFIER: 0.18}
  assert param_share == {CONV_1X1: 74.59, CONV_DW: 1.06, CONV_3X3: 0.02, CLASSIFIER: 24.33}


def test_v2_224_exact():
  c = costs.costs_for_config(mobilenet_v2.get_config())
  assert (c.mult_adds, c.params, c.trainable_params, c.total_variables) == (
      300_774_272, 3_469_760, 3_504_872, 3_538_984)


def test_v1_layer_count_matches_table1():
  layers = costs.costs_for_config(mobilenet_v1.get_config()).layers
  # 28 layers counting depthwise and pointwise separately, plus the classifier.
  assert len(layers) == 28
  assert [l.kind for l in layers[:3]] == [CONV_3X3, CONV_DW, CONV_1X1]
  assert layers[-2].output_shape == (7, 7, 1024)  # Stride-1 final depthwise pair.


MOBILENET_ROWS = [r for r in load_paper_results() if r.is_mobilenet]


@pytest.mark.parametrize("row", MOBILENET_ROWS, ids=lambda r: f"table{r.table}-{r.model}")
def test_paper_table_rows(row):
  c = costs.costs_for_config(load_config(row.config))
  macs = c.mult_adds
  if not row.classifier_counted:
    macs -= c.by_kind()[CLASSIFIER][0]
  assert abs(macs / 1e6 - row.mult_adds_m) <= row.mult_adds_tol_m
  assert abs(c.params / 1e6 - row.params_m) <= row.params_tol_m


def test_paper_rows_cover_tables_4_to_9():
  tables = {r.table for r in load_paper_results() if r.paper == "v1"}
  assert tables == {"4", "5", "6", "7", "8", "9"}


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("res", [224, 192, 160, 128])
def test_width_resolution_grid(width, res):
  """Figures 4 and 5's 16 models: MACs scale as the spatial area, weights do not."""
  c = costs.costs_for_config(mobilenet_v1.get_config(f"width={width},res={res}"))
  base = costs.costs_for_config(mobilenet_v1.get_config(f"width={width},res=224"))
  assert c.params == base.params
  # Every layer's output is ceil(res/stride) pixels wide, so MACs follow exactly.
  for layer, ref in zip(c.layers, base.layers):
    assert layer.params == ref.params
    if len(layer.output_shape) == 3:
      side = layer.output_shape[0]
      ref_side = ref.output_shape[0]
      assert layer.mult_adds * ref_side**2 == ref.mult_adds * side**2


def test_cli_json():
  out = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.costs",
       "--config=configs/mobilenet_v1.py:width=0.5,res=160", "--json=-"],
      capture_output=True, text=True, check=True).stdout
  report = json.loads(out)
  assert report["mult_adds"] == costs.costs_for_config(
      mobilenet_v1.get_config("width=0.5,res=160")).mult_adds
  for key in ("mult_adds", "params", "trainable_params", "total_variables"):
    assert isinstance(report[key], int)


def test_cli_bad_config_value_is_one_line():
  proc = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.costs",
       "--config=configs/mobilenet_v1.py:depth=deep"],
      capture_output=True, text=True)
  assert proc.returncode != 0
  assert "model.depth='deep'" in proc.stderr
  assert "Traceback" not in proc.stderr
