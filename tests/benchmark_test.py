"""The benchmark: one tiny run of every method, its files, and its flags."""

import dataclasses
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark_torch
from experiments import benchmark_report
from palindrome_jax import benchmark
from palindrome_jax import config
from palindrome_jax import files as io
from palindrome_jax import model
from palindrome_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_METHODS = ("eager", "jit_step", "compiled_loop", "flax_jit_step")
TORCH_METHODS = ("torch_original", "torch_fused")


def tiny(**kwargs) -> benchmark.BenchmarkConfig:
  return benchmark.BenchmarkConfig(**{
      "cells": ("rnn",), "lengths": (3,), "steps": 5, "eager_steps": 1,
      "repeats": 2, "base": train.RunConfig(batch_size=8, num_hidden=8),
      **kwargs})


def check_outputs(results_dir, report, cells, methods):
  """The three files exist; every (cell, method) has a positive, finite rate."""
  for name in ("benchmark.json", "benchmark.md", "benchmark.png"):
    assert os.path.getsize(os.path.join(results_dir, name)) > 0
  saved = io.read_json(os.path.join(results_dir, "benchmark.json"))
  assert saved["results"] == report.rows
  assert saved["machine"]["devices"] and saved["machine"]["jax"]
  assert all(p["gflops"] > 0 for p in saved["matmul_peaks"])
  rows = {(r["cell"], r["method"]): r for r in saved["results"]}
  with open(os.path.join(results_dir, "benchmark.md"), encoding="utf-8") as f:
    table = f.read()
  for cell in cells:
    for method in methods:
      row = rows[(cell, method)]
      assert row["status"] == "ok", row
      assert math.isfinite(row["steps_per_second"])
      assert row["steps_per_second"] > 0
      assert len(row["repeats_steps_per_second"]) == 2
      assert row["gflops"] > 0
      # XLA's count of the same step, beside the hand count.
      assert row["xla_gflops"] > 0 and row["xla_gflop_per_step"] > 0
      assert f"| {cell} | 3 | {row['label']} |" in table
  assert "| XLA GFLOP/s |" in table
  return rows


def test_jax_methods_without_torch(tmp_path):
  report = benchmark.run_benchmark(tiny(),
                                   *benchmark_torch.torch_methods("off"))
  benchmark_report.write(report, str(tmp_path))
  rows = check_outputs(str(tmp_path), report, ("rnn",), JAX_METHODS)
  assert rows[("rnn", "eager")]["speedup_over_eager"] == 1.0
  assert rows[("rnn", "jit_step")]["compile_seconds"] > 0
  assert rows[("rnn", "compiled_loop")]["compile_seconds"] > 0
  assert rows[("rnn", "eager")]["compile_seconds"] is None
  for method in TORCH_METHODS:
    assert rows[("rnn", method)]["status"] == "skipped: --torch=off"
  assert "skipped: --torch=off" in report.table


def test_torch_methods(tmp_path):
  pytest.importorskip("torch")
  report = benchmark.run_benchmark(
      tiny(cells=("lstm", "gru"), methods=("jit_step",)),
      *benchmark_torch.torch_methods("on"))
  benchmark_report.write(report, str(tmp_path))
  rows = check_outputs(str(tmp_path), report, ("lstm",), TORCH_METHODS)
  assert rows[("gru", "torch_fused")]["status"] == "ok"
  assert rows[("gru", "torch_original")]["status"].startswith("skipped:")
  assert report.machine["torch_threads"] >= 1


def test_flops_per_step_counts_the_fused_gates():
  rnn = train.RunConfig(cell="rnn", length=5, batch_size=2, num_hidden=3)
  # Per time step 2*B*(D + H)*G*H, plus the readout 2*B*H*C; times 3.
  forward = 5 * (2 * 2 * (1 + 3) * 3) + 2 * 2 * 3 * 10
  assert benchmark.flops_per_step(rnn) == 3 * forward
  lstm = train.RunConfig(cell="lstm", length=5, batch_size=2, num_hidden=3)
  assert benchmark.recurrent_width(lstm) == 12


def test_the_xla_count_counts_the_time_loop_once_per_time_step():
  # XLA's cost analysis counts a loop's body once: the count of the step as
  # compiled barely grows with N, while the step's work does. The body's
  # count, taken N - 1 more times, gives about what XLA counts for the same
  # step with its time loop unrolled whole (an odd N: its body is measured
  # at N + 1), and more than the hand count of the matmuls alone.
  lstm = train.RunConfig(cell="lstm", length=5, batch_size=8, num_hidden=8)
  counted = benchmark.xla_flops(lstm)
  unrolled = benchmark.compiled_step_flops(
      dataclasses.replace(lstm, unroll=lstm.length))
  assert counted["as_compiled"] < unrolled / 2
  assert counted["per_step"] == pytest.approx(unrolled, rel=0.1)
  assert counted["per_step"] > benchmark.flops_per_step(lstm)


def test_the_ceiling_chains_the_matmuls_it_counts():
  # The matmul-rate program does num_iters dependent [B, H] x [H, W] matmuls,
  # each folded back to [B, H]: checked against a NumPy loop, with the trip
  # count a compile-time constant (each count its own program).
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 3)).astype(np.float32)
  w = rng.normal(size=(3, 6)).astype(np.float32) / 3
  expected = x.astype(np.float64)
  for _ in range(5):
    y = expected @ w
    expected = np.tanh(y.reshape(4, 2, 3).sum(1) / math.sqrt(2))
  chained = benchmark._chained_matmul_jit  # pylint: disable=protected-access
  np.testing.assert_allclose(chained(x, w, 5), expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(chained(x, w, 4), expected, atol=1e-3)
  # A static trip count is a constant in the loop's condition (a traced one
  # would be an argument, which a GPU reads back to the host every iteration).
  assert "dense<5>" in chained.lower(x, w, 5).as_text()
  assert benchmark.matmul_gflops(4, 3, 6, repeats=1, min_seconds=0.0) > 0


def test_the_ceiling_times_calls_long_enough_without_their_compile():
  """Each trip count is its own program: its compile (tens of ms) must not
  count as the call's time, or calibration stops at the first count and
  times a call too short to hide its overhead."""
  x = jnp.ones((8, 8), jnp.float32)
  w = jnp.eye(8, dtype=jnp.float32)
  # 4 products of 8 x 8 take microseconds; on a busy machine a call can
  # still wait 50 ms for a core, so the best of three calibrations counts.
  num_iters, seconds = max(
      benchmark._calibrated_chain(x, w, repeats=1, min_seconds=0.05)  # pylint: disable=protected-access
      for _ in range(3))
  assert num_iters > 4
  assert seconds >= 0.025  # The call itself, a compiled program: ~0.05 s.


@pytest.mark.parametrize("cell", ["rnn", "irnn", "lstm", "gru"])
def test_flax_counterpart_of_each_builtin_cell(cell):
  module = benchmark.FlaxClassifier(cell, num_hidden=4)
  inputs_BxTxD = jnp.zeros((2, 3, 1))
  params = module.init(jax.random.PRNGKey(0), inputs_BxTxD)
  assert module.apply(params, inputs_BxTxD).shape == (2, 10)
  if cell == "irnn":
    recurrent = params["params"]["SimpleCell_0"]["h"]["kernel"]
    assert (recurrent == jnp.eye(4)).all()


def test_flax_has_no_counterpart_of_a_custom_cell():
  with pytest.raises(benchmark.Skip):
    benchmark.flax_cell("my_cell", 4)


def test_a_bad_setting_names_its_field():
  with pytest.raises(config.ConfigError, match="^steps: 150 is not"):
    tiny(steps=150)
  with pytest.raises(config.ConfigError, match="^repeats:"):
    tiny(repeats=0)
  with pytest.raises(config.ConfigError, match="^cells: must not be empty"):
    tiny(cells=())
  with pytest.raises(config.ConfigError, match="^lengths: repeated value"):
    tiny(lengths=(5, 5))
  with pytest.raises(config.ConfigError, match="^methods: unknown 'fast'"):
    tiny(methods=("jit_step", "fast"))


def test_without_torch_installed(monkeypatch):
  monkeypatch.setattr(benchmark_torch, "torch_installed", lambda: False)
  extra, machine = benchmark_torch.torch_methods("auto")
  assert machine == {}
  row = benchmark.measure(tiny(), train.RunConfig(cell="rnn", length=3),
                          "torch_fused", peaks=[], extra_methods=extra)
  assert row["status"] == "skipped: torch is not installed"


def test_the_package_imports_without_torch():
  # Every module of palindrome_jax, in a process where torch cannot load.
  import pkgutil  # pylint: disable=g-import-not-at-top
  import palindrome_jax  # pylint: disable=g-import-not-at-top
  names = [m.name for m in pkgutil.iter_modules(palindrome_jax.__path__)]
  code = ("import sys; sys.modules['torch'] = None\n"
          + "".join(f"import palindrome_jax.{n}\n" for n in names))
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "torch_baselines" not in names


def test_entrypoint_rejects_bad_flags(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--lengths=5,x",
       f"--results_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --lengths: 'x' is not an integer (in '5,x')"]


def test_the_methods_of_one_setting_take_turns_repeat_by_repeat():
  # A B A B: a machine that slows down mid-way shifts every method alike.
  calls = []

  def method(name):
    def prepare(cfg, seed, steps):
      del cfg, seed
      return benchmark.Prepared(lambda n: calls.append((name, n)), None,
                                warmup_steps=1 if steps else 0)
    return benchmark.Method(name, prepare)

  def skipped(cfg, seed, steps):
    raise benchmark.Skip("not here")

  extra = {"a": method("a"), "b": method("b"),
           "c": benchmark.Method("c", skipped)}
  rows = benchmark.measure_together(
      tiny(repeats=3), train.RunConfig(cell="rnn", length=3), ["a", "c", "b"],
      peaks=[], extra_methods=extra)
  assert calls == [("a", 1), ("b", 1)] + [("a", 5), ("b", 5)] * 3
  assert [r["method"] for r in rows] == ["a", "c", "b"]
  assert rows[1]["status"] == "skipped: not here"
  assert [len(r["repeats_steps_per_second"]) for r in rows] == [3, 0, 3]
  assert rows[0]["steps_per_second"] == np.median(
      rows[0]["repeats_steps_per_second"])


def test_the_torch_sweep_trains_and_tests_every_run(capsys):
  pytest.importorskip("torch")
  from experiments import torch_sweep  # pylint: disable=g-import-not-at-top
  status = torch_sweep.COMMAND.execute(torch_sweep.main, [
      "torch_sweep", "--cells=rnn,lstm", "--lengths=3,4", "--batch_size=8",
      "--num_hidden=8", "--train_steps=5", "--eval_batches=2"])
  out, err = capsys.readouterr()
  assert status == 0, err
  assert [line.split(":")[0] for line in out.splitlines()[1:]] == [
      "rnn N=3", "rnn N=4", "lstm N=3", "lstm N=4"]
  assert "4 runs in" in err


def test_the_torch_sweep_refuses_a_cell_torch_lacks(capsys):
  pytest.importorskip("torch")
  from experiments import torch_sweep  # pylint: disable=g-import-not-at-top
  status = torch_sweep.COMMAND.execute(torch_sweep.main, [
      "torch_sweep", "--cells=lru", "--lengths=3"])
  assert status == 2
  assert "error: --cells: PyTorch has no fused 'lru'" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_the_time_major_stack_computes_the_layer_major_model(cell):
  # The benchmark's time-major order must time the same function as the
  # library's layer-major stack: equal logits and gradients in float64.
  with jax.enable_x64(True):
    cfg = train.RunConfig(cell=cell, length=6, batch_size=4, num_hidden=5,
                          num_layers=3)
    cell_fn = cfg.make_cell()
    params = jax.tree.map(lambda x: x.astype(jnp.float64),
                          train.init_params(jax.random.PRNGKey(1), cfg))
    inputs = jax.random.uniform(jax.random.PRNGKey(3), (4, 6, 1),
                                jnp.float64, 0, 9)
    loss = lambda f: lambda p: jnp.sum(jnp.sin(f(cell_fn, p, inputs)))
    np.testing.assert_allclose(
        benchmark.time_major_apply(cell_fn, params, inputs),
        model.apply(cell_fn, params, inputs), rtol=1e-12, atol=1e-12)
    for got, want in zip(
        jax.tree.leaves(jax.grad(loss(benchmark.time_major_apply))(params)),
        jax.tree.leaves(jax.grad(loss(model.apply))(params))):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_the_time_major_method_times_a_stack_and_skips_the_rest():
  rows = benchmark.run_benchmark(tiny(
      methods=("jit_step", "time_major_step"), cells=("lstm",),
      base=train.RunConfig(batch_size=8, num_hidden=8, num_layers=2))).rows
  assert [r["status"] for r in rows] == ["ok", "ok"]
  assert rows[1]["steps_per_second"] > 0
  one_layer = benchmark.run_benchmark(tiny(
      methods=("jit_step", "time_major_step"))).rows
  assert one_layer[1]["status"].startswith(
      "skipped: time-major order needs a stack of two or more layers")


def test_the_methods_flag_picks_the_rows(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--cells=rnn",
       "--lengths=3", "--num_hidden=8", "--batch_size=8", "--steps=5",
       "--repeats=1", "--methods=compiled_loop,jit_step", "--torch=off",
       f"--results_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = io.read_json(os.path.join(tmp_path, "benchmark.json"))
  assert [r["method"] for r in saved["results"]
          if r["status"] == "ok"] == ["jit_step", "compiled_loop"]


def test_each_setting_measured_reaches_the_caller_before_the_next():
  # A long benchmark stopped part-way keeps the settings it measured.
  seen = []
  report = benchmark.run_benchmark(
      tiny(lengths=(3, 4), methods=("jit_step",)),
      on_progress=lambda partial: seen.append(
          [(r["length"], r["status"]) for r in partial.rows]))
  # After the first setting; after the last, the report itself is the whole.
  assert seen == [[(3, "ok")]]
  assert [r["length"] for r in report.rows] == [3, 4]


def test_the_matmul_ceilings_use_each_cells_width_under_num_params(
    monkeypatch):
  # With --num_params each cell has its own width (the RNN 255, the GRU
  # 148): the ceiling at its recurrent shape is [B, H] x [H, G*H] with that
  # H, not the base's 128.
  shapes = []
  monkeypatch.setattr(benchmark, "matmul_gflops",
                      lambda rows, inner, cols: shapes.append(
                          (rows, inner, cols)) or 1.0)
  base = train.RunConfig(num_params=67850)
  peaks = benchmark.matmul_peaks(benchmark.BenchmarkConfig(
      cells=("rnn", "gru"), base=base))
  assert shapes[1:] == [(128, 148, 3 * 148), (128, 255, 255)]
  assert [p["shape"] for p in peaks[1:]] == ["128x148 @ 148x444",
                                             "128x255 @ 255x255"]
  assert [p["cells"] for p in peaks[1:]] == [["gru"], ["rnn"]]


def test_the_report_of_cells_sized_by_num_params_says_so():
  base = train.RunConfig(num_params=67850)
  bench = benchmark.Report(
      machine={"device_kind": "cpu", "backend": "cpu", "processor": "X",
               "cpu_count": 2, "jax": "0", "devices": ["cpu:0"],
               "pinned_cores": None},
      settings={"train_config": base.training_settings(), "repeats": 3,
                "steps": 20, "eager_steps": 3, "cells": ["rnn"],
                "lengths": [100], "methods": ["compiled_loop"]},
      matmul_peaks=[{"shape": "128x255 @ 255x255", "hidden": 255,
                     "width": 255, "cells": ["rnn"], "gflops": 50.0}],
      rows=[])
  text = benchmark_report.report_lib.benchmark_report(bench)
  assert ("- batch 128, each cell at the width closest to 67,850 parameters"
          in text)
  assert "128x255 @ 255x255 50.0 GFLOP/s (rnn)" in text
  assert benchmark_report.report_lib.benchmark_title(bench).startswith(
      "Training steps per second, batch 128, 67,850 parameters\n")
