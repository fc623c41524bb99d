"""experiments/gpu_block.sh, the prepared command for a lent GPU: the
commands it would run (DRY=1), its tiny settings (QUICK=1) and a recipe it
refuses before anything runs. Its real runs need a GPU and minutes."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join("experiments", "recipes")


def _block(**env):
  return subprocess.run(
      ["bash", "experiments/gpu_block.sh"], cwd=REPO, capture_output=True,
      text=True, timeout=60,
      env={**os.environ, "DRY": "1", "PY": "python", "OUT": "/o", **env})


def test_each_recipe_runs_its_own_tool_into_its_committed_directory():
  done = _block(RECIPES=" ".join(
      os.path.join(RECIPES, r) for r in ("horizon_moonshot.flags",
                                         "new_cells_2layers.flags")))
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == [
      "python -m experiments.horizon"
      " --flagfile=experiments/recipes/horizon_moonshot.flags"
      " --results_dir=experiments/results/horizon_moonshot",
      "python -m experiments.sweep"
      " --flagfile=experiments/recipes/new_cells_2layers.flags"
      " --results_dir=experiments/results/new_cells_2layers"]


def test_the_quick_run_writes_out_of_the_tree_at_tiny_sizes():
  done = _block(QUICK="1", RECIPES=" ".join(
      os.path.join(RECIPES, r) for r in ("horizon_equal_params.flags",
                                         "new_cells_2layers.flags")))
  assert done.returncode == 0, done.stderr
  search, sweep = [line.split() for line in done.stdout.splitlines()]
  assert "--results_dir=/o/quick/horizon_equal_params" in search
  assert "--results_dir=/o/quick/new_cells_2layers" in sweep
  assert {"--train_steps=100", "--batch_size=16"} <= set(search) & set(sweep)
  # A recipe sized by --num_params keeps it: --num_hidden beside it is refused.
  assert "--num_hidden=16" not in search and "--num_hidden=16" in sweep
  assert "--max_length=6" in search and "--lengths=3,4" in sweep


def test_a_recipe_of_another_tool_is_refused_before_anything_runs():
  done = _block(DRY="", RECIPES=" ".join(
      os.path.join(RECIPES, r) for r in ("horizon_moonshot.flags",
                                         "benchmark_cpu.flags")))
  assert done.returncode == 2
  assert done.stdout == ""
  assert done.stderr.strip() == (
      "gpu_block: experiments/recipes/benchmark_cpu.flags: its '# tool:' "
      "line names 'experiments.benchmark', not experiments.sweep or "
      "experiments.horizon")
  assert not os.path.exists("/o")
