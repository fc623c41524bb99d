"""The sweep: every cell at every length and seed, with results that survive.

Each run (cell, length, seed) trains as its own compiled program, side by
side with others over the devices (:mod:`palindrome_jax.runner`). The
moment it finishes, its row, training history and final parameters are
written (:mod:`palindrome_jax.results`); rerunning the same command skips
what finished and trains the rest. Summary files (``results.json``,
``results.csv``, ``results.md`` and the plots) are rebuilt from ``runs/`` at
the end, so they always cover every finished run in the directory.
"""

import csv
import dataclasses
import io as std_io
from typing import Any, Callable, Optional, Sequence

import jax

from palindrome_jax import config as config_lib
from palindrome_jax import devices as devices_lib
from palindrome_jax import files as io
from palindrome_jax import plots
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import runner
from palindrome_jax import train
from palindrome_jax.results import ROW_FIELDS, Run


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The runs of a sweep: ``cells`` x ``lengths`` x ``seeds`` of ``base``.

  ``vmap_seeds`` trains the seeds of one (cell, length) as one program
  (``jax.vmap``, split over devices when they divide evenly): faster on an
  accelerator, but then a seed's numbers depend on the program it shares.
  Off (the default), every seed is its own program, so a run's numbers are
  the same whatever the devices and the other seeds. ``profile_dir`` traces
  a few chunks of each program (:mod:`palindrome_jax.profiling`); it is not
  a setting of the runs.
  """

  cells: tuple[str, ...] = config_lib.cells_setting()
  lengths: tuple[int, ...] = config_lib.setting(
      (5, 10, 15, 20), "Comma-separated palindrome lengths N (digits read "
      "before predicting the last).", config_lib.length_tuple)
  seeds: tuple[int, ...] = config_lib.seeds_setting()
  base: train.RunConfig = train.RunConfig()
  checkpoint_every: int = config_lib.setting(
      0, "Save the training state every this many steps (a multiple of "
      "--log_every) so a killed run continues from there; 0: never.",
      config_lib.non_negative_int)
  vmap_seeds: bool = config_lib.setting(False, devices_lib.VMAP_SEEDS_HELP)
  # Not a setting of the runs: traced or not, they train the same.
  profile_dir: Optional[str] = config_lib.profile_dir_setting()

  def __post_init__(self):
    config_lib.check_fields(self)
    if self.checkpoint_every % self.base.log_every:
      raise config_lib.ConfigError(
          "checkpoint_every", f"{self.checkpoint_every} is not a multiple of "
          f"--log_every ({self.base.log_every})")

  def runs(self) -> list[Run]:
    return [Run(c, n, s) for c in self.cells for n in self.lengths
            for s in self.seeds]

  def training_settings(self) -> dict[str, Any]:
    """What must match for runs to share a results directory."""
    return self.base.training_settings()


def run_sweep(sweep: SweepConfig, results_dir: str, overwrite: bool = False,
              devices: Optional[Sequence[jax.Device]] = None,
              train_fn: runner.TrainFn = train.train_and_evaluate,
              stop: Optional[Callable[[], bool]] = None) -> runner.Outcome:
  """Trains every run not yet finished in ``results_dir``; writes summaries.

  Runs go side by side over ``devices`` (default: every local device), one
  program per device (see :class:`SweepConfig` for ``vmap_seeds``). Returns
  every row in the directory (see :data:`ROW_FIELDS`) and this call's. With
  ``sweep.profile_dir``, each program traces a few chunks there
  (:func:`runner.train_runs`).
  """
  outcome = runner.Outcome([], [])
  stop = stop or (lambda: False)
  config = {"cells": list(sweep.cells), "lengths": list(sweep.lengths),
            "seeds": list(sweep.seeds),
            "checkpoint_every": sweep.checkpoint_every,
            "vmap_seeds": sweep.vmap_seeds}
  with runner.open_results(results_dir, sweep.base, "a sweep", overwrite,
                           config, devices) as (results, pool):
    # In a multi-process run each process trains its share of the runs
    # (longest first, dealt out in turn) into the shared directory; process 0
    # writes the summaries once every process is done, from what is on disk.
    runner.share_then_replay(
        lambda runs: runner.train_runs(
            runs, sweep.base, results, pool, vmap_seeds=sweep.vmap_seeds,
            checkpoint_every=sweep.checkpoint_every, train_fn=train_fn,
            stop=stop, outcome=outcome, profile_dir=sweep.profile_dir),
        runner.longest_first(sweep.runs(), sweep.base),
        f"sweep-done-{results.root}", replay=False)
    outcome.interrupted = stop()
    outcome.rows = results.all_runs()
    if jax.process_index() == 0:
      outcome.write_errors += write_summaries(outcome.rows, results)
  return outcome


def write_summaries(rows: list[dict],
                    results: results_lib.ResultsDir) -> list[str]:
  """``results.json``, ``results.csv``, ``results.md`` and the plots. Each
  is written whole or not at all (the one before is kept); returns a line
  for each that could not be written (a full disk), each logged."""
  buffer = std_io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  config = results_lib.read_json_or_move_aside(results.path("config.json"))
  return results_lib.write_each({
      "results.json": lambda path: io.write_json(path, rows),
      "results.csv": lambda path: io.atomic_write_text(path,
                                                       buffer.getvalue()),
      "results.md": lambda path: io.atomic_write_text(path, report.sweep_report(
          rows, {**(config or {}), "training_settings": results.settings})),
      "accuracy_vs_length.png": lambda path: plots.accuracy_vs_length(rows,
                                                                      path),
      "steps_to_solve.png": lambda path: plots.steps_to_solve(
          rows, path, budget=results.settings["train_steps"]),
      "training_curves.png": lambda path: plots.training_curves(rows, path),
  }, results.root)


def summary_table(rows: list[dict]) -> str:
  """Markdown: test accuracy (%) per cell x length, mean ± std over seeds."""
  return report.accuracy_table(rows)
