"""Tests for palindrome_jax.sweep: resume, extend, failures, the same numbers
alone or in a sweep."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import sweep as sweep_main
from palindrome_jax import files as io
from palindrome_jax import results
from palindrome_jax import sweep
from palindrome_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=60,
                       log_every=20, eval_batches=2)
# What a run computed, as opposed to how long it took.
RESULT_FIELDS = ("cell", "length", "seed", "status", "test_accuracy",
                 "test_loss", "final_train_loss", "final_train_accuracy",
                 "train_steps", "history")


def _results(rows):
  return [{k: row[k] for k in RESULT_FIELDS} for row in rows]


def _sweep_args(results_dir):
  return ["--cells=rnn,lstm", "--lengths=3,4", "--batch_size=8",
          "--num_hidden=8", "--train_steps=60", "--log_every=20",
          "--eval_batches=2", "--cpu_devices=1", f"--results_dir={results_dir}"]


def _sweep_in_process(results_dir, capsys):
  """``python -m experiments.sweep`` in this process (the flags put back);
  returns its stderr."""
  capsys.readouterr()
  status = sweep_main.COMMAND.execute(sweep_main.main,
                                      ["sweep", *_sweep_args(results_dir)])
  stderr = capsys.readouterr().err
  assert status == 0, stderr[-3000:]
  return stderr


def test_killed_sweep_resumes_to_identical_results(tmp_path, capsys):
  full, killed = tmp_path / "full", tmp_path / "killed"
  _sweep_in_process(full, capsys)

  # Killed: a process of its own.
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.sweep", *_sweep_args(killed)],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  runs = killed / "runs"
  # Names that start with "." are records being written (files'
  # temporaries): a kill then leaves no record.
  while time.monotonic() < deadline and proc.poll() is None:
    if runs.is_dir() and any(runs.glob("[!.]*.json")):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the sweep ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  finished_before = sorted(p.name for p in runs.glob("[!.]*.json"))
  assert 1 <= len(finished_before) < 4
  assert not (killed / "results.json").exists()

  rerun = _sweep_in_process(killed, capsys)
  assert "finished earlier, skipped" in rerun
  assert _results(io.read_json(killed / "results.json")) == _results(
      io.read_json(full / "results.json"))
  assert len(io.read_json(killed / "results.json")) == 4


class _Killed(Exception):
  """The process dying mid-run."""


def _train_killed_at(step, cfg, seeds, checkpoint, checkpoint_every):
  """Trains with checkpoints until ``step``, where the process 'dies'."""
  def kill(info):
    if info["step"] == step:
      raise _Killed

  with pytest.raises(_Killed):
    train.train_and_evaluate(cfg, seeds, on_log=kill,
                             checkpoint_path=checkpoint,
                             checkpoint_every=checkpoint_every)


def test_checkpoint_continues_a_killed_run_exactly(tmp_path):
  cfg = TINY.__class__(**{**TINY.__dict__, "cell": "lstm", "length": 4,
                          "train_steps": 100})
  uninterrupted = train.train_and_evaluate(cfg, (3, 4))
  checkpoint = str(tmp_path / "ckpt.msgpack")
  _train_killed_at(60, cfg, (3, 4), checkpoint, checkpoint_every=40)
  assert os.path.exists(checkpoint)
  steps_seen = []
  resumed = train.train_and_evaluate(
      cfg, (3, 4), on_log=lambda info: steps_seen.append(info["step"]),
      checkpoint_path=checkpoint, checkpoint_every=40)
  assert steps_seen == [60, 80, 100]  # Continued from step 40.
  for a, b in zip(uninterrupted.seeds, resumed.seeds):
    assert a.history == b.history
    assert a.test_accuracy == b.test_accuracy
    assert a.test_loss == b.test_loss
    np.testing.assert_array_equal(a.params["cell"]["W_h"],
                                  b.params["cell"]["W_h"])


def test_a_checkpoint_is_kept_when_solve_checks_split_the_chunks(tmp_path):
  """Solve checks every 30 steps end chunks off the 20-step grid (20, 30,
  50, 60, 80, ...): a chunk that crosses a multiple of 40 still saves."""
  cfg = TINY.__class__(**{**TINY.__dict__, "cell": "rnn", "length": 4,
                          "train_steps": 100, "eval_every": 30})
  uninterrupted = train.train_and_evaluate(cfg, (3,))
  checkpoint = str(tmp_path / "ckpt.msgpack")
  _train_killed_at(60, cfg, (3,), checkpoint, checkpoint_every=40)
  resumed = train.train_and_evaluate(cfg, (3,), checkpoint_path=checkpoint,
                                     checkpoint_every=40)
  assert resumed.resumed_from == 50  # The chunk 30..50 crossed step 40.
  assert resumed.seeds[0].history == uninterrupted.seeds[0].history
  assert resumed.seeds[0].test_accuracy == uninterrupted.seeds[0].test_accuracy


@pytest.mark.parametrize("stop_when_solved", [False, True])
def test_a_stop_after_the_last_chunk_keeps_the_finished_run(stop_when_solved):
  """Ctrl-C during the chunk that ends a run (the budget spent, or every
  seed solved): the run is finished, so it is returned, not thrown away."""
  cfg = TINY.__class__(**{**TINY.__dict__, "cell": "rnn", "length": 2,
                          "train_steps": 200, "solved_accuracy": 0.05,
                          "eval_every": 20, "confirm_batches": 0,
                          "stop_when_solved": stop_when_solved})
  whole = train.train_and_evaluate(cfg, (3, 4))
  last_step = max(s.train_steps for s in whole.seeds)
  assert (last_step < cfg.train_steps) == stop_when_solved
  steps = []
  stopped = train.train_and_evaluate(
      cfg, (3, 4), on_log=lambda info: steps.append(info["step"]),
      should_stop=lambda: steps[-1] == last_step)
  for a, b in zip(whole.seeds, stopped.seeds):
    assert (a.test_accuracy, a.history) == (b.test_accuracy, b.history)


def test_vmapped_seeds_are_checkpointed_and_continue_exactly(tmp_path):
  config = sweep.SweepConfig(cells=("lstm",), lengths=(4,), seeds=(1, 2),
                             base=TINY.__class__(**{**TINY.__dict__,
                                                    "train_steps": 100}),
                             vmap_seeds=True, checkpoint_every=20)
  whole = sweep.run_sweep(config, str(tmp_path / "whole")).rows
  resumed_from, stop_now = [], []

  def train_stopping_at_60(cfg, seeds, on_log, **kwargs):
    def log(info):
      on_log(info)
      if info["step"] == 60:
        stop_now.append(True)
    group = train.train_and_evaluate(cfg, seeds, on_log=log, **kwargs)
    resumed_from.append(group.resumed_from)
    return group

  stopped = tmp_path / "stopped"
  sweep.run_sweep(config, str(stopped), train_fn=train_stopping_at_60,
                  stop=lambda: bool(stop_now))
  assert os.listdir(stopped / "checkpoints") == ["lstm_N4_seeds1-2.msgpack"]
  stop_now.clear()
  rows = sweep.run_sweep(config, str(stopped),
                         train_fn=train_stopping_at_60).rows
  assert resumed_from == [60]
  assert _results(rows) == _results(whole)
  assert not os.listdir(stopped / "checkpoints")


def test_a_run_gives_the_same_numbers_alone_or_in_a_sweep(tmp_path):
  config = sweep.SweepConfig(cells=("rnn", "gru"), lengths=(3, 5),
                             seeds=(1,), base=TINY)
  rows = sweep.run_sweep(config, str(tmp_path / "sweep")).rows
  alone = train.train_and_evaluate(
      TINY.__class__(**{**TINY.__dict__, "cell": "gru", "length": 5}), (1,))
  row = next(r for r in rows if r["cell"] == "gru" and r["length"] == 5)
  assert row["test_accuracy"] == alone.seeds[0].test_accuracy
  assert row["history"] == alone.seeds[0].history


def test_other_settings_are_refused_unless_overwrite(tmp_path):
  base = sweep.SweepConfig(cells=("rnn",), lengths=(3,), base=TINY)
  sweep.run_sweep(base, str(tmp_path))
  other = sweep.SweepConfig(cells=("rnn",), lengths=(3,),
                            base=TINY.__class__(**{**TINY.__dict__,
                                                   "learning_rate": 0.01}))
  with pytest.raises(results.SettingsMismatchError, match="learning_rate"):
    sweep.run_sweep(other, str(tmp_path))
  rows = sweep.run_sweep(other, str(tmp_path), overwrite=True).rows
  assert len(rows) == 1
  config = io.read_json(tmp_path / "config.json")
  assert config["training_settings"]["learning_rate"] == 0.01


def test_more_runs_extend_a_sweep_with_the_same_settings(tmp_path):
  calls = []

  def counting_train(cfg, seeds, **kwargs):
    calls.append((cfg.cell, cfg.length, tuple(seeds)))
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  sweep.run_sweep(sweep.SweepConfig(cells=("rnn",), lengths=(3,), base=TINY),
                  str(tmp_path), train_fn=counting_train)
  rows = sweep.run_sweep(
      sweep.SweepConfig(cells=("rnn",), lengths=(3, 4), base=TINY),
      str(tmp_path), train_fn=counting_train).rows
  assert calls == [("rnn", 3, (42,)), ("rnn", 4, (42,))]
  assert [(r["cell"], r["length"]) for r in rows] == [("rnn", 3), ("rnn", 4)]


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
  attempts = []

  def flaky_train(cfg, seeds, **kwargs):
    attempts.append(cfg.cell)
    if cfg.cell == "rnn" and attempts.count("rnn") == 1:
      raise MemoryError("RESOURCE_EXHAUSTED: pretend out of memory")
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  config = sweep.SweepConfig(cells=("rnn", "lstm"), lengths=(3,), base=TINY)
  rows = sweep.run_sweep(config, str(tmp_path), train_fn=flaky_train).rows
  status = {r["cell"]: r["status"] for r in rows}
  assert status["lstm"] == "ok"
  assert status["rnn"].startswith("error: MemoryError: RESOURCE_EXHAUSTED")
  table = (tmp_path / "results.md").read_text()
  assert "1 failed" in table
  # A rerun retries what failed, and only that.
  rows = sweep.run_sweep(config, str(tmp_path), train_fn=flaky_train).rows
  assert sorted(attempts[:2]) == ["lstm", "rnn"] and attempts[2:] == ["rnn"]
  assert {r["status"] for r in rows} == {"ok"}


def test_a_diverging_run_is_reported_and_the_sweep_goes_on(tmp_path):
  def train_irnn_with_huge_lr(cfg, seeds, **kwargs):
    if cfg.cell == "irnn":  # Adam moves each weight by ~lr: overflow.
      cfg = cfg.__class__(**{**cfg.__dict__, "learning_rate": 1e38})
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  config = sweep.SweepConfig(cells=("irnn", "rnn"), lengths=(3,), base=TINY)
  rows = sweep.run_sweep(config, str(tmp_path),
                         train_fn=train_irnn_with_huge_lr).rows
  status = {r["cell"]: r["status"] for r in rows}
  assert status["irnn"].startswith("diverged at step ")
  step = int(status["irnn"].rsplit(" ", 1)[1])
  assert 0 <= step < TINY.train_steps
  assert status["rnn"] == "ok"
  table = (tmp_path / "results.md").read_text()
  assert "| irnn | 1 diverged |" in table
  assert set(os.listdir(tmp_path)) >= {"accuracy_vs_length.png",
                                       "training_curves.png", "results.csv"}
