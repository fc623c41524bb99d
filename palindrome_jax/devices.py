"""Where runs go: the local devices, shared by runs that train side by side.

A run is one compiled program on one device. On a CPU the entrypoints expose
one device per core (``jax_num_cpu_devices``), so independent runs keep every
core busy; on a GPU or TPU each chip is a device. With ``vmap_seeds`` a run
may hold several seeds, and :func:`seed_sharding` splits them over devices.
"""

import contextlib
from concurrent import futures
import threading
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import numpy as np


VMAP_SEEDS_HELP = (
    "Train the seeds of one (cell, length) as one program (jax.vmap; split "
    "over devices when they divide evenly): faster on a GPU/TPU, but a "
    "seed's numbers then depend on the program it shares. Off: each seed is "
    "its own program and gives the same numbers on any device layout.")


class DevicePool:
  """Hands out devices to callers in any thread; at most one run a device.

  ``map(fn, items)`` runs ``fn(item, device)`` for every item, each on the
  next free device, and may be called from several threads at once (a
  horizon search runs one such caller per cell): the devices are shared
  between all of them.
  """

  def __init__(self, devices: Optional[Sequence[jax.Device]] = None):
    self.devices = list(devices or jax.local_devices()[:1])
    self._free = list(self.devices)
    self._cond = threading.Condition()

  def __len__(self) -> int:
    return len(self.devices)

  @contextlib.contextmanager
  def device(self):
    """Waits for a free device and holds it for the ``with`` block."""
    with self._cond:
      while not self._free:
        self._cond.wait()
      device = self._free.pop(0)
    try:
      yield device
    finally:
      with self._cond:
        self._free.append(device)
        self._free.sort(key=self.devices.index)
        self._cond.notify_all()

  @contextlib.contextmanager
  def all_devices(self):
    """Holds every device at once (a run whose seeds are split over all)."""
    with self._cond:
      while len(self._free) < len(self.devices):
        self._cond.wait()
      self._free = []
    try:
      yield list(self.devices)
    finally:
      with self._cond:
        self._free = list(self.devices)
        self._cond.notify_all()

  def map(self, fn: Callable[[Any, jax.Device], Any],
          items: Iterable[Any]) -> list:
    """``[fn(item, device) ...]`` in the order of ``items``, side by side.

    Every item runs even when another raises; the first exception (in the
    order of ``items``) is raised once all have finished.
    """
    items = list(items)
    if len(self.devices) == 1 or len(items) <= 1:
      results = []
      for item in items:
        with self.device() as device:
          results.append(fn(item, device))
      return results

    def on_free_device(item):
      with self.device() as device:
        return fn(item, device)

    with futures.ThreadPoolExecutor(len(self.devices)) as pool:
      jobs = [pool.submit(on_free_device, item) for item in items]
    return [job.result() for job in jobs]


def run_side_by_side(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
  """``[fn(item) ...]``, each in its own thread (for callers that then share
  a :class:`DevicePool`); the first exception is raised once all end."""
  items = list(items)
  if len(items) <= 1:
    return [fn(item) for item in items]
  with futures.ThreadPoolExecutor(len(items)) as pool:
    jobs = [pool.submit(fn, item) for item in items]
  return [job.result() for job in jobs]


def process_share(items: Sequence[Any]) -> list:
  """This process's share of ``items`` in a multi-process run
  (``jax.distributed``): every ``process_count()``-th item from its index,
  so a list sorted longest first is dealt out evenly. All of them in a
  single process."""
  return list(items)[jax.process_index()::jax.process_count()]


def barrier(name: str, timeout_seconds: float = 7 * 24 * 3600) -> None:
  """Waits until every process of a multi-process run gets here (through
  the ``jax.distributed`` coordinator: no device computation, so it works
  on CPUs too). Returns at once in a single process."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  distributed.global_state.client.wait_at_barrier(
      name, int(timeout_seconds * 1000))


def seed_sharding(devices: Sequence[jax.Device], num_seeds: int):
  """Where a run's seed axis lives: one device, or split evenly over several.

  Seeds are independent, so splitting them over devices needs no
  communication; with an uneven split the whole run stays on the first
  device.
  """
  devices = list(devices)
  if len(devices) > 1 and num_seeds % len(devices) == 0:
    mesh = jax.sharding.Mesh(np.array(devices), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))
  return jax.sharding.SingleDeviceSharding(devices[0])


def device_memory(device: jax.Device) -> Optional[int]:
  """Bytes ``device`` can hold: the accelerator's limit, or on a CPU the
  memory the operating system has available; None if unknown."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    pass
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None
