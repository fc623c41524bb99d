"""Tests for palindrome_jax.report: formatters and the sweep's report."""

import math

from palindrome_jax import report


def test_missing_and_non_finite_values_print_alike():
  for value in (None, math.nan, math.inf, -math.inf, "x"):
    assert report.percent(value) == "–"
    assert report.number(value) == "–"
    assert report.scientific(value) == "–"
    assert report.seconds(value) == "–"
  assert report.percent(0.98765) == "98.77"
  assert report.seconds(3725) == "1:02:05" and report.seconds(65) == "1:05"


def _row(cell, n, seed, status="ok", acc=1.0, steps=500):
  return {"cell": cell, "length": n, "seed": seed, "status": status,
          "test_accuracy": acc, "steps_to_solve": steps, "train_steps": 1000,
          "wall_seconds": 12.0, "compile_seconds": 1.0,
          "steps_per_second": 80.0}


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
