"""Tests for palindrome_jax.metrics: every run's curves as it trains.

The curves are checked against what training recorded (each run's history in
its record), in ``metrics.jsonl`` and in a real TensorBoard read through its
HTTP data API (started here on a loopback port; skipped where the viewer is
not installed), while a sweep trains, after a horizon search, and after a
sweep killed with SIGKILL and continued from its checkpoint.
"""

import contextlib
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from experiments import sweep as sweep_main
from palindrome_jax import files
from palindrome_jax import horizon
from palindrome_jax import metrics
from palindrome_jax import sweep
from palindrome_jax import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=100,
                       log_every=20, eval_every=40, eval_batches=2)


def _curve(directory, run):
  return metrics.read_jsonl(
      os.path.join(directory, "tensorboard", run, metrics.JSONL))


def _record(directory, run):
  return files.read_json(os.path.join(directory, "runs", run + ".json"))


def _assert_curve_is_the_record(points, record):
  """The points of a run's curve are its history, each step once, and its
  final test at the step its training ended."""
  history = record["history"]
  train_points = [p for p in points if "train/loss" in p]
  assert [p["step"] for p in train_points] == history["step"]
  assert [p["train/loss"] for p in train_points] == history["loss"]
  assert [p["train/accuracy"] for p in train_points] == history["accuracy"]
  checks = [p for p in points if "check/accuracy" in p]
  assert [p["step"] for p in checks] == history["check_step"]
  assert [p["check/accuracy"] for p in checks] == history["check_accuracy"]
  tests = [p for p in points if "test/accuracy" in p]
  assert [(p["step"], p["test/accuracy"], p["test/loss"]) for p in tests] == [
      (record["train_steps"], record["test_accuracy"], record["test_loss"])]


# metrics.jsonl, from what training reports.


def test_each_seed_of_a_program_writes_its_own_curve_equal_to_its_history(
    tmp_path):
  config = sweep.SweepConfig(cells=("rnn",), lengths=(3,), seeds=(42, 43),
                             base=TINY, vmap_seeds=True)
  sweep.run_sweep(config, str(tmp_path))
  for seed in (42, 43):
    run = f"rnn_N3_seed{seed}"
    _assert_curve_is_the_record(_curve(tmp_path, run), _record(tmp_path, run))
  # The two seeds trained apart: their curves differ.
  assert (_record(tmp_path, "rnn_N3_seed42")["history"]["loss"]
          != _record(tmp_path, "rnn_N3_seed43")["history"]["loss"])


def _info(step, loss, active, check=None, resumed_from=0):
  return {"step": step, "loss": loss, "accuracy": [0.5] * len(loss),
          "steps_per_second": 7.0, "active": active, "check": check,
          "resumed_from": resumed_from}


def test_a_seed_that_stopped_gets_no_more_points(tmp_path):
  # Seed 0 solves at the check of step 20 (confirmed) and stops there; seed
  # 1 trains on, as under --stop_when_solved with --vmap_seeds.
  dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
  with metrics.ProgramCurves(dirs) as curves:
    curves.on_log(_info(10, [2.0, 2.1], [True, True]))
    curves.on_log(_info(20, [1.0, 2.0], [True, True], check={
        "accuracy": [1.0, 0.2], "confirm_accuracy": [0.995, None]}))
    curves.on_log(_info(30, [9.0, 1.9], [False, True]))
  first, second = (metrics.read_jsonl(os.path.join(d, metrics.JSONL))
                   for d in dirs)
  assert [(p["step"], p["train/loss"]) for p in first] == [(10, 2.0),
                                                           (20, 1.0)]
  assert first[1]["check/accuracy"] == 1.0
  assert first[1]["check/confirm_accuracy"] == 0.995
  assert [(p["step"], p["train/loss"]) for p in second] == [
      (10, 2.1), (20, 2.0), (30, 1.9)]
  assert "check/confirm_accuracy" not in second[1]


def test_a_continued_run_drops_what_an_earlier_attempt_wrote_after_it(
    tmp_path):
  directory = str(tmp_path / "run")
  with metrics.ProgramCurves([directory]) as curves:
    for step in (10, 20, 30, 40):
      curves.on_log(_info(step, [float(step)], [True]))
  path = os.path.join(directory, metrics.JSONL)
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"step": 50, "train/lo')  # Cut short by a kill.
  # Continued from a checkpoint at step 20: 30 and 40 come again.
  with metrics.ProgramCurves([directory]) as curves:
    for step in (30, 40, 50):
      curves.on_log(_info(step, [step + 0.5], [True], resumed_from=20))
  assert [(p["step"], p["train/loss"]) for p in metrics.read_jsonl(path)] == [
      (10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5), (50, 50.5)]
  # Each attempt has its event file; the later one starts with the purge
  # marker at 21, and its name sorts after the earlier one's.
  events = sorted(n for n in os.listdir(directory) if "tfevents" in n)
  assert len(events) == 2


def test_a_curve_that_cannot_be_written_ends_but_training_goes_on(
    tmp_path, caplog):
  blocker = tmp_path / "not_a_directory"
  blocker.write_text("")
  with metrics.ProgramCurves([str(blocker / "run")]) as curves:
    curves.on_log(_info(10, [1.0], [True]))
    curves.on_log(_info(20, [1.0], [True]))
  assert curves.failed
  assert sum("cannot write the curves" in r.getMessage()
             for r in caplog.records) == 1


# A sweep killed with SIGKILL, then continued.

KILLED_FLAGS = ["--cells=rnn", "--lengths=3", "--train_steps=1000",
                "--log_every=10", "--checkpoint_every=50", "--eval_batches=2",
                "--num_hidden=16", "--batch_size=16", "--cpu_devices=1"]


def _in_process(entrypoint, args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = entrypoint.COMMAND.execute(entrypoint.main,
                                      [entrypoint.__name__, *args])
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
  """What the module's TensorBoard reads: a directory per scenario."""
  return tmp_path_factory.mktemp("logdir")


@pytest.fixture(scope="module")
def killed(logdir):
  """A one-run sweep killed with SIGKILL once its curve is past its second
  checkpoint, then the same command run to the end: ``(results_dir, the
  curve at the kill, the time of the kill)``."""
  results_dir = logdir / "killed"
  args = [*KILLED_FLAGS, f"--results_dir={results_dir}"]
  path = results_dir / "tensorboard" / "rnn_N3_seed42" / metrics.JSONL
  process = subprocess.Popen(
      [sys.executable, "-m", "experiments.sweep", *args], cwd=REPO_ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 240
    while len(metrics.read_jsonl(path)) < 12:
      if process.poll() is not None or time.monotonic() > deadline:
        pytest.fail("the sweep ended or stalled before the kill:\n"
                    + process.stderr.read()[-3000:])
      time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    killed_at = time.time()
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
    process.stderr.close()
  assert process.returncode == -signal.SIGKILL
  at_kill = metrics.read_jsonl(path)
  assert not (results_dir / "runs").exists()  # It was in flight.
  code, _, stderr = _in_process(sweep_main, args)
  assert code == 0, stderr[-3000:]
  assert "(continued from the checkpoint at step " in stderr
  return results_dir, at_kill, killed_at


def test_a_sigkill_keeps_every_logged_step_and_the_rerun_continues_the_curve(
    killed):
  results_dir, at_kill, killed_at = killed
  # Every step logged before the kill is there, in order, none missing.
  steps = [p["step"] for p in at_kill]
  assert len(steps) >= 12 and steps == list(range(10, 10 * len(steps) + 1, 10))
  record = _record(results_dir, "rnn_N3_seed42")
  history = dict(zip(record["history"]["step"], record["history"]["loss"]))
  assert all(p["train/loss"] == history[p["step"]] for p in at_kill)
  # Continued: each step once, equal to the run's record; the points up to
  # the checkpoint are the killed attempt's own lines, the rest new ones.
  after = _curve(results_dir, "rnn_N3_seed42")
  _assert_curve_is_the_record(after, record)
  kept = [p for p in after if p["time"] < killed_at]
  assert kept == at_kill[:len(kept)]
  checkpoint = kept[-1]["step"]
  assert checkpoint % 50 == 0 and checkpoint >= 50
  assert all(p["step"] > checkpoint for p in after[len(kept):])


# The real TensorBoard, through its HTTP data API.


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class TensorBoard:
  """A TensorBoard process on a loopback port, read through its HTTP API."""

  def __init__(self, logdir):
    self.url = f"http://127.0.0.1:{_free_port()}"
    log = logdir.parent / "tensorboard.log"
    self.log = open(log, "w+", encoding="utf-8")  # pylint: disable=R1732
    self.process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
         f"--port={self.url.rsplit(':', 1)[1]}", "--host=127.0.0.1",
         "--load_fast=false", "--reload_interval=1"],
        stdout=self.log, stderr=subprocess.STDOUT)

  def get(self, route, **query):
    url = f"{self.url}/data/plugin/scalars/{route}"
    if query:
      url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:
      return json.loads(response.read())

  def scalars(self, run, tag, steps, timeout=90):
    """``[(step, value)]`` of ``run``'s ``tag`` once its steps are
    ``steps`` (polled until they are, within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        break
      try:
        if tag in self.get("tags").get(run, {}):
          found = [(s, v) for _, s, v in self.get("scalars", run=run,
                                                  tag=tag)]
          if [s for s, _ in found] == list(steps):
            return found
      except OSError:  # Not listening yet.
        pass
      time.sleep(0.25)
    self.log.seek(0)
    pytest.fail(f"TensorBoard did not show {run} {tag} at steps {steps} "
                f"(it showed {found}):\n{self.log.read()[-3000:]}")

  def close(self):
    self.process.terminate()
    try:
      self.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    self.log.close()


@pytest.fixture(scope="module")
def tensorboard(logdir):
  if importlib.util.find_spec("tensorboard") is None:
    pytest.skip("tensorboard is not installed (pip install -e .[tensorboard])")
  server = TensorBoard(logdir)
  yield server
  server.close()


def _assert_shown_as_recorded(server, run, record):
  history = record["history"]
  assert server.scalars(run, "train/loss", history["step"]) == list(
      zip(history["step"], history["loss"]))
  assert server.scalars(run, "train/accuracy", history["step"]) == list(
      zip(history["step"], history["accuracy"]))
  assert server.scalars(run, "check/accuracy", history["check_step"]) == list(
      zip(history["check_step"], history["check_accuracy"]))
  assert server.scalars(run, "test/accuracy", [record["train_steps"]]) == [
      (record["train_steps"], record["test_accuracy"])]


def test_tensorboard_shows_a_sweep_live_and_every_run_as_trained(
    tensorboard, logdir):
  shown_while_training = []

  def watched(cfg, seeds, on_log, **kwargs):
    def log(info):
      on_log(info)
      if info["step"] == 40:  # Training waits: the points so far are shown.
        shown_while_training.append(tensorboard.scalars(
            "sweep/tensorboard/rnn_N3_seed43", "train/loss", [20, 40]))
    return train.train_and_evaluate(cfg, seeds, on_log=log, **kwargs)

  config = sweep.SweepConfig(cells=("rnn",), lengths=(3,), seeds=(42, 43),
                             base=TINY, vmap_seeds=True)
  sweep.run_sweep(config, str(logdir / "sweep"), train_fn=watched)
  assert len(shown_while_training) == 1
  for seed in (42, 43):
    run = f"rnn_N3_seed{seed}"
    _assert_shown_as_recorded(tensorboard, f"sweep/tensorboard/{run}",
                              _record(logdir / "sweep", run))


def test_tensorboard_shows_a_horizon_search_as_trained(tensorboard, logdir):
  config = horizon.HorizonConfig(
      cells=("rnn",), seeds=(42,), min_length=2, max_length=2,
      base=train.RunConfig(batch_size=8, num_hidden=8, train_steps=40,
                           log_every=20, eval_every=20, eval_batches=2,
                           stop_when_solved=True))
  horizon.run_horizon(config, str(logdir / "horizon"))
  _assert_shown_as_recorded(tensorboard, "horizon/tensorboard/rnn_N2_seed42",
                            _record(logdir / "horizon", "rnn_N2_seed42"))


def test_tensorboard_shows_a_killed_and_continued_run_once_per_step(
    tensorboard, killed):
  results_dir, _, _ = killed
  _assert_shown_as_recorded(tensorboard, "killed/tensorboard/rnn_N3_seed42",
                            _record(results_dir, "rnn_N3_seed42"))
