"""Where runs go, and that a run gives the same numbers on any device layout
and beside any seeds.

Each seed is its own compiled program (unless --vmap_seeds), so the numbers
hold by construction; these tests check it on whatever CPU runs them. JAX
fixes its device count when its backend starts, so the layouts other than
this process's one device are sweeps in subprocesses (``--cpu_devices``):
one on one device and one on two, with more seeds than it, cover them.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import jax
import pytest

from experiments import sweep as sweep_main
from palindrome_jax import devices
from palindrome_jax import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_FIELDS = ("cell", "length", "seed", "status", "test_accuracy",
                 "test_loss", "final_train_loss", "history")
SWEEP = ["--cells=rnn,lstm", "--lengths=3", "--batch_size=8",
         "--num_hidden=8", "--train_steps=40", "--log_every=20",
         "--eval_batches=2"]


def _read(results_dir):
  with open(os.path.join(results_dir, "results.json")) as f:
    rows = json.load(f)
  with open(os.path.join(results_dir, "config.json")) as f:
    used = json.load(f)["devices"]
  return [{k: r[k] for k in RESULT_FIELDS} for r in rows], used


def _sweep(results_dir, cpu_devices, seeds):
  subprocess.run(
      [sys.executable, "-m", "experiments.sweep", *SWEEP, f"--seeds={seeds}",
       f"--cpu_devices={cpu_devices}", f"--results_dir={results_dir}"],
      cwd=REPO, check=True, capture_output=True)
  return _read(results_dir)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
  """Seeds 42 and 43 on one device."""
  return _sweep(tmp_path_factory.mktemp("one"), 1, 2)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
  """Seeds 42 to 44 on two devices, one run per device, side by side."""
  return _sweep(tmp_path_factory.mktemp("two"), 2, 3)


def test_two_cpu_devices_reproduce_one(one, two):
  (one_rows, one_devices), (two_rows, two_devices) = one, two
  assert len(one_devices) == 1 and len(two_devices) == 2
  assert len(one_rows) == 2 * 2 and len(two_rows) == 2 * 3
  assert [r for r in two_rows if r["seed"] in (42, 43)] == one_rows


def test_a_seed_gives_the_same_numbers_beside_other_seeds(two, tmp_path,
                                                          capsys):
  # Seed 42 alone, in this process (on its devices: one, unless told
  # otherwise): the sweep's main, as the command line calls it.
  assert sweep_main.COMMAND.execute(sweep_main.main, [
      "sweep", *SWEEP, "--seeds=1", f"--results_dir={tmp_path}"]) == 0, (
          capsys.readouterr().err[-3000:])
  alone, _ = _read(tmp_path)
  assert len(alone) == 2
  assert alone == [r for r in two[0] if r["seed"] == 42]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_give_the_rows_of_one(one, tmp_path):
  """jax.distributed with 2 local CPU processes, one device each: each
  trains its share of the runs into one directory; process 0 summarises."""
  address = f"127.0.0.1:{_free_port()}"
  results_dir = tmp_path / "two"
  args = [sys.executable, "-m", "experiments.sweep", *SWEEP, "--seeds=2",
          "--cpu_devices=1", f"--results_dir={results_dir}",
          f"--coordinator_address={address}", "--num_processes=2"]
  procs = [subprocess.Popen(args + [f"--process_id={i}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in (0, 1)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2" in outputs[1][1]
  two, _ = _read(results_dir)
  assert two == one[0]
  # The runs were split: each process trained (and summarised) some of them.
  for _, err in outputs:
    assert 0 < err.count("test accuracy") < 8


def test_device_memory_on_this_cpu_is_what_the_os_says_is_available():
  if not os.path.exists("/proc/meminfo"):
    pytest.skip("no /proc/meminfo")
  with open("/proc/meminfo") as f:
    available = next(int(line.split()[1]) * 1024 for line in f
                     if line.startswith("MemAvailable:"))
  measured = devices.device_memory(jax.devices("cpu")[0])
  assert 0.5 * available < measured < 2 * available


@pytest.mark.parametrize("kwargs, line", [
    (dict(cpu_devices=-1), "--cpu_devices: must be >= 0, got -1"),
    (dict(num_processes=2), "--num_processes: several processes need "
     "--coordinator_address"),
    (dict(process_id=1), "--num_processes: several processes need "
     "--coordinator_address"),
    (dict(coordinator_address="localhost:1", num_processes=0),
     "--num_processes: must be >= 1, got 0"),
    (dict(coordinator_address="localhost:1", num_processes=2, process_id=2),
     "--process_id: must be in [0, 1], got 2"),
    (dict(coordinator_address="nocolon", num_processes=2),
     "--coordinator_address: must be host:port (process 0's host, a port "
     "from 1 to 65535), got 'nocolon'"),
    (dict(coordinator_address="localhost:1", num_processes=2,
          coordinator_timeout=0),
     "--coordinator_timeout: must be >= 1 (seconds), got 0"),
])
def test_configure_refuses_bad_settings_before_setting_anything(
    kwargs, line, monkeypatch):
  monkeypatch.setattr(jax.config, "update", _not_called)
  monkeypatch.setattr(jax.distributed, "initialize", _not_called)
  with pytest.raises(validation.FlagError) as error:
    devices.configure(**kwargs)
  assert str(error.value) == line


def _not_called(*args, **kwargs):
  raise AssertionError(f"called with {args} {kwargs}")


def test_configure_once_jax_runs_keeps_its_devices_and_says_so(caplog):
  before = jax.local_devices()
  count = jax.config.jax_num_cpu_devices
  with caplog.at_level(logging.WARNING):
    assert devices.configure(cpu_devices=len(before) + 2) == before
  assert jax.config.jax_num_cpu_devices == count
  assert f"--cpu_devices={len(before) + 2} ignored" in caplog.text
  assert devices.describe(before) == (
      f"JAX {jax.__version__} on {len(before)} cpu device(s) "
      f"({len(jax.devices())} in all)")


class _Device:
  """A device that holds ``limit`` bytes."""

  platform = "tpu"

  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return {"bytes_limit": self.limit}

  def __str__(self):
    return "TPU_0"


class _Cfg:

  def __init__(self, cell, length, batch_size, num_hidden=16):
    self.cell, self.length = cell, length
    self.batch_size, self.num_hidden = batch_size, num_hidden


def test_check_memory_names_what_is_too_large(monkeypatch):
  gigabyte = 10**9
  device = _Device(2 * gigabyte)
  by_size = {"rnn": gigabyte, "lstm": 3 * gigabyte}
  estimate = lambda cfg: by_size[cfg.cell] * cfg.batch_size // 128
  devices.check_memory([_Cfg("rnn", 20, 128)], device, estimate)  # Fits.
  with pytest.raises(validation.FlagError) as error:
    devices.check_memory([_Cfg("rnn", 20, 128), _Cfg("lstm", 20, 128)],
                         device, estimate)
  assert str(error.value) == (
      "--lengths: lstm at N=20 with --batch_size=128 and --num_hidden=16 "
      "needs about 3.0 GB to train (estimated); TPU_0 has 2.0 GB available")
  with pytest.raises(validation.FlagError, match="^--batch_size: rnn at N=20 "
                     "with --batch_size=8192 .* about 64.0 GB"):
    devices.check_memory([_Cfg("rnn", 20, 8192)], device, estimate)
  # A config that cannot be traced fails as a run: it is passed over here.
  devices.check_memory([_Cfg("gru", 20, 128)], device, estimate)
  # No limit known: nothing is refused.
  monkeypatch.setattr(devices, "device_memory", lambda device: None)
  devices.check_memory([_Cfg("lstm", 20, 8192)], device, estimate)


def test_sharing_the_job_name_without_the_distributed_client_says_which_jax(
    monkeypatch):
  assert devices.barrier("alone") == []  # One process: returns at once.
  monkeypatch.setattr(devices, "_jax_distributed", None)
  with pytest.raises(RuntimeError, match=r"global_state\.client \(in JAX "
                     r"0\.8\.2 \(the floor\) to 0\.10\.2\); JAX .* has none"):
    devices._share_job_name(0, 1)  # pylint: disable=protected-access


class _Cpu:
  """A CPU device: runs on it draw on the host's memory."""
  platform = "cpu"

  def __init__(self, name):
    self.name = name

  def memory_stats(self):
    return None


def _most_side_by_side(pool, needs, hold=0.3):
  """Runs one item per need through ``pool.map``; returns the most that ran
  at once."""
  lock, running, most = threading.Lock(), [0], [0]

  def run(item, device):
    del item, device
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    time.sleep(hold)
    with lock:
      running[0] -= 1

  pool.map(run, range(len(needs)), need=lambda k: needs[k])
  return most[0]


def test_runs_side_by_side_on_cpu_devices_share_the_host_memory():
  # Two CPU devices share one memory: two runs that each need 60% of it
  # must not run at once (together they would be killed for memory), two
  # that need 40% may; a run larger than the whole budget still runs alone
  # (the entrypoint's check_memory refuses it before anything starts).
  pool = devices.DevicePool([_Cpu("a"), _Cpu("b")], host_bytes=100)
  assert _most_side_by_side(pool, [60, 60, 60]) == 1
  assert _most_side_by_side(pool, [40, 40]) == 2
  assert _most_side_by_side(pool, [150, 10]) == 1
  assert _most_side_by_side(pool, [70, 30, 30]) == 2
  # Every byte was given back.
  assert _most_side_by_side(pool, [50, 50]) == 2


def test_only_cpu_devices_side_by_side_have_a_host_budget(monkeypatch):
  monkeypatch.setattr(devices, "device_memory", lambda device: 1234)
  assert devices.DevicePool([_Cpu("a"), _Cpu("b")]).host_bytes == 1234
  assert devices.DevicePool([_Cpu("a")]).host_bytes is None  # One at a time.
  accelerators = [_Device(10), _Device(10)]  # Each has its own memory.
  assert devices.DevicePool(accelerators).host_bytes is None
  # Without a budget, needs are not looked at.
  assert _most_side_by_side(devices.DevicePool(accelerators),
                            [10**12, 10**12]) == 2

  def no_need(item):
    raise AssertionError(f"need({item}) asked without a budget")
  assert devices.DevicePool(accelerators).map(
      lambda item, device: item, [1, 2], need=no_need) == [1, 2]
