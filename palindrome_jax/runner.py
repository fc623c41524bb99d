"""The runner: trains a list of runs into one results directory.

Every tool that trains (the sweep, the horizon search, the gradients tool)
hands its runs here. A run already finished in the directory is read back,
not trained; one claimed by another process is left to it, never trained
twice. The rest train as programs (one run each, or with ``vmap_seeds`` the
seeds of one cell and N together) side by side over a pool of devices,
longest first. Each run writes its curves as it trains
(:mod:`palindrome_jax.metrics`) and is saved the moment it ends
(:mod:`palindrome_jax.results`, with its provenance); a program that raises
is recorded as failed and the others go on; a Ctrl-C or SIGTERM
(:class:`StopRequest`) stops every run at the end of its chunk, its
checkpoint saved (whatever ``checkpoint_every``), and the same command
continues it. A finished run whose parameters are missing or unreadable is
named, with the command that lets it train again.

In a multi-process run (``jax.distributed``) every process trains its share
of the runs into the shared directory, and process 0 then reads them all
(:func:`share_then_replay`).
"""

import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from absl import logging
import jax
import numpy as np

from palindrome_jax import devices as devices_lib
from palindrome_jax import metrics
from palindrome_jax import model
from palindrome_jax import sizing
from palindrome_jax import progress as progress_lib
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import train
from palindrome_jax.results import Run
from palindrome_jax.status import Status

TrainFn = Callable[..., train.GroupResult]
Program = tuple[Run, ...]  # Runs that train as one compiled program.
# Why a program need not train, given every record so far (by run); None if
# it must (see :func:`train_runs`).
GiveUp = Callable[[Program, dict[Run, dict]], Optional[str]]
T = TypeVar("T")


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
  """A tool stopped at a Ctrl-C (:class:`StopRequest`); what finished is
  saved."""


class NotSaved(Exception):
  """A tool's runs or summaries could not all be written (a full disk);
  ``problems`` has a line for each file, already logged. What was written
  is kept, and the same command writes the rest."""

  def __init__(self, problems: Sequence[str]):
    super().__init__(f"not saved: {len(problems)} file"
                     f"{'s' * (len(problems) != 1)} (the "
                     f"error{'s are' if len(problems) != 1 else ' is'} "
                     "above); free space and rerun the same command")
    self.problems = list(problems)


@dataclasses.dataclass
class Outcome:
  """What one call trained: every row in the directory, and this call's;
  ``write_errors`` has a line for each file it could not write (a run's,
  or a tool's summary: the sweep's count of "not saved")."""

  rows: list[dict]
  new_rows: list[dict]
  interrupted: bool = False
  write_errors: list[str] = dataclasses.field(default_factory=list)

  @property
  def counts(self) -> dict[str, int]:
    return results_lib.status_counts(self.new_rows)


@contextlib.contextmanager
def open_results(
    results_dir: str, base: train.RunConfig, what: str,
    overwrite: bool = False, config: Optional[dict[str, Any]] = None,
    devices: Optional[Sequence[jax.Device]] = None,
) -> Iterator[tuple[results_lib.ResultsDir, devices_lib.DevicePool]]:
  """Holds ``results_dir`` for runs trained as ``base`` (``what`` names the
  tool in a refusal; see :meth:`ResultsDir.open` for ``overwrite`` and
  ``config``) and yields it with a pool of ``devices`` (default: every local
  device).

  Over several processes, every one first meets the others there
  (:func:`devices.open_directory`): processes given other settings (these,
  ``what``, ``config``, ``overwrite``) are all refused before anything
  trains.
  """
  results = results_lib.ResultsDir(results_dir, base.training_settings(),
                                   what=what)
  pool = devices_lib.DevicePool(devices or jax.local_devices())
  devices_lib.open_directory(results_dir, results_lib.jsonable({
      "what": what, "training_settings": results.settings,
      "config": config or {}, "overwrite": overwrite}))
  try:
    with results.open(overwrite, config=config):
      yield results, pool
  finally:
    devices_lib.close_directory()


def share_then_replay(work: Callable[[list], T], items: Sequence[Any],
                      name: str, replay: bool = True) -> T:
  """``work`` over ``items`` by every process of a run; what it returns.

  Each process works on its share (:func:`devices.process_share`), then
  waits for the others at the barrier ``name`` (in the results directory
  they share). With ``replay``, process 0 then works over every item again:
  trained by now and on disk, they are read back, not trained, so that it
  holds them all for the summaries. In a single process ``work`` runs once,
  over every item.

  A process lost before it arrives (:func:`devices.lost_processes`) ends the
  wait at once, and nothing is replayed: what returns is ``work`` over this
  process's share, and the caller's ``stop`` (the entrypoints' asks
  :func:`devices.lost_processes`) says true, so the caller keeps what
  finished and trains nothing more.
  """
  done = work(devices_lib.process_share(items))
  lost = devices_lib.barrier(name)
  if (replay and not lost and jax.process_count() > 1
      and jax.process_index() == 0):
    done = work(list(items))
  return done


def train_runs(runs: Sequence[Run], base: train.RunConfig,
               results: results_lib.ResultsDir,
               pool: devices_lib.DevicePool,
               vmap_seeds: bool = False, checkpoint_every: int = 0,
               train_fn: TrainFn = train.train_and_evaluate,
               stop: Callable[[], bool] = lambda: False,
               progress: Optional[progress_lib.Progress] = None,
               outcome: Optional[Outcome] = None,
               profile_dir: Optional[str] = None,
               give_up: Optional[GiveUp] = None) -> dict[Run, dict]:
  """Trains the ``runs`` not finished in ``results``; returns every run's
  record (finished earlier or now) by run. A run claimed by another process
  is left to it (skipped here, never trained twice). With ``profile_dir``,
  each program traces a few chunks into ``<profile_dir>/<program name>/``
  (:mod:`palindrome_jax.profiling`). With ``give_up``, a program about to
  start is asked whether it still needs to, given the records so far (the
  horizon search skips the seeds of a length that another seed has failed):
  one that need not is skipped, with a line saying why, and has no record.

  Each program that raises is recorded as failed and the others go on; a
  failure to write a trained run's files is logged with the path, counted
  in ``outcome.write_errors``, and leaves the run untrained on disk.
  """
  records, todo = _finished_and_todo(runs, results)
  programs = programs_of(todo, vmap_seeds)
  costs = {p: expected_cost(_config_of(base, p)) * len(p) for p in programs}
  with _job_progress(progress, sum(costs.values())) as progress:
    if len(todo) < len(runs):
      progress.message(f"{len(runs) - len(todo)} of {len(runs)} runs finished "
                       "earlier, skipped")
      _name_runs_without_params(records, results, progress)
    trainer = _Trainer(base, results, train_fn, stop, checkpoint_every,
                       progress, records,
                       outcome if outcome is not None else Outcome([], []),
                       profile_dir, give_up)
    _run_side_by_side(
        programs, costs,
        lambda p: _memory_need(_config_of(base, p), len(p) if vmap_seeds
                               else 1),
        pool, vmap_seeds, trainer.train_program)
  release_programs_if_crowded()
  return records


# The share of the kernel's memory mappings a process may fill before
# :func:`release_programs_if_crowded` drops JAX's compiled programs.
CROWDED = 0.5


def release_programs_if_crowded() -> None:
  """Drops JAX's compiled programs once the process holds more than
  ``CROWDED`` of the memory mappings Linux allows it.

  JAX's caches keep every program compiled (each run's settings are a static
  argument), and the code of one (cell, N) holds hundreds of mappings: a long
  search in one process would reach the limit (``vm.max_map_count``, 65,530
  by default), where the next compile segfaults inside LLVM. Below it the
  programs stay, for the runs that use them again.
  """
  try:
    with open("/proc/self/maps", encoding="utf-8") as f:
      used = sum(1 for _ in f)
    with open("/proc/sys/vm/max_map_count", encoding="utf-8") as f:
      limit = int(f.read())
  except (OSError, ValueError):  # Not Linux: no such limit to mind.
    return
  if used > CROWDED * limit:
    jax.clear_caches()


def _finished_and_todo(runs: Sequence[Run], results: results_lib.ResultsDir
                       ) -> tuple[dict[Run, dict], list[Run]]:
  """The records of the ``runs`` finished in ``results``, and the others."""
  records, todo = {}, []
  for run in runs:
    record = results.finished(run)
    if record is not None:
      records[run] = record
    else:
      todo.append(run)
  return records, todo


def _name_runs_without_params(records: dict[Run, dict],
                              results: results_lib.ResultsDir,
                              progress: progress_lib.Progress) -> None:
  """One line for each finished run of ``records`` whose parameters are
  missing or unreadable, then the command that lets them train again."""
  lacking = []
  for run in sorted(records):
    problem = results.params_problem(run, records[run])
    if problem:
      lacking.append(run)
      progress.message(f"{run.name} finished earlier, but its parameters "
                       f"({results.params_file(run)}) are {problem}")
  if lacking:
    progress.message(
        "experiments.evaluate and experiments.gradients need them; to "
        "retrain them, remove their records and rerun: rm "
        + " ".join(shlex.quote(results.run_file(run)) for run in lacking))


def programs_of(runs: Sequence[Run], vmap_seeds: bool) -> list[Program]:
  """The runs grouped into programs: one run each, or with ``vmap_seeds``
  every seed of a (cell, length) together."""
  if not vmap_seeds:
    return [(run,) for run in runs]
  groups = {}
  for run in runs:
    groups.setdefault((run.cell, run.length), []).append(run)
  return [tuple(group) for group in groups.values()]


def _config_of(base: train.RunConfig, program: Program) -> train.RunConfig:
  return dataclasses.replace(base, cell=program[0].cell,
                             length=program[0].length)


@contextlib.contextmanager
def _job_progress(progress: Optional[progress_lib.Progress],
                  total_work: float) -> Iterator[progress_lib.Progress]:
  """``progress``, or a job of its own for ``total_work``, closed after."""
  if progress is not None:
    yield progress
    return
  progress = progress_lib.Progress(total_work)
  try:
    yield progress
  finally:
    progress.close()


def _run_side_by_side(programs: list[Program], costs: dict[Program, float],
                      need: Callable[[Program], int],
                      pool: devices_lib.DevicePool, vmap_seeds: bool,
                      train_program: Callable[..., None]) -> None:
  """``train_program(program, cost, devices)`` for every program: each on
  a free device of ``pool`` once its ``need`` (bytes) fits beside the
  programs training on the host's memory, or, when vmapped seeds split
  evenly over every device, one program at a time over all of them."""
  # Longest first: when programs run side by side, the last to finish is then
  # a short one and no device idles long at the end.
  programs = sorted(programs, key=lambda p: -costs[p])
  if vmap_seeds and len(pool) > 1 and all(
      len(p) % len(pool) == 0 for p in programs):
    for program in programs:  # Each program's seeds split over all devices.
      with pool.all_devices() as devices:
        train_program(program, costs[program], devices)
  else:
    pool.map(lambda p, device: train_program(p, costs[p], [device]),
             programs, need=need)


@dataclasses.dataclass
class _Trainer:
  """What the programs of one :func:`train_runs` call share: how they train,
  where they are saved, and every record so far (``records``, by run)."""

  base: train.RunConfig
  results: results_lib.ResultsDir
  train_fn: TrainFn
  stop: Callable[[], bool]
  checkpoint_every: int
  progress: progress_lib.Progress
  records: dict[Run, dict]
  outcome: Outcome
  profile_dir: Optional[str] = None
  give_up: Optional[GiveUp] = None
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def train_program(self, program: Program, cost: float, devices) -> None:
    """Claims the runs of ``program``, then trains those still to train."""
    if self.stop():
      return
    if self.give_up is not None:
      with self.lock:
        reason = self.give_up(program, dict(self.records))
      if reason:
        self.progress.message(
            f"{program[0].cell} N={program[0].length} seed"
            f"{'s' * (len(program) > 1)} "
            f"{','.join(str(run.seed) for run in program)}: not trained, "
            f"{reason}")
        self.progress.skip(cost)
        return
    with contextlib.ExitStack() as stack:
      claimed = [stack.enter_context(self.results.claim(run))
                 for run in program]
      if not all(claimed):
        self.progress.message(
            f"{program[0].cell} N={program[0].length} seeds "
            f"{[run.seed for run in program]}: being trained by another "
            "process, skipped")
        self.progress.skip(cost)
        return
      program, cost = self._without_finished_meanwhile(program, cost)
      if program:
        self._train_claimed(program, cost, devices)

  def _without_finished_meanwhile(self, program: Program, cost: float
                                  ) -> tuple[Program, float]:
    """``program`` and its cost without the runs that another process
    finished since they were listed (and then released): those records are
    kept, not trained again."""
    done = {run: self.results.finished(run) for run in program}
    done = {run: record for run, record in done.items() if record}
    if not done:
      return program, cost
    with self.lock:
      self.records.update(done)
    self.progress.message(
        f"{program[0].cell} N={program[0].length} seeds "
        f"{[run.seed for run in done]}: finished by another process, skipped")
    self.progress.skip(cost * len(done) / len(program))
    return (tuple(run for run in program if run not in done),
            cost * (1 - len(done) / len(program)))

  def _train_claimed(self, program: Program, cost: float, devices) -> None:
    cfg = _config_of(self.base, program)
    seeds = tuple(run.seed for run in program)
    label = (f"{cfg.cell} N={cfg.length} seed"
             f"{'s' * (len(seeds) > 1)} {','.join(map(str, seeds))}")
    run_progress = self.progress.start_run(program, label, cfg.train_steps,
                                           cost)
    # Saved at a stop even when checkpoint_every is 0, so a rerun continues.
    checkpoint = self.results.checkpoint_file(program)
    profile = (os.path.join(self.profile_dir,
                            results_lib.program_name(program))
               if self.profile_dir else None)
    started = results_lib.utc_now()
    try:
      with metrics.ProgramCurves([self.results.curves_dir(run)
                                  for run in program]) as curves:
        group = self.train_fn(
            cfg, seeds, on_log=_on_log(run_progress, curves),
            checkpoint_path=checkpoint,
            checkpoint_every=self.checkpoint_every, devices=devices,
            should_stop=self.stop, profile_dir=profile)
        curves.on_end(group.seeds, group.resumed_from)
    except train.Interrupted as stopped:
      run_progress.finish(f"{label}: {_interrupted(stopped)}")
      return
    except Exception as error:  # pylint: disable=broad-except
      # One failing run (say, out of memory) must not cost the others.
      logging.error("%s N=%d failed:\n%s", cfg.cell, cfg.length,
                    traceback.format_exc())
      self._record_failure(program, error, label, run_progress, started)
      return
    self._record(program, group, run_progress, started)

  def _record_failure(self, program: Program, error: Exception, label: str,
                      run_progress: progress_lib.RunProgress,
                      started: str) -> None:
    provenance = results_lib.provenance(started, results_lib.utc_now())
    for run in program:
      self._save(run, {**results_lib.error_row(run, error),
                       "provenance": provenance}, None)
    run_progress.finish(f"{label}: {self.records[program[0]]['status']}"
                        if program[0] in self.records else None)

  def _record(self, program: Program, group: train.GroupResult,
              run_progress: progress_lib.RunProgress, started: str) -> None:
    counts = _param_counts(group.seeds[0].params)
    provenance = results_lib.provenance(started, results_lib.utc_now())
    for run, seed_result in zip(program, group.seeds):
      self._save(run, {**_row(group, seed_result, counts),
                       "provenance": provenance}, seed_result.params)
    if len(program) > 1 and all(run in self.records for run in program):
      self.results.remove_checkpoint(program)
    resumed = (f" (continued from the checkpoint at step "
               f"{group.resumed_from})" if group.resumed_from else "")
    run_progress.finish("; ".join(
        f"{run.name}: {_run_summary(self.records.get(run))}"
        for run in program) + resumed)

  def _save(self, run: Run, row: dict[str, Any], params: Any) -> None:
    """Saves ``run``; a failure to write is logged and counted, and leaves
    the run without a record."""
    try:
      record = self.results.save_run(run, row, params)
    except OSError as error:
      message = (f"cannot save {run.name}: {error.strerror or error} "
                 f"({error.filename or self.results.root})")
      logging.error("%s", message)
      with self.lock:
        self.outcome.write_errors.append(message)
      return
    with self.lock:
      self.records[run] = record
      self.outcome.new_rows.append(record)


def _interrupted(stopped: train.Interrupted) -> str:
  """What became of a program stopped in flight."""
  at = f"interrupted at step {stopped.step}"
  if stopped.saved:
    return f"{at}, checkpoint saved (the same command continues from it)"
  if stopped.problem:
    return (f"{at}, checkpoint not saved ({stopped.problem}): the same "
            "command trains it from the start")
  return at


def _on_log(run_progress: progress_lib.RunProgress,
            curves: metrics.ProgramCurves) -> Callable[[dict], None]:
  """Writes each logged chunk of a program to its runs' curves and reports
  it to its progress line."""
  def on_log(info: dict) -> None:
    curves.on_log(info)
    run_progress.update(
        info["step"], results_lib.finite_mean(info["loss"]),
        results_lib.finite_mean(info["accuracy"]), info["steps_per_second"])
  return on_log


def _param_counts(params: Any) -> dict[str, Any]:
  """:func:`model.param_counts` of a model's parameters; of anything else
  (a test's stand-in trainer) the total only."""
  if isinstance(params, dict) and "readout" in params:
    return model.param_counts(params)
  return {"total": int(sum(np.size(x) for x in jax.tree.leaves(params))),
          "per_layer": None}


def _state_size(cfg: train.RunConfig) -> Optional[int]:
  """Floats one example carries between steps (None for a cell whose
  carry cannot be built from its name alone, e.g. a test's stand-in)."""
  try:
    return sizing.state_size(cfg.cell, cfg.num_hidden, cfg.num_layers)
  except Exception:  # pylint: disable=broad-except
    return None


def _row(program: train.GroupResult, seed_result: train.SeedResult,
         counts: dict[str, Any]) -> dict[str, Any]:
  """A trained run's record (:data:`results.ROW_FIELDS`); ``counts`` are
  :func:`model.param_counts` (the total, and each layer's)."""
  cfg = program.config
  return {
      "cell": cfg.cell, "length": cfg.length, "seed": seed_result.seed,
      "status": Status(seed_result.status),
      "test_accuracy": seed_result.test_accuracy,
      "test_loss": seed_result.test_loss,
      "steps_to_solve": seed_result.steps_to_solve,
      "final_train_loss": seed_result.final_train_loss,
      "final_train_accuracy": seed_result.final_train_accuracy,
      "train_steps": seed_result.train_steps,
      "wall_seconds": program.wall_seconds,
      "compile_seconds": program.compile_seconds,
      "steps_per_second": program.steps_per_second,
      "num_params": counts["total"],
      "num_hidden": cfg.num_hidden,
      "state_size": _state_size(cfg),
      "params_per_layer": counts["per_layer"],
      "seeds_in_program": len(program.seeds),
      "history": seed_result.history,
  }


def _run_summary(record: Optional[dict]) -> str:
  if record is None:
    return "not saved"
  steps = record.get("steps_to_solve")
  return (f"{record['status']}, test accuracy "
          f"{report.percent(record.get('test_accuracy'))}%, solved at "
          f"{steps if steps is not None else report.MISSING}, "
          f"{report.seconds(record.get('wall_seconds'))}")


def _memory_need(cfg: train.RunConfig, num_seeds: int) -> int:
  """Bytes a program of ``cfg`` takes (:func:`train.estimate_memory`), or 0
  for one that cannot be traced (it fails as a run, recorded)."""
  try:
    return train.estimate_memory(cfg, num_seeds)
  except Exception:  # pylint: disable=broad-except
    return 0


def longest_first(runs: Sequence[Run], base: train.RunConfig) -> list[Run]:
  """``runs`` by expected cost, longest first (ties in a fixed order)."""
  costs = {}
  for run in runs:
    if (run.cell, run.length) not in costs:
      costs[run.cell, run.length] = expected_cost(_config_of(base, (run,)))
  return sorted(runs, key=lambda r: (-costs[r.cell, r.length], r))


def expected_cost(cfg: train.RunConfig) -> float:
  """Relative training time: steps x length x the parameter count of the
  cells of every layer."""
  shapes = jax.eval_shape(lambda key: train.init_params(key, cfg),
                          jax.random.PRNGKey(0))
  size = sum(np.prod(x.shape) for x in
             jax.tree.leaves(model.layer_cell_params(shapes)))
  return float(cfg.train_steps) * cfg.length * float(size)
