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
Once a seed fails a length, its seeds not started yet are not trained
(``skip_failed_lengths``): the length has failed whatever they do.

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

from palindrome_jax import config as config_lib
from palindrome_jax import devices as devices_lib
from palindrome_jax import files as io
from palindrome_jax import plots
from palindrome_jax import progress as progress_lib
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import runner
from palindrome_jax import train
from palindrome_jax.results import Run
from palindrome_jax.status import Kind, Status


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
  # Neither changes a run's numbers nor the horizon (not in settings()).
  skip_failed_lengths: bool = config_lib.setting(
      True, "Once a seed fails a length, do not start the seeds still to "
      "train at it: the length has failed whatever they do, and a failing "
      "run costs the whole budget. Its record then holds the seeds that "
      "finished; --noskip_failed_lengths trains them all, for every seed's "
      "count at the failing lengths.")
  # Not a setting of the runs (nor of the search): see SweepConfig.
  profile_dir: Optional[str] = config_lib.profile_dir_setting()

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
  records = [r or {"status": Status.MISSING, "test_accuracy": None}
             for r in records]
  accuracies = [r.get("test_accuracy") for r in records]
  seeds_solved = [results_lib.solved(r) for r in records]
  return {
      "length": length,
      "seeds": [r.get("seed") for r in records],
      "accuracies": accuracies,
      "statuses": [r["status"] for r in records],
      "steps_to_solve": [r.get("steps_to_solve") for r in records],
      "train_steps": [r.get("train_steps") for r in records],
      "solved": seeds_solved,
      "fraction_solved": sum(seeds_solved) / len(seeds_solved),
      "mean_accuracy": results_lib.finite_mean(accuracies),
      "passed": all(seeds_solved),
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
    untrained = len(config.seeds) - len(record["solved"])
    on_message(f"{cell} N={n}: {sum(record['solved'])}/"
               f"{len(record['solved'])} seeds solved"
               + (f" ({untrained} not trained: the length had failed)"
                  if untrained > 0 else "")
               + f", mean test accuracy "
               f"{report.percent(record['mean_accuracy'], 1)}%: "
               f"{'pass' if record['passed'] else 'fail'}")
    return record["passed"]

  found = search(passes, config.min_length, config.max_length,
                 config.resolution)
  return {"cell": cell, "horizon": found,
          "message": _message(found, config, report.first_fail(found, failed)),
          "search_order": order}


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


# horizon.json (format 2): what the tools read from it.
_INT = ("an integer", results_lib.is_int)
_NUMBER = ("a number", results_lib.is_number)
_INTS = ("a list of integers", results_lib.list_of(results_lib.is_int))
SETTINGS_SCHEMA: results_lib.Schema = {
    "threshold": _NUMBER, "min_length": _INT, "max_length": _INT,
    "resolution": _INT, "seeds": _INTS,
    "training": ("an object", lambda v: isinstance(v, dict)),
}
TRAINING_SCHEMA: results_lib.Schema = {
    "train_steps": _INT, "solved_accuracy": _NUMBER, "confirm_batches": _INT}
# A cell's search; "horizon" and "message" once it ended.
ENTRY_SCHEMA: results_lib.Schema = {
    "evaluations": ("a list", lambda v: isinstance(v, list)),
    "horizon": ("an integer or null", results_lib.or_null(results_lib.is_int)),
    "message": ("a string", lambda v: isinstance(v, str)),
}
# A length tried: its lists run over its seeds.
PER_SEED = ("accuracies", "statuses", "steps_to_solve", "solved")
EVALUATION_SCHEMA: results_lib.Schema = {
    "length": _INT, "seeds": _INTS,
    "accuracies": ("a list of numbers or nulls", results_lib.list_of(
        results_lib.or_null(results_lib.is_number))),
    "statuses": ("a list of run statuses",
                 results_lib.list_of(results_lib.is_status)),
    "steps_to_solve": ("a list of integers or nulls", results_lib.list_of(
        results_lib.or_null(results_lib.is_int))),
    "solved": ("a list of booleans",
               results_lib.list_of(lambda v: isinstance(v, bool))),
    "passed": ("a boolean", lambda v: isinstance(v, bool)),
}


def search_problem(content: dict) -> Optional[str]:
  """What makes ``content`` not a search's ``horizon.json`` of this format,
  naming the field (``cells.lstm.evaluations[0].statuses is not ...``);
  None if it is one."""
  if content.get("format_version") != results_lib.FORMAT_VERSION:
    return f"format_version is {content.get('format_version')!r}"
  problem = (results_lib.schema_problem(content["settings"], SETTINGS_SCHEMA,
                                        "settings.")
             or results_lib.schema_problem(content["settings"]["training"],
                                           TRAINING_SCHEMA,
                                           "settings.training."))
  if problem:
    return problem
  for cell, entry in content["cells"].items():
    problem = results_lib.schema_problem(entry, ENTRY_SCHEMA, f"cells.{cell}.",
                                         ("horizon", "message"))
    if problem:
      return problem
    for k, e in enumerate(entry["evaluations"]):
      at = f"cells.{cell}.evaluations[{k}]."
      problem = results_lib.schema_problem(e, EVALUATION_SCHEMA, at)
      if problem:
        return problem
      for field in PER_SEED:
        if len(e[field]) != len(e["seeds"]):
          return (f"{at}{field} has {len(e[field])} entries for "
                  f"{len(e['seeds'])} seed(s)")
  return None


def read_search(path: str) -> dict:
  """A search's ``horizon.json``, checked against its schema, with its
  statuses parsed (:class:`Status`). FileNotFoundError if absent,
  :class:`results.FormatError` if of another format, ValueError naming the
  field if it is not a search's."""
  try:
    content = io.read_json(path)
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not readable JSON "
                     f"({str(error).splitlines()[0]})") from None
  if not (isinstance(content, dict)
          and isinstance(content.get("settings"), dict)
          and isinstance(content.get("cells"), dict)):
    raise ValueError(f"{path} is not a horizon search's (no settings or "
                     "cells)")
  results_lib.check_format(content, path, os.path.dirname(path))
  problem = search_problem(content)
  if problem:
    raise ValueError(f"{path} is not a horizon search's: {problem}")
  return {**content, "cells": {
      cell: {**entry, "evaluations": [
          {**e, "statuses": [Status(s) for s in e["statuses"]]}
          for e in entry["evaluations"]]}
      for cell, entry in content["cells"].items()}}


def sweep_as_search(config: dict, records: Sequence[dict]) -> dict:
  """A sweep's runs read as a horizon search of each cell over the sweep's
  lengths: the content of a ``horizon.json``, its settings naming the lengths
  (``sweep_lengths``). ``config`` is the sweep's ``config.json``;
  ``records`` its runs (:meth:`results.ResultsDir.all_runs`).

  Per cell, its lengths in order, each a :func:`length_record` once every
  seed has finished it. The horizon is the last length before the first that
  not every seed solves (None if that is the shortest; the longest if none
  fails); the lengths past that fail are left out, as a search never tries
  them. A length not finished by every seed yet (absent, or failed with an
  error: a rerun trains it) has failed already if a finished seed failed it:
  its record then holds the finished seeds only, and the message says how
  many finished. Otherwise it ends the evaluations without a message: the
  cell reads as a search under way, with its bound so far. A sweep at the
  search's budget and criterion bounds the horizon between its lengths
  (``≥ 20, < 100``), where a search bisects it."""
  training = config["training_settings"]
  lengths, seeds = sorted(config["lengths"]), list(config["seeds"])
  threshold = training["solved_accuracy"]
  by_run = {(r["cell"], r["length"], r["seed"]): r for r in records}
  cells = {}
  for cell in config["cells"]:
    evaluations, found, first_fail, ended = [], None, None, True
    finished_note = ""
    for n in lengths:
      runs = [by_run.get((cell, n, seed)) for seed in seeds]
      finished = [r for r in runs
                  if r is not None and r["status"].kind is not Kind.ERROR]
      record = length_record(n, finished) if finished else None
      if len(finished) < len(runs):
        if record is None or record["passed"]:  # The rest may still fail.
          ended = False
          break
        # A finished seed failed: so has the length.
        finished_note = (f" ({len(finished)} of {len(seeds)} seeds "
                         "finished)")
      evaluations.append(record)
      if not evaluations[-1]["passed"]:
        first_fail = n
        break
      found = n
    entry = {"cell": cell, "horizon": found if ended else None,
             "evaluations": evaluations,
             "search_order": [e["length"] for e in evaluations]}
    if ended:
      tried = ", ".join(str(n) for n in lengths)
      entry["message"] = (
          f"a sweep of N = {tried}: " + (
              f"not every seed solves ({100 * threshold:g}%) even at the "
              f"shortest, N={lengths[0]}" if found is None else
              f"every seed solves ({100 * threshold:g}%) up to N={found}"
              + (f", not at N={first_fail}" if first_fail else ""))
          + finished_note)
    cells[cell] = entry
  return {"format_version": results_lib.FORMAT_VERSION,
          "settings": {"threshold": threshold, "min_length": lengths[0],
                       "max_length": lengths[-1], "resolution": None,
                       "seeds": seeds, "training": training,
                       "sweep_lengths": lengths},
          "cells": cells}


def read_sweep(directory: str) -> dict:
  """The sweep in ``directory`` read as searches (:func:`sweep_as_search`).
  FileNotFoundError if it holds no sweep's ``config.json`` (none, or a
  search's: one without lengths); :class:`results.FormatError` if of
  another format; ValueError if its ``config.json`` is damaged."""
  path = os.path.join(directory, "config.json")
  try:
    config = io.read_json(path)
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not readable JSON "
                     f"({str(error).splitlines()[0]})") from None
  results_lib.check_format(config, path, directory)
  if (isinstance(config, dict) and "lengths" not in config
      and isinstance(config.get("training_settings"), dict)):
    raise FileNotFoundError(f"{directory} holds a search that has written "
                            "no horizon.json yet")
  if not (isinstance(config, dict) and isinstance(config.get("lengths"), list)
          and isinstance(config.get("training_settings"), dict)
          and config["lengths"] and config.get("cells")
          and config.get("seeds")):
    raise ValueError(f"{directory} has no horizon.json, and its config.json "
                     "is not a sweep's (no cells, lengths, seeds or training "
                     "settings)")
  results = results_lib.ResultsDir(directory, config["training_settings"])
  return sweep_as_search(config, results.all_runs())


def _earlier_cells(json_path: str, config: HorizonConfig,
                   overwrite: bool = False) -> dict:
  """The cells an earlier search in this directory found and this one does
  not search again, so that ``horizon.json`` keeps them: those searched with
  the same settings (a directory's runs all share the training settings;
  the seeds and range of lengths may differ). A ``horizon.json`` that is not
  a search's is moved aside (one warning); one of another format is a
  :class:`results.FormatError`, unless ``overwrite`` replaces it."""
  try:
    earlier = read_search(json_path)
  except FileNotFoundError:
    return {}
  except results_lib.FormatError:
    if overwrite:
      return {}
    raise
  except ValueError as error:
    moved = io.move_aside(json_path)
    logging.warning("%s, moved to %s", error, moved)
    return {}
  others, kept = _other_cells(earlier, config)
  if not kept:
    logging.warning(
        "%s: not kept in horizon.json: %s, searched with other settings; "
        "search again with these to include them (their runs are reused)",
        json_path, ", ".join(others))
    return {}
  return others


def _other_cells(earlier: dict,
                 config: HorizonConfig) -> tuple[dict, bool]:
  """The cells of ``earlier`` (a ``horizon.json``'s content) that
  ``config`` does not search, and whether they can be kept beside its own
  (there are none, or they were searched with ``config``'s settings)."""
  others = {cell: entry for cell, entry in earlier["cells"].items()
            if cell not in config.cells}
  return others, not others or earlier["settings"] == config.settings()


def _merge_in_order(cells: dict, others: dict, order: Sequence[str]) -> None:
  """Adds ``others`` to ``cells`` (in place) and orders them as ``order``
  (the cells as first found on disk, then this search's as given), not as
  their searches (threads) happened to save first: reports and
  ``experiments.compare --labels`` read the cells in this order, so
  continuing one cell's search, or a command beside it writing last, must
  not move it."""
  merged = {**cells, **others}
  cells.clear()
  cells.update({cell: merged[cell] for cell in order if cell in merged})
  cells.update(merged)


def run_horizon(config: HorizonConfig, results_dir: str,
                overwrite: bool = False,
                train_fn: runner.TrainFn = train.train_and_evaluate,
                devices: Optional[Sequence[Any]] = None,
                stop: Callable[[], bool] = lambda: False) -> dict:
  """Every cell's horizon; writes ``horizon.json``, ``horizon.md`` and
  ``horizon.png`` in ``results_dir``. Returns the JSON's content. With
  ``config.profile_dir``, each program traces a few chunks there
  (:func:`runner.train_runs`).

  A cell whose search raises is recorded with the error and the other cells
  go on; the runs it had finished are kept for the rerun.
  """
  json_path = os.path.join(results_dir, "horizon.json")
  content = {"format_version": results_lib.FORMAT_VERSION,
             "settings": config.settings(),
             "cells": _earlier_cells(json_path, config, overwrite)}
  progress = progress_lib.Progress(title="horizon search")
  with runner.open_results(
      results_dir, config.base, "a horizon search", overwrite,
      {"cells": list(config.cells), "seeds": list(config.seeds)},
      devices) as (results, pool):
    searches = _Searches(config, results, pool, train_fn, stop, progress,
                         content, json_path)
    try:
      # In a multi-process run each process searches its share of the
      # cells; process 0 then replays every search over the runs on disk
      # (nothing left to train) to write the summaries.
      runner.share_then_replay(
          lambda cells: devices_lib.run_side_by_side(searches.search, cells),
          config.cells, f"horizon-done-{results.root}")
    finally:
      progress.close()
    if jax.process_index() != 0:
      return content
    searches.write(summaries=True)
  return content


@dataclasses.dataclass
class _Searches:
  """What the searches of one :func:`run_horizon` call share (each cell is
  searched in a thread of its own): the settings, the directory and its
  devices, and ``horizon.json``'s content, kept up to date on disk."""

  config: HorizonConfig
  results: results_lib.ResultsDir
  pool: devices_lib.DevicePool
  train_fn: runner.TrainFn
  stop: Callable[[], bool]
  progress: progress_lib.Progress
  content: dict
  json_path: str
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
  # The cells' order in horizon.json (an ordered set: a cell keeps its
  # first place): as the first write found them on disk, then as
  # searched (see _merge_in_order).
  order: dict = dataclasses.field(default_factory=dict)

  def search(self, cell: str) -> None:
    """Searches ``cell``'s horizon and records it, or the error that ended
    the search; an interrupted search records nothing more."""
    start = time.perf_counter()
    self._save(cell)
    try:
      result = cell_horizon(cell, self.config,
                            lambda n: self._train_length(cell, n),
                            lambda e: self._save(cell, evaluation=e),
                            self.progress.message)
    except runner.Interrupted:
      return
    except Exception as error:  # pylint: disable=broad-except
      logging.error("%s failed:\n%s", cell, traceback.format_exc())
      message = (str(error) if isinstance(error, RunFailed) else
                 f"{type(error).__name__}: {error}").splitlines()[0]
      result = {"cell": cell, "horizon": None, "message": f"error: {message}"}
    result["search_seconds"] = time.perf_counter() - start
    self._save(cell, result=result)
    self.progress.message(f"{cell}: {result['message']}")

  def _save(self, cell: str, evaluation: Optional[dict] = None,
            result: Optional[dict] = None) -> None:
    """Adds a length tried, or the search's result, to ``cell``'s entry."""
    with self.lock:  # Cells are searched in parallel threads.
      entry = self.content["cells"].setdefault(cell, {"evaluations": []})
      if evaluation is not None:
        kept = [e for e in entry["evaluations"]
                if e["length"] != evaluation["length"]]
        entry["evaluations"] = sorted(kept + [evaluation],
                                      key=lambda e: e["length"])
      if result is not None:
        entry.update(result)
      if jax.process_index() == 0:
        self.write()

  def write(self, summaries: bool = False) -> None:
    """Writes ``horizon.json`` (and with ``summaries``, the report and
    plots from the same content), first taking in the cells that another
    command searching other cells in this directory at the same time has
    written there since: whichever writes last keeps every cell, and the
    report on disk reads what ``horizon.json`` holds."""
    with self.results.exclusively():
      try:
        on_disk = read_search(self.json_path)
      except (OSError, ValueError):  # None yet, or one refused at the start.
        on_disk = None
      others = {}
      if on_disk is not None:
        on_disk_others, kept = _other_cells(on_disk, self.config)
        if kept:
          others = on_disk_others
          self.order.update(dict.fromkeys(on_disk["cells"]))
      self.order.update(dict.fromkeys(self.config.cells))
      _merge_in_order(self.content["cells"], others, self.order)
      io.write_json(self.json_path, self.content)
      if summaries:
        write_summaries(self.content, self.results.root,
                        self.results.all_runs())

  def _train_length(self, cell: str, n: int) -> list[dict]:
    """The seeds' records at ``n``: from disk, or trained now. Every seed's,
    unless a seed failed ``n`` and ``skip_failed_lengths`` left the seeds
    not started then untrained (:meth:`_failed_already`): then the finished
    seeds'."""
    runs = [Run(cell, n, seed) for seed in self.config.seeds]
    if self.stop():
      raise runner.Interrupted
    records = self._train(runs)
    # Any seed still without a record was claimed by another process (the
    # same command started twice on one directory). Deciding N without it
    # would count it as failed: it is awaited, and trained here if that
    # process lets it go without a record (it stopped).
    while missing := [run for run in runs if records.get(run) is None]:
      if self._failed_already(missing, records):
        break
      waiting = [run for run in missing
                 if self.results.claimed_elsewhere(run)]
      if waiting:
        self.progress.message(f"{cell} N={n}: waiting for "
                              f"{', '.join(run.name for run in waiting)}, "
                              "trained by another process")
      while not self.stop() and any(
          self.results.finished(run) is None and
          self.results.claimed_elsewhere(run) for run in waiting):
        time.sleep(WAIT_POLL_SECONDS)
      records.update(self._train(missing))
    finished = [run for run in runs if run in records]
    for run in finished:
      status = records[run]["status"]
      if status.kind is Kind.ERROR:  # Not a result: the search stops.
        raise RunFailed(f"{run.name}: {status.message}")
    return [records[run] for run in finished]

  def _failed_already(self, program: Sequence[Run],
                      records: dict[Run, dict]) -> Optional[str]:
    """Why ``program`` need not train: with ``skip_failed_lengths``, a seed
    of its length (one of ``records``) finished without solving it; None
    otherwise (or if a seed raised: the search stops on that)."""
    if not self.config.skip_failed_lengths:
      return None
    cell, n = program[0].cell, program[0].length
    at_n = {run: r for run, r in records.items()
            if (run.cell, run.length) == (cell, n)}
    if any(r["status"].kind is Kind.ERROR for r in at_n.values()):
      return None
    failed = sorted(run.seed for run, r in at_n.items()
                    if not results_lib.solved(r))
    if not failed:
      return None
    return (f"N={n} has failed already (seed{'s' * (len(failed) > 1)} "
            f"{', '.join(map(str, failed))})")

  def _train(self, runs: list[Run]) -> dict[Run, dict]:
    outcome = runner.Outcome([], [])
    records = runner.train_runs(
        runs, self.config.base, self.results, self.pool,
        vmap_seeds=self.config.vmap_seeds,
        checkpoint_every=self.config.checkpoint_every, train_fn=self.train_fn,
        stop=self.stop, progress=self.progress, outcome=outcome,
        profile_dir=self.config.profile_dir, give_up=self._failed_already)
    if self.stop():
      raise runner.Interrupted
    if outcome.write_errors:  # Trained, but no record: not a result.
      raise RunFailed(outcome.write_errors[0])
    return records


def runs_tried(content: dict, runs: list[dict]) -> list[dict]:
  """The ``runs`` of the cells and lengths a search's content tried."""
  tried = {(cell, e["length"]) for cell, entry in content["cells"].items()
           for e in entry["evaluations"]}
  return [r for r in runs if (r["cell"], r["length"]) in tried]


def write_summaries(content: dict, results_dir: str, runs: list[dict]) -> None:
  """``horizon.md``, ``horizon.png`` and ``steps_to_solve.png`` from a
  search's content (``horizon.json``) and its runs."""
  tried = runs_tried(content, runs)
  io.atomic_write_text(os.path.join(results_dir, "horizon.md"),
                       report.horizon_report(content, tried))
  plots.horizon(content, os.path.join(results_dir, "horizon.png"))
  plots.steps_to_solve(
      tried, os.path.join(results_dir, "steps_to_solve.png"),
      budget=content["settings"]["training"]["train_steps"],
      title="Steps to solve, lengths searched", log_length=True)


def summary_table(content: dict) -> str:
  """Markdown: per cell its horizon and every length tried
  (:func:`palindrome_jax.report.horizon_table`)."""
  return report.horizon_table(content)
