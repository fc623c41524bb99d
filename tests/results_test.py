"""Tests for palindrome_jax.results: a directory never loses, mixes or blocks.

Each test injects a fault (a truncated file, a full disk, a second process,
deleted settings) into a tiny sweep and checks the outcome.
"""

import dataclasses
import errno
import logging
import os
import shutil

import jax
import pytest

from palindrome_jax import files as io
from palindrome_jax import results
from palindrome_jax import sweep
from palindrome_jax import train
from palindrome_jax.results import Run
from palindrome_jax.status import Kind, Status

TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=40,
                       log_every=20, eval_batches=2)


def config(**kwargs):
  return sweep.SweepConfig(**{"cells": ("rnn",), "lengths": (3, 4),
                              "base": TINY, **kwargs})


class CountingTrainer:
  """The real trainer, remembering which runs it was asked to train."""

  def __init__(self):
    self.calls = []

  def __call__(self, cfg, seeds, **kwargs):
    self.calls.append((cfg.cell, cfg.length, tuple(seeds)))
    return train.train_and_evaluate(cfg, seeds, **kwargs)


def _computed(rows):
  keep = ("cell", "length", "seed", "status", "test_accuracy", "history")
  return [{k: r[k] for k in keep} for r in rows]


def test_a_truncated_run_file_is_moved_aside_and_only_it_retrains(
    tmp_path, caplog):
  first = sweep.run_sweep(config(), str(tmp_path)).rows
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  path.write_text(path.read_text()[:50])  # A crash mid-write (no rename).
  trainer = CountingTrainer()
  with caplog.at_level(logging.WARNING):
    again = sweep.run_sweep(config(), str(tmp_path), train_fn=trainer).rows
  assert trainer.calls == [("rnn", 3, (42,))]
  assert _computed(again) == _computed(first)
  assert (tmp_path / "runs" / "rnn_N3_seed42.json.corrupt").exists()
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and str(path) in warnings[0]


def test_garbage_config_json_does_not_block_the_directory(tmp_path):
  sweep.run_sweep(config(), str(tmp_path))
  (tmp_path / "config.json").write_text("{ not json")
  trainer = CountingTrainer()
  rows = sweep.run_sweep(config(), str(tmp_path), train_fn=trainer).rows
  assert trainer.calls == [] and len(rows) == 2
  assert (tmp_path / "config.json.corrupt").exists()
  assert io.read_json(tmp_path / "config.json")["training_settings"][
      "train_steps"] == TINY.train_steps


def test_runs_record_their_settings_so_a_lost_config_mixes_nothing(tmp_path):
  sweep.run_sweep(config(), str(tmp_path))
  os.remove(tmp_path / "config.json")
  other = config(base=dataclasses.replace(TINY, train_steps=60))
  with pytest.raises(results.SettingsMismatchError, match="train_steps"):
    sweep.run_sweep(other, str(tmp_path))
  record = io.read_json(tmp_path / "runs" / "rnn_N3_seed42.json")
  assert record["settings"]["train_steps"] == TINY.train_steps
  rows = sweep.run_sweep(other, str(tmp_path), overwrite=True).rows
  assert {r["train_steps"] for r in rows} == {60}


def test_a_record_of_an_older_format_is_one_error_naming_the_migration(
    tmp_path):
  sweep.run_sweep(config(), str(tmp_path))
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  record = io.read_json(path)
  del record["format_version"]  # As written before the format had a number.
  io.write_json(path, record)
  trainer = CountingTrainer()
  with pytest.raises(results.FormatError) as error:
    sweep.run_sweep(config(), str(tmp_path), train_fn=trainer)
  assert str(error.value) == (
      f"{path} is in results format 1, which this version no longer reads "
      "(it reads 2); migrate the directory once with: python -m "
      f"experiments.migrate --results_dir={tmp_path}")
  # Refused as other settings are (the tools print it as a --results_dir
  # error), and nothing trained.
  assert isinstance(error.value, results.SettingsMismatchError)
  assert trainer.calls == [] and path.exists()


def test_a_directory_of_an_older_format_is_refused_unless_overwritten(
    tmp_path):
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  config_json = io.read_json(tmp_path / "config.json")
  del config_json["format_version"]
  io.write_json(tmp_path / "config.json", config_json)
  with pytest.raises(results.FormatError, match="config.json is in results "
                     "format 1.*experiments.migrate"):
    sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  trainer = CountingTrainer()
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path), overwrite=True,
                  train_fn=trainer)
  assert trainer.calls == [("rnn", 3, (42,))]  # Replaced, as --overwrite says.
  assert io.read_json(tmp_path / "config.json")["format_version"] == 2


def test_a_record_of_a_newer_format_is_refused(tmp_path):
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  io.write_json(path, {**io.read_json(path), "format_version": 3})
  with pytest.raises(results.FormatError, match="results format 3, newer "
                     "than this version's"):
    sweep.run_sweep(config(lengths=(3,)), str(tmp_path))


def test_config_and_every_record_say_their_format_and_read_back_parsed(
    tmp_path):
  rows = sweep.run_sweep(config(), str(tmp_path)).rows
  assert io.read_json(tmp_path / "config.json")["format_version"] == 2
  for path in (tmp_path / "runs").iterdir():
    record = io.read_json(path)
    assert record["format_version"] == results.FORMAT_VERSION == 2
    assert results.record_problem(record) is None
  assert [(r["status"], r["status"].kind) for r in rows] == [
      ("ok", Kind.OK)] * 2


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny sweep, and its rows."""
  root = tmp_path_factory.mktemp("finished")
  return root, sweep.run_sweep(config(), str(root)).rows


@pytest.mark.parametrize("field, value, problem", [
    ("test_accuracy", "abc", "test_accuracy is not a number or null: 'abc'"),
    ("length", "5", "length is not an integer: '5'"),
    ("history", None, "history is not an object of lists: None"),
    ("settings", "x", "settings is not an object: 'x'"),
    ("test_accuracy", None, "test_accuracy is null in a run that ended ok"),
    ("status", "fine", "status is not a run's status"),
    ("seed", 43, "it holds rnn N=3 seed 43"),
])
def test_a_record_of_the_wrong_shape_is_moved_aside_and_only_its_run_retrains(
    finished, tmp_path, caplog, field, value, problem):
  root, first = finished
  shutil.copytree(root, tmp_path / "sweep")
  path = tmp_path / "sweep" / "runs" / "rnn_N3_seed42.json"
  io.write_json(path, {**io.read_json(path), field: value})
  trainer = CountingTrainer()
  with caplog.at_level(logging.WARNING):
    again = sweep.run_sweep(config(), str(tmp_path / "sweep"),
                            train_fn=trainer).rows
  assert trainer.calls == [("rnn", 3, (42,))]
  assert _computed(again) == _computed(first)
  assert io.read_json(str(path) + ".corrupt")[field] == value
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING]
  assert len(warnings) == 1, warnings
  assert str(path) in warnings[0] and problem in warnings[0]


def test_other_settings_are_refused_while_a_sweep_runs(tmp_path):
  other = config(base=dataclasses.replace(TINY, learning_rate=0.5))
  refused = []

  def train_and_try_another(cfg, seeds, **kwargs):
    if not refused:  # Meanwhile, a second sweep in the same directory.
      with pytest.raises(results.SettingsMismatchError,
                         match="learning_rate") as error:
        sweep.run_sweep(other, str(tmp_path))
      refused.append(error)
      with pytest.raises(results.BusyError, match="in use"):
        sweep.run_sweep(other, str(tmp_path), overwrite=True)
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  rows = sweep.run_sweep(config(lengths=(3,)), str(tmp_path),
                         train_fn=train_and_try_another).rows
  assert refused
  assert [r["settings"]["learning_rate"] for r in rows] == [
      TINY.learning_rate]


def test_two_identical_sweeps_never_train_a_run_twice(tmp_path):
  inner = CountingTrainer()
  outer_calls = []

  def train_while_another_sweeps(cfg, seeds, **kwargs):
    outer_calls.append((cfg.cell, cfg.length))
    if len(outer_calls) == 1:  # The same sweep, started again meanwhile.
      sweep.run_sweep(config(lengths=(3,)), str(tmp_path), train_fn=inner)
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  outcome = sweep.run_sweep(config(lengths=(3,)), str(tmp_path),
                            train_fn=train_while_another_sweeps)
  assert outer_calls == [("rnn", 3)]
  assert inner.calls == []  # It found the run claimed and left it.
  assert len(outcome.rows) == 1


def test_a_full_disk_after_training_loses_nothing_good(tmp_path, monkeypatch):
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  good = (tmp_path / "runs" / "rnn_N3_seed42.json").read_bytes()
  real_write = io.atomic_write_bytes

  def full_disk_for_params(path, payload):
    if "params" in str(path) and "N4" in str(path):
      raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real_write(path, payload)

  monkeypatch.setattr(io, "atomic_write_bytes", full_disk_for_params)
  outcome = sweep.run_sweep(config(), str(tmp_path))
  monkeypatch.undo()
  assert len(outcome.write_errors) == 1
  message = outcome.write_errors[0]
  assert "No space left on device" in message
  assert "rnn_N4_seed42.msgpack" in message
  assert not (tmp_path / "runs" / "rnn_N4_seed42.json").exists()
  assert (tmp_path / "runs" / "rnn_N3_seed42.json").read_bytes() == good
  # Space freed: only what is missing trains.
  trainer = CountingTrainer()
  rows = sweep.run_sweep(config(), str(tmp_path), train_fn=trainer).rows
  assert trainer.calls == [("rnn", 4, (42,))] and len(rows) == 2


def test_a_failed_plot_write_leaves_the_old_png(tmp_path, monkeypatch):
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  png = tmp_path / "training_curves.png"
  good = png.read_bytes()
  import matplotlib.figure  # pylint: disable=g-import-not-at-top
  real_savefig = matplotlib.figure.Figure.savefig

  def savefig_then_disk_full(self, fname, *args, **kwargs):
    # Writes part of the image where it is told to, then the disk is full.
    real_savefig(self, fname, *args, **kwargs)
    if hasattr(fname, "truncate"):
      fname.truncate(100)
    else:
      with open(fname, "r+b") as f:
        f.truncate(100)
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                      savefig_then_disk_full)
  directory = results.ResultsDir(str(tmp_path), TINY.training_settings())
  problems = sweep.write_summaries(directory.all_runs(), directory)
  # One line for each figure not written; the rest of the summaries are.
  assert problems == [
      f"cannot write {tmp_path / name}: No space left on device"
      for name in ("accuracy_vs_length.png", "steps_to_solve.png",
                   "training_curves.png")]
  assert png.read_bytes() == good


def test_unreadable_checkpoint_is_moved_aside_and_the_run_restarts(
    tmp_path, caplog):
  cfg = dataclasses.replace(TINY, cell="lstm", length=3)
  whole = train.train_and_evaluate(cfg, (5,)).seeds[0]
  checkpoint = tmp_path / "ckpt.msgpack"
  checkpoint.write_bytes(b"\x85\xa5state\x81")  # Truncated msgpack.
  with caplog.at_level(logging.WARNING):
    again = train.train_and_evaluate(cfg, (5,), checkpoint_path=str(checkpoint),
                                     checkpoint_every=20).seeds[0]
  assert (tmp_path / "ckpt.msgpack.corrupt").exists()
  assert any("ckpt.msgpack" in r.getMessage() for r in caplog.records)
  assert again.history == whole.history
  assert again.test_accuracy == whole.test_accuracy


def test_a_huge_loss_counts_as_diverged():
  cfg = dataclasses.replace(TINY, learning_rate=1e6, max_norm=1e9,
                            train_steps=40)
  result = train.train_and_evaluate(cfg, (0,)).seeds[0]
  assert result.status.startswith("diverged at step "), result
  assert result.status.kind is Kind.DIVERGED and result.status.step >= 0


def test_status_counts():
  rows = [{"status": Status(s)} for s in ("ok", "ok", "diverged at step 3",
                                          "error: MemoryError: x")]
  assert results.status_counts(rows) == {"ok": 2, "diverged": 1, "failed": 1}


def test_run_names():
  assert Run("lstm", 20, 42).name == "lstm_N20_seed42"


def test_each_run_records_where_it_trained_and_the_report_names_machines(
    tmp_path, monkeypatch):
  # A directory continued on another kind of device mixes float32 roundings:
  # each record says where its run trained, and results.md names every
  # machine with its count of runs.
  sweep.run_sweep(config(lengths=(3,)), str(tmp_path))
  record = io.read_json(tmp_path / "runs" / "rnn_N3_seed42.json")
  assert record["trained_on"] == {
      "jax": jax.__version__, "backend": "cpu", "device_kind": "cpu",
      "matmul_precision": "default"}
  assert f"JAX {jax.__version__} on cpu, " in (
      tmp_path / "results.md").read_text()
  # The next run trains "elsewhere": a GPU at full float32 precision.
  gpu = {"jax": "0.11.2", "backend": "gpu", "device_kind": "NVIDIA H200",
         "matmul_precision": "highest"}
  monkeypatch.setattr(results, "trained_on", lambda: dict(gpu))
  sweep.run_sweep(config(lengths=(3, 4)), str(tmp_path))
  assert io.read_json(tmp_path / "runs" / "rnn_N4_seed42.json")[
      "trained_on"] == gpu
  text = (tmp_path / "results.md").read_text()
  line = next(l for l in text.splitlines() if l.startswith("2 runs:"))
  machines = line.split("Trained on several machines, whose float32 "
                        "rounding differs: ")[1].rstrip(".").split("; ")
  assert sorted(machines) == sorted([
      "JAX 0.11.2 on gpu (NVIDIA H200, matmul precision highest): 1 run",
      f"JAX {jax.__version__} on cpu: 1 run"])


def test_trained_on_reads_the_matmul_precision():
  before = jax.config.jax_default_matmul_precision
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    assert results.trained_on()["matmul_precision"] == "highest"
  finally:
    jax.config.update("jax_default_matmul_precision", before)
  assert results.trained_on()["matmul_precision"] == "default"
