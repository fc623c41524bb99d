"""A profile of a few training chunks: ``jax.profiler``'s trace of the
compiled loop at work, its compile left out.

:class:`ChunkTrace` starts a trace before the second chunk of a run (the
first compiled the program) and stops it after ``num_chunks`` chunks, each
marked as a step (``jax.profiler.StepTraceAnnotation``); what the loop does
between them (a solve check, the curves, a checkpoint) is in the trace too,
and so is the first solve check's compile where it falls among them. The
trace goes to ``<directory>/plugins/profile/<time>/``: ``*.xplane.pb`` for
TensorBoard's profile plugin (``tensorboard --logdir=<directory>``, with
``tensorboard-plugin-profile`` installed) and ``perfetto_trace.json.gz``,
which https://ui.perfetto.dev opens as it is.

JAX profiles one trace at a time per process: while runs train side by side,
the first to reach its second chunk traces, and the others wait for the
profiler by starting their trace at a later chunk (its threads still show
the other runs' work). A run that ends before the profiler is free has no
trace; a line in the log says so.
"""

import contextlib
import threading
from typing import Iterator, Optional

from absl import logging
import jax

# Chunks traced after the first: enough to see the steady state, a small file.
NUM_CHUNKS = 3

_PROFILER = threading.Lock()  # The one trace a process may hold.


class ChunkTrace:
  """Traces chunks 2 to ``1 + num_chunks`` of one run into ``directory``
  (None: traces nothing). Call :meth:`chunk` around each chunk, and
  :meth:`close` when the run ends, however it ends."""

  def __init__(self, directory: Optional[str],
               num_chunks: int = NUM_CHUNKS):
    self.directory = directory
    self.num_chunks = num_chunks
    self.chunks_seen = 0
    self.traced = 0
    self.tracing = False

  @contextlib.contextmanager
  def chunk(self) -> Iterator[None]:
    """Around one chunk (its dispatch and the wait for its statistics)."""
    self._maybe_start()
    try:
      if self.tracing:
        with jax.profiler.StepTraceAnnotation("train_chunk",
                                              step_num=self.chunks_seen):
          yield
      else:
        yield
    finally:
      self.chunks_seen += 1
      if self.tracing:
        self.traced += 1
        if self.traced >= self.num_chunks:
          self.close()

  def _maybe_start(self) -> None:
    if (self.directory is None or self.tracing or self.chunks_seen < 1
        or self.traced >= self.num_chunks
        or not _PROFILER.acquire(blocking=False)):
      return
    try:
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
    except Exception:  # pylint: disable=broad-except
      _PROFILER.release()
      logging.exception("cannot start a trace in %s", self.directory)
      self.directory = None  # No second try.
      return
    self.tracing = True

  def close(self) -> None:
    """Stops and writes the trace, if one is running."""
    if not self.tracing:
      if self.directory is not None and self.traced == 0 and (
          self.chunks_seen > 1):
        logging.info("no trace in %s: another run held the profiler while "
                     "this one trained", self.directory)
        self.directory = None
      return
    self.tracing = False
    try:
      jax.profiler.stop_trace()
      logging.info("trace of %d chunks in %s", self.traced, self.directory)
    finally:
      _PROFILER.release()
