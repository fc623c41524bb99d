"""Tests for experiments.common: the shared flags, and every entrypoint's."""

import dataclasses

from absl import flags

from experiments import benchmark
from experiments import common
from experiments import compare
from experiments import evaluate
from experiments import gradients
from experiments import horizon
from experiments import migrate
from experiments import sweep
from palindrome_jax import cli
from palindrome_jax import config
from palindrome_jax import sweep as sweep_lib

# Every entrypoint imports beside the others (tests run them in one process).
ENTRYPOINTS = (sweep, horizon, gradients, compare, evaluate, benchmark,
               migrate)


def test_the_cells_flag_is_the_tools_cells_field():
  assert flags.FLAGS["cells"].default == "rnn,lstm"
  assert flags.FLAGS["cells"].help == {
      f.name: f for f in dataclasses.fields(sweep_lib.SweepConfig)}[
          "cells"].metadata["help"]


def test_every_training_setting_is_a_shared_flag():
  assert set(common.SHARED) >= {
      cli.flag_name(config.RunConfig, f.name)
      for f in dataclasses.fields(config.RunConfig)
      if f.metadata.get("help") and f.name not in ("cell", "length")}


def test_each_entrypoints_help_lists_every_flag_it_reads():
  for module in ENTRYPOINTS:
    command = module.COMMAND
    text = command.help_text()
    assert text.startswith(module.__doc__.strip()), module.__name__
    assert text.endswith("--helpfull lists absl's own flags too.")
    own = command.own_flags()
    assert "results_dir" in own, module.__name__
    for name in {*own, *command.shared}:
      flag = command.flag_values[name]
      default = ("" if flag.default is None or name in command.defaults
                 else f" (default: {flag.default_as_str})")  # Its own below.
      # Its help and default, wrapped at 79 columns as one paragraph.
      assert f"--{name}: {flag.help}{default}" in " ".join(
          line.strip() for line in text.splitlines()), (module.__name__, name)
    assert all(len(line) <= 79 for line in text.splitlines())
  assert set(sweep.COMMAND.shared) == set(common.SHARED)
  assert compare.COMMAND.shared == ()  # It trains nothing.
  assert "stop_when_solved" not in evaluate.COMMAND.shared


def test_tools_keep_their_own_results_dir_and_defaults():
  dirs = {m.__name__: m.COMMAND.flag_values["results_dir"].default
          for m in ENTRYPOINTS}
  assert dirs == {
      "experiments.sweep": "results", "experiments.horizon": "results/horizon",
      "experiments.gradients": "results/gradients",
      "experiments.compare": "results/compare",
      "experiments.evaluate": "results",
      "experiments.benchmark": "benchmark_results",
      "experiments.migrate": None}  # It has no default: name the directory.
  # The search stops a seed once it solves: while the horizon runs only.
  text = " ".join(line.strip()
                  for line in horizon.COMMAND.help_text().splitlines())
  assert "the final test still decides its accuracy). (default: 'true')" in (
      text)
  assert flags.FLAGS["stop_when_solved"].default is False
  assert horizon.COMMAND.flag_values["threshold"].help == (
      "Alias for --solved_accuracy.")
