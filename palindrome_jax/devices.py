"""Where runs go: the local devices, shared by runs that train side by side.

A run is one compiled program on one device. On a CPU the entrypoints expose
one device per core (``jax_num_cpu_devices``, :func:`configure`), so
independent runs keep every core busy; on a GPU or TPU each chip is a device.
With ``vmap_seeds`` a run may hold several seeds, and :func:`seed_sharding`
splits them over devices. Runs that cannot fit on a device are refused
before anything compiles (:func:`check_memory`).
"""

import contextlib
from concurrent import futures
import os
import threading
from typing import Any, Callable, Iterable, Optional, Sequence

from absl import logging
import jax
import numpy as np

from palindrome_jax import validation

# A barrier without device computation (so that it works between CPU
# processes) has no public API in JAX 0.10: the distributed client's
# wait_at_barrier, as JAX's own array serialization calls it. :func:`barrier`
# says so plainly if a JAX release moves it.
try:
  from jax._src import distributed as _jax_distributed
except ImportError:  # pragma: no cover (every JAX this project supports)
  _jax_distributed = None

_BARRIER_JAX = "JAX 0.8.2 (the floor) to 0.10.2"


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
  state = getattr(_jax_distributed, "global_state", None)
  client = getattr(state, "client", None)
  if not hasattr(client, "wait_at_barrier"):
    raise RuntimeError(
        "a run over several processes waits at a barrier through "
        "jax._src.distributed.global_state.client.wait_at_barrier (in "
        f"{_BARRIER_JAX}); JAX {jax.__version__} has none: install one of "
        "those versions, or run in one process")
  client.wait_at_barrier(name, int(timeout_seconds * 1000))


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


def configure(cpu_devices: int = 0, compilation_cache_dir: str = "",
              coordinator_address: Optional[str] = None,
              num_processes: int = 1, process_id: int = 0) -> list:
  """Sets JAX up as the entrypoints' flags of the same names say, and
  returns the local devices of the default backend.

  ``cpu_devices``: CPU devices to expose (0: one per core), applied before
  JAX starts its backends (``jax_num_cpu_devices``; once they run, in a test
  process, the devices stay as they are). ``compilation_cache_dir``: JAX's
  persistent cache, unless ``JAX_COMPILATION_CACHE_DIR`` sets one.
  ``coordinator_address``: ``jax.distributed`` over ``num_processes``, this
  one ``process_id``. A bad value is a one-line :class:`FlagError` raised
  before anything is set.
  """
  if cpu_devices < 0:
    raise validation.FlagError("cpu_devices",
                               f"must be >= 0, got {cpu_devices}")
  if coordinator_address:
    if num_processes < 1:
      raise validation.FlagError("num_processes",
                                 f"must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
      raise validation.FlagError(
          "process_id", f"must be in [0, {num_processes - 1}], got "
          f"{process_id}")
  elif num_processes != 1 or process_id != 0:
    raise validation.FlagError("num_processes", "several processes need "
                               "--coordinator_address")
  count = cpu_devices or os.cpu_count() or 1
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # JAX refuses a new count once its backends run.
    logging.warning("JAX already started; --cpu_devices=%d ignored", count)
  if compilation_cache_dir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(compilation_cache_dir))
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return jax.local_devices()


def describe(devices: Sequence[jax.Device]) -> str:
  """One line: where the runs will train."""
  where = (f"process {jax.process_index()} of {jax.process_count()}, "
           if jax.process_count() > 1 else "")
  return (f"JAX {jax.__version__} on {len(devices)} {jax.default_backend()} "
          f"device(s) ({where}{len(jax.devices())} in all)")


def check_memory(cfgs: Sequence[Any], device: jax.Device,
                 estimate: Callable[[Any], int]) -> None:
  """Refuses, before anything compiles, a run that cannot fit on ``device``.

  ``cfgs`` are the largest runs (:class:`~palindrome_jax.config.RunConfig`),
  ``estimate(cfg)`` the bytes training one takes
  (:func:`palindrome_jax.train.estimate_memory`); a config it cannot trace is
  passed over (it fails as a run, recorded). Too large is a one-line
  :class:`FlagError` on ``--batch_size`` when the batch is what is large,
  else on ``--lengths``.
  """
  available = device_memory(device)
  if available is None:
    return
  for cfg in cfgs:
    try:
      needed = estimate(cfg)
    except Exception:  # pylint: disable=broad-except
      continue
    if needed > available:
      flag = ("batch_size" if cfg.batch_size > 4096 and cfg.length < 10_000
              else "lengths")
      raise validation.FlagError(
          flag, f"{cfg.cell} at N={cfg.length} with --batch_size="
          f"{cfg.batch_size} and --num_hidden={cfg.num_hidden} needs about "
          f"{needed / 1e9:.1f} GB to train (estimated); {device} has "
          f"{available / 1e9:.1f} GB available")
