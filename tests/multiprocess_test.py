"""A sweep over several processes when one of them goes wrong.

Each fault is what a user who outgrows one machine meets first: a process
killed part-way, one never started, processes given other settings, an
address without a port. Every test starts real local processes (loopback, a
free port, one CPU device each, tiny runs) and bounds every wait, so none
can hang; each asserts the exit status, the one line said, that nothing
aborted (``jax.distributed``'s coordination service aborts with "Check
failure" and "Fatal Python error" when left to itself), and for a killed
process that the same command completes the directory without training a
finished run again. The file protocol itself (:func:`devices.open_directory`,
:func:`devices.barrier`) is tested in this process, with locks standing in
for the other processes.
"""

import fcntl
import glob
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from experiments import sweep as sweep_main
from palindrome_jax import devices
from palindrome_jax import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--cells=rnn,lstm", "--lengths=3,4", "--batch_size=8",
        "--num_hidden=8", "--train_steps=40", "--log_every=20",
        "--eval_batches=2", "--cpu_devices=1"]
# The killed sweep: eight runs of one shape, four a process: each process
# compiles once, and one killed after its first run has three to go. Each run
# trains long enough (about 0.5 s on one core) that those three cannot finish
# between the first one's line and the kill: at 40 steps (10 ms a run) a
# loaded machine let them, and no run was left for the rerun.
ONE_SHAPE = ["--cells=rnn", "--lengths=3", "--seeds=8", "--train_steps=10000",
             "--log_every=1000"]
RUNS = 8
ABORTED = ("Fatal Python error", "Check failure", "Traceback")
# Every process below is killed past this; a test that needs it has failed.
LIMIT_SECONDS = 90


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _sweep(results_dir, address, process_id, *extra, timeout=30, log=None):
  """A process of a two-process sweep, its stderr into ``log``: ``extra``
  flags after the tiny ones."""
  args = [sys.executable, "-m", "experiments.sweep", *TINY, *extra,
          f"--results_dir={results_dir}", f"--coordinator_address={address}",
          "--num_processes=2", f"--process_id={process_id}",
          f"--coordinator_timeout={timeout}"]
  return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=log, text=True)


def _finish(procs, logs, deadline):
  """Waits for ``procs`` (killed past ``deadline``): exit statuses, stderrs
  and the times they ended."""
  statuses, ended = [], []
  for proc in procs:
    try:
      proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    statuses.append(proc.returncode)
    ended.append(time.monotonic())
  errs = []
  for log in logs:
    log.seek(0)
    errs.append(log.read())
    log.close()
  return statuses, errs, ended


def _records(results_dir):
  """``{run file: its content}`` of every run saved in ``results_dir``."""
  out = {}
  for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
    with open(path) as f:
      out[os.path.basename(path)] = f.read()
  return out


def _assert_clean(err):
  for sign in ABORTED:
    assert sign not in err, err[-3000:]


@pytest.mark.parametrize("victim", [1, 0])
def test_a_process_killed_part_way_stops_the_other_which_the_rerun_completes(
    victim, tmp_path):
  results_dir = tmp_path / "sweep"
  address = f"127.0.0.1:{_free_port()}"
  logs = [open(tmp_path / f"{i}.err", "w+") for i in (0, 1)]
  deadline = time.monotonic() + LIMIT_SECONDS
  procs = [_sweep(results_dir, address, i, *ONE_SHAPE, log=logs[i])
           for i in (0, 1)]
  # Killed (kill -9) once it has saved its first run: it has three to go.
  while "test accuracy" not in (tmp_path / f"{victim}.err").read_text():
    assert time.monotonic() < deadline and procs[victim].poll() is None, (
        (tmp_path / f"{victim}.err").read_text()[-3000:])
    time.sleep(0.05)
  procs[victim].kill()
  killed = time.monotonic()
  survivor = 1 - victim
  statuses, errs, ended = _finish([procs[survivor]], [logs[survivor]],
                                  deadline)
  stop_seconds = ended[0] - killed
  procs[victim].wait()
  logs[victim].close()
  err = errs[0]
  assert statuses == [devices.LOST_STATUS], err[-3000:]
  _assert_clean(err)
  line = (f"process {victim} of 2 ended before finishing its share (killed, "
          "or failed: see its output); what finished is saved: rerun the "
          "same command in every process to continue")
  assert err.count(line) == 1, err[-3000:]
  assert stop_seconds < 20, stop_seconds
  print(f"survivor {survivor} stopped {stop_seconds:.1f} s after the kill")
  finished = _records(results_dir)
  assert 0 < len(finished) < RUNS
  if survivor == 0:  # Process 0 writes the summaries of what finished.
    with open(results_dir / "results.json") as f:
      assert len(json.load(f)) == len(finished)

  # The same command in every process: what finished is read back, the rest
  # trains, and process 0 writes the summaries of all of them.
  logs = [open(tmp_path / f"{i}.rerun.err", "w+") for i in (0, 1)]
  deadline = time.monotonic() + LIMIT_SECONDS
  procs = [_sweep(results_dir, address, i, *ONE_SHAPE, log=logs[i])
           for i in (0, 1)]
  statuses, errs, _ = _finish(procs, logs, deadline)
  assert statuses == [0, 0], [err[-2000:] for err in errs]
  for err in errs:
    _assert_clean(err)
  with open(results_dir / "results.json") as f:
    assert len(json.load(f)) == RUNS
  rerun = _records(results_dir)
  assert {name: rerun[name] for name in finished} == finished
  trained_again = sum(err.count("test accuracy") for err in errs)
  assert trained_again == RUNS - len(finished), errs


@pytest.mark.parametrize("started", [0, 1])
def test_a_process_alone_says_what_it_waits_for_and_gives_up_in_time(
    started, tmp_path):
  address = f"127.0.0.1:{_free_port()}"
  log = open(tmp_path / "err", "w+")
  start = time.monotonic()
  proc = _sweep(tmp_path / "sweep", address, started, timeout=5, log=log)
  statuses, errs, ended = _finish([proc], [log], start + LIMIT_SECONDS)
  err = errs[0]
  assert statuses == [devices.LOST_STATUS], err[-3000:]
  _assert_clean(err)
  assert (f"process {started} of 2: waiting up to 5 s (--coordinator_timeout) "
          f"for all 2 processes at {address}") in err
  assert (f"error: --coordinator_timeout: not every one of the 2 processes "
          f"connected to {address} within 5 s") in err
  assert ended[0] - start < 5 + 30
  assert not os.path.exists(tmp_path / "sweep" / "runs")


def test_processes_given_other_settings_all_refuse_before_training(tmp_path):
  results_dir = tmp_path / "sweep"
  address = f"127.0.0.1:{_free_port()}"
  logs = [open(tmp_path / f"{i}.err", "w+") for i in (0, 1)]
  start = time.monotonic()
  procs = [_sweep(results_dir, address, i,
                  *(["--train_steps=60"] if i else []), log=logs[i])
           for i in (0, 1)]
  statuses, errs, ended = _finish(procs, logs, start + LIMIT_SECONDS)
  assert statuses == [2, 2], [err[-2000:] for err in errs]
  line = ("error: --train_steps: process 1 was given 60, process 0 40: every "
          "process needs the same settings")
  for err in errs:
    _assert_clean(err)
    assert err.count(line) == 1, err[-2000:]
    assert "test accuracy" not in err
  assert max(ended) - start < 30
  assert not os.path.exists(results_dir / "runs")


@pytest.mark.parametrize("address", ["nocolon", "host:", ":1234", "host:port",
                                     "host:70000"])
def test_an_address_without_host_and_port_is_one_line_and_status_2(
    address, tmp_path, capsys):
  status = sweep_main.COMMAND.execute(sweep_main.main, [
      "sweep", *TINY, f"--coordinator_address={address}", "--num_processes=2",
      f"--results_dir={tmp_path}"])
  err = capsys.readouterr().err
  assert status == 2
  assert err.strip() == (
      "error: --coordinator_address: must be host:port (process 0's host, a "
      f"port from 1 to 65535), got {address!r}")


# The file protocol, in this process: process 0 of two, whose peer is a lock
# held (or let go) here.


@pytest.fixture
def group(monkeypatch):
  """This process as process 0 of 2 (no jax.distributed: already met)."""
  # pylint: disable-next=protected-access
  group = devices._Group(job="job", index=0, count=2, timeout=2)
  monkeypatch.setattr(devices, "_GROUP", group)
  monkeypatch.setattr(devices, "_CHECK_SECONDS", 0.0)
  yield group
  devices.close_directory()


def _peer(root, settings):
  """Process 1, as far as the files say: it holds its lock and has left its
  settings. Returns its lock (closed: the process is gone)."""
  folder = os.path.join(root, ".processes", "job")
  os.makedirs(folder, exist_ok=True)
  lock = open(os.path.join(folder, "1.lock"), "a+")
  fcntl.flock(lock, fcntl.LOCK_EX)
  with open(os.path.join(folder, "1.settings.json"), "w") as f:
    json.dump(settings, f)
  return lock


def test_the_barrier_returns_once_every_process_arrives(group, tmp_path):
  lock = _peer(str(tmp_path), {"a": 1})
  devices.open_directory(str(tmp_path), {"a": 1})
  with open(group.path("1.done.json"), "w") as f:
    f.write("{}")
  assert devices.barrier("done") == []
  assert devices.lost_processes() == ()
  lock.close()  # Gone after it arrived: not lost.
  assert devices.lost_processes() == ()


def test_a_process_that_lets_go_without_arriving_is_lost(group, tmp_path,
                                                         capsys):
  lock = _peer(str(tmp_path), {"a": 1})
  devices.open_directory(str(tmp_path), {"a": 1})
  assert devices.lost_processes() == ()  # Still holds its lock: training.
  lock.close()
  assert devices.lost_processes() == (1,)
  assert devices.barrier("done") == [1]
  assert devices.lost_line([1]).startswith(
      "process 1 of 2 ended before finishing its share")
  assert "waiting" not in capsys.readouterr().err


def test_other_settings_are_refused_naming_the_first_that_differs(group,
                                                                  tmp_path):
  peer = _peer(str(tmp_path), {"config": {"cells": ["rnn"]},
                               "training_settings": {"train_steps": 60}})
  with peer, pytest.raises(validation.FlagError) as error:
    devices.open_directory(str(tmp_path), {
        "config": {"cells": ["rnn"]}, "training_settings": {"train_steps": 40}})
  assert str(error.value) == ("--train_steps: process 1 was given 60, process "
                              "0 40: every process needs the same settings")
  assert group.lock is None  # Let go: the directory is not held.


def test_a_process_that_never_opens_the_directory_is_named_in_time(
    group, tmp_path):
  start = time.monotonic()
  with pytest.raises(devices.ProcessesError, match=(
      r"^process 1 of 2 did not open .* within 2 s \(--coordinator_timeout\)")):
    devices.open_directory(str(tmp_path), {"a": 1})
  assert time.monotonic() - start < 2 + 2


def test_a_new_job_removes_the_folders_of_finished_ones(group, tmp_path):
  finished = tmp_path / ".processes" / "finished"
  finished.mkdir(parents=True)
  (finished / "0.lock").write_text("")
  running = tmp_path / ".processes" / "running"
  running.mkdir()
  held = open(running / "0.lock", "a+")
  fcntl.flock(held, fcntl.LOCK_EX)
  with held, _peer(str(tmp_path), {"a": 1}):
    devices.open_directory(str(tmp_path), {"a": 1})
    assert not finished.exists() and running.exists()
