"""A run gives the same numbers on any device layout and beside any seeds.

Each seed is its own compiled program (unless --vmap_seeds), so this holds
by construction; these tests check it on whatever CPU runs them.

JAX fixes its device count when its backend starts, so each configuration
runs the sweep entrypoint in a subprocess (``--cpu_devices``).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_FIELDS = ("cell", "length", "seed", "status", "test_accuracy",
                 "test_loss", "final_train_loss", "history")


def _sweep(results_dir, cpu_devices, seeds):
  subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--cells=rnn,lstm",
       "--lengths=3,4", "--batch_size=8", "--num_hidden=8", "--train_steps=40",
       "--log_every=20", "--eval_batches=2", f"--seeds={seeds}",
       f"--cpu_devices={cpu_devices}", f"--results_dir={results_dir}"],
      cwd=REPO, check=True, capture_output=True)
  with open(os.path.join(results_dir, "results.json")) as f:
    rows = json.load(f)
  with open(os.path.join(results_dir, "config.json")) as f:
    devices = json.load(f)["devices"]
  return [{k: r[k] for k in RESULT_FIELDS} for r in rows], devices


@pytest.mark.parametrize("seeds, layout", [
    (1, "one run per device, side by side"),
    (2, "each run's seeds split over the devices"),
])
def test_two_cpu_devices_reproduce_one(tmp_path, seeds, layout):
  one, one_devices = _sweep(tmp_path / "one", 1, seeds)
  two, two_devices = _sweep(tmp_path / "two", 2, seeds)
  assert len(one_devices) == 1 and len(two_devices) == 2
  assert len(two) == 4 * seeds
  assert two == one, layout


def test_a_seed_gives_the_same_numbers_beside_other_seeds(tmp_path):
  alone, _ = _sweep(tmp_path / "alone", 1, 1)
  beside, _ = _sweep(tmp_path / "beside", 2, 3)
  assert alone == [r for r in beside if r["seed"] == 42]


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_give_the_rows_of_one(tmp_path):
  """jax.distributed with 2 local CPU processes, one device each: each
  trains its share of the runs into one directory; process 0 summarises."""
  one, _ = _sweep(tmp_path / "one", 1, 2)
  address = f"127.0.0.1:{_free_port()}"
  results_dir = tmp_path / "two"
  args = [sys.executable, "-m", "experiments.sweep", "--cells=rnn,lstm",
          "--lengths=3,4", "--batch_size=8", "--num_hidden=8",
          "--train_steps=40", "--log_every=20", "--eval_batches=2",
          "--seeds=2", "--cpu_devices=1", f"--results_dir={results_dir}",
          f"--coordinator_address={address}", "--num_processes=2"]
  procs = [subprocess.Popen(args + [f"--process_id={i}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in (0, 1)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "process 1 of 2" in outputs[1][1]
  with open(os.path.join(results_dir, "results.json")) as f:
    rows = json.load(f)
  two = [{k: r[k] for k in RESULT_FIELDS} for r in rows]
  assert two == one
  # The runs were split: each process trained (and summarised) some of them.
  for _, err in outputs:
    assert 0 < err.count("test accuracy") < 8


def test_device_memory_on_this_cpu_is_what_the_os_says_is_available():
  import jax  # pylint: disable=g-import-not-at-top
  from palindrome_jax import devices  # pylint: disable=g-import-not-at-top
  if not os.path.exists("/proc/meminfo"):
    pytest.skip("no /proc/meminfo")
  with open("/proc/meminfo") as f:
    available = next(int(line.split()[1]) * 1024 for line in f
                     if line.startswith("MemAvailable:"))
  measured = devices.device_memory(jax.devices("cpu")[0])
  assert 0.5 * available < measured < 2 * available
