"""The memory horizon: the longest palindrome a cell learns within a budget.

For each cell, the horizon is the largest length ``N`` at which the mean test
accuracy over the seeds reaches a threshold after ``train_steps`` steps (every
seed must also have finished without diverging). Lengths are searched by
doubling from ``min_length`` until one fails or ``max_length`` is reached,
then by bisecting between the last pass and the first fail, so a horizon
costs ``O(log max_length)`` trainings. The search assumes that passing is
monotone in ``N`` (what is hard at ``N`` is harder at ``2N``); every length
tried is recorded with its per-seed accuracies, so a reader can check.

``horizon.json`` is rewritten after every training; rerunning the same
command in the same directory reuses what it holds and trains only the rest.
"""

import dataclasses
import json
import math
import os
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from palindrome_jax import io
from palindrome_jax import train
from palindrome_jax.sweep import mismatch_error

TrainFn = Callable[..., train.GroupResult]


@dataclasses.dataclass(frozen=True)
class HorizonConfig:
  """What to search: ``cells``, each trained as ``base`` over ``seeds``."""

  cells: tuple[str, ...] = ("rnn", "lstm")
  seeds: tuple[int, ...] = (42,)
  base: train.RunConfig = train.RunConfig()
  threshold: float = 0.99
  min_length: int = 5
  max_length: int = 200

  def settings(self) -> dict[str, Any]:
    """Everything but the cells: what must match to reuse earlier results."""
    training = self.base.training_settings()
    return json.loads(json.dumps({
        "threshold": self.threshold, "min_length": self.min_length,
        "max_length": self.max_length, "seeds": list(self.seeds),
        "training": training}))


def search(passes: Callable[[int], bool], min_length: int,
           max_length: int) -> Optional[int]:
  """The largest ``N`` in ``[min_length, max_length]`` with ``passes(N)``.

  Doubles ``N`` from ``min_length`` (the last try is ``max_length`` itself)
  until a fail, then bisects between the last pass and that fail. None if
  ``min_length`` fails. Assumes ``passes`` is monotone (true, then false).
  """
  if not 1 <= min_length <= max_length:
    raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, "
                     f"{max_length}")
  if not passes(min_length):
    return None
  last_pass = min_length
  while last_pass < max_length:
    n = min(2 * last_pass, max_length)
    if not passes(n):
      first_fail = n
      break
    last_pass = n
  else:
    return max_length
  while first_fail - last_pass > 1:
    mid = (last_pass + first_fail) // 2
    if passes(mid):
      last_pass = mid
    else:
      first_fail = mid
  return last_pass


def evaluate_length(cfg: train.RunConfig, seeds: tuple[int, ...],
                    threshold: float,
                    train_fn: TrainFn = train.train_and_evaluate,
                    **train_kwargs) -> dict:
  """Trains ``cfg`` over ``seeds``; the record of one length tried.

  ``train_kwargs`` (``on_log``, ``devices``) go to ``train_fn``.
  """
  group = train_fn(cfg, seeds, **train_kwargs)
  accuracies = [r.test_accuracy for r in group.seeds]
  statuses = [r.status for r in group.seeds]
  finite = all(a is not None and math.isfinite(a) for a in accuracies)
  mean = float(np.mean(accuracies)) if finite else math.nan
  return {
      "length": cfg.length,
      "mean_accuracy": mean,
      "passed": bool(finite and all(s == "ok" for s in statuses)
                     and mean >= threshold),
      "accuracies": [float(a) for a in accuracies],
      "statuses": statuses,
      "train_steps": group.train_steps,
      "wall_seconds": group.wall_seconds,
  }


def cell_horizon(cell: str, config: HorizonConfig,
                 evaluations: dict[int, dict],
                 train_fn: TrainFn = train.train_and_evaluate,
                 on_evaluation: Callable[[], None] = lambda: None,
                 devices: Optional[Sequence[Any]] = None) -> dict:
  """Searches ``cell``'s horizon; ``evaluations`` (length -> record) holds the
  lengths already tried, is reused, and gains each new one, after which
  ``on_evaluation`` runs (to save them). ``devices`` hold the seeds (see
  :func:`train.train_and_evaluate`)."""
  order = []

  def passes(n: int) -> bool:
    order.append(n)
    if n not in evaluations:
      cfg = dataclasses.replace(config.base, cell=cell, length=n)
      logging.info("%s N=%d: training %d steps, seeds %s", cell, n,
                   cfg.train_steps, list(config.seeds))
      evaluations[n] = evaluate_length(cfg, config.seeds, config.threshold,
                                       train_fn, on_log=log_progress(cfg),
                                       devices=devices)
      on_evaluation()
    record = evaluations[n]
    logging.info("%s N=%d: mean test accuracy %s%%, %s", cell, n,
                 _percent(record["mean_accuracy"]),
                 "pass" if record["passed"] else "fail")
    return record["passed"]

  horizon = search(passes, config.min_length, config.max_length)
  return {"cell": cell, "horizon": horizon,
          "message": _message(horizon, config), "search_order": order}


def _message(horizon: Optional[int], config: HorizonConfig) -> str:
  threshold = f"{100 * config.threshold:g}%"
  if horizon is None:
    return (f"does not reach {threshold} even at the shortest length, "
            f"N={config.min_length}")
  if horizon == config.max_length:
    return (f"reaches {threshold} up to --max_length={config.max_length}; "
            "the horizon may be longer")
  return f"reaches {threshold} up to N={horizon}, not at N={horizon + 1}"


class ResultsFile:
  """``horizon.json``: the settings, and per cell its lengths tried and its
  horizon, rewritten atomically whenever it changes."""

  def __init__(self, results_dir: str, config: HorizonConfig,
               overwrite: bool = False):
    self.path = os.path.join(results_dir, "horizon.json")
    self._lock = threading.Lock()
    self.content = {"settings": config.settings(), "cells": {}}
    if not os.path.exists(self.path):
      return
    previous = io.read_json(self.path)
    if previous.get("settings") == self.content["settings"]:
      self.content["cells"] = previous.get("cells", {})
    elif not overwrite:
      raise mismatch_error(results_dir, "a horizon search",
                           _flat(previous.get("settings") or {}),
                           _flat(self.content["settings"]))

  def evaluations(self, cell: str) -> dict[int, dict]:
    """The lengths tried for ``cell`` so far, by length."""
    with self._lock:
      entry = self.content["cells"].setdefault(cell, {"evaluations": []})
      return {e["length"]: e for e in entry["evaluations"]}

  def update(self, cell: str, evaluations: dict[int, dict],
             result: Optional[dict] = None) -> None:
    with self._lock:  # Cells may be searched in parallel threads.
      entry = self.content["cells"].setdefault(cell, {})
      entry["evaluations"] = [evaluations[n] for n in sorted(evaluations)]
      if result is not None:
        entry.update(result)
      io.write_json(self.path, self.content)


def _flat(settings: dict) -> dict:
  """The settings with the training fields at the top level."""
  return {**{k: v for k, v in settings.items() if k != "training"},
          **settings.get("training", {})}


def run_horizon(config: HorizonConfig, results_dir: str,
                overwrite: bool = False,
                train_fn: TrainFn = train.train_and_evaluate,
                devices: Optional[Sequence[Any]] = None) -> dict:
  """Every cell's horizon; writes ``horizon.json``, ``horizon.md`` and
  ``horizon.png`` in ``results_dir``. Returns the JSON's content.

  A cell whose training raises is recorded with the error and the next cell
  runs; what it had finished is kept for the rerun.
  """
  from palindrome_jax import plots  # pylint: disable=g-import-not-at-top
  results = ResultsFile(results_dir, config, overwrite)
  devices = list(devices or jax.devices()[:1])

  def search_cell(index, cell, cell_devices):
    start = time.perf_counter()
    logging.info("[%d/%d] %s: searching N in [%d, %d]", index + 1,
                 len(config.cells), cell, config.min_length, config.max_length)
    evaluations = results.evaluations(cell)
    save = lambda cell=cell, evaluations=evaluations: results.update(
        cell, evaluations)
    try:
      result = cell_horizon(cell, config, evaluations, train_fn, save,
                            cell_devices)
    except Exception as error:  # pylint: disable=broad-except
      logging.error("%s failed:\n%s", cell, traceback.format_exc())
      message = f"{type(error).__name__}: {error}".splitlines()[0]
      result = {"cell": cell, "horizon": None, "message": f"error: {message}"}
    result["search_seconds"] = time.perf_counter() - start
    results.update(cell, evaluations, result)
    logging.info("%s: %s", cell, result["message"])

  # Each cell's search is sequential; different cells may run side by side.
  train.map_on_devices(lambda i, d: search_cell(i, config.cells[i], d),
                       range(len(config.cells)), devices, len(config.seeds))
  content = results.content
  io.atomic_write_text(os.path.join(results_dir, "horizon.md"),
                       summary_table(content))
  plots.horizon(content, os.path.join(results_dir, "horizon.png"))
  return content


def log_progress(cfg: train.RunConfig) -> Callable[[dict], None]:
  """An ``on_log`` for :func:`train.train_and_evaluate`: one line a chunk."""

  def on_log(info):
    logging.info("%s N=%d step %d/%d  loss %.4f  acc %.3f  %.0f steps/s",
                 cfg.cell, cfg.length, info["step"], cfg.train_steps,
                 float(np.nanmean(info["loss"])),
                 float(np.nanmean(info["accuracy"])), info["steps_per_second"])
  return on_log


def summary_table(content: dict) -> str:
  """Markdown: per cell its horizon and every length tried."""
  settings = content["settings"]
  seeds = settings["seeds"]
  steps = settings["training"]["train_steps"]
  lines = [
      f"Memory horizon: the largest N whose mean test accuracy over "
      f"{len(seeds)} seed{'s' * (len(seeds) > 1)} reaches "
      f"{100 * settings['threshold']:g}% within {steps} training steps "
      f"(N searched in [{settings['min_length']}, {settings['max_length']}]).",
      "",
      "| cell | horizon | lengths tried: mean test accuracy (%) | seeds | "
      "budget (steps) |",
      "|---|---|---|---|---|"]
  for cell, entry in content["cells"].items():
    tried = ", ".join(
        f"{e['length']}: {_percent(e['mean_accuracy'])} "
        f"{'✓' if e['passed'] else '✗'}" for e in entry["evaluations"])
    lines.append(f"| {cell} | {_horizon_text(entry, settings)} | "
                 f"{tried or '–'} | {len(seeds)} | {steps} |")
  notes = [f"- {cell}: {entry['message']}"
           for cell, entry in content["cells"].items() if "message" in entry]
  return "\n".join(lines + [""] + notes) + "\n"


def _horizon_text(entry: dict, settings: dict) -> str:
  if "message" not in entry:
    return "unfinished"
  if entry["message"].startswith("error"):
    return "error"
  horizon = entry.get("horizon")
  if horizon is None:
    return f"< {settings['min_length']}"
  if horizon == settings["max_length"]:
    return f"≥ {horizon}"
  return str(horizon)


def _percent(value) -> str:
  if value is None or not math.isfinite(value):
    return "?"
  return f"{100 * value:.1f}"
