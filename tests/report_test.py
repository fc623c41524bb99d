"""Tests for palindrome_jax.report: formatters, tables and every tool's
report."""

import math

import pytest

from palindrome_jax import report
from palindrome_jax.status import Status

CPU = {"jax": "0.10.2", "backend": "cpu", "device_kind": "cpu",
       "matmul_precision": "default"}


def test_missing_and_non_finite_values_print_alike():
  for value in (None, math.nan, math.inf, -math.inf, "x"):
    assert report.percent(value) == "–"
    assert report.number(value) == "–"
    assert report.scientific(value) == "–"
    assert report.seconds(value) == "–"
  assert report.percent(0.98765) == "98.77"
  assert report.seconds(3725) == "1:02:05" and report.seconds(65) == "1:05"


def _row(cell, n, seed, status="ok", acc=1.0, steps=500):
  """A run's record as the results directory reads it (its status parsed)."""
  return {"cell": cell, "length": n, "seed": seed, "status": Status(status),
          "test_accuracy": acc, "steps_to_solve": steps, "train_steps": 1000,
          "wall_seconds": 12.0, "compile_seconds": 1.0,
          "steps_per_second": 80.0, "trained_on": CPU}


def test_entries_count_diverged_and_failed_apart():
  runs = [_row("rnn", 5, 1, acc=0.9), _row("rnn", 5, 2, acc=0.7),
          _row("rnn", 5, 3, status="diverged at step 40", acc=math.nan),
          _row("rnn", 5, 4, status="error: MemoryError: x", acc=math.nan)]
  assert report.accuracy_entry(runs) == (
      "80.00 ± 10.00 (n=2), 1 diverged, 1 failed")
  runs[1]["steps_to_solve"] = None
  assert report.steps_entry(runs) == "1/3 (500)"


def test_sweep_report_has_every_section_and_relative_images():
  rows = [_row("lstm", 5, 42), _row("rnn", 5, 42, status="diverged at step 3",
                                    acc=math.nan, steps=None)]
  text = report.sweep_report(rows, {"training_settings": {
      "train_steps": 1000, "eval_every": 500, "solved_accuracy": 0.99,
      "eval_batches": 7}})
  assert "Mean ± std over seeds, on 7 fresh test batches (%)." in text
  for section in ("## Test accuracy", "## Steps to solve", "## Every run",
                  "## Diverged or failed", "## Settings"):
    assert section in text
  for image in ("accuracy_vs_length.png", "steps_to_solve.png",
                "training_curves.png"):
    assert f"]({image})" in text
  assert "- rnn N=5 seed 42: diverged at step 3" in text
  assert ("solve check (10 held-out batches every 500 steps) reached 99%"
          in text)


def test_sweep_report_states_the_confirmation_of_solve_checks():
  settings = {"train_steps": 1000, "eval_every": 500, "solved_accuracy": 0.99}
  confirmed, unconfirmed = (report.sweep_report([_row("lstm", 5, 42)], {
      "training_settings": dict(settings, confirm_batches=k)})
                            for k in (100, 0))
  assert ("solve check (10 held-out batches every 500 steps, confirmed on "
          "100 more) reached 99%") in confirmed
  assert "confirmed on" not in unconfirmed


def test_a_table_aligns_its_last_columns_right():
  assert report.table(["a", "b", "c"], [[1, "x", 2.5]], right=2) == [
      "| a | b | c |", "|---|---:|---:|", "| 1 | x | 2.5 |"]
  assert report.table(["a"], [])[1] == "|---|"


def test_significant_figures_and_thousands():
  assert [report.significant(x) for x in (0.0, 0.012345, 1.5, 12.34, 123.4,
                                          98765.4)] == [
      "0", "0.0123", "1.50", "12.3", "123", "98,765"]
  assert report.significant(1.256, 2) == "1.3"
  assert report.significant(None) == report.significant(math.inf) == "–"


def test_an_unfinished_search_shows_its_bounds():
  entry = {"evaluations": [{"length": 25, "passed": True},
                           {"length": 50, "passed": True}]}
  assert report.horizon_text(entry, {}) == "≥ 50 so far"
  # A failed length bounds it from above while the bisection goes on.
  entry["evaluations"] += [{"length": 200, "passed": False},
                           {"length": 100, "passed": False}]
  assert report.horizon_text(entry, {}) == "≥ 50, < 100 so far"
  assert report.horizon_text({"evaluations": []}, {}) == "unfinished"
  assert report.horizon_text(
      {"evaluations": [{"length": 5, "passed": False}]}, {}) == "unfinished"


def test_a_finished_search_states_its_horizon_or_its_bracket():
  settings = {"min_length": 5, "max_length": 200}
  def entry(horizon, *failed):
    return {"message": "…", "horizon": horizon, "evaluations": [
        {"length": n, "passed": False} for n in failed]}
  assert report.horizon_text(entry(37, 38, 40), settings) == "37"
  assert report.horizon_text(entry(30, 40, 80), settings) == "≥ 30, < 40"
  assert report.horizon_text(entry(None, 5), settings) == "< 5"
  assert report.horizon_text(entry(200), settings) == "≥ 200"
  assert report.horizon_text({"message": "error: x", "evaluations": []},
                             settings) == "error"
  assert report.first_fail(30, [80, 20, 40]) == 40
  assert report.first_fail(None, [5]) is None


def test_the_horizon_table_lists_every_length_tried():
  evaluation = {"length": 10, "seeds": [1, 2], "accuracies": [1.0, 0.5],
                "statuses": ["ok", "ok"], "steps_to_solve": [300, None],
                "solved": [True, False], "passed": False}
  content = {"settings": {"seeds": [1, 2], "threshold": 0.99,
                          "min_length": 5, "max_length": 40,
                          "training": {"train_steps": 1000,
                                       "confirm_batches": 100}},
             "cells": {"rnn": {"evaluations": [evaluation], "horizon": None,
                               "message": "not at N=5"}}}
  table = report.horizon_table(content)
  assert ("every one of 2 seeds solves (a solve check ≥ 99% on held-out "
          "batches, confirmed on 100 more) within 1000 training steps") in table
  assert "| rnn | < 5 | 10: 1/2 (300) ✗ |" in table
  assert table.endswith("\n- rnn: not at N=5\n")
  text = report.horizon_report(content)
  assert ("- rnn N=10 (seeds 1, 2): test accuracy 100.00, 50.00 %; steps to "
          "solve 300, –; ok") in text
  assert "| train_steps | 1000 |" in text


def test_the_horizon_report_says_when_each_seed_left_chance():
  evaluation = {"length": 10, "seeds": [1, 2, 3],
                "accuracies": [1.0, 1.0, 0.1], "statuses": ["ok"] * 3,
                "steps_to_solve": [500, 500, None],
                "solved": [True, True, False], "passed": False}
  content = {"settings": {"seeds": [1, 2, 3], "threshold": 0.99,
                          "min_length": 5, "max_length": 40,
                          "training": {"train_steps": 1000, "log_every": 100,
                                       "confirm_batches": 0}},
             "cells": {"rnn": {"evaluations": [evaluation], "horizon": None,
                               "message": "not at N=5"}}}
  def run(seed, accuracy):
    return {"cell": "rnn", "length": 10, "seed": seed, "history": {
        "step": [100, 200, 300, 400], "loss": [2.3] * 4,
        "accuracy": accuracy}}
  runs = [run(1, [0.1, 0.2, 0.5, 0.9]),  # 50% first at 300.
          run(2, [0.1, 0.6, 0.4, 0.9]),  # At 200, though it dipped after.
          run(3, [0.1, 0.1, 0.1, 0.1])]  # Never.
  assert [report.steps_to_accuracy(r["history"]) for r in runs] == [
      300, 200, None]
  text = report.horizon_report(content, runs)
  assert "| rnn | 10 | 300, 200, – | 250 |" in text
  assert "first reached 50% (logged every 100 steps" in text
  # Without the runs' histories the section is left out.
  assert "Leaving chance" not in report.horizon_report(content)
  # The sweep's report: per cell and N the median, then each seed's.
  rows = [{**_row("rnn", 10, r["seed"]), **r} for r in runs]
  assert report.left_chance_entry(rows) == "250 (300, 200, –)"
  text = report.sweep_report(rows, {"training_settings": {"log_every": 100}})
  assert "| rnn | 250 (300, 200, –) |" in text
  assert report.left_chance_entry([_row("rnn", 10, 1)]) == "–"  # No history.


def test_the_gradient_table_reads_the_mean_of_the_seeds_that_trained_ok():
  def seed(status, accuracy):
    return {"seed": 0, "status": status, "test_accuracy": accuracy}
  profile = {"init": {"h": [1e-4, 0.5]}, "trained": {"h": [2e-3, 0.25]},
             "seeds": [seed("ok", 0.9), seed("ok", 0.7),
                       seed("diverged at step 3", 0.1)]}
  assert report.mean_test_accuracy(profile) == pytest.approx(0.8)
  table = report.gradients_table({"length": 2, "cells": {"rnn": profile}})
  assert table.splitlines()[-1] == (
      "| rnn | h | 1.00e-04 | 5.00e-01 | 2.00e-03 | 2.50e-01 | 80.0% |")
  at_init = report.gradients_table({"length": 2, "init_only": True,
                                    "cells": {"rnn": profile}})
  assert at_init.splitlines()[-1] == (
      "| rnn | h | 1.00e-04 | 5.00e-01 | 2.00e-04 |")
  assert report.summary_part({"h": 0, "c": 0, "total": 0}) == "total"


def test_the_evaluation_table_has_a_column_per_test_length():
  rows = [{"cell": "rnn", "seed": 1, "trained_length": 5, "test_length": n,
           "status": Status.OK, "test_accuracy": acc}
          for n, acc in [(5, 1.0), (8, 0.25)]]
  rows.append({"cell": "gru", "seed": 1, "trained_length": 5,
               "test_length": None, "status": "error: gone"})
  assert report.evaluate_table(rows).splitlines()[2:] == [
      "| cell | trained N | test N=5 | test N=8 |", "|---|---|---|---|",
      "| gru | 5 | – | – |", "| rnn | 5 | 100.00 | 25.00 |", "",
      "Not evaluated:", "- gru N=5 seed 1: error: gone"]


def test_the_device_line_says_when_the_process_was_pinned():
  machine = {"backend": "cpu", "device_kind": "cpu", "jax": "0.10.2",
             "processor": "AMD EPYC", "cpu_count": 2}
  assert report.device_line(machine) == "AMD EPYC, 2 cores (JAX 0.10.2, cpu)"
  assert report.device_line(dict(machine, cpus_usable=2)) == (
      "AMD EPYC, 2 cores (JAX 0.10.2, cpu)")
  assert report.device_line(dict(machine, cpus_usable=1)) == (
      "AMD EPYC, 2 cores (1 used: the process was pinned) (JAX 0.10.2, cpu)")
  gpu = dict(machine, backend="gpu", device_kind="NVIDIA H200", cpus_usable=1)
  assert report.device_line(gpu) == "NVIDIA H200 (JAX 0.10.2, gpu)"
