"""Tests for palindrome_jax.evaluate: saved parameters tested at any length."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from experiments import evaluate as evaluate_main
import jax
import numpy as np

from palindrome_jax import data
from palindrome_jax import evaluate
from palindrome_jax import model
from palindrome_jax import sweep
from palindrome_jax import train
from palindrome_jax.status import Status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=60,
                       log_every=20, eval_batches=2)


def test_evaluate_reloads_parameters_and_tests_other_lengths(tmp_path):
  config = sweep.SweepConfig(cells=("lstm",), lengths=(3,), seeds=(7, 8),
                             base=TINY)
  rows = sweep.run_sweep(config, str(tmp_path)).rows
  evaluated = evaluate.evaluate_saved(str(tmp_path), lengths=(3, 6))
  same = {r["seed"]: r["test_accuracy"] for r in evaluated
          if r["test_length"] == 3}
  assert same == {r["seed"]: r["test_accuracy"] for r in rows}
  assert {r["test_length"] for r in evaluated} == {3, 6}
  assert "| lstm | 3 |" in evaluate.table(evaluated)

  # The entrypoint's one smoke test in a process of its own.
  out = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate",
       f"--results_dir={tmp_path}", "--lengths=3,6"],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert "test N=6" in out.stdout
  assert "Accuracy (%) by the target digit" in out.stdout
  saved = json.loads((tmp_path / "evaluate.json").read_text())
  # Every test example counted once, by its target and the answer given.
  assert all(sum(map(sum, r["confusion"])) == 2 * 8 for r in saved)


@pytest.mark.parametrize("args, flag", [
    (["--results_dir=/nonexistent-dir-xyz"], "--results_dir"),
    (["--lengths=3,,4"], "--lengths"),
    (["--lengths=0"], "--lengths"),
    # A file of the sweep instead of its directory.
    (["--results_dir={sweep}/config.json"], "--results_dir"),
])
def test_evaluate_bad_flags_are_one_line_errors(tmp_path, args, flag,
                                                capsys):
  if "--results_dir=/" not in args[0]:
    sweep.run_sweep(sweep.SweepConfig(cells=("rnn",), lengths=(3,),
                                      base=TINY), str(tmp_path))
    args = ([a.format(sweep=tmp_path) for a in args]
            if "{sweep}" in args[0] else args + [f"--results_dir={tmp_path}"])
  capsys.readouterr()  # The sweep's progress.
  status = evaluate_main.COMMAND.execute(evaluate_main.main,
                                         ["evaluate", *args])
  stderr = capsys.readouterr().err
  assert status != 0
  errors = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and flag in errors[0]
  assert "Traceback" not in stderr


def test_evaluate_reports_missing_and_corrupt_parameters(tmp_path):
  config = sweep.SweepConfig(cells=("rnn",), lengths=(3,), seeds=(1, 2, 3),
                             base=TINY)
  rows = sweep.run_sweep(config, str(tmp_path)).rows
  os.remove(tmp_path / "params" / "rnn_N3_seed1.msgpack")
  (tmp_path / "params" / "rnn_N3_seed2.msgpack").write_bytes(b"\x93\x01")
  evaluated = evaluate.evaluate_saved(str(tmp_path))
  by_seed = {r["seed"]: r for r in evaluated}
  assert sorted(by_seed) == [1, 2, 3]
  assert "is missing" in by_seed[1]["status"]
  assert "is unreadable" in by_seed[2]["status"]
  assert by_seed[3]["test_accuracy"] == rows[2]["test_accuracy"]
  assert "Not evaluated:" in evaluate.table(evaluated)


def test_evaluate_params_reproduces_the_test_accuracy_in_memory():
  cfg = dataclasses.replace(TINY, cell="gru", length=4)
  result = train.train_and_evaluate(cfg, (5,)).seeds[0]
  scores = evaluate.evaluate_params(result.params, cfg, (4, 7), seed=5)
  assert scores[4]["accuracy"] == result.test_accuracy
  assert scores[4]["loss"] == pytest.approx(result.test_loss, rel=1e-6)
  assert set(scores) == {4, 7}


def test_the_confusion_counts_what_a_loop_over_the_test_batches_answers():
  cfg = dataclasses.replace(TINY, cell="gru", length=4, eval_batches=3)
  params = train.init_params(jax.random.PRNGKey(3), cfg)
  key = jax.random.PRNGKey(11)
  counts = np.asarray(evaluate.confusion(params, key, cfg))
  expected = np.zeros((10, 10), int)
  right = 0
  for i in range(3):  # The batches train.evaluate draws, one at a time.
    batch = data.make_batch(jax.random.fold_in(key, i), 4, 8)
    answers = np.asarray(model.apply(cfg.make_cell(), params,
                                     batch.inputs)).argmax(-1)
    targets = np.asarray(batch.targets)
    np.add.at(expected, (targets, answers), 1)
    right += int((answers == targets).sum())
  np.testing.assert_array_equal(counts, expected)
  accuracy = float(train.evaluate(params, key, cfg)["accuracy"])
  assert np.trace(counts) == right
  assert right / 24 == pytest.approx(accuracy, abs=1e-6)


def test_accuracy_by_digit_tells_a_model_that_remembers_only_zero():
  # Stalled at 20%: every 0 answered right, every other digit answered 7.
  counts = np.zeros((10, 10), int)
  counts[0, 0] = 20
  counts[1:, 7] = 20
  counts[9, 7] = 0  # No 9 among the targets.
  accuracy = evaluate.by_digit(counts)
  assert accuracy == [1.0] + [0.0] * 6 + [1.0, 0.0, None]
  rows = [{"cell": "mingru", "seed": 42, "trained_length": 100,
           "test_length": 100, "status": Status("ok"),
           "test_accuracy": 40 / 180, "accuracy_by_digit": accuracy}]
  assert ("| mingru | 100 | 42 | 100 | 100 | 0 | 0 | 0 | 0 | 0 | 0 | 100 | 0"
          " | – |") in evaluate.table(rows)


def test_the_table_counts_diverged_seeds_apart_as_the_sweep_does():
  rows = [{"cell": "rnn", "seed": s, "trained_length": 5, "test_length": 5,
           "status": Status(status), "test_accuracy": acc}
          for s, status, acc in [(1, "ok", 1.0), (2, "ok", 0.9),
                                 (3, "diverged at step 40", 0.1)]]
  assert "| rnn | 5 | 95.00 ± 5.00 (n=2), 1 diverged |" in evaluate.table(rows)


@pytest.mark.parametrize("per_digit, trained", [
    (1.0, 4),
    # T_max = 0.3 x 7 = 2.1 is valid; at the default length 5 it would not be.
    (0.3, 7)])
def test_a_chrono_per_digit_sweep_is_evaluated_at_shorter_lengths(
    tmp_path, per_digit, trained):
  """T_max = c x N only initialises; a model trained at N reads N=2."""
  base = dataclasses.replace(TINY, length=trained, chrono_per_digit=per_digit)
  sweep.run_sweep(sweep.SweepConfig(cells=("lstm",), lengths=(trained,),
                                    base=base), str(tmp_path))
  rows = evaluate.evaluate_saved(str(tmp_path), lengths=(2, trained))
  assert [(r["test_length"], r["status"]) for r in rows] == [
      (2, "ok"), (trained, "ok")]


def test_an_old_format_directory_is_one_line_naming_the_migration(
    tmp_path, capsys):
  sweep.run_sweep(sweep.SweepConfig(cells=("rnn",), lengths=(3,), base=TINY),
                  str(tmp_path))
  config_json = tmp_path / "config.json"
  config_json.write_text(config_json.read_text().replace(
      '"format_version": 2', '"format_version": 1'))
  status = evaluate_main.COMMAND.execute(
      evaluate_main.main, ["evaluate", f"--results_dir={tmp_path}"])
  errors = [l for l in capsys.readouterr().err.splitlines()
            if l.startswith("error:")]
  assert status == 2
  assert len(errors) == 1 and "--results_dir" in errors[0]
  assert "python -m experiments.migrate" in errors[0]
