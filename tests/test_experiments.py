"""The experiments tooling: sweeps as data, smoke mode, the launcher (dry runs, local
failures; its TPU side: tests/test_tpu_launch.py) and the comparison. Nothing here trains (see
tests/test_sweep_end_to_end.py for the run that does)."""

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from experiments import (compare, launch, local_runs, paper, plots, references, smoke,
                         sweeps)
from mobilenet_jax.rundir import identity as run_identity
from mobilenet_jax.rundir import layout, lock
from mobilenet_jax.rundir import results as run_results
from tests import ckpt_helpers as h
from tests import launch_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _arch(point):
  """(width, resolution, depth, block) of a point."""
  config = point.build()
  return (config.model.width, config.data.image_size, config.model.get("depth"),
          config.model.get("block"))


def test_table6_is_four_widths_at_224():
  points = sweeps.get_sweep("table6").points
  assert [_arch(p)[:2] for p in points] == [(1.0, 224), (0.75, 224), (0.5, 224),
                                            (0.25, 224)]
  assert [p.name for p in points] == ["v1_w1_r224", "v1_w0.75_r224", "v1_w0.5_r224",
                                      "v1_w0.25_r224"]


def test_table_sweeps_follow_the_paper():
  get = lambda name: sweeps.get_sweep(name).points
  assert [_arch(p) for p in get("table4")] == [
      (1.0, 224, "full", "full_conv"), (1.0, 224, "full", "separable")]
  assert [_arch(p)[2] for p in get("table5")] == ["full", "shallow"]
  assert [_arch(p)[:2] for p in get("table7")] == [(1.0, 224), (1.0, 192), (1.0, 160),
                                                   (1.0, 128)]
  assert [p.name for p in get("table9")] == ["v1_w0.5_r160"]
  (v2,) = get("v2")
  assert v2.build().model.name == "mobilenet_v2"
  assert {_arch(p)[:2] for p in get("grid")} == {
      (w, r) for w in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)}
  v2grid = get("v2grid")
  assert {_arch(p)[:2] for p in v2grid} == {
      (w, r) for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4) for r in (96, 128, 160, 192, 224)}
  # 22 of the 30 have a released checkpoint (1.3 and 1.4 only at 224).
  assert sum(references.lookup("v2", *_arch(p)[:2]) is not None for p in v2grid) == 22
  assert len(get("all")) == 19  # 16 grid points + full_conv, shallow and V2.


def test_recipe_sweeps():
  points = sweeps.get_sweep("async").points
  settings = {(c.staleness, c.num_workers, c.lr.staleness_scaling)
              for c in (p.build() for p in points)}
  # Without staleness neither workers nor scaling change anything: tau=0 once; the
  # inverse scaling is lr / max(1, d), the same as none for delays d <= 1.
  assert settings == {(0, 1, "none")} | {(1, w, "none") for w in (1, 4, 16)} | {
      (t, w, s) for t in (2, 4, 8) for w in (1, 4, 16) for s in ("none", "inverse")}
  assert "v1_w1_r224_tau4_workers16_lrscale-inverse" in {p.name for p in points}
  batch = {p.name: p.build() for p in sweeps.get_sweep("batch").points}
  assert [c.global_batch_size for c in batch.values()] == [
      256, 512, 1024, 2048, 4096, 8192, 16384]
  big = batch["v1_w1_r224_batch16384_accum8"]
  assert big.grad_accum_steps == 8 and big.lr.warmup_epochs == 5.0
  # Linear scaling is the configs' own: peak lr = base x batch / 256.
  assert big.lr.base == 0.165 and big.lr.reference_batch == 256


def _identities(configs) -> set[str]:
  return {json.dumps(run_identity.identity(c), sort_keys=True) for c in configs}


@pytest.mark.parametrize("name", sweeps.SWEEP_NAMES)
def test_every_sweep_has_distinct_points_full_size_smoke_and_proxy(name, tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mobilenet_jax.train import validation as config_validation  # pylint: disable=g-import-not-at-top
  points = sweeps.get_sweep(name).points
  assert len({p.name for p in points}) == len(points)
  assert len(_identities(p.build() for p in points)) == len(points)
  # Smoke mode keeps them apart (runlocal would make all of Table 6 one network), and
  # every smoke config is one the trainer accepts (192 px used to become 27 px).
  jobs = launch.make_jobs(name, str(tmp_path), local_smoke=True)
  assert len(_identities(j.full_config for j in jobs)) == len(points)
  for job in jobs:
    config = job.full_config
    assert config["data"]["name"] == "shapes10"
    assert 32 <= config["data"]["image_size"] <= 40
    assert config["model"]["width"] == job.point_config["model"]["width"]
    config_validation.validate(ml_collections.ConfigDict(config))
  if sweeps.get_sweep(name).kind == "recipe":
    with pytest.raises(ValueError, match=f"{name} is a recipe sweep"):
      launch.make_jobs(name, str(tmp_path), proxy_name="fashion_mnist")
    return
  jobs = launch.make_jobs(name, str(tmp_path), proxy_name="fashion_mnist", seeds=2)
  assert len(jobs) == 2 * len(points)
  assert len(_identities(j.full_config for j in jobs)) == 2 * len(points)
  paper_res = {j.name: j.point_config["data"]["image_size"] for j in jobs}
  proxy_res = {j.name: j.full_config["data"]["image_size"] for j in jobs}
  assert min(proxy_res.values()) == 32  # The sweep's smallest at the models' minimum.
  for job in jobs:
    config = job.full_config
    assert (config["data"]["name"], config["data"]["train_crop"]) == ("fashion_mnist",
                                                                      "pad")
    assert run_identity.architecture(config)[:4] == run_identity.architecture(job.point_config)[:4]
    config_validation.validate(ml_collections.ConfigDict(config))
    # One scale for the whole sweep: the paper's resolution ratios are kept.
    for other in jobs:
      ratio = paper_res[job.name] / paper_res[other.name]
      assert proxy_res[job.name] / proxy_res[other.name] == pytest.approx(ratio, rel=0.02)


def test_seeds_are_an_axis():
  points = sweeps.get_sweep("table5").points
  seeded = sweeps.with_seeds(points, 3)
  assert [p.name for p in seeded] == [
      "v1_w0.75_r224", "v1_w1_r224_shallow", "v1_w0.75_r224_seed1",
      "v1_w1_r224_shallow_seed1", "v1_w0.75_r224_seed2", "v1_w1_r224_shallow_seed2"]
  assert seeded[:2] == points  # Seed 0 is today's point: finished runs count.
  assert [p.build().seed for p in seeded] == [0, 0, 1, 1, 2, 2]
  assert sweeps.seed_of("v1_w1_r224_shallow_seed12") == ("v1_w1_r224_shallow", 12)
  assert sweeps.seed_of("v1_w0.75_r224") == ("v1_w0.75_r224", 0)
  assert sweeps.with_seeds(points, 1) == points
  with pytest.raises(ValueError, match="at least 1 seed"):
    sweeps.with_seeds(points, 0)
  with pytest.raises(ValueError, match="already sets its seed"):
    sweeps.with_seeds(seeded[2:3], 2)


def test_proxy_resolutions_follow_the_paper_ratios():
  from experiments import proxy  # pylint: disable=g-import-not-at-top
  res = lambda sweep: sorted({int(p.build().data.image_size)
                              for p in proxy.proxy_points(sweeps.get_sweep(sweep),
                                                          "fashion_mnist")})
  assert res("table7") == res("grid") == [32, 40, 48, 56]  # x 1/4, exact.
  assert res("v2grid") == [32, 43, 53, 64, 75]  # x 1/3, rounded.
  assert res("table6") == res("table4") == res("table5") == [32]
  (full_conv, separable) = proxy.proxy_points(sweeps.get_sweep("table4"), "fashion_mnist")
  assert full_conv.build().model.block == "full_conv"
  assert full_conv.full_size.name == full_conv.name == "v1_w1_r224_full_conv"
  with pytest.raises(ValueError, match="Unknown proxy 'cifar'"):
    proxy.proxy_points(sweeps.get_sweep("table6"), "cifar")


def test_names_never_collide():
  specs = [("mobilenet_v1.py", (("lr.base", 0.1),)),
           ("mobilenet_v1.py", (("lr.base", 0.1000001),))]
  with pytest.raises(ValueError, match="would both be named 'v1_w1_r224_lr0.1'"):
    sweeps._name_points(specs)  # pylint: disable=protected-access
  # The same point twice (the tables repeat rows) is one point.
  assert len(sweeps._name_points([specs[0], specs[0]])) == 1  # pylint: disable=protected-access


def test_unknown_sweep_lists_the_names():
  with pytest.raises(ValueError, match=r"Unknown sweep 'table8'.*table6.*async.*batch"):
    sweeps.get_sweep("table8")


def test_smoke_keeps_the_recipe_and_scales_the_schedule():
  config = sweeps.get_sweep("batch").points[-1].build()  # 16384, accum 8, warmup 5.
  shrunk = sweeps.apply_overrides(config.copy_and_resolve_references(),
                                  smoke.smoke_overrides(config, images=8192))
  assert shrunk.global_batch_size == 1024 and shrunk.grad_accum_steps == 8
  assert shrunk.num_train_steps == 8 and shrunk.data.image_size == 40
  # Warmup keeps its share of the run: 5 of 300 epochs.
  assert shrunk.lr.warmup_epochs / shrunk.num_epochs == pytest.approx(5 / 300, rel=1e-3)
  assert [smoke.smoke_resolution(r) for r in (224, 192, 160, 128, 96)] == [
      40, 38, 36, 34, 32]
  estimate = smoke.estimate(shrunk)
  assert estimate.compile_s > 0 and estimate.total_s > estimate.compile_s
  assert "compilation" in smoke.format_estimate([estimate])


def test_estimates_match_the_runs_measured_here():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from experiments import estimate  # pylint: disable=g-import-not-at-top
  configs = lambda jobs: [ml_collections.ConfigDict(j.full_config) for j in jobs]
  # Table 6 smoke, --parallel=2: 360 s cold at load ~8.3, 220 s cached at ~9.3 (both
  # with our 2 runs: 6.3 and 7.3 of other work).
  table6 = configs(launch.make_jobs("table6", "/unused", local_smoke=True))
  cold = [smoke.estimate(c, load_now=6.3) for c in table6]
  warm = [smoke.estimate(c, load_now=7.3) for c in table6]
  assert estimate.wall_seconds(cold, 2) == pytest.approx(360, rel=0.3)
  assert estimate.wall_seconds(warm, 2, cached=True) == pytest.approx(220, rel=0.3)
  # The trainer alone on Fashion-MNIST, V1 1.0 at 56 px: 213 images/s at load ~8.5;
  # full-convolution V1 1.0 at 32 px (products over patches): 241 images/s at ~3.5.
  from configs import small_images  # pylint: disable=g-import-not-at-top
  full_conv = small_images.get_config("width=1,res=32,block=full_conv")
  run_s = estimate.estimate(full_conv, 10_240, 0, load_now=1.5).run_s
  assert 10_240 / run_s == pytest.approx(241, rel=0.3)
  config = small_images.get_config("width=1,res=56")
  run_s = estimate.estimate(config, 12_800, 0, load_now=6.5).run_s
  assert 12_800 / run_s == pytest.approx(213, rel=0.3)
  # An idle machine is faster than a shared one, but not without bound.
  assert estimate.load_factor(0.0) == pytest.approx(2 / 6)
  assert estimate.load_factor(10.0) == 2.0


def test_local_dry_run_prints_commands_and_skips_finished(tmp_path):
  root = str(tmp_path / "runs")
  _write_results(tmp_path / "runs", "v1_w0.5_r224", "mobilenet_v1.py:width=0.5", 0.6,
                 overrides=(("num_train_steps", 2),))
  result = _launch("--sweep=table6", f"--root={root}", "--dry_run", "--python=python",
                   "--", "--config.num_train_steps=2")
  lines = result.stdout.splitlines()
  assert lines[0].startswith("[3/4] skip v1_w0.5_r224")
  assert lines[1] == ("python -m mobilenet_jax.main --config=configs/mobilenet_v1.py "
                      f"--workdir={root}/v1_w1_r224 --config.num_train_steps=2")
  assert lines[2].startswith("python -m mobilenet_jax.main "
                             "--config=configs/mobilenet_v1.py:width=0.75 ")
  assert "width=0.25" in lines[3] and len(lines) == 4
  assert sorted(os.listdir(root)) == ["v1_w0.5_r224"]  # A dry run writes nothing.
  assert sorted(os.listdir(os.path.join(root, "v1_w0.5_r224"))) == [
      "metrics.jsonl", "results.json"]


def test_readme_smoke_command_and_a_seeded_proxy_dry_run(tmp_path):
  # The README's smoke command crashed at 192 px -> 27 px before any point ran.
  result = _launch("--sweep=grid", f"--root={tmp_path}/grid_smoke", "--local_smoke",
                   "--parallel=2", "--dry_run", "--python=python")
  lines = result.stdout.splitlines()
  assert lines[0].startswith("Smoke estimate: 16 points, ~")
  assert len(lines) == 17 and "--config.data.image_size=38" in lines[2]
  result = _launch("--sweep=table6", f"--root={tmp_path}/t6", "--proxy=fashion_mnist",
                   "--seeds=3", "--dry_run", "--python=python")
  lines = result.stdout.splitlines()
  assert lines[0].startswith("Proxy (fashion_mnist) estimate: 12 points, ~")
  commands = lines[1:]
  assert len(commands) == 12 and not os.path.exists(tmp_path / "t6")
  assert commands[0] == (
      "python -m mobilenet_jax.main --config=configs/small_images.py:model=v1,width=1,"
      "res=32,dataset=fashion_mnist,num_classes=10,epochs=1.5 "
      f"--workdir={tmp_path}/t6/v1_w1_r224")
  assert commands[11].endswith(f"--workdir={tmp_path}/t6/v1_w0.25_r224_seed2 "
                               "--config.seed=2")


_launch = launch_cli.run_launch


def test_tpu_needs_a_shared_root(tmp_path):
  code = ("import runpy, sys; sys.argv = ['launch'] + sys.argv[1:]; "
          "runpy.run_module('experiments.launch', run_name='__main__')")
  result = subprocess.run(
      [sys.executable, "-c", code, "--sweep=table9", f"--root={tmp_path}", "--tpu=a",
       "--zone=z", "--dry_run"], cwd=h.REPO, capture_output=True, text=True, timeout=60,
      env=dict(os.environ, PYTHONPATH=h.REPO))
  assert result.returncode != 0 and "gs:// --root" in result.stderr


def test_failures_do_not_stop_the_sweep(tmp_path):
  # `false` fails; `true` exits 0 but leaves no results.json, like a preempted run.
  jobs = launch.make_jobs("table7", str(tmp_path))
  out = io.StringIO()
  failed = local_runs.run_local(jobs[:2], python="false", out=out)
  failed += local_runs.run_local(jobs[2:], python="true", out=out, parallel=2)
  assert failed == [job.name for job in jobs]
  assert "FAILED v1_w1_r224 (exit status 1" in out.getvalue()
  assert "without results" in out.getvalue()
  assert os.path.exists(layout.log_path(jobs[0].workdir))


def test_a_killed_trainer_is_named_so_and_its_lock_given_back(tmp_path):
  job = launch.make_jobs("table6", str(tmp_path), local_smoke=True)[0]
  fake_trainer = tmp_path / "fake_trainer"
  fake_trainer.write_text("#!/bin/sh\nkill -9 $$\n")  # Dies holding the handed lock.
  fake_trainer.chmod(0o755)
  out = io.StringIO()
  assert local_runs.run_local([job], python=str(fake_trainer), out=out) == [job.name]
  assert f"FAILED {job.name} (killed by SIGKILL" in out.getvalue()
  assert layout.lock_path(job.workdir).read_text() == ""
  assert lock.live_holder(job.workdir) is None


def test_a_second_launcher_skips_finished_and_waits_for_busy_points(tmp_path,
                                                                    monkeypatch):
  # A launch lists its points at start; another launcher on the root may finish one
  # meanwhile, or be training one now. Neither is retrained nor reported FAILED, and
  # the launch ends with what the other trainer finished.
  monkeypatch.setattr(local_runs, "WAIT_POLL_S", 0.05)
  jobs = launch.make_jobs("table6", str(tmp_path), local_smoke=True)[:2]
  finished, busy = jobs
  _write_results(tmp_path, finished.name, None, 0.5, config=finished.full_config)
  other_trainer = lock.RunLock(busy.workdir).acquire()

  def other_trainer_finishes():
    time.sleep(0.5)
    _write_results(tmp_path, busy.name, None, 0.5, config=busy.full_config)
    other_trainer.release()

  threading.Thread(target=other_trainer_finishes).start()
  out = io.StringIO()
  assert local_runs.run_local(jobs, python="false", out=out) == []
  text = out.getvalue()
  assert f"skip {finished.name}: it has results now" in text
  assert f"busy {busy.name}: another run has it (trainer PID {os.getpid()}" in text
  assert f"waiting for 1 point(s) another trainer is running: {busy.name}" in text
  assert f"done {busy.name} by the other trainer" in text
  assert "FAILED" not in text  # And nothing was started:
  assert not any(line.startswith("start ") for line in text.splitlines())


def test_two_launchers_at_once_start_a_point_once(tmp_path, monkeypatch):
  # Both see the point unfinished at the same instant. The launcher takes the run lock
  # before the trainer's start-up and hands it over, so one starts the trainer and the
  # other reports the point busy, waits, and counts it done when it has results.
  monkeypatch.setattr(local_runs, "WAIT_POLL_S", 0.05)
  job = launch.make_jobs("table6", str(tmp_path / "root"), local_smoke=True)[0]
  _write_results(tmp_path, "trained", None, 0.5, config=job.full_config)
  fake_trainer = tmp_path / "fake_trainer"
  fake_trainer.write_text(f"#!/bin/sh\nsleep 1\ncp -r {tmp_path}/trained/. "
                          f"{job.workdir}/\n")
  fake_trainer.chmod(0o755)
  outs = [io.StringIO(), io.StringIO()]
  unfinished = []
  launchers = [threading.Thread(target=lambda out=out: unfinished.extend(
      local_runs.run_local([job], python=str(fake_trainer), out=out))) for out in outs]
  for launcher in launchers:
    launcher.start()
  for launcher in launchers:
    launcher.join()
  text = outs[0].getvalue() + outs[1].getvalue()
  assert unfinished == [] and text.count(f"start {job.name}") == 1, text
  # The trainer never adopts the lock (a shell script): the note names the launcher.
  assert (f"busy {job.name}: another run has it (sweep launcher PID {os.getpid()}"
          in text)
  assert f"done {job.name} by the other trainer" in text
  assert layout.lock_path(job.workdir).read_text() == ""  # Given back, no stale note.


def _write_results(root, name, spec, top1, *, ema=True, dataset=None, overrides=(),
                   config=None):
  """A finished point's results.json and metrics.jsonl: for `spec` with `overrides`,
  or for `config` (a job's full config dict) as given."""
  if config is None:
    config = sweeps.apply_overrides(paper.load_config(spec), overrides)
    if dataset:
      config.data.name = dataset
    if not ema:
      config.ema_decay = 0.0
    config = run_identity.config_dict(config)
  metrics = lambda t: {"loss": 1.0, "top1": t, "top5": 0.9, "num_examples": 50000}
  results = run_results.Results(
      config=config,
      final={"raw": run_results.EvalMetrics(**metrics(top1 - 0.05)),
             "ema": run_results.EvalMetrics(**metrics(top1))},
      steps=1234, params=1_331_936, mult_adds=149_492_032, trainable_params=1_340_000,
      wall_time_s=1.0, train_images_per_sec=1.0, device_count=1, process_count=1,
      platform="cpu")
  (root / name).mkdir(parents=True, exist_ok=True)
  run_results.write_results(root / name, results)
  rows = [{"step": s, "split": "train", "loss": 2.0 / s, "top1": top1 * s / 3}
          for s in (1, 2, 3)]
  (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(markdown, columns=compare.COLUMNS):
  """{(first cell, second cell): [cells]} of the markdown table."""
  rows = {}
  for line in markdown.splitlines()[2:]:
    if not line.startswith("| "):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows.setdefault((cells[0], cells[1]), []).append(dict(zip(columns, cells)))
  return rows


def _assert_png(path):
  data = path.read_bytes()
  assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def test_compare_architecture_sweep(tmp_path):
  root, out = tmp_path / "runs", tmp_path / "report"
  _write_results(root, "v1_w0.5_r224", "mobilenet_v1.py:width=0.5", 0.652)
  _write_results(root, "v1_w1_r160", "mobilenet_v1.py:res=160", 0.661, ema=False)
  _write_results(root, "v1_w0.25_r224", "mobilenet_v1.py:width=0.25", 0.9,
                 dataset="shapes10")
  _write_results(root, "v2_w0.75_r160", "mobilenet_v2.py:width=0.75,res=160", 0.6)
  (root / "broken").mkdir()
  (root / "broken" / "results.json").write_text('{"preempted_at_step": 3}')
  markdown = compare.compare(str(root), str(out))
  assert (out / compare.MARKDOWN_FILE).read_text() == markdown
  rows = _rows(markdown)
  (half,) = rows[("V1 Table 6", "0.5 MobileNet-224")]
  assert (half["paper top-1"], half["released top-1"], half["ours top-1"],
          half["delta"]) == ("63.7", "63.3", "65.2 (EMA)", "+1.5")
  assert (half["paper Mult-Adds (M)"], half["ours Mult-Adds (M)"]) == ("149", "149.5")
  assert (half["steps"], half["dataset"], half["run"]) == ("1234", "imagenet2012",
                                                           "v1_w0.5_r224")
  (res160,) = rows[("V1 Table 7", "1.0 MobileNet-160")]
  assert (res160["ours top-1"], res160["delta"]) == ("61.1 (raw)", "-6.1")
  (quarter,) = rows[("V1 Table 6", "0.25 MobileNet-224")]
  assert quarter["delta"] == "n/a" and quarter["dataset"] == "shapes10 †"
  # A run the papers do not print is compared with the released checkpoint.
  (v2,) = rows[("released", "v2_w0.75_r160")]
  assert (v2["released top-1"], v2["delta"]) == ("66.4", "-6.4")
  assert [r["ours top-1"] for r in rows[("V1 Table 4", "Conv MobileNet")]] == ["not run"]
  assert "## Not finished: 1 of 5 runs" in markdown
  assert "- broken: not finished (" in markdown and "results.json is not a finished" in markdown
  for name in (compare.MULT_ADDS_PLOT, compare.PARAMS_PLOT, compare.CURVES_PLOT):
    _assert_png(out / name)


def test_compare_recipe_sweep(tmp_path):
  for tau, workers, top1 in ((0, 1, 0.5), (2, 4, 0.4), (4, 4, 0.3)):
    _write_results(tmp_path, f"tau{tau}", "mobilenet_v1.py", top1,
                   overrides=(("staleness", tau), ("num_workers", workers)))
  markdown = compare.compare(str(tmp_path))
  header = markdown.splitlines()[0]
  assert header.startswith("| run | num_workers | staleness | steps | final top-1 |")
  columns = tuple(c.strip() for c in header.strip("|").split("|"))
  rows = _rows(markdown, columns)
  (row,) = rows[("tau2", "4")]
  assert (row["staleness"], row["final top-1"], row["eval loss"]) == (
      "2", "40.0 (EMA)", "1.000")
  assert row["train loss"] == "0.667"  # The last metrics.jsonl row.
  assert compare.written_files(str(tmp_path)) == [
      compare.MARKDOWN_FILE, compare.STALENESS_PLOT, compare.CURVES_PLOT]
  _assert_png(tmp_path / compare.STALENESS_PLOT)


def test_labels_never_overlap():
  plt = plots._pyplot()  # pylint: disable=protected-access
  fig, ax = plt.subplots(figsize=(4, 3))
  points = [(1 + 0.01 * i, 1 + 0.01 * (i % 3), f"label number {i}") for i in range(30)]
  ax.scatter([p[0] for p in points], [p[1] for p in points])
  boxes, left_out = plots.place_labels(ax, points)
  assert len(boxes) + left_out == 30 and len(boxes) >= 5
  for i, a in enumerate(boxes):
    for b in boxes[i + 1:]:
      assert not a.overlaps(b)
  plt.close(fig)


def test_distributed_without_a_cluster_is_one_message(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                      "MEGASCALE_COORDINATOR_ADDRESS")}
  result = subprocess.run(
      [sys.executable, "-m", "mobilenet_jax.main", "--config=configs/default.py",
       f"--workdir={tmp_path}/run", "--distributed"], cwd=h.REPO, capture_output=True,
      text=True, timeout=120, env=dict(env, PYTHONPATH=h.REPO, JAX_PLATFORMS="cpu"))
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "--distributed: no cluster environment" in errors[0]
  assert "--coordinator_address" in errors[0] and "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")
