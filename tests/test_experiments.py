"""The experiments tooling: sweeps, the launcher (dry runs only) and the comparison.

Nothing here trains: the comparison reads synthetic results.json files.
"""

import io
import json
import subprocess
import sys

import pytest

from experiments import compare, launch, paper, sweeps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _arch(spec):
  """(width, resolution, depth, block) of a config spec."""
  config = paper.load_config(spec)
  return (config.model.width, config.data.image_size, config.model.get("depth"),
          config.model.get("block"))


def test_table6_is_four_widths_at_224():
  runs = sweeps.get_sweep("table6")
  assert [_arch(r.config)[:2] for r in runs] == [(1.0, 224), (0.75, 224), (0.5, 224),
                                                 (0.25, 224)]
  assert [r.name for r in runs] == ["v1_w1_r224", "v1_w0.75_r224", "v1_w0.5_r224",
                                    "v1_w0.25_r224"]


def test_table_sweeps_follow_the_paper():
  assert [_arch(r.config) for r in sweeps.get_sweep("table4")] == [
      (1.0, 224, "full", "full_conv"), (1.0, 224, "full", "separable")]
  assert [_arch(r.config)[2] for r in sweeps.get_sweep("table5")] == ["full", "shallow"]
  assert [_arch(r.config)[:2] for r in sweeps.get_sweep("table7")] == [
      (1.0, 224), (1.0, 192), (1.0, 160), (1.0, 128)]
  assert [r.name for r in sweeps.get_sweep("table9")] == ["v1_w0.5_r160"]
  (v2,) = sweeps.get_sweep("v2")
  assert paper.load_config(v2.config).model.name == "mobilenet_v2"


def test_grid_is_sixteen_distinct_points():
  archs = {_arch(r.config)[:2] for r in sweeps.get_sweep("grid")}
  assert archs == {(w, r) for w in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)}


def test_every_spec_loads_and_names_are_unique():
  for name in sweeps.SWEEP_NAMES:
    runs = sweeps.get_sweep(name)
    assert runs and len({r.name for r in runs}) == len(runs), name
    for run in runs:
      paper.load_config(run.config)
      paper.load_config(sweeps.with_args(run.config, "runlocal"))
  # "all" holds every architecture of the other sweeps once: 16 grid points plus
  # full_conv, shallow and V2.
  assert len(sweeps.get_sweep("all")) == 19


def test_unknown_sweep_lists_the_names():
  with pytest.raises(ValueError, match=r"Unknown sweep 'table8'.*table6.*grid.*all"):
    sweeps.get_sweep("table8")


def test_dry_run_prints_commands_and_skips_finished(tmp_path):
  root = str(tmp_path / "runs")
  (tmp_path / "runs" / "v1_w0.5_r224").mkdir(parents=True)
  (tmp_path / "runs" / "v1_w0.5_r224" / "results.json").write_text("{}")
  jobs = launch.make_jobs("table6", root, local_smoke=True, python="python",
                          extra_args=("--config.num_train_steps=2",))
  out = io.StringIO()
  assert launch.run_jobs(jobs, dry_run=True, out=out) == []
  lines = out.getvalue().splitlines()
  assert lines[0] == ("python -m mobilenet_jax.main --config=configs/mobilenet_v1.py:runlocal "
                      f"--workdir={root}/v1_w1_r224 --config.num_train_steps=2")
  assert lines[1] == ("python -m mobilenet_jax.main "
                      "--config=configs/mobilenet_v1.py:width=0.75,runlocal "
                      f"--workdir={root}/v1_w0.75_r224 --config.num_train_steps=2")
  assert lines[2].startswith("[3/4] skip v1_w0.5_r224")
  assert "width=0.25,runlocal" in lines[3]
  assert not (tmp_path / "runs" / "v1_w1_r224").exists()  # A dry run creates nothing.


def test_launcher_cli_dry_run(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.launch", "--sweep=table9",
       f"--root={tmp_path}", "--dry_run", "--python=python", "--",
       "--config.global_batch_size=64"],
      capture_output=True, text=True, check=True, timeout=60)
  assert result.stdout.strip() == (
      "python -m mobilenet_jax.main --config=configs/mobilenet_v1.py:width=0.5,res=160 "
      f"--workdir={tmp_path}/v1_w0.5_r160 --config.global_batch_size=64")


def test_failures_do_not_stop_the_sweep(tmp_path):
  # `false` fails; `true` exits 0 but leaves no results.json, like a preempted run.
  jobs = launch.make_jobs("table7", str(tmp_path), python="false")
  jobs[1] = launch.make_jobs("table7", str(tmp_path), python="true")[1]
  out = io.StringIO()
  assert launch.run_jobs(jobs, out=out) == [job.name for job in jobs]
  assert "FAILED with exit status 1" in out.getvalue()
  assert "without results.json" in out.getvalue()


def _write_results(root, name, spec, top1, *, ema=True, dataset=None):
  config = paper.load_config(spec)
  if dataset:
    config.data.name = dataset
  final = {"raw": {"loss": 1.0, "top1": top1 - 0.05, "top5": 0.9, "num_examples": 50000}}
  if ema:
    final["ema"] = {"loss": 1.0, "top1": top1, "top5": 0.9, "num_examples": 50000}
  (root / name).mkdir(parents=True)
  (root / name / "results.json").write_text(json.dumps({
      "config": json.loads(config.to_json_best_effort()), "final": final,
      "steps": 1234, "params": 1_331_936, "mult_adds": 149_492_032,
      "trainable_params": 1_340_000, "wall_time_s": 1.0, "train_images_per_sec": 1.0,
      "device_count": 1, "process_count": 1, "platform": "cpu"}))


def _rows(markdown):
  """{(paper table, model): cells} of the markdown table."""
  rows = {}
  for line in markdown.splitlines()[2:]:
    if not line.startswith("| "):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows.setdefault((cells[0], cells[1]), []).append(dict(zip(compare.COLUMNS, cells)))
  return rows


def test_compare_writes_table_and_plots(tmp_path):
  root, out = tmp_path / "runs", tmp_path / "report"
  _write_results(root, "v1_w0.5_r224", "mobilenet_v1.py:width=0.5", 0.652)
  _write_results(root, "v1_w1_r160", "mobilenet_v1.py:res=160", 0.661, ema=False)
  _write_results(root, "v1_w0.25_r224", "mobilenet_v1.py:width=0.25", 0.9,
                 dataset="shapes10")
  markdown = compare.compare(str(root), str(out))
  assert (out / compare.MARKDOWN_FILE).read_text() == markdown
  rows = _rows(markdown)

  (half,) = rows[("V1 Table 6", "0.5 MobileNet-224")]
  assert (half["paper top-1"], half["ours top-1"], half["delta"]) == (
      "63.7", "65.2 (EMA)", "+1.5")
  assert (half["paper Mult-Adds (M)"], half["ours Mult-Adds (M)"]) == ("149", "149.5")
  assert (half["paper params (M)"], half["ours params (M)"]) == ("1.3", "1.33")
  assert (half["steps"], half["dataset"], half["run"]) == ("1234", "imagenet2012",
                                                           "v1_w0.5_r224")
  (res160,) = rows[("V1 Table 7", "1.0 MobileNet-160")]
  # Without EMA weights the raw top-1 (0.661 - 0.05) is taken.
  assert (res160["ours top-1"], res160["delta"]) == ("61.1 (raw)", "-6.1")
  (quarter,) = rows[("V1 Table 6", "0.25 MobileNet-224")]
  assert quarter["delta"] == "n/a" and quarter["dataset"] == "shapes10 †"
  assert "not comparable" in markdown
  for key in [("V1 Table 4", "Conv MobileNet"), ("V1 Table 9", "0.50 MobileNet-160"),
              ("V2 headline", "MobileNetV2 1.0-224"), ("V1 Table 6", "1.0 MobileNet-224")]:
    assert [r["ours top-1"] for r in rows[key]] == ["not run"], key
  for name in (compare.MULT_ADDS_PLOT, compare.PARAMS_PLOT):
    data = (out / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, name


def test_compare_matches_smoke_runs_by_name_and_skips_partial_files(tmp_path):
  _write_results(tmp_path, "v1_w0.75_r224", "mobilenet_v1.py:width=0.75,runlocal", 0.5)
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "results.json").write_text('{"preempted_at_step": 3}')
  markdown = compare.compare(str(tmp_path))
  (row,) = [r for r in _rows(markdown)[("V1 Table 6", "0.75 MobileNet-224")]]
  assert row["run"] == "v1_w0.75_r224 ‡" and row["delta"] == "n/a"
  assert "broken/results.json: left out" in markdown
  assert (tmp_path / compare.MULT_ADDS_PLOT).exists()
