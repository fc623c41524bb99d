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
import math
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from palindrome_jax import devices as devices_lib
from palindrome_jax import io
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

  cells: tuple[str, ...] = ("rnn", "lstm")
  lengths: tuple[int, ...] = (5, 10, 15, 20)
  seeds: tuple[int, ...] = (42,)
  base: train.RunConfig = train.RunConfig()
  checkpoint_every: int = 0
  vmap_seeds: bool = False

  def runs(self) -> list[Run]:
    return [Run(c, n, s) for c in self.cells for n in self.lengths
            for s in self.seeds]

  def training_settings(self) -> dict[str, Any]:
    """What must match for runs to share a results directory."""
    return self.base.training_settings()


class StopRequest:
  """Set by the first Ctrl-C (SIGINT): runs stop at the end of their chunk.

  A second Ctrl-C exits at once (status 130).
  """

  def __init__(self):
    self.event = threading.Event()

  def __call__(self) -> bool:
    return self.event.is_set()

  @contextlib.contextmanager
  def on_sigint(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return

    def handler(signum, frame):
      del signum, frame
      if self.event.is_set():
        print("\ninterrupted again: exiting now", file=sys.stderr, flush=True)
        os._exit(130)  # pylint: disable=protected-access
      self.event.set()
      print("\ninterrupt: stopping every run at the end of its chunk (Ctrl-C "
            "again to exit now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
      yield self
    finally:
      signal.signal(signal.SIGINT, previous)


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


def finite_mean(values) -> float:
  """Mean of the finite values (NaN, inf and None left out); NaN if none."""
  values = np.asarray([np.nan if v is None else v for v in values], float)
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else math.nan


def format_seconds(seconds: Optional[float]) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "–"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
  """Logs which run, step, loss, accuracy, steps/s and ETAs."""

  def __init__(self, costs: dict[Any, float]):
    # Work is weighted by the expected cost of each program (steps x length
    # x parameters), so the ETA does not assume every run is as fast.
    self.costs = dict(costs)
    self.total_work = sum(self.costs.values())
    self.start = time.perf_counter()
    self.lock = threading.Lock()
    self.finished = {}
    self.running = {}
    self.count = 0

  def _done_work(self) -> float:
    return sum(self.finished.values()) + sum(self.running.values())

  def callback(self, key, cfg: train.RunConfig, seeds):
    program_start = time.perf_counter()
    with self.lock:
      self.count += 1
      number = self.count

    def on_log(info):
      step = info["step"]
      with self.lock:
        self.running[key] = self.costs[key] * step / cfg.train_steps
        done_work = self._done_work()
      run_elapsed = time.perf_counter() - program_start
      run_eta = (info["steps_per_second"] and
                 (cfg.train_steps - step) / info["steps_per_second"])
      rate = done_work / max(time.perf_counter() - self.start, 1e-9)
      sweep_eta = (self.total_work - done_work) / max(rate, 1e-9)
      logging.info(
          "[%d] %s N=%d seeds=%s step %d/%d  loss %.4f  acc %.3f  "
          "%.0f steps/s  run %s (ETA %s)  all ETA %s",
          number, cfg.cell, cfg.length, ",".join(map(str, seeds)), step,
          cfg.train_steps, finite_mean(info["loss"]),
          finite_mean(info["accuracy"]), info["steps_per_second"],
          format_seconds(run_elapsed), format_seconds(run_eta),
          format_seconds(sweep_eta))

    def finish():
      with self.lock:
        self.running.pop(key, None)
        self.finished[key] = self.costs[key]

    return on_log, finish

  def skip(self, key):
    with self.lock:
      self.total_work -= self.costs.pop(key, 0.0)


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
               progress: Optional[_Progress] = None,
               outcome: Optional[Outcome] = None) -> dict[Run, dict]:
  """Trains the ``runs`` not finished in ``results``; returns every run's
  record (finished earlier or now) by run. Runs claimed by another process
  are waited for, not trained twice.

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
  if len(todo) < len(runs):
    logging.info("%d of %d runs finished earlier, skipped",
                 len(runs) - len(todo), len(runs))
  programs = programs_of(todo, vmap_seeds)
  if progress is None:
    progress = _Progress({p: _expected_cost(dataclasses.replace(
        base, cell=p[0].cell, length=p[0].length)) * len(p)
                          for p in programs})
  lock = threading.Lock()

  def run_program(program: tuple[Run, ...], devices) -> None:
    cfg = dataclasses.replace(base, cell=program[0].cell,
                              length=program[0].length)
    seeds = tuple(run.seed for run in program)
    if stop():
      return
    with contextlib.ExitStack() as stack:
      claimed = [stack.enter_context(results.claim(run)) for run in program]
      if not all(claimed):
        logging.info("%s N=%d seeds %s: being trained by another process, "
                     "skipped", cfg.cell, cfg.length, list(seeds))
        progress.skip(program)
        return
      on_log, finish = progress.callback(program, cfg, seeds)
      checkpoint = (results.checkpoint_file(program[0])
                    if checkpoint_every and len(program) == 1 else None)
      try:
        group = train_fn(cfg, seeds, on_log=on_log, checkpoint_path=checkpoint,
                         checkpoint_every=checkpoint_every, devices=devices,
                         should_stop=stop)
      except train.Interrupted:
        finish()
        return
      except Exception as error:  # pylint: disable=broad-except
        # One failing run (say, out of memory) must not cost the others.
        logging.error("%s N=%d failed:\n%s", cfg.cell, cfg.length,
                      traceback.format_exc())
        for run in program:
          _save(results, run, results_lib.error_row(run, error), None, lock,
                records, outcome)
        finish()
        return
      finish()
      num_params = sum(np.size(x) for x in
                       jax.tree.leaves(group.seeds[0].params))
      for run, seed_result in zip(program, group.seeds):
        _save(results, run, _row(group, seed_result, num_params),
              seed_result.params, lock, records, outcome)
        logging.info("%s: %s", run.name, _run_summary(records.get(run)))

  # Longest first: when programs run side by side, the last to finish is then
  # a short one and no device idles long at the end.
  programs.sort(key=lambda p: -progress.costs.get(p, 0.0))
  if vmap_seeds and len(pool) > 1 and all(
      len(p) % len(pool) == 0 for p in programs):
    for program in programs:  # Each program's seeds split over all devices.
      with pool.all_devices() as devices:
        run_program(program, devices)
  else:
    pool.map(lambda p, device: run_program(p, [device]), programs)
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
          f"{_percent(record.get('test_accuracy'))}%, solved at "
          f"{steps if steps is not None else '–'}, "
          f"{format_seconds(record.get('wall_seconds'))}")


def _percent(value) -> str:
  if value is None or not isinstance(value, (int, float)) or not math.isfinite(
      value):
    return "–"
  return f"{100 * value:.2f}"


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
      defaults=train.RunConfig().training_settings())
  pool = devices_lib.DevicePool(devices or jax.local_devices())
  outcome = Outcome([], [])
  stop = stop or (lambda: False)
  with results.open(overwrite, config={
      "cells": list(sweep.cells), "lengths": list(sweep.lengths),
      "seeds": list(sweep.seeds), "checkpoint_every": sweep.checkpoint_every,
      "vmap_seeds": sweep.vmap_seeds}):
    train_runs(sweep.runs(), sweep.base, results, pool,
               vmap_seeds=sweep.vmap_seeds,
               checkpoint_every=sweep.checkpoint_every, train_fn=train_fn,
               stop=stop, outcome=outcome)
    outcome.interrupted = stop()
    outcome.rows = results.all_runs()
    write_summaries(outcome.rows, results)
  return outcome


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
  io.atomic_write_text(results.path("results.md"), table)
  plots.accuracy_vs_length(rows, results.path("accuracy_vs_length.png"))
  plots.training_curves(rows, results.path("training_curves.png"))
  return table


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and x is not None and math.isfinite(x)


def summary_table(rows: list[dict]) -> str:
  """Markdown: test accuracy (%) per cell x length, mean ± std over seeds.

  Runs that diverged or failed are counted beside the mean, never averaged in.
  """
  cells = sorted({r["cell"] for r in rows})
  lengths = sorted({r["length"] for r in rows})
  lines = ["Test accuracy (%), mean ± std over seeds",
           "",
           "| cell | " + " | ".join(f"N={n}" for n in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  for cell in cells:
    entries = []
    for n in lengths:
      runs = [r for r in rows if r["cell"] == cell and r["length"] == n]
      entries.append(_table_entry(runs))
    lines.append(f"| {cell} | " + " | ".join(entries) + " |")
  return "\n".join(lines) + "\n"


def _table_entry(runs: list[dict]) -> str:
  if not runs:
    return "–"
  ok = [100 * r["test_accuracy"] for r in runs
        if r["status"] == "ok" and _is_number(r["test_accuracy"])]
  diverged = sum(r["status"].startswith("diverged") for r in runs)
  failed = sum(r["status"].startswith("error") for r in runs)
  parts = []
  if ok:
    mean = float(np.mean(ok))
    parts.append(f"{mean:.2f} ± {float(np.std(ok)):.2f}" if len(ok) > 1
                 else f"{mean:.2f}")
  if diverged:
    parts.append(f"{diverged} diverged")
  if failed:
    parts.append(f"{failed} failed")
  if len(ok) != len(runs) and ok:
    parts[0] += f" (n={len(ok)})"
  return ", ".join(parts)
