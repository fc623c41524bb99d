"""Faults in one process (issue 25): what a user gets from each.

Each test injects one fault into a tiny run (a checkpoint of other settings,
a record of other settings, a full disk at a summary, at a checkpoint or in
the gradients tool, a stop with checkpointing off, a results directory that
is a file, parameters that cannot be read) and checks what the user sees:
the lines, the exit status, and what is left on disk.
"""

import dataclasses
import errno
import logging
import os

import pytest

from experiments import evaluate as evaluate_main
from experiments import gradients as gradients_main
from experiments import sweep as sweep_main
from palindrome_jax import files as io
from palindrome_jax import results
from palindrome_jax import sweep
from palindrome_jax import train

TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=40,
                       log_every=20, eval_batches=2)
TINY_FLAGS = ["--cells=rnn", "--batch_size=8", "--num_hidden=8",
              "--train_steps=40", "--log_every=20", "--eval_batches=2",
              "--cpu_devices=1"]
FULL = "No space left on device"


def config(**kwargs):
  return sweep.SweepConfig(**{"cells": ("rnn",), "lengths": (3,),
                              "base": TINY, **kwargs})


def stopped_after_one_chunk(cfg, seeds, **kwargs):
  """The trainer, asked to stop after its first chunk (a Ctrl-C there)."""
  return train.train_and_evaluate(cfg, seeds,
                                  **{**kwargs, "should_stop": lambda: True})


def full_disk(monkeypatch, fails=lambda path: True):
  """From now on every atomic write of a path that ``fails`` raises as on
  a full disk (every file goes through :func:`files.atomic_write_bytes`)."""
  real_write = io.atomic_write_bytes

  def write(path, payload):
    if fails(str(path)):
      raise OSError(errno.ENOSPC, FULL, str(path))
    real_write(path, payload)

  monkeypatch.setattr(io, "atomic_write_bytes", write)


def but_config(path):
  """Every path but ``config.json``: the disk filled once the tool began."""
  return os.path.basename(path) != "config.json"


def execute(entrypoint, args, capfd):
  """``python -m experiments.<entrypoint> ARGS`` in this process; returns
  ``(status, stdout, stderr)`` (the log's lines included)."""
  capfd.readouterr()
  status = entrypoint.COMMAND.execute(entrypoint.main,
                                      [entrypoint.__name__, *args])
  stdout, stderr = capfd.readouterr()
  return status, stdout, stderr


def warnings_in(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno >= logging.WARNING]


# Row 1.


def test_a_checkpoint_of_other_settings_is_moved_aside_not_continued(
    tmp_path, caplog):
  """Interrupted at lr 0.002, config.json deleted, rerun at lr 0.001: the
  run trains from scratch at 0.001, and the checkpoint is moved aside with
  one line naming what differs."""
  faster = config(base=dataclasses.replace(TINY, learning_rate=0.002),
                  checkpoint_every=20)
  sweep.run_sweep(faster, str(tmp_path), train_fn=stopped_after_one_chunk)
  checkpoint = tmp_path / "checkpoints" / "rnn_N3_seed42.msgpack"
  assert checkpoint.exists() and not (tmp_path / "runs").exists()
  os.remove(tmp_path / "config.json")
  with caplog.at_level(logging.WARNING):
    (row,) = sweep.run_sweep(config(checkpoint_every=20), str(tmp_path)).rows
  alone = train.train_and_evaluate(
      dataclasses.replace(TINY, cell="rnn", length=3), (42,)).seeds[0]
  assert row["history"] == alone.history
  assert row["test_accuracy"] == alone.test_accuracy
  assert row["settings"]["learning_rate"] == 0.001
  (warning,) = warnings_in(caplog)
  assert str(checkpoint) in warning and "learning_rate" in warning
  assert (tmp_path / "checkpoints" / "rnn_N3_seed42.msgpack.corrupt").exists()


# Row 2.


def test_a_record_of_other_settings_is_refused_naming_what_differs(tmp_path):
  sweep.run_sweep(config(lengths=(3, 4)), str(tmp_path))
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  record = io.read_json(path)
  record["settings"]["learning_rate"] = 0.5  # config.json says 0.001.
  io.write_json(path, record)
  before = path.read_bytes()
  trained = []

  def trainer(cfg, seeds, **kwargs):
    trained.append(cfg.length)
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  with pytest.raises(results.SettingsMismatchError) as error:
    sweep.run_sweep(config(lengths=(3, 4)), str(tmp_path), train_fn=trainer)
  assert str(error.value) == (
      f"{tmp_path} holds a sweep with other settings (learning_rate, in "
      f"{path}); use --overwrite to replace it, or another --results_dir")
  assert trained == [] and path.read_bytes() == before


# Row 3.


def test_a_full_disk_during_a_sweep_is_one_line_per_file_and_a_count(
    tmp_path, monkeypatch, capfd, caplog):
  """N=3 finished earlier; then the disk fills: N=4's parameters and every
  summary cannot be written. Each is one line, the last line counts, the
  status is 1, and the files already there are as they were."""
  results_dir = tmp_path / "results"
  args = [*TINY_FLAGS, f"--results_dir={results_dir}"]
  status, _, stderr = execute(sweep_main, ["--lengths=3", *args], capfd)
  assert status == 0, stderr[-3000:]
  kept = {path: path.read_bytes() for path in results_dir.rglob("*")
          if path.is_file() and path.name != "config.json"
          and "tensorboard" not in path.parts}
  full_disk(monkeypatch, but_config)
  with caplog.at_level(logging.WARNING):
    status, stdout, stderr = execute(sweep_main, ["--lengths=3,4", *args],
                                     capfd)
  assert status == 1
  assert "Traceback" not in stderr
  assert stdout.strip().splitlines()[-1] == (
      "this run: 0 ok, 0 diverged, 0 failed, 7 not saved")
  # The log's lines (stderr, in a process of its own): the seven counted,
  # and N=4's curves (TensorBoard's), which training goes on without.
  not_written = [line for line in warnings_in(caplog) if "cannot" in line]
  assert all(FULL in line for line in not_written), not_written
  assert len(not_written) == 8, not_written
  for name in ("params/rnn_N4_seed42.msgpack", "results.json", "results.csv",
               "results.md", "accuracy_vs_length.png", "steps_to_solve.png",
               "training_curves.png", "tensorboard/rnn_N4_seed42"):
    assert sum(name in line for line in not_written) == 1, name
  for path, content in kept.items():
    assert path.read_bytes() == content, path


# Row 4.


def test_a_full_disk_at_a_checkpoint_is_a_warning_and_training_goes_on(
    tmp_path, monkeypatch, caplog):
  full_disk(monkeypatch, lambda path: "checkpoints" in path)
  with caplog.at_level(logging.WARNING):
    outcome = sweep.run_sweep(config(lengths=(3, 4), checkpoint_every=20),
                              str(tmp_path))
  assert outcome.counts == {"ok": 2, "diverged": 0, "failed": 0}
  # One failed write each, at step 20; the runs are as without checkpoints.
  warnings = warnings_in(caplog)
  assert len(warnings) == 2, warnings
  for n, warning in zip((3, 4), sorted(warnings)):
    assert warning == (
        f"cannot save the checkpoint {tmp_path}/checkpoints/rnn_N{n}_seed42"
        f".msgpack at step 20: {FULL}; training goes on")
  for row in outcome.rows:
    alone = train.train_and_evaluate(
        dataclasses.replace(TINY, cell="rnn", length=row["length"]),
        (42,)).seeds[0]
    assert row["history"] == alone.history


# Row 5.


def test_a_full_disk_in_the_gradients_tool_fails_and_writes_no_report(
    tmp_path, monkeypatch, capfd):
  out = tmp_path / "out"
  full_disk(monkeypatch, but_config)
  status, stdout, stderr = execute(gradients_main, [
      "--cells=rnn", "--length=2", "--train_steps=5", "--log_every=5",
      "--num_hidden=4", "--batch_size=8", "--eval_batches=1",
      f"--results_dir={out}"], capfd)
  assert status == 1
  assert "Traceback" not in stderr
  assert stderr.strip().splitlines()[-1] == (
      "not saved: 1 file (the error is above); free space and rerun the "
      "same command")
  assert "steps trained" not in stdout
  assert not (out / "gradients.json").exists()
  assert not (out / "gradients.md").exists()
  assert not (out / "gradients.png").exists()


# Row 6.


def test_a_stop_saves_the_run_in_flight_even_with_checkpointing_off(
    tmp_path, capfd):
  assert config().checkpoint_every == 0  # The sweep's default.
  capfd.readouterr()
  sweep.run_sweep(config(), str(tmp_path), train_fn=stopped_after_one_chunk)
  stderr = capfd.readouterr().err
  assert ("rnn N=3 seed 42: interrupted at step 20, checkpoint saved (the "
          "same command continues from it)") in stderr
  assert (tmp_path / "checkpoints" / "rnn_N3_seed42.msgpack").exists()
  (row,) = sweep.run_sweep(config(), str(tmp_path)).rows
  assert "(continued from the checkpoint at step 20)" in capfd.readouterr().err
  alone = train.train_and_evaluate(
      dataclasses.replace(TINY, cell="rnn", length=3), (42,)).seeds[0]
  assert row["history"] == alone.history
  assert row["test_accuracy"] == alone.test_accuracy
  assert not list((tmp_path / "checkpoints").iterdir())


# Row 7.


@pytest.mark.parametrize("entrypoint", [sweep_main, gradients_main])
def test_a_results_dir_that_is_a_file_is_one_line(tmp_path, capfd,
                                                  entrypoint):
  blocker = tmp_path / "results"
  blocker.write_text("not a directory")
  status, stdout, stderr = execute(entrypoint, [
      "--lengths=2" if entrypoint is sweep_main else "--length=2",
      *TINY_FLAGS, f"--results_dir={blocker}"], capfd)
  assert status == 2
  assert stderr.strip().splitlines() == [
      f"error: --results_dir: {str(blocker)!r} is a file, not a directory"]
  assert not stdout and blocker.read_text() == "not a directory"


# Row 8.


def test_evaluate_with_no_readable_parameters_fails_with_a_well_formed_report(
    tmp_path, capfd):
  sweep.run_sweep(config(lengths=(3, 4)), str(tmp_path))
  for path in (tmp_path / "params").iterdir():
    path.write_bytes(b"\x85\xa5cell")  # Truncated msgpack.
  status, stdout, stderr = execute(
      evaluate_main, [f"--results_dir={tmp_path}"], capfd)
  assert status == 1
  assert stderr.strip().splitlines()[-1] == (
      "nothing evaluated: no run's parameters could be read (listed above)")
  report = (tmp_path / "evaluate.md").read_text()
  assert stdout.strip() == report.strip()
  assert "|" not in report  # No table without a column to show.
  assert report.splitlines() == [
      "Nothing evaluated: no saved run's parameters could be read.", "",
      "Not evaluated:",
      f"- rnn N=3 seed 42: error: {tmp_path}/params/rnn_N3_seed42.msgpack is "
      "unreadable (ValueError)",
      f"- rnn N=4 seed 42: error: {tmp_path}/params/rnn_N4_seed42.msgpack is "
      "unreadable (ValueError)"]


# Row 9.


def test_a_rerun_names_the_finished_runs_that_lack_their_parameters(
    tmp_path, capfd):
  sweep.run_sweep(config(lengths=(3, 4, 5)), str(tmp_path))
  os.remove(tmp_path / "params" / "rnn_N3_seed42.msgpack")
  (tmp_path / "params" / "rnn_N4_seed42.msgpack").write_bytes(b"\x85")
  capfd.readouterr()
  sweep.run_sweep(config(lengths=(3, 4, 5)), str(tmp_path))
  lines = capfd.readouterr().err.splitlines()
  runs = tmp_path / "runs"
  at = lines.index("3 of 3 runs finished earlier, skipped")
  assert lines[at + 1:at + 4] == [
      "rnn_N3_seed42 finished earlier, but its parameters "
      f"({tmp_path}/params/rnn_N3_seed42.msgpack) are missing",
      "rnn_N4_seed42 finished earlier, but its parameters "
      f"({tmp_path}/params/rnn_N4_seed42.msgpack) are unreadable",
      "experiments.evaluate and experiments.gradients need them; to retrain "
      f"them, remove their records and rerun: rm {runs}/rnn_N3_seed42.json "
      f"{runs}/rnn_N4_seed42.json"]
  # N=5's parameters are fine: it is not named.
  assert not any("rnn_N5_seed42 finished earlier" in l for l in lines)
