"""experiments.compare on roots as a researcher leaves them: seeds to aggregate, runs
that failed, stopped or never started, a misspelled or empty root."""

import json
import os
import subprocess
import sys

from experiments import compare, manifest, paper, sweeps
from mobilenet_jax.rundir import layout, identity as run_identity
from tests import ckpt_helpers as h
from tests.test_experiments import _assert_png, _rows, _write_results


def _write_manifest(root, sweep, names_and_specs):
  points = [{"name": name, "config": spec, "args": [], "workdir": str(root / name),
             "command": [], "full_config": {},
             "point_config": run_identity.config_dict(paper.load_config(spec))}
            for name, spec in names_and_specs]
  root.mkdir(parents=True, exist_ok=True)
  (root / manifest.MANIFEST_FILE).write_text(json.dumps(
      {"sweep": sweep, "kind": sweeps.get_sweep(sweep).kind, "points": points}))


def test_seeds_of_a_point_are_aggregated(tmp_path):
  for seed, top1 in enumerate((0.90, 0.92, 0.94)):
    name = "v1_w0.5_r224" + (f"_seed{seed}" if seed else "")
    _write_results(tmp_path, name, "mobilenet_v1.py:width=0.5", top1,
                   overrides=(("seed", seed),))
  _write_results(tmp_path, "v1_w1_r224", "mobilenet_v1.py", 0.93)
  markdown = compare.compare(str(tmp_path))
  (half,) = _rows(markdown)[("V1 Table 6", "0.5 MobileNet-224")]
  # Mean 92, std 2, 95% CI t(0.975, 2) x 2 / sqrt(3) = 4.97.
  assert (half["ours top-1"], half["n"], half["std"], half["95% CI"]) == (
      "92.00 (EMA)", "3", "2.00", "±4.97")
  assert (half["delta"], half["run"]) == ("+28.30", "v1_w0.5_r224")
  (one,) = _rows(markdown)[("V1 Table 6", "1.0 MobileNet-224")]
  assert (one["ours top-1"], one["n"], one["std"], one["95% CI"]) == (
      "93.0 (EMA)", "1", "-", "-")
  for name in (compare.MULT_ADDS_PLOT, compare.CURVES_PLOT):
    _assert_png(tmp_path / name)


def test_a_half_finished_root_lists_what_did_not_finish(tmp_path):
  root = tmp_path / "table6"
  specs = [(p.name, p.config) for p in sweeps.get_sweep("table6").points]
  _write_manifest(root, "table6", specs)
  _write_results(root, "v1_w1_r224", "mobilenet_v1.py", 0.7, dataset="fashion_mnist")
  # 0.75: its trainer stopped with an error line; 0.5: killed while it wrote its
  # results (a truncated results.json); 0.25: never started.
  (root / "v1_w0.75_r224").mkdir()
  layout.log_path(root / "v1_w0.75_r224").write_text(
      "step 10/100\nerror: Cannot decode image file 'x.jpg'\n")
  (root / "v1_w0.5_r224").mkdir()
  layout.results_path(root / "v1_w0.5_r224").write_text('{"config": {"data": ')
  # A torn last line in the finished run's metrics (a full disk) is skipped.
  with layout.metrics_path(root / "v1_w1_r224").open("a") as f:
    f.write('{"step": 4, "spl')
  markdown = compare.compare(str(root))
  rows = _rows(markdown)
  assert rows[("V1 Table 6", "1.0 MobileNet-224")][0]["ours top-1"] == "70.0 (EMA)"
  assert [rows[("V1 Table 6", f"{w} MobileNet-224")][0]["ours top-1"]
          for w in ("0.75", "0.5", "0.25")] == ["failed", "not finished", "not started"]
  assert "## Not finished: 3 of 4 runs" in markdown
  assert ("- v1_w0.75_r224: failed (error: Cannot decode image file 'x.jpg')"
          in markdown)
  assert "- v1_w0.5_r224: not finished (" in markdown and "is not valid JSON" in markdown
  assert "- v1_w0.25_r224: not started (no run directory)" in markdown
  _assert_png(root / compare.CURVES_PLOT)


def _compare_cli(root):
  return subprocess.run(
      [sys.executable, "-m", "experiments.compare", f"--root={root}"], cwd=h.REPO,
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"))


def test_a_missing_or_empty_root_is_one_line_and_writes_nothing(tmp_path):
  result = _compare_cli(tmp_path / "tabel6")  # Misspelled.
  errors = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert errors[0].startswith(f"error: --root={tmp_path}/tabel6: no such directory")
  assert not (tmp_path / "tabel6").exists()
  (tmp_path / "empty").mkdir()
  result = _compare_cli(tmp_path / "empty")
  errors = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert "holds no runs" in errors[0] and "nothing to compare" in errors[0]
  assert os.listdir(tmp_path / "empty") == []
