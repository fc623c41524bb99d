"""Progress a person can follow, in a terminal or in a log.

In a terminal: live bars (tqdm) — one for the whole job and one for each run
in flight (cell, N, seed, step, loss, accuracy, steps/s, ETA). Anywhere else
(CI, ``nohup``, a pipe to a file): one compact line every ``interval``
seconds covering every run in flight, never one per chunk. In both, each
finished run leaves one summary line.

tqdm rather than rich: it is already in most scientific environments, is
thread-safe for several bars, and degrades to nothing when it is not asked to
draw; rich would bring a console framework for four bars.
"""

import sys
import threading
import time
from typing import Any, Optional, TextIO

from palindrome_jax import report


class Progress:
  """Shared by every run of one job (runs may report from several threads).

  ``total_work`` is the job's expected cost in any unit (each run says its
  own ``cost``), or None when the job's size is not known in advance (a
  horizon search): then the job bar counts finished runs.
  """

  def __init__(self, total_work: Optional[float] = None,
               stream: Optional[TextIO] = None,
               bars: Optional[bool] = None, interval: float = 15.0,
               title: str = "all runs"):
    self.stream = stream or sys.stderr
    self.bars = (_isatty(self.stream) if bars is None else bars)
    self.interval = interval
    self.total_work = total_work
    self.title = title
    self.lock = threading.RLock()
    self.start = time.perf_counter()
    self.done_work = 0.0
    self.finished = 0
    self.runs: dict[Any, "RunProgress"] = {}
    self._last_line = 0.0
    self._job_bar = None
    self._free_positions: list[int] = []
    self._next_position = 1
    if self.bars:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
      self._tqdm = tqdm.tqdm
      self._job_bar = self._tqdm(
          total=round(total_work, 6) if total_work else None,
          desc=title, position=0, file=self.stream, dynamic_ncols=True,
          bar_format=("{desc} {percentage:3.0f}%|{bar}| "
                      "[{elapsed}<{remaining}]") if total_work else
          "{desc} [{elapsed}]")
      self._update_job_bar()

  # Whole job.

  def message(self, text: str) -> None:
    """One line that stays (above the bars in a terminal)."""
    with self.lock:
      if self.bars:
        self._tqdm.write(text, file=self.stream)
      else:
        print(text, file=self.stream, flush=True)

  def skip(self, cost: float) -> None:
    """Work that turned out not to be this job's (finished earlier)."""
    with self.lock:
      if self.total_work is not None:
        self.total_work = max(self.total_work - cost, 0.0)
        if self._job_bar is not None:
          self._job_bar.total = round(self.total_work, 6) or None
      self._update_job_bar()

  def eta(self) -> Optional[float]:
    if not self.total_work:
      return None
    done = self.done_work + sum(r.work for r in self.runs.values())
    elapsed = time.perf_counter() - self.start
    if done <= 0:
      return None
    return (self.total_work - done) * elapsed / done

  def close(self) -> None:
    with self.lock:
      for run in list(self.runs.values()):
        run.close_bar()
      if self._job_bar is not None:
        self._job_bar.close()
        self._job_bar = None

  # Runs.

  def start_run(self, key: Any, label: str, total_steps: int,
                cost: float = 0.0) -> "RunProgress":
    with self.lock:
      position = (self._free_positions.pop(0) if self._free_positions
                  else self._next_position)
      if position == self._next_position:
        self._next_position += 1
      run = RunProgress(self, key, label, total_steps, cost, position)
      self.runs[key] = run
      return run

  def _update_job_bar(self) -> None:
    if self._job_bar is None:
      return
    done = self.done_work + sum(r.work for r in self.runs.values())
    if self.total_work:
      self._job_bar.n = round(min(done, self.total_work), 6)
    self._job_bar.set_description_str(
        f"{self.title}: {self.finished} runs done, {len(self.runs)} training",
        refresh=False)
    self._job_bar.refresh()

  def _maybe_print_lines(self, force: bool = False) -> None:
    """Pipe mode: one line for the job, at most every ``interval`` s."""
    now = time.perf_counter()
    if not force and now - self._last_line < self.interval:
      return
    self._last_line = now
    parts = [f"[{report.seconds(now - self.start)}] {self.finished} runs "
             f"done, ETA {report.seconds(self.eta())}"]
    parts += [run.compact() for run in self.runs.values()]
    print(" | ".join(parts), file=self.stream, flush=True)


class RunProgress:
  """One run's bar (terminal) or its part of the job's line (pipe)."""

  def __init__(self, job: Progress, key, label: str, total_steps: int,
               cost: float, position: int):
    self.job, self.key, self.label = job, key, label
    self.total_steps, self.cost, self.position = total_steps, cost, position
    self.step = 0
    self.loss = self.accuracy = self.rate = None
    self.start = time.perf_counter()
    self.bar = None
    if job.bars:
      self.bar = job._tqdm(  # pylint: disable=protected-access
          total=total_steps, desc=label, position=position, leave=False,
          file=job.stream, dynamic_ncols=True, unit="step",
          bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| "
          "[{elapsed}<{remaining}]")

  @property
  def work(self) -> float:
    return self.cost * min(self.step / max(self.total_steps, 1), 1.0)

  def update(self, step: int, loss: float, accuracy: float,
             steps_per_second: float) -> None:
    with self.job.lock:
      self.step, self.loss, self.accuracy = step, loss, accuracy
      self.rate = steps_per_second
      if self.bar is not None:
        self.bar.n = min(step, self.total_steps)
        self.bar.set_description_str(
            f"{self.label}  loss {report.number(loss, '.4f')} acc "
            f"{_percent(accuracy)} "
            f"{report.number(steps_per_second, '.0f')} steps/s", refresh=False)
        self.bar.refresh()
        self.job._update_job_bar()  # pylint: disable=protected-access
      else:
        self.job._maybe_print_lines()  # pylint: disable=protected-access

  def compact(self) -> str:
    eta = ((self.total_steps - self.step) / self.rate if self.rate else None)
    return (f"{self.label} {self.step}/{self.total_steps} loss "
            f"{report.number(self.loss, '.3f')} acc "
            f"{_percent(self.accuracy)} "
            f"{report.number(self.rate, '.0f')}/s ETA {report.seconds(eta)}")

  def close_bar(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None

  def finish(self, summary: Optional[str] = None) -> None:
    """Ends the run; ``summary`` is its one line that stays."""
    with self.job.lock:
      self.close_bar()
      self.job.runs.pop(self.key, None)
      self.job.done_work += self.cost
      self.job.finished += 1
      self.job._free_positions.append(self.position)  # pylint: disable=protected-access
      self.job._free_positions.sort()  # pylint: disable=protected-access
      if summary:
        self.job.message(summary)
      self.job._update_job_bar()  # pylint: disable=protected-access


def _percent(value) -> str:
  text = report.percent(value, 1)
  return text if text == report.MISSING else text + "%"


def _isatty(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False
