"""Where runs go: the local devices, shared by runs that train side by side.

A run is one compiled program on one device. On a CPU the entrypoints expose
one device per core (``jax_num_cpu_devices``, :func:`configure`), so
independent runs keep every core busy; on a GPU or TPU each chip is a device.
With ``vmap_seeds`` a run may hold several seeds, and :func:`seed_sharding`
splits them over devices. Runs that cannot fit on a device are refused
before anything compiles (:func:`check_memory`).

Several processes (one host or several, :func:`configure`) meet through
``jax.distributed`` only to start: it waits for every one to connect (a
bounded ``coordinator_timeout``), hands out their indices and devices and a
name for the job, and is then shut down. From there on they meet in the
results directory they share, through files (:func:`open_directory`,
:func:`barrier`): each holds a lock there while it works, so a process that
dies (``kill -9``, a lost host) is seen by the others, which stop at the end
of their chunk, say which process was lost, and exit with
:data:`LOST_STATUS`; the same command, rerun in every process, continues.
``jax.distributed`` cannot do that itself: its coordination service aborts
every process once one is gone.
"""

import contextlib
from concurrent import futures
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from typing import IO, Any, Callable, Iterable, Optional, Sequence
import uuid

from absl import logging
import jax
import numpy as np

from palindrome_jax import files
from palindrome_jax import validation

# Sharing a name for the job between processes, without device computation
# (so that it works between CPU processes), has no public API in JAX 0.10:
# the distributed client's key-value store, as JAX's own array serialization
# calls it (key_value_set, blocking_key_value_get). :func:`configure` says so
# plainly if a JAX release moves it.
try:
  from jax._src import distributed as _jax_distributed
except ImportError:  # pragma: no cover (every JAX this project supports)
  _jax_distributed = None

_CLIENT_JAX = "JAX 0.8.2 (the floor) to 0.10.2"

# The exit status of a process whose run could not go on because another
# process is missing or was lost (sysexits' EX_TEMPFAIL: try again).
LOST_STATUS = 75
# How often a waiting process looks at the others' files, and how often a
# training one checks that none was lost (seconds).
_POLL_SECONDS = 0.2
_CHECK_SECONDS = 1.0


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

  CPU devices (one per core) share the host's memory, so runs side by side
  on them also share ``host_bytes`` (default: what the operating system has
  available when the pool is made): an item given its ``need`` in bytes
  waits for a free device and for that much of the budget, unless it would
  run alone (a run too large for the budget alone is the entrypoints' to
  refuse, :func:`check_memory`). Accelerators each hold their own memory:
  no budget.
  """

  def __init__(self, devices: Optional[Sequence[jax.Device]] = None,
               host_bytes: Optional[int] = None):
    self.devices = list(devices or jax.local_devices()[:1])
    self._free = list(self.devices)
    self._cond = threading.Condition()
    if host_bytes is None and len(self.devices) > 1 and all(
        getattr(d, "platform", None) == "cpu" for d in self.devices):
      host_bytes = device_memory(self.devices[0])
    self.host_bytes = host_bytes
    self._host_free = host_bytes
    self._running = 0

  def __len__(self) -> int:
    return len(self.devices)

  def _fits(self, need: int) -> bool:
    return (self._host_free is None or self._running == 0
            or need <= self._host_free)

  @contextlib.contextmanager
  def device(self, need: int = 0):
    """Waits for a free device (and ``need`` bytes of the host's memory,
    see the class) and holds them for the ``with`` block."""
    with self._cond:
      while not self._free or not self._fits(need):
        self._cond.wait()
      device = self._free.pop(0)
      taken = 0 if self._host_free is None else need
      if taken:
        self._host_free -= taken
      self._running += 1
    try:
      yield device
    finally:
      with self._cond:
        self._free.append(device)
        self._free.sort(key=self.devices.index)
        if taken:
          self._host_free += taken
        self._running -= 1
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
          items: Iterable[Any],
          need: Callable[[Any], int] = lambda item: 0) -> list:
    """``[fn(item, device) ...]`` in the order of ``items``, side by side,
    each once ``need(item)`` bytes of the host's memory are free (see the
    class; without a budget, ``need`` is not called).

    Every item runs even when another raises; the first exception (in the
    order of ``items``) is raised once all have finished.
    """
    items = list(items)
    if self.host_bytes is None:
      need = lambda item: 0
    if len(self.devices) == 1 or len(items) <= 1:
      results = []
      for item in items:
        with self.device(need(item)) as device:
          results.append(fn(item, device))
      return results

    def on_free_device(item):
      with self.device(need(item)) as device:
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


class ProcessesError(RuntimeError):
  """The processes of one run cannot all take part: one never opened the
  results directory. One line; exit :data:`LOST_STATUS`."""

  exit_status = LOST_STATUS


@dataclasses.dataclass
class _Group:
  """This process's place among the processes of a run, once they have met:
  the job's name, and the results directory open now (its folder for this
  job, ``<results_dir>/.processes/<job>``, and the lock held in it)."""

  job: str
  index: int
  count: int
  timeout: int
  folder: Optional[str] = None
  lock: Optional[IO] = None
  lost: tuple[int, ...] = ()
  checked_at: float = 0.0

  def peers(self) -> list[int]:
    return [j for j in range(self.count) if j != self.index]

  def path(self, name: str) -> str:
    return os.path.join(self.folder, name)


# Set by :func:`start_processes` in a multi-process run (global, as JAX's own
# distributed state is): None in a single process.
_GROUP: Optional[_Group] = None


def open_directory(root: str, settings: dict[str, Any]) -> None:
  """Meets the other processes in the results directory ``root`` before
  anything trains (nothing to do in one process).

  Each process takes its lock in the job's folder there and leaves its
  ``settings`` (what it will train, and how); once every process has (within
  the coordinator timeout), each compares them all. Processes given other
  settings are refused, every one of them at once: a one-line
  :class:`~palindrome_jax.validation.FlagError` naming the first setting
  that differs. A process that never comes is a :class:`ProcessesError`.
  Held until :func:`close_directory`.
  """
  group = _GROUP
  if group is None:
    return
  close_directory()
  group.folder = os.path.join(root, ".processes", group.job)
  os.makedirs(group.folder, exist_ok=True)
  group.lock = _hold(group.path(f"{group.index}.lock"))
  if group.index == 0:
    _remove_finished_jobs(os.path.dirname(group.folder), group.job)
  files.write_json(group.path(f"{group.index}.settings.json"), settings)
  everyone = {group.index: json.loads(json.dumps(settings))}
  deadline = time.monotonic() + group.timeout
  while len(everyone) < group.count:
    for j in group.peers():
      if j not in everyone and os.path.exists(group.path(f"{j}.settings.json")):
        everyone[j] = files.read_json(group.path(f"{j}.settings.json"))
    if len(everyone) < group.count:
      if time.monotonic() > deadline:
        missing = [j for j in range(group.count) if j not in everyone]
        close_directory()
        raise ProcessesError(
            f"{_processes(missing)} of {group.count} did not open {root} "
            f"within {group.timeout} s (--coordinator_timeout): see "
            f"{'its' if len(missing) == 1 else 'their'} output; every process "
            "needs the same --results_dir, on a filesystem they share")
      time.sleep(_POLL_SECONDS)
  for j in range(1, group.count):
    differ = _first_difference(everyone[0], everyone[j])
    if differ:
      close_directory()
      key, here, there = differ
      raise validation.FlagError(
          key, f"process {j} was given {there!r}, process 0 {here!r}: every "
          "process needs the same settings")


def close_directory() -> None:
  """Lets go of the results directory :func:`open_directory` holds."""
  group = _GROUP
  if group is not None and group.lock is not None:
    group.lock.close()
    group.lock = None


def barrier(name: str) -> list[int]:
  """Waits until every process of the run has done its share in the results
  directory open now, or one is lost; returns the lost ones (none in one
  process). ``name`` says what was done (kept in the file that marks this
  process arrived). A lost process is one that no longer holds its lock
  there without having arrived (killed, failed, or a host gone): the wait
  ends within a poll (0.2 s) of its lock going. A process still working is
  waited for, however long its share takes, with one line saying so.
  """
  group = _GROUP
  if group is None or group.count == 1:
    return []
  if group.folder is None or group.lock is None:
    raise RuntimeError(f"barrier {name!r}: no results directory is open "
                       "(devices.open_directory)")
  files.write_json(group.path(f"{group.index}.done.json"), {"name": name})
  announced = False
  while True:
    waiting, lost = [], []
    for j in group.peers():
      if not _arrived(group, j):
        (lost if not _held(group.path(f"{j}.lock"))
         and not _arrived(group, j) else waiting).append(j)
    if lost:
      group.lost = tuple(sorted(set(group.lost) | set(lost)))
      return list(group.lost)
    if not waiting:
      return []
    if not announced:
      print(f"process {group.index} of {group.count}: share done; waiting "
            f"for {_processes(waiting)}", file=sys.stderr, flush=True)
      announced = True
    time.sleep(_POLL_SECONDS)


def lost_processes() -> tuple[int, ...]:
  """The processes of this run found lost so far: those that let go of the
  open results directory without arriving at its :func:`barrier` (looked
  at no more than once a second). A run's ``stop`` asks this, so that every
  run stops at the end of its chunk once a process is lost."""
  group = _GROUP
  if group is None:
    return ()
  now = time.monotonic()
  if group.lock is not None and now - group.checked_at >= _CHECK_SECONDS:
    group.checked_at = now
    lost = [j for j in group.peers()
            if not _arrived(group, j) and not _held(group.path(f"{j}.lock"))
            and not _arrived(group, j)]
    group.lost = tuple(sorted(set(group.lost) | set(lost)))
  return group.lost


def lost_line(lost: Sequence[int]) -> str:
  """What a process says once others were lost: which, and how to go on."""
  count = _GROUP.count if _GROUP else jax.process_count()
  return (f"{_processes(lost)} of {count} ended before finishing "
          f"{'its' if len(lost) == 1 else 'their'} share (killed, or failed: "
          "see its output); what finished is saved: rerun the same command "
          "in every process to continue")


def _processes(indices: Sequence[int]) -> str:
  indices = list(indices)
  if len(indices) == 1:
    return f"process {indices[0]}"
  return f"processes {', '.join(map(str, indices[:-1]))} and {indices[-1]}"


def _first_difference(here: dict, there: dict
                      ) -> Optional[tuple[str, Any, Any]]:
  """The first setting (a flag's name, where one says it) that differs."""
  def flat(settings):
    out = {}
    for key, value in settings.items():
      if isinstance(value, dict):
        out.update(value)
      else:
        out[key] = value
    return out
  here, there = flat(here), flat(there)
  for key in sorted(set(here) | set(there)):
    if here.get(key) != there.get(key):
      return key, here.get(key), there.get(key)
  return None


def _arrived(group: _Group, j: int) -> bool:
  return os.path.exists(group.path(f"{j}.done.json"))


def _hold(path: str) -> IO:
  """``path``, opened and locked (exclusively) while it stays open."""
  f = open(path, "a+")  # pylint: disable=consider-using-with
  fcntl.flock(f, fcntl.LOCK_EX)
  return f


def _held(path: str) -> bool:
  """Whether a process holds the lock ``path`` (one that was never taken,
  or whose process is gone, is not held)."""
  try:
    with open(path, "a+") as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        return True
      fcntl.flock(f, fcntl.LOCK_UN)
      return False
  except OSError:
    return False


def _remove_finished_jobs(folder: str, job: str) -> None:
  """Removes the folders of earlier jobs in ``folder`` that no process holds."""
  for name in os.listdir(folder):
    path = os.path.join(folder, name)
    if name == job or not os.path.isdir(path):
      continue
    locks = [os.path.join(path, f) for f in os.listdir(path)
             if f.endswith(".lock")]
    if not any(_held(lock) for lock in locks):
      shutil.rmtree(path, ignore_errors=True)


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
              num_processes: int = 1, process_id: int = 0,
              coordinator_timeout: int = 300) -> list:
  """Sets JAX up as the entrypoints' flags of the same names say, and
  returns the local devices of the default backend.

  ``cpu_devices``: CPU devices to expose (0: one per core), applied before
  JAX starts its backends (``jax_num_cpu_devices``; once they run, in a test
  process, the devices stay as they are). ``compilation_cache_dir``: JAX's
  persistent cache, unless ``JAX_COMPILATION_CACHE_DIR`` sets one.
  ``coordinator_address``: ``jax.distributed`` over ``num_processes``, this
  one ``process_id``, every one connected within ``coordinator_timeout``
  seconds (:func:`start_processes`). A bad value is a one-line
  :class:`FlagError` raised before anything is set.
  """
  if cpu_devices < 0:
    raise validation.FlagError("cpu_devices",
                               f"must be >= 0, got {cpu_devices}")
  if coordinator_address:
    _check_address(coordinator_address)
    if num_processes < 1:
      raise validation.FlagError("num_processes",
                                 f"must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
      raise validation.FlagError(
          "process_id", f"must be in [0, {num_processes - 1}], got "
          f"{process_id}")
    if coordinator_timeout < 1:
      raise validation.FlagError(
          "coordinator_timeout", f"must be >= 1 (seconds), got "
          f"{coordinator_timeout}")
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
    start_processes(coordinator_address, num_processes, process_id,
                    coordinator_timeout)
  return jax.local_devices()


def _check_address(address: str) -> None:
  """``--coordinator_address`` must be host:port."""
  host, colon, port = address.rpartition(":")
  if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
    raise validation.FlagError(
        "coordinator_address", f"must be host:port (process 0's host, a port "
        f"from 1 to 65535), got {address!r}")


def start_processes(address: str, count: int, index: int,
                    timeout: int) -> None:
  """Starts this process as ``index`` of ``count`` (``jax.distributed``, its
  coordinator at ``address``), and once every one has connected, shuts
  ``jax.distributed`` down again, the job named: from then on the processes
  meet in their results directory (:func:`open_directory`, :func:`barrier`).

  Says on stderr what it waits for. If the processes have not all met
  within ``timeout`` seconds, this process says so in one line and exits at
  once with :data:`LOST_STATUS` (``os._exit``): JAX gives no way back from a
  connection that does not come, its coordination service aborts the
  process (``initialization_timeout`` is set past ``timeout`` so that this
  comes first).
  """
  global _GROUP
  print(f"process {index} of {count}: waiting up to {timeout} s "
        f"(--coordinator_timeout) for all {count} processes at {address}",
        file=sys.stderr, flush=True)
  watchdog = threading.Timer(timeout, _give_up, args=(
      f"error: --coordinator_timeout: not every one of the {count} processes "
      f"connected to {address} within {timeout} s (start every process with "
      "the same --coordinator_address and --num_processes, each with its "
      "own --process_id)",))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(address, count, index,
                               initialization_timeout=timeout + 60,
                               shutdown_timeout_seconds=timeout + 60)
    try:
      jax.devices()  # The backend learns every process's devices now.
      job = _share_job_name(index, timeout + 60)
    finally:
      jax.distributed.shutdown()
  finally:
    watchdog.cancel()
  _GROUP = _Group(job=job, index=index, count=count, timeout=timeout)


def _give_up(line: str) -> None:
  print(line, file=sys.stderr, flush=True)
  os._exit(LOST_STATUS)  # pylint: disable=protected-access


def _share_job_name(index: int, timeout: int) -> str:
  """A name process 0 makes up for this run, as every process reads it."""
  client = getattr(getattr(_jax_distributed, "global_state", None),
                   "client", None)
  if not hasattr(client, "blocking_key_value_get"):
    raise RuntimeError(
        "the processes share the job's name through "
        "jax._src.distributed.global_state.client (in "
        f"{_CLIENT_JAX}); JAX {jax.__version__} has none: install one of "
        "those versions, or run in one process")
  key = "palindrome_jax/job"
  if index == 0:
    client.key_value_set(key, uuid.uuid4().hex)
  return client.blocking_key_value_get(key, timeout * 1000)


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
