"""Curves to watch while a run trains: TensorBoard event files and
``metrics.jsonl``, written at every log point.

Each run (cell, N, seed) has a directory of its own,
``<results_dir>/tensorboard/<run>/`` (:meth:`results.ResultsDir.curves_dir`),
so ``tensorboard --logdir=<results_dir>`` overlays every run of a sweep or a
horizon search as they train. The event files are written with
``tensorboardX``'s event writer and protos (no TensorFlow), one event per log
point, written and flushed before training goes on (not by its
``SummaryWriter``, whose queue a kill loses). ``metrics.jsonl`` beside them
holds the same scalars, one JSON object per log point, appended and flushed
as training goes, so a crash (even ``kill -9``) keeps every point written
before it, and a script reads them without TensorBoard::

    {"step": 100, "time": 1764649221.5, "train/loss": 2.29, ...}

A value that is not finite is ``null`` there (NaN in TensorBoard). The final
test is a point of its own, at the step where the seed's training ended.

Tags: ``train/loss``, ``train/accuracy`` and ``train/steps_per_second`` at
every log point; ``check/accuracy`` at every solve check and
``check/confirm_accuracy`` where it passed and was confirmed; ``test/accuracy``
and ``test/loss`` once, at the step the seed's training ended.

A run continued from a checkpoint at step K writes only steps after K, and
what an earlier attempt wrote after K (it was killed between two
checkpoints) is dropped: ``metrics.jsonl`` is rewritten without those lines,
and the new event file starts with TensorBoard's purge marker at K + 1 (a
``SessionLog.START`` event at that step, as tensorboardX's ``purge_step``
writes it), which hides the earlier files' events from K + 1 on. (TensorBoard's
fast loader needs no marker: a step written again replaces what followed it.)
"""

import json
import math
import os
import threading
import time
from typing import Any, Optional, Sequence

from absl import logging
from tensorboardX import event_file_writer
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2

from palindrome_jax import files as io

JSONL = "metrics.jsonl"
# Keys of a metrics.jsonl line besides the tags.
STEP, TIME = "step", "time"


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The points of a ``metrics.jsonl``, in order; a line cut short by a
  crash (the last one) is left out."""
  points = []
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          point = json.loads(line)
        except ValueError:
          continue
        if isinstance(point, dict) and isinstance(point.get(STEP), int):
          points.append(point)
  except FileNotFoundError:
    pass
  return points


def _json_value(value: float) -> Optional[float]:
  value = float(value)
  return value if math.isfinite(value) else None


class RunCurves:
  """One run's curves in ``directory``: opened at the first point written,
  where everything an earlier attempt wrote from ``purge_step`` on is
  dropped (see the module doc)."""

  def __init__(self, directory: str):
    self.directory = directory
    self._events: Optional[event_file_writer.EventsWriter] = None
    self._jsonl = None

  def open(self, purge_step: Optional[int] = None) -> None:
    """Starts this attempt's curve: steps from ``purge_step`` on that an
    earlier attempt wrote are dropped (None: none is). A no-op when open."""
    if self._events is not None:
      return
    os.makedirs(self.directory, exist_ok=True)
    path = os.path.join(self.directory, JSONL)
    if purge_step is not None:
      kept = [p for p in read_jsonl(path) if p[STEP] < purge_step]
      io.atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in kept))
    # Held open while the run trains.
    self._jsonl = open(path, "a", encoding="utf-8")  # pylint: disable=R1732
    # The suffix orders two files begun in one second by time, as their
    # names are read (the later one's purge marker must come after).
    self._events = event_file_writer.EventsWriter(
        os.path.join(self.directory, "events"), f".{time.time_ns()}")
    if purge_step is not None:
      self._events.write_event(event_pb2.Event(
          wall_time=time.time(), step=purge_step,
          session_log=event_pb2.SessionLog(
              status=event_pb2.SessionLog.START)))
    self._events.flush()

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Writes ``scalars`` (tag to value) at ``step`` and flushes both files
    (opened first if need be, dropping nothing)."""
    self.open()
    now = time.time()
    self._events.write_event(event_pb2.Event(
        wall_time=now, step=step, summary=summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()])))
    self._events.flush()
    point = {STEP: step, TIME: now,
             **{tag: _json_value(v) for tag, v in scalars.items()}}
    self._jsonl.write(json.dumps(point, allow_nan=False) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._events is not None:
      writer, jsonl = self._events, self._jsonl
      self._events = self._jsonl = None
      try:
        writer.close()
      finally:
        jsonl.close()


class ProgramCurves:
  """The curves of the runs that train as one program, seed by seed: what
  :func:`palindrome_jax.train.train_and_evaluate`'s ``on_log`` reports,
  split into each seed's own curve. Use as a context manager (closes every
  file). Curves are not results: a failure to write them (a full disk) is
  logged once and ends them, never the training."""

  def __init__(self, directories: Sequence[str]):
    self.runs = [RunCurves(d) for d in directories]
    self.lock = threading.Lock()
    self.failed = False

  def __enter__(self) -> "ProgramCurves":
    return self

  def __exit__(self, *unused_exc) -> None:
    self.close()

  def on_log(self, info: dict[str, Any]) -> None:
    """One log point (``on_log``'s ``info``): each seed that trained in the
    chunk gets its loss, accuracy and the program's steps/s, and its solve
    check where there was one (a seed that stopped gets nothing more)."""
    check = info.get("check")
    active = info.get("active", [True] * len(self.runs))
    for i in range(len(self.runs)):
      if not active[i]:
        continue
      scalars = {"train/loss": info["loss"][i],
                 "train/accuracy": info["accuracy"][i],
                 "train/steps_per_second": info["steps_per_second"]}
      if check is not None:
        scalars["check/accuracy"] = check["accuracy"][i]
        if check["confirm_accuracy"][i] is not None:
          scalars["check/confirm_accuracy"] = check["confirm_accuracy"][i]
      self._write(i, info["step"], scalars, info.get("resumed_from", 0))

  def on_end(self, seeds: Sequence[Any], resumed_from: int = 0) -> None:
    """The final test of each seed (:class:`train.SeedResult`), at the step
    its training ended."""
    for i, seed in enumerate(seeds):
      self._write(i, seed.train_steps or 0,
                  {"test/accuracy": seed.test_accuracy,
                   "test/loss": seed.test_loss}, resumed_from)

  def _write(self, i: int, step: int, scalars: dict[str, float],
             resumed_from: int) -> None:
    """Seed ``i``'s ``scalars`` at ``step``; its curve opened first,
    dropping what an earlier attempt wrote after ``resumed_from``."""
    with self.lock:
      if self.failed:
        return
      run = self.runs[i]
      try:
        run.open(purge_step=resumed_from + 1)
        run.write(step, scalars)
      except OSError as error:
        self.failed = True
        logging.warning("cannot write the curves in %s (%s); training goes "
                        "on without them", run.directory, error)

  def close(self) -> None:
    with self.lock:
      for run in self.runs:
        try:
          run.close()
        except OSError as error:
          logging.warning("cannot close the curves in %s (%s)",
                          run.directory, error)
