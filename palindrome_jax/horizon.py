"""The memory horizon: the longest palindrome a cell learns within a budget.

A seed *solves* length ``N`` when, without diverging, it passes a solve check:
``solved_accuracy`` on held-out batches, confirmed on ``confirm_batches`` more
(its ``steps_to_solve``; see :func:`palindrome_jax.train.train_and_evaluate`).
The final test (the 100 fresh batches of the sweep) is reported beside it but
does not decide: with ``stop_when_solved`` a run stops just past the bar, so an
independent test of the same parameters lands within its noise of the bar,
either side, and deciding on it would turn that noise into failed lengths.
Checks run every ``eval_every`` steps, so the budget must hold one.

The horizon of a cell is the largest ``N`` that every seed solves within
``train_steps``. Lengths are searched by doubling from
``min_length`` until one fails or ``max_length`` is reached, then by bisecting
between the last pass and the first fail, so a horizon costs
``O(log max_length)`` trainings. The search assumes that passing is monotone
in ``N`` (what is hard at ``N`` is harder at ``2N``); every length tried is
recorded with each seed's accuracy and steps to solve, so a reader can check.

Each run is kept in the results directory (:mod:`palindrome_jax.results`) the
moment it finishes, and long runs are checkpointed: rerunning the same
command replays the search over what is on disk and trains only the rest.
Searches of different cells go side by side, sharing the devices run by run.
"""

import dataclasses
import os
import threading
import time
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
from palindrome_jax import sweep
from palindrome_jax import train
from palindrome_jax.results import Run

TrainFn = Callable[..., train.GroupResult]


@dataclasses.dataclass(frozen=True)
class HorizonConfig:
  """What to search: ``cells``, each trained as ``base`` over ``seeds``."""

  cells: tuple[str, ...] = config_lib.cells_setting()
  seeds: tuple[int, ...] = config_lib.seeds_setting()
  base: train.RunConfig = train.RunConfig(stop_when_solved=True)
  min_length: int = config_lib.setting(
      5, "Shortest N tried; the search doubles from here.",
      config_lib.positive_int)
  max_length: int = config_lib.setting(200, "Longest N tried.",
                                   config_lib.positive_int)
  resolution: int = config_lib.setting(
      1, "Stop bisecting once the last length passed and the first failed "
      "are this close: 1 finds the exact horizon; 10 reports it as "
      "'>= a, < b' with b - a <= 10, for fewer long trainings.",
      config_lib.positive_int)
  checkpoint_every: int = config_lib.setting(
      1000, "Save each run's training state every this many steps (a "
      "multiple of --log_every), so a killed search continues mid-run; 0: "
      "never.", config_lib.non_negative_int)
  vmap_seeds: bool = config_lib.setting(False, devices_lib.VMAP_SEEDS_HELP)

  def __post_init__(self):
    config_lib.check_fields(self)
    if self.max_length < self.min_length:
      raise config_lib.ConfigError(
          "max_length", f"{self.max_length} is below --min_length "
          f"({self.min_length})")
    if self.checkpoint_every % self.base.log_every:
      raise config_lib.ConfigError(
          "checkpoint_every", f"{self.checkpoint_every} is not a multiple of "
          f"--log_every ({self.base.log_every})")
    if self.base.eval_every > self.base.train_steps:
      raise config_lib.ConfigError(
          "eval_every", f"{self.base.eval_every} is beyond --train_steps "
          f"({self.base.train_steps}): a run solves a length at a solve "
          "check, so the budget must hold one")

  @property
  def threshold(self) -> float:
    return self.base.solved_accuracy

  def settings(self) -> dict[str, Any]:
    """The search's settings, as ``horizon.json`` records them."""
    return results_lib.jsonable({
        "threshold": self.threshold, "min_length": self.min_length,
        "max_length": self.max_length, "resolution": self.resolution,
        "seeds": list(self.seeds),
        "training": self.base.training_settings()})


def search(passes: Callable[[int], bool], min_length: int,
           max_length: int, resolution: int = 1) -> Optional[int]:
  """The largest ``N`` in ``[min_length, max_length]`` with ``passes(N)``.

  Doubles ``N`` from ``min_length`` (the last try is ``max_length`` itself)
  until a fail, then bisects between the last pass and that fail until they
  are ``resolution`` apart (1: adjacent, the exact answer; more: the last
  pass, a lower bound within ``resolution`` of it). None if ``min_length``
  fails. Assumes ``passes`` is monotone (true, then false).
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
  while first_fail - last_pass > max(resolution, 1):
    mid = (last_pass + first_fail) // 2
    if passes(mid):
      last_pass = mid
    else:
      first_fail = mid
  return last_pass


# How often a search checks on a seed that another process is training.
WAIT_POLL_SECONDS = 10.0


class RunFailed(RuntimeError):
  """A run of the search raised; a rerun retries it."""


def length_record(length: int, records: Sequence[Optional[dict]]) -> dict:
  """What one length tried says: each seed's outcome, how many solved (at a
  confirmed solve check, see the module doc), and whether all did (a seed
  with no record counts as not solved; the search awaits one that another
  process is training, see :func:`run_horizon`)."""
  records = [r or {"status": "missing", "test_accuracy": None} for r in records]
  accuracies = [r.get("test_accuracy") for r in records]
  solved = [r["status"] == "ok" and r.get("steps_to_solve") is not None
            for r in records]
  return {
      "length": length,
      "seeds": [r.get("seed") for r in records],
      "accuracies": accuracies,
      "statuses": [r["status"] for r in records],
      "steps_to_solve": [r.get("steps_to_solve") for r in records],
      "train_steps": [r.get("train_steps") for r in records],
      "solved": solved,
      "fraction_solved": sum(solved) / len(solved),
      "mean_accuracy": results_lib.finite_mean(accuracies),
      "passed": all(solved),
      "wall_seconds": sum(r.get("wall_seconds") or 0.0 for r in records),
  }


def cell_horizon(cell: str, config: HorizonConfig,
                 train_length: Callable[[int], list[Optional[dict]]],
                 on_evaluation: Callable[[dict], None] = lambda e: None,
                 on_message: Callable[[str], None] = logging.info) -> dict:
  """Searches ``cell``'s horizon. ``train_length(N)`` returns every seed's
  record at ``N`` (from disk, or trained now); ``on_evaluation`` receives
  each length's record as it is known."""
  order, failed = [], []

  def passes(n: int) -> bool:
    order.append(n)
    record = length_record(n, train_length(n))
    if not record["passed"]:
      failed.append(n)
    on_evaluation(record)
    on_message(f"{cell} N={n}: {sum(record['solved'])}/"
               f"{len(record['solved'])} seeds solved, mean test accuracy "
               f"{report.percent(record['mean_accuracy'], 1)}%: "
               f"{'pass' if record['passed'] else 'fail'}")
    return record["passed"]

  found = search(passes, config.min_length, config.max_length,
                 config.resolution)
  return {"cell": cell, "horizon": found,
          "message": _message(found, config, _first_fail(found, failed)),
          "search_order": order}


def _first_fail(found: Optional[int], failed: Sequence[int]) -> Optional[int]:
  """The shortest failed length above ``found``: the horizon's upper bound."""
  above = [n for n in failed if found is not None and n > found]
  return min(above) if above else None


def _message(found: Optional[int], config: HorizonConfig,
             first_fail: Optional[int] = None) -> str:
  threshold = f"{100 * config.threshold:g}%"
  if found is None:
    return (f"not every seed solves ({threshold}) even at the shortest "
            f"length, N={config.min_length}")
  if found == config.max_length:
    return (f"every seed solves ({threshold}) up to --max_length="
            f"{config.max_length}; the horizon may be longer")
  first_fail = first_fail or found + 1
  between = ("" if first_fail == found + 1 else
             f" (the lengths between are not searched: --resolution="
             f"{config.resolution})")
  return (f"every seed solves ({threshold}) up to N={found}, not at "
          f"N={first_fail}{between}")


def _earlier_cells(json_path: str, config: HorizonConfig) -> dict:
  """The cells an earlier search in this directory found and this one does
  not search again, so that ``horizon.json`` keeps them: those searched with
  the same settings (a directory's runs all share the training settings;
  the seeds and range of lengths may differ)."""
  earlier = results_lib.read_json_or_move_aside(json_path)
  if not isinstance(earlier, dict) or not isinstance(earlier.get("cells"),
                                                     dict):
    return {}
  others = {cell: entry for cell, entry in earlier["cells"].items()
            if cell not in config.cells}
  if others and _with_defaults(earlier.get("settings")) != config.settings():
    logging.warning(
        "%s: not kept in horizon.json: %s, searched with other settings; "
        "search again with these to include them (their runs are reused)",
        json_path, ", ".join(others))
    return {}
  return others


def _with_defaults(settings: Any) -> Any:
  """Search settings as this version records them: one written before
  ``resolution`` existed searched exactly (1)."""
  if not isinstance(settings, dict):
    return settings
  return {"resolution": 1, **settings}


def run_horizon(config: HorizonConfig, results_dir: str,
                overwrite: bool = False,
                train_fn: TrainFn = train.train_and_evaluate,
                devices: Optional[Sequence[Any]] = None,
                stop: Callable[[], bool] = lambda: False) -> dict:
  """Every cell's horizon; writes ``horizon.json``, ``horizon.md`` and
  ``horizon.png`` in ``results_dir``. Returns the JSON's content.

  A cell whose search raises is recorded with the error and the other cells
  go on; the runs it had finished are kept for the rerun.
  """
  results = results_lib.ResultsDir(results_dir,
                                   config.base.training_settings(),
                                   what="a horizon search",
                                   defaults=config_lib.absent_settings())
  pool = devices_lib.DevicePool(devices or jax.local_devices())
  lock = threading.Lock()
  json_path = os.path.join(results_dir, "horizon.json")
  content = {"settings": config.settings(),
             "cells": _earlier_cells(json_path, config)}

  def save(cell, evaluation=None, result=None):
    with lock:  # Cells are searched in parallel threads.
      entry = content["cells"].setdefault(cell, {"evaluations": []})
      if evaluation is not None:
        kept = [e for e in entry["evaluations"]
                if e["length"] != evaluation["length"]]
        entry["evaluations"] = sorted(kept + [evaluation],
                                      key=lambda e: e["length"])
      if result is not None:
        entry.update(result)
      if jax.process_index() == 0:
        io.write_json(json_path, content)

  def search_cell(cell):
    start = time.perf_counter()
    save(cell)

    def train_length(n):
      runs = [Run(cell, n, seed) for seed in config.seeds]
      if stop():
        raise sweep.Interrupted
      def train_these(todo):
        outcome = sweep.Outcome([], [])
        records = sweep.train_runs(
            todo, config.base, results, pool, vmap_seeds=config.vmap_seeds,
            checkpoint_every=config.checkpoint_every, train_fn=train_fn,
            stop=stop, progress=progress, outcome=outcome)
        if stop():
          raise sweep.Interrupted
        if outcome.write_errors:  # Trained, but no record: not a result.
          raise RunFailed(outcome.write_errors[0])
        return records

      records = train_these(runs)
      # Any seed still without a record was claimed by another process (the
      # same command started twice on one directory). Deciding N without it
      # would count it as failed: it is awaited, and trained here if that
      # process lets it go without a record (it stopped).
      while missing := [run for run in runs if records.get(run) is None]:
        waiting = [run for run in missing if results.claimed_elsewhere(run)]
        if waiting:
          progress.message(f"{cell} N={n}: waiting for "
                           f"{', '.join(run.name for run in waiting)}, "
                           "trained by another process")
        while not stop() and any(results.finished(run) is None and
                                 results.claimed_elsewhere(run)
                                 for run in waiting):
          time.sleep(WAIT_POLL_SECONDS)
        records.update(train_these(missing))
      for run in runs:
        status = (records.get(run) or {}).get("status", "")
        if status.startswith("error"):  # Not a result: the search stops.
          raise RunFailed(f"{run.name}: {status.removeprefix('error: ')}")
      return [records.get(run) for run in runs]

    try:
      result = cell_horizon(cell, config, train_length,
                            lambda e: save(cell, evaluation=e),
                            progress.message)
    except sweep.Interrupted:
      return
    except Exception as error:  # pylint: disable=broad-except
      logging.error("%s failed:\n%s", cell, traceback.format_exc())
      message = (str(error) if isinstance(error, RunFailed) else
                 f"{type(error).__name__}: {error}").splitlines()[0]
      result = {"cell": cell, "horizon": None, "message": f"error: {message}"}
    result["search_seconds"] = time.perf_counter() - start
    save(cell, result=result)
    progress.message(f"{cell}: {result['message']}")

  progress = progress_lib.Progress(title="horizon search")
  with results.open(overwrite, config={"cells": list(config.cells),
                                       "seeds": list(config.seeds)}):
    try:
      # In a multi-process run each process searches its share of the
      # cells; process 0 then replays every search over the runs on disk
      # (nothing left to train) to write the summaries.
      devices_lib.run_side_by_side(search_cell,
                                   devices_lib.process_share(config.cells))
      devices_lib.barrier(f"horizon-done-{results.root}")
      if jax.process_count() > 1 and jax.process_index() == 0:
        devices_lib.run_side_by_side(search_cell, config.cells)
    finally:
      progress.close()
    if jax.process_index() != 0:
      return content
    write_summaries(content, results_dir, results.all_runs())
  return content


def write_summaries(content: dict, results_dir: str, runs: list[dict]) -> None:
  """``horizon.md``, ``horizon.png`` and ``steps_to_solve.png`` from a
  search's content (``horizon.json``) and its runs."""
  from palindrome_jax import plots  # pylint: disable=g-import-not-at-top
  io.atomic_write_text(os.path.join(results_dir, "horizon.md"),
                       markdown_report(content))
  plots.horizon(content, os.path.join(results_dir, "horizon.png"))
  tried = {(cell, e["length"]) for cell, entry in content["cells"].items()
           for e in entry["evaluations"]}
  plots.steps_to_solve(
      [r for r in runs if (r["cell"], r["length"]) in tried],
      os.path.join(results_dir, "steps_to_solve.png"),
      budget=content["settings"]["training"]["train_steps"],
      title="Steps to solve, lengths searched")


def summary_table(content: dict) -> str:
  """Markdown: per cell its horizon and every length tried, with the seeds
  that solved it and their median steps to solve."""
  settings = content["settings"]
  seeds = settings["seeds"]
  steps = settings["training"]["train_steps"]
  confirm = settings["training"].get("confirm_batches", 0)
  lines = [
      f"Memory horizon: the largest N that every one of {len(seeds)} "
      f"seed{'s' * (len(seeds) > 1)} solves (a solve check ≥ "
      f"{100 * settings['threshold']:g}% on held-out batches"
      + (f", confirmed on {confirm} more" if confirm else "") + ") within "
      f"{steps} training steps "
      f"(N searched in [{settings['min_length']}, {settings['max_length']}]).",
      "",
      "| cell | horizon | N tried: seeds solved (median steps to solve) |",
      "|---|---|---|"]
  for cell, entry in content["cells"].items():
    tried = ", ".join(tried_text(e) for e in entry["evaluations"])
    lines.append(f"| {cell} | {horizon_text(entry, settings)} | "
                 f"{tried or '–'} |")
  notes = [f"- {cell}: {entry['message']}"
           for cell, entry in content["cells"].items() if "message" in entry]
  return "\n".join(lines + [""] + notes) + "\n"


def markdown_report(content: dict) -> str:
  """``horizon.md``: the table, the figures, and the settings."""
  settings = content["settings"]
  lines = ["# Memory horizon", "", summary_table(content),
           "![accuracy against N, horizons starred](horizon.png)", "",
           "![steps to solve against N](steps_to_solve.png)", "",
           "## Every length tried", ""]
  for cell, entry in content["cells"].items():
    for e in entry["evaluations"]:
      steps = [report.MISSING if x is None else str(x)
               for x in e["steps_to_solve"]]
      lines.append(
          f"- {cell} N={e['length']} (seeds "
          f"{', '.join(str(x) for x in e['seeds'])}): test accuracy "
          f"{', '.join(report.percent(a) for a in e['accuracies'])} %; "
          f"steps to solve {', '.join(steps)}; "
          f"{', '.join(sorted(set(e['statuses'])))}")
  lines += ["", "## Settings", "",
            *report.table(["setting", "value"], [
                [k, v] for k, v in sorted(settings["training"].items())]),
            ""]
  return "\n".join(lines)


def tried_text(e: dict) -> str:
  solved_steps = [s for s in e.get("steps_to_solve", []) if s is not None]
  median = (f" ({int(np.median(solved_steps))})" if solved_steps else "")
  return (f"{e['length']}: {sum(e['solved'])}/{len(e['solved'])}{median} "
          f"{'✓' if e['passed'] else '✗'}")


def horizon_text(entry: dict, settings: dict) -> str:
  if "message" not in entry:  # Still searching: the bounds found so far.
    passed = [e["length"] for e in entry["evaluations"] if e["passed"]]
    if not passed:
      return "unfinished"
    failed = [e["length"] for e in entry["evaluations"] if not e["passed"]
              and e["length"] > max(passed)]
    upper = f", < {min(failed)}" if failed else ""
    return f"≥ {max(passed)}{upper} so far"
  if entry["message"].startswith("error"):
    return "error"
  found = entry.get("horizon")
  if found is None:
    return f"< {settings['min_length']}"
  if found == settings["max_length"]:
    return f"≥ {found}"
  first_fail = _first_fail(found, [e["length"] for e in entry["evaluations"]
                                   if not e["passed"]])
  if first_fail is not None and first_fail > found + 1:  # --resolution.
    return f"≥ {found}, < {first_fail}"
  return str(found)
