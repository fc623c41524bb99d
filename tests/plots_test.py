"""Tests for palindrome_jax.plots: every figure from awkward rows."""

import math

import numpy as np

from palindrome_jax import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _run(cell, n, seed, status="ok", steps=None, length_of_history=5):
  steps_logged = [100 * (k + 1) for k in range(length_of_history)]
  return {"cell": cell, "length": n, "seed": seed, "status": status,
          "test_accuracy": math.nan if status != "ok" else 0.9,
          "steps_to_solve": steps,
          "history": {"step": steps_logged,
                      "loss": [2.0 / (k + 1) for k in range(length_of_history)],
                      "accuracy": [0.1 * (k + 1)
                                   for k in range(length_of_history)]}}


ROWS = [_run("rnn", 5, 1, steps=300, length_of_history=3),  # Stopped early.
        _run("rnn", 5, 2),
        _run("rnn", 10, 1, status="diverged at step 40", length_of_history=1),
        _run("lstm", 5, 1, status="error: MemoryError: x", length_of_history=0),
        _run("lstm", 10, 1, steps=500)]


def test_every_sweep_figure_is_a_png(tmp_path):
  for name, draw in [("a.png", plots.accuracy_vs_length),
                     ("c.png", plots.training_curves)]:
    draw(ROWS, str(tmp_path / name))
    assert (tmp_path / name).read_bytes().startswith(PNG)
  plots.steps_to_solve(ROWS, str(tmp_path / "s.png"), budget=500)
  assert (tmp_path / "s.png").read_bytes().startswith(PNG)


def test_a_run_stopped_when_solved_keeps_its_last_value():
  padded = plots._padded(ROWS[0], "accuracy", 5)  # pylint: disable=protected-access
  np.testing.assert_allclose(padded, [0.1, 0.2, 0.3, 0.3, 0.3])
  diverged = plots._padded(ROWS[2], "loss", 3)  # pylint: disable=protected-access
  assert diverged[0] == 2.0 and np.isnan(diverged[1:]).all()


def test_the_horizon_figure_marks_failed_lengths_whatever_their_accuracy(
    monkeypatch):
  """A length fails on the solve checks, not the final test: N=20 below
  tests at 99.5% on average, above the 99% line, yet failed."""
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  evaluations = [{"length": n, "mean_accuracy": acc, "accuracies": [acc] * 2,
                  "passed": passed}
                 for n, acc, passed in [(5, 1.0, True), (10, 1.0, True),
                                        (20, 0.995, False)]]
  plots.horizon({"settings": {"min_length": 5, "max_length": 20,
                              "threshold": 0.99, "seeds": [1, 2],
                              "training": {"train_steps": 100}},
                 "cells": {"rnn": {"evaluations": evaluations, "horizon": 10,
                                   "message": "up to N=10"}}}, "unused.png")
  (ax,) = figures[0].axes
  hollow = [tuple(c.get_offsets()[:, 0]) for c in ax.collections
            if len(c.get_offsets()) and len(c.get_facecolors()) and
            tuple(c.get_facecolors()[0]) == (1.0, 1.0, 1.0, 1.0)]
  assert hollow == [(20.0,)]
  assert any("failed" in t.get_text() for t in ax.get_legend().get_texts())


def test_the_horizon_figure_labels_each_cell_as_the_table_does(monkeypatch):
  # An unfinished search shows its bounds so far, as horizon.md does, not a
  # bare "unfinished".
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  def evaluations(*tried):
    return [{"length": n, "mean_accuracy": acc, "accuracies": [acc] * 2,
             "passed": acc == 1.0} for n, acc in tried]

  plots.horizon({"settings": {"min_length": 5, "max_length": 40,
                              "threshold": 0.99, "seeds": [1, 2],
                              "training": {"train_steps": 100}},
                 "cells": {"rnn": {"evaluations": evaluations(
                     (5, 1.0), (10, 1.0), (20, 0.5))},
                           "gru": {"evaluations": evaluations(
                               (5, 1.0), (10, 1.0), (11, 0.5)),
                                   "horizon": 10, "message": "up to N=10"}}},
                "unused.png")
  labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
  assert "rnn (horizon ≥ 10, < 20 so far)" in labels
  assert "gru (horizon 10)" in labels


def test_twelve_lines_are_told_apart_by_colour_or_style():
  # Matplotlib's colour cycle has ten colours: the eleventh line would look
  # like the first (compare.png has twelve recipes).
  rows = [{"cell": f"recipe{i}", "length": n, "status": "ok",
           "steps_to_solve": 100 * (i + 1)} for i in range(12) for n in (5, 10)]
  fig, ax = plots.plt.subplots()
  styles = plots._draw_steps_to_solve(ax, rows, 2000)
  drawn = [(line.get_label(), line.get_color(), line.get_linestyle(),
            line.get_marker()) for line in ax.get_lines()
           if line.get_label().startswith("recipe")]
  assert len(drawn) == 12
  assert len({d[1:] for d in drawn}) == 12
  for label, color, linestyle, marker in drawn:
    assert styles[label] == {"color": color, "linestyle": linestyle,
                             "marker": marker}
  plots.plt.close(fig)
