"""The sweep: every cell at every length and seed, with results that survive.

Each run (cell, length, seed) trains as its own compiled program, side by
side with others over the devices. The moment it finishes, its row, training
history and final parameters are written (:mod:`palindrome_jax.results`);
rerunning the same command skips what finished and trains the rest. Summary files (``results.json``,
``results.csv``, ``results.md`` and the plots) are rebuilt from ``runs/`` at
the end, so they always cover every finished run in the directory.
"""

import contextlib
import csv
import dataclasses
import io as std_io
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from palindrome_jax import config as config_lib
from palindrome_jax import devices as devices_lib
from palindrome_jax import io
from palindrome_jax import progress as progress_lib
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import train
from palindrome_jax.results import ROW_FIELDS, Run

TrainFn = Callable[..., train.GroupResult]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The runs of a sweep: ``cells`` x ``lengths`` x ``seeds`` of ``base``.

  ``vmap_seeds`` trains the seeds of one (cell, length) as one program
  (``jax.vmap``, split over devices when they divide evenly): faster on an
  accelerator, but then a seed's numbers depend on the program it shares.
  Off (the default), every seed is its own program, so a run's numbers are
  the same whatever the devices and the other seeds.
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


class StopRequest:
  """Set by the first Ctrl-C (SIGINT) or SIGTERM: runs stop at the end of
  their chunk, their checkpoints saved.

  SIGTERM is how schedulers and ``kill`` ask a job to stop before they kill
  it. A second signal exits at once (status 128 + its number).
  """

  SIGNALS = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminated (SIGTERM)"}

  def __init__(self):
    self.event = threading.Event()
    self.signum: Optional[int] = None

  def __call__(self) -> bool:
    return self.event.is_set()

  @property
  def exit_status(self) -> int:
    """128 + the signal's number, the shell's convention (130 for Ctrl-C)."""
    return 128 + (self.signum or signal.SIGINT)

  @contextlib.contextmanager
  def on_signals(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return

    def handler(signum, frame):
      del frame
      if self.event.is_set():
        print("\ninterrupted again: exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)  # pylint: disable=protected-access
      self.signum = signum
      self.event.set()
      again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
      print(f"\n{self.SIGNALS[signum]}: stopping every run at the end of its "
            f"chunk ({again} again to exit now)", file=sys.stderr, flush=True)

    previous = {signum: signal.signal(signum, handler)
                for signum in self.SIGNALS}
    try:
      yield self
    finally:
      for signum, before in previous.items():
        signal.signal(signum, before)


class Interrupted(Exception):
  """The sweep stopped at a Ctrl-C; what finished is saved."""


@dataclasses.dataclass
class Outcome:
  """What one call trained: every row in the directory, and this call's."""

  rows: list[dict]
  new_rows: list[dict]
  interrupted: bool = False
  write_errors: list[str] = dataclasses.field(default_factory=list)

  @property
  def counts(self) -> dict[str, int]:
    return results_lib.status_counts(self.new_rows)


def _row(program: train.GroupResult, seed_result: train.SeedResult,
         num_params: int) -> dict[str, Any]:
  cfg = program.config
  return {
      "cell": cfg.cell, "length": cfg.length, "seed": seed_result.seed,
      "status": seed_result.status,
      "test_accuracy": seed_result.test_accuracy,
      "test_loss": seed_result.test_loss,
      "steps_to_solve": seed_result.steps_to_solve,
      "final_train_loss": seed_result.final_train_loss,
      "final_train_accuracy": seed_result.final_train_accuracy,
      "train_steps": seed_result.train_steps,
      "wall_seconds": program.wall_seconds,
      "compile_seconds": program.compile_seconds,
      "steps_per_second": program.steps_per_second,
      "num_params": num_params,
      "seeds_in_program": len(program.seeds),
      "history": seed_result.history,
  }


def programs_of(runs: Sequence[Run], vmap_seeds: bool) -> list[tuple[Run, ...]]:
  """The runs grouped into programs: one run each, or with ``vmap_seeds``
  every seed of a (cell, length) together."""
  if not vmap_seeds:
    return [(run,) for run in runs]
  groups = {}
  for run in runs:
    groups.setdefault((run.cell, run.length), []).append(run)
  return [tuple(group) for group in groups.values()]


def train_runs(runs: Sequence[Run], base: train.RunConfig,
               results: results_lib.ResultsDir,
               pool: devices_lib.DevicePool,
               vmap_seeds: bool = False, checkpoint_every: int = 0,
               train_fn: TrainFn = train.train_and_evaluate,
               stop: Callable[[], bool] = lambda: False,
               progress: Optional[progress_lib.Progress] = None,
               outcome: Optional[Outcome] = None) -> dict[Run, dict]:
  """Trains the ``runs`` not finished in ``results``; returns every run's
  record (finished earlier or now) by run. A run claimed by another process
  is left to it (skipped here, never trained twice).

  Each program that raises is recorded as failed and the others go on; a
  failure to write a trained run's files is logged with the path, counted
  in ``outcome.write_errors``, and leaves the run untrained on disk.
  """
  outcome = outcome if outcome is not None else Outcome([], [])
  records, todo = {}, []
  for run in runs:
    record = results.finished(run)
    if record is not None:
      records[run] = record
    else:
      todo.append(run)
  programs = programs_of(todo, vmap_seeds)
  costs = {p: _expected_cost(dataclasses.replace(
      base, cell=p[0].cell, length=p[0].length)) * len(p) for p in programs}
  own_progress = progress is None
  if own_progress:
    progress = progress_lib.Progress(sum(costs.values()))
  if len(todo) < len(runs):
    progress.message(f"{len(runs) - len(todo)} of {len(runs)} runs finished "
                     "earlier, skipped")
  lock = threading.Lock()

  def run_program(program: tuple[Run, ...], devices) -> None:
    cfg = dataclasses.replace(base, cell=program[0].cell,
                              length=program[0].length)
    seeds = tuple(run.seed for run in program)
    cost = costs[program]
    if stop():
      return
    with contextlib.ExitStack() as stack:
      claimed = [stack.enter_context(results.claim(run)) for run in program]
      if not all(claimed):
        progress.message(f"{cfg.cell} N={cfg.length} seeds {list(seeds)}: "
                         "being trained by another process, skipped")
        progress.skip(cost)
        return
      # Another process may have finished some of them since they were
      # listed, and released its claim: those are kept, not trained again.
      done = {run: results.finished(run) for run in program}
      done = {run: record for run, record in done.items() if record}
      if done:
        with lock:
          records.update(done)
        progress.message(f"{cfg.cell} N={cfg.length} seeds "
                         f"{[run.seed for run in done]}: finished by "
                         "another process, skipped")
        progress.skip(cost * len(done) / len(program))
        cost *= 1 - len(done) / len(program)
        program = tuple(run for run in program if run not in done)
        seeds = tuple(run.seed for run in program)
        if not program:
          return
      label = (f"{cfg.cell} N={cfg.length} seed"
               f"{'s' * (len(seeds) > 1)} {','.join(map(str, seeds))}")
      run_progress = progress.start_run(program, label, cfg.train_steps,
                                        cost)
      on_log = lambda info: run_progress.update(
          info["step"], results_lib.finite_mean(info["loss"]),
          results_lib.finite_mean(info["accuracy"]), info["steps_per_second"])
      checkpoint = (results.checkpoint_file(program) if checkpoint_every
                    else None)
      try:
        group = train_fn(cfg, seeds, on_log=on_log, checkpoint_path=checkpoint,
                         checkpoint_every=checkpoint_every, devices=devices,
                         should_stop=stop)
      except train.Interrupted:
        run_progress.finish(f"{label}: interrupted"
                            + (" (checkpoint saved)" if checkpoint else ""))
        return
      except Exception as error:  # pylint: disable=broad-except
        # One failing run (say, out of memory) must not cost the others.
        logging.error("%s N=%d failed:\n%s", cfg.cell, cfg.length,
                      traceback.format_exc())
        for run in program:
          _save(results, run, results_lib.error_row(run, error), None, lock,
                records, outcome)
        run_progress.finish(f"{label}: {records[program[0]]['status']}"
                            if program[0] in records else None)
        return
      num_params = sum(np.size(x) for x in
                       jax.tree.leaves(group.seeds[0].params))
      for run, seed_result in zip(program, group.seeds):
        _save(results, run, _row(group, seed_result, num_params),
              seed_result.params, lock, records, outcome)
      if len(program) > 1 and all(run in records for run in program):
        results.remove_checkpoint(program)
      resumed = (f" (continued from the checkpoint at step "
                 f"{group.resumed_from})" if group.resumed_from else "")
      run_progress.finish("; ".join(
          f"{run.name}: {_run_summary(records.get(run))}" for run in program)
                          + resumed)

  # Longest first: when programs run side by side, the last to finish is then
  # a short one and no device idles long at the end.
  programs.sort(key=lambda p: -costs[p])
  try:
    if vmap_seeds and len(pool) > 1 and all(
        len(p) % len(pool) == 0 for p in programs):
      for program in programs:  # Each program's seeds split over all devices.
        with pool.all_devices() as devices:
          run_program(program, devices)
    else:
      pool.map(lambda p, device: run_program(p, [device]), programs)
  finally:
    if own_progress:
      progress.close()
  return records


def _save(results, run, row, params, lock, records, outcome) -> None:
  try:
    results.save_run(run, row, params)
  except OSError as error:
    message = (f"cannot save {run.name}: {error.strerror or error} "
               f"({error.filename or results.root})")
    logging.error("%s", message)
    with lock:
      outcome.write_errors.append(message)
    return
  with lock:
    records[run] = {**row, "settings": results.settings}
    outcome.new_rows.append(row)


def _run_summary(record: Optional[dict]) -> str:
  if record is None:
    return "not saved"
  steps = record.get("steps_to_solve")
  return (f"{record['status']}, test accuracy "
          f"{report.percent(record.get('test_accuracy'))}%, solved at "
          f"{steps if steps is not None else report.MISSING}, "
          f"{report.seconds(record.get('wall_seconds'))}")


def run_sweep(sweep: SweepConfig, results_dir: str, overwrite: bool = False,
              devices: Optional[Sequence[jax.Device]] = None,
              train_fn: TrainFn = train.train_and_evaluate,
              stop: Optional[Callable[[], bool]] = None) -> Outcome:
  """Trains every run not yet finished in ``results_dir``; writes summaries.

  Runs go side by side over ``devices`` (default: every local device), one
  program per device (see :class:`SweepConfig` for ``vmap_seeds``). Returns
  every row in the directory (see :data:`ROW_FIELDS`) and this call's.
  """
  results = results_lib.ResultsDir(
      results_dir, sweep.training_settings(),
      defaults=config_lib.absent_settings())
  pool = devices_lib.DevicePool(devices or jax.local_devices())
  outcome = Outcome([], [])
  stop = stop or (lambda: False)
  with results.open(overwrite, config={
      "cells": list(sweep.cells), "lengths": list(sweep.lengths),
      "seeds": list(sweep.seeds), "checkpoint_every": sweep.checkpoint_every,
      "vmap_seeds": sweep.vmap_seeds}):
    # In a multi-process run each process trains its share of the runs
    # (longest first, dealt out in turn) into the shared directory; process 0
    # writes the summaries once every process is done.
    train_runs(devices_lib.process_share(longest_first(sweep.runs(),
                                                      sweep.base)),
               sweep.base, results, pool, vmap_seeds=sweep.vmap_seeds,
               checkpoint_every=sweep.checkpoint_every, train_fn=train_fn,
               stop=stop, outcome=outcome)
    devices_lib.barrier(f"sweep-done-{results.root}")
    outcome.interrupted = stop()
    outcome.rows = results.all_runs()
    if jax.process_index() == 0:
      write_summaries(outcome.rows, results)
  return outcome


def longest_first(runs: Sequence[Run], base: train.RunConfig) -> list[Run]:
  """``runs`` by expected cost, longest first (ties in a fixed order)."""
  costs = {}
  for run in runs:
    if (run.cell, run.length) not in costs:
      costs[run.cell, run.length] = _expected_cost(dataclasses.replace(
          base, cell=run.cell, length=run.length))
  return sorted(runs, key=lambda r: (-costs[r.cell, r.length], r))


def _expected_cost(cfg: train.RunConfig) -> float:
  """Relative training time: steps x length x the cell's parameter count."""
  init = cfg.make_cell().init
  shapes = jax.eval_shape(lambda key: init(key, cfg.input_dim, cfg.num_hidden),
                          jax.random.PRNGKey(0))
  size = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  return float(cfg.train_steps) * cfg.length * float(size)


def write_summaries(rows: list[dict], results: results_lib.ResultsDir) -> str:
  """``results.json``, ``results.csv``, ``results.md`` and the plots."""
  from palindrome_jax import plots  # pylint: disable=g-import-not-at-top
  io.write_json(results.path("results.json"), rows)
  buffer = std_io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  io.atomic_write_text(results.path("results.csv"), buffer.getvalue())
  table = summary_table(rows)
  config = results_lib.read_json_or_move_aside(results.path("config.json"))
  io.atomic_write_text(results.path("results.md"), report.sweep_report(
      rows, {**(config or {}), "training_settings": results.settings}))
  plots.accuracy_vs_length(rows, results.path("accuracy_vs_length.png"))
  plots.steps_to_solve(rows, results.path("steps_to_solve.png"),
                       budget=results.settings["train_steps"])
  plots.training_curves(rows, results.path("training_curves.png"))
  return table


def summary_table(rows: list[dict]) -> str:
  """Markdown: test accuracy (%) per cell x length, mean ± std over seeds."""
  return report.accuracy_table(rows)
