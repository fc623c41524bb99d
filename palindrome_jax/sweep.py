"""The sweep: every cell at every length and seed, with results that survive.

Each (cell, length) trains all its seeds as one compiled program. The moment
it finishes, each seed's row, training history and final parameters are
written atomically under ``runs/`` and ``params/``; rerunning the same command
skips what finished and trains the rest. Summary files (``results.json``,
``results.csv``, ``results.md`` and the plots) are rebuilt from ``runs/`` at
the end, so they always cover every finished run in the directory.
"""

import csv
import dataclasses
import io as std_io
import math
import os
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import logging
import flax.serialization
import jax
import numpy as np

from palindrome_jax import io
from palindrome_jax import train

ROW_FIELDS = ("cell", "length", "seed", "status", "test_accuracy", "test_loss",
              "final_train_loss", "final_train_accuracy", "train_steps",
              "wall_seconds", "compile_seconds", "steps_per_second",
              "num_params", "seeds_in_group")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The runs of a sweep: ``cells`` x ``lengths`` x ``seeds`` of ``base``."""

  cells: tuple[str, ...] = ("rnn", "lstm")
  lengths: tuple[int, ...] = (5, 10, 15, 20)
  seeds: tuple[int, ...] = (42,)
  base: train.RunConfig = train.RunConfig()
  checkpoint_every: int = 0

  def run_configs(self) -> list[train.RunConfig]:
    return [dataclasses.replace(self.base, cell=c, length=n)
            for c in self.cells for n in self.lengths]

  def training_settings(self) -> dict[str, Any]:
    """What must match for two sweeps to share a results directory."""
    return self.base.training_settings()


def run_name(cell: str, length: int, seed: int) -> str:
  return f"{cell}_N{length}_seed{seed}"


class ResultsDir:
  """The layout of a results directory."""

  def __init__(self, root: str):
    self.root = root

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  def run_file(self, cell: str, length: int, seed: int) -> str:
    return self.path("runs", run_name(cell, length, seed) + ".json")

  def params_file(self, cell: str, length: int, seed: int) -> str:
    return self.path("params", run_name(cell, length, seed) + ".msgpack")

  def checkpoint_file(self, cfg: train.RunConfig, seeds) -> str:
    seed_part = "-".join(str(s) for s in seeds)
    return self.path("checkpoints",
                     f"{cfg.cell}_N{cfg.length}_seeds{seed_part}.msgpack")

  def finished_run(self, cell: str, length: int, seed: int) -> Optional[dict]:
    """The saved record of a run that finished (ok or diverged), else None."""
    path = self.run_file(cell, length, seed)
    if not os.path.exists(path):
      return None
    record = io.read_json(path)
    return None if record["status"].startswith("error") else record

  def all_runs(self) -> list[dict]:
    runs_dir = self.path("runs")
    if not os.path.isdir(runs_dir):
      return []
    records = [io.read_json(os.path.join(runs_dir, name))
               for name in sorted(os.listdir(runs_dir))
               if name.endswith(".json")]
    return sorted(records, key=lambda r: (r["cell"], r["length"], r["seed"]))


class ConfigMismatchError(ValueError):
  """The results directory holds a sweep with other training settings."""


def mismatch_error(root: str, what: str, previous: dict,
                   current: dict) -> ConfigMismatchError:
  """The error for a directory holding ``what`` made with other settings,
  naming the settings that differ."""
  changed = sorted(k for k in set(previous) | set(current)
                   if previous.get(k) != current.get(k))
  return ConfigMismatchError(
      f"{root} holds {what} with other settings ({', '.join(changed)}); use "
      "--overwrite to replace it, or another --results_dir")


def check_results_dir(sweep: SweepConfig, results: ResultsDir,
                      overwrite: bool) -> None:
  """Refuses to mix training settings in one directory, unless ``overwrite``:
  then the previous sweep (runs, parameters, checkpoints, config) is removed.
  A sweep with the same settings is always continued, never removed."""
  config_path = results.path("config.json")
  if not os.path.exists(config_path):
    return
  previous = io.read_json(config_path).get("training_settings") or {}
  current = _jsonable(sweep.training_settings())
  if previous == current:
    return
  if not overwrite:
    raise mismatch_error(results.root, "a sweep", previous, current)
  import shutil  # pylint: disable=g-import-not-at-top
  for sub in ("runs", "params", "checkpoints"):
    shutil.rmtree(results.path(sub), ignore_errors=True)
  os.remove(config_path)


def _jsonable(value):
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(value))


def write_config(sweep: SweepConfig, results: ResultsDir) -> None:
  previous = {}
  if os.path.exists(results.path("config.json")):
    previous = io.read_json(results.path("config.json"))
  merged = lambda key, new: sorted(set(previous.get(key, [])) | set(new))
  io.write_json(results.path("config.json"), {
      "cells": merged("cells", sweep.cells),
      "lengths": merged("lengths", sweep.lengths),
      "seeds": merged("seeds", sweep.seeds),
      "checkpoint_every": sweep.checkpoint_every,
      "training_settings": _jsonable(sweep.training_settings()),
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
  })


def _row(group: train.GroupResult, seed_result: train.SeedResult,
         num_params: int) -> dict[str, Any]:
  cfg = group.config
  return {
      "cell": cfg.cell, "length": cfg.length, "seed": seed_result.seed,
      "status": seed_result.status,
      "test_accuracy": seed_result.test_accuracy,
      "test_loss": seed_result.test_loss,
      "final_train_loss": seed_result.final_train_loss,
      "final_train_accuracy": seed_result.final_train_accuracy,
      "train_steps": group.train_steps,
      "wall_seconds": group.wall_seconds,
      "compile_seconds": group.compile_seconds,
      "steps_per_second": group.steps_per_second,
      "num_params": num_params,
      "seeds_in_group": len(group.seeds),
      "history": seed_result.history,
  }


def _error_row(cfg: train.RunConfig, seed: int, error: BaseException) -> dict:
  message = f"{type(error).__name__}: {error}".splitlines()[0]
  row = {field: math.nan for field in ROW_FIELDS}
  row.update(cell=cfg.cell, length=cfg.length, seed=seed,
             status=f"error: {message}", train_steps=0, seeds_in_group=1,
             history={"step": [], "loss": [], "accuracy": []})
  return row


def _finite_mean(values) -> float:
  """Mean over the seeds that have not diverged (NaN if none)."""
  values = np.asarray(values, float)
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else math.nan


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
  """Logs which run, step, loss, accuracy, steps/s and ETAs."""

  def __init__(self, groups: list[train.RunConfig]):
    # Work is weighted by the expected cost of each group (steps x length x
    # parameters), so the ETA does not assume every run is as fast.
    self.costs = [_expected_cost(c) for c in groups]
    self.total_work = sum(self.costs)
    self.num_groups = len(groups)
    self.start = time.perf_counter()
    self.lock = threading.Lock()
    self.finished = {}  # Group index -> its work, once finished.
    self.running = {}  # Group index -> its work so far.

  def _done_work(self) -> float:
    return sum(self.finished.values()) + sum(self.running.values())

  def callback(self, index: int, cfg: train.RunConfig, seeds):
    group_start = time.perf_counter()

    def on_log(info):
      step = info["step"]
      with self.lock:
        self.running[index] = self.costs[index] * step / cfg.train_steps
        done_work = self._done_work()
      run_elapsed = time.perf_counter() - group_start
      run_eta = (info["steps_per_second"] and
                 (cfg.train_steps - step) / info["steps_per_second"])
      rate = done_work / max(time.perf_counter() - self.start, 1e-9)
      sweep_eta = (self.total_work - done_work) / max(rate, 1e-9)
      loss = _finite_mean(info["loss"])
      accuracy = _finite_mean(info["accuracy"])
      logging.info(
          "[%d/%d] %s N=%d seeds=%s step %d/%d  loss %.4f  acc %.3f  "
          "%.0f steps/s  run %s (ETA %s)  sweep ETA %s",
          index + 1, self.num_groups, cfg.cell, cfg.length,
          ",".join(map(str, seeds)), step, cfg.train_steps,
          loss, accuracy,
          info["steps_per_second"], _format_seconds(run_elapsed),
          _format_seconds(run_eta), _format_seconds(sweep_eta))

    def finish(skipped: bool = False):
      with self.lock:
        self.running.pop(index, None)
        if skipped:  # Done in an earlier session: not this one's work.
          self.total_work -= self.costs[index]
        else:
          self.finished[index] = self.costs[index]

    return on_log, finish


def run_sweep(sweep: SweepConfig, results_dir: str, overwrite: bool = False,
              devices: Optional[Sequence[jax.Device]] = None,
              train_fn: Callable[..., train.GroupResult] =
              train.train_and_evaluate) -> list[dict]:
  """Trains every run not yet finished in ``results_dir``; writes summaries.

  With several ``devices`` (default: all of the default backend), a group's
  seeds are split over them when they divide evenly; otherwise whole groups
  run concurrently, one per device (on a CPU forced to expose one device per
  core, that puts every core to work). Returns the rows of every run in the
  directory (see :data:`ROW_FIELDS`).
  """
  results = ResultsDir(results_dir)
  check_results_dir(sweep, results, overwrite)
  write_config(sweep, results)
  devices = list(devices or jax.devices())
  groups = sweep.run_configs()
  progress = _Progress(groups)

  def run_group(index: int, cfg: train.RunConfig, group_devices) -> None:
    todo = tuple(s for s in sweep.seeds
                 if results.finished_run(cfg.cell, cfg.length, s) is None)
    on_log, finish = progress.callback(index, cfg, todo)
    done = sorted(set(sweep.seeds) - set(todo))
    if done:
      logging.info("[%d/%d] %s N=%d: seeds %s finished earlier, skipped",
                   index + 1, len(groups), cfg.cell, cfg.length, done)
    if not todo:
      finish(skipped=True)
      return
    checkpoint = (results.checkpoint_file(cfg, todo)
                  if sweep.checkpoint_every else None)
    try:
      group = train_fn(cfg, todo, on_log=on_log, checkpoint_path=checkpoint,
                       checkpoint_every=sweep.checkpoint_every,
                       devices=group_devices)
    except Exception as error:  # pylint: disable=broad-except
      # One failing run (say, out of memory) must not cost the others.
      logging.error("%s N=%d failed:\n%s", cfg.cell, cfg.length,
                    traceback.format_exc())
      for seed in todo:
        io.write_json(results.run_file(cfg.cell, cfg.length, seed),
                      _error_row(cfg, seed, error))
      finish()
      return
    finish()
    num_params = sum(np.size(x) for x in
                     jax.tree.leaves(group.seeds[0].params))
    for seed_result in group.seeds:
      io.atomic_write_bytes(
          results.params_file(cfg.cell, cfg.length, seed_result.seed),
          flax.serialization.msgpack_serialize(seed_result.params))
      io.write_json(results.run_file(cfg.cell, cfg.length, seed_result.seed),
                    _row(group, seed_result, num_params))
    if checkpoint and os.path.exists(checkpoint):
      os.remove(checkpoint)

  # Longest first: when groups run side by side, the last to finish is then
  # a short one and no device idles long at the end.
  order = sorted(range(len(groups)), key=lambda i: -progress.costs[i])
  train.map_on_devices(lambda i, d: run_group(i, groups[i], d), order,
                       devices, len(sweep.seeds))
  rows = results.all_runs()
  write_summaries(rows, results)
  return rows


def _expected_cost(cfg: train.RunConfig) -> float:
  """Relative training time: steps x length x the cell's parameter count."""
  init = cfg.make_cell().init
  shapes = jax.eval_shape(lambda key: init(key, cfg.input_dim, cfg.num_hidden),
                          jax.random.PRNGKey(0))
  size = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  return float(cfg.train_steps) * cfg.length * float(size)


def write_summaries(rows: list[dict], results: ResultsDir) -> str:
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
