"""Tests for palindrome_jax.plots: every figure from awkward rows."""

import math

from matplotlib import collections
import numpy as np
import pytest

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


@pytest.fixture
def drawn(monkeypatch, tmp_path):
  """The figures drawn, in order; each is still written to its file (a
  relative path lands in the test's own directory, not the checkout)."""
  monkeypatch.chdir(tmp_path)
  figures = []
  save = plots.save

  def keep(fig, path):
    figures.append(fig)
    save(fig, path)

  monkeypatch.setattr(plots, "save", keep)
  return figures


def _lines(ax) -> dict[str, tuple[list, list]]:
  """Each labelled line's x and y data."""
  return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
          for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_every_sweep_figure_is_a_png(tmp_path, drawn):
  for name, draw in [("a.png", plots.accuracy_vs_length),
                     ("c.png", plots.training_curves)]:
    draw(ROWS, str(tmp_path / name))
    assert (tmp_path / name).read_bytes().startswith(PNG)
  plots.steps_to_solve(ROWS, str(tmp_path / "s.png"), budget=500)
  assert (tmp_path / "s.png").read_bytes().startswith(PNG)
  accuracy, curves, steps = drawn

  # Mean test accuracy of the runs that ended ok; a length with a diverged
  # or failed run gets a red cross at 0.
  (ax,) = accuracy.axes
  means = {c.get_label(): list(c[0].get_ydata()) for c in ax.containers}
  np.testing.assert_equal(means, {"lstm": [math.nan, 90.0],
                                  "rnn": [90.0, math.nan]})
  crosses = [tuple(c.get_offsets()[0]) for c in ax.collections
             if isinstance(c, collections.PathCollection)]
  assert sorted(crosses) == [(5.0, 0.0), (10.0, 0.0)]
  assert ax.get_title().endswith("(mean ± std, 2 seeds)")

  # Loss and accuracy per cell (columns) and N (lines): the mean over seeds,
  # a run stopped when solved holding its last value.
  loss_rnn = _lines(curves.axes[1])
  np.testing.assert_allclose(loss_rnn["N=5"][1], [
      (2 + 2) / 2, (1 + 1) / 2, (2 / 3 + 2 / 3) / 2, (2 / 3 + 1 / 2) / 2,
      (2 / 3 + 2 / 5) / 2])
  assert loss_rnn["N=10"] == ([100], [2.0])  # Diverged after one log.
  assert [a.get_title() for a in curves.axes[:2]] == ["lstm", "rnn"]
  np.testing.assert_allclose(_lines(curves.axes[3])["N=5"][1],
                             [10, 20, 30, 35, 40])

  # Steps to solve: the median over seeds, a seed that never solved (or
  # diverged) counted at the budget; failed runs are left out.
  (ax,) = steps.axes
  lines = _lines(ax)
  assert lines["rnn"] == ([5, 10], [400.0, 500.0])
  np.testing.assert_equal(lines["lstm"], ([5, 10], [math.nan, 500.0]))
  assert ax.get_ylim() == (0, 500 * 1.08)


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
  fig, ax = plots._subplots()  # pylint: disable=protected-access
  styles = plots._draw_steps_to_solve(ax, rows, 2000)
  drawn = [(line.get_label(), line.get_color(), line.get_linestyle(),
            line.get_marker()) for line in ax.get_lines()
           if line.get_label().startswith("recipe")]
  assert len(drawn) == 12
  assert len({d[1:] for d in drawn}) == 12
  for label, color, linestyle, marker in drawn:
    assert styles[label] == {"color": color, "linestyle": linestyle,
                             "marker": marker}
  plots._matplotlib().pyplot.close(fig)  # pylint: disable=protected-access


def _profile(accuracies, init, trained=None):
  seeds = [{"seed": i, "status": "ok", "test_accuracy": a}
           for i, a in enumerate(accuracies)]
  return {"init": init, "seeds": seeds,
          **({"trained": trained} if trained else {})}


def test_the_gradient_figure_draws_each_cell_initial_and_trained(drawn):
  # The whole carry ("total") where there is more than h; a norm that
  # underflowed to 0 is left out of the log scale.
  plots.gradient_norms({"length": 3, "seeds": [0, 1], "cells": {
      "rnn": _profile([0.9, 0.7], {"h": [1e-3, 0.0, 1.0]},
                      {"h": [0.5, 0.6, 0.7]}),
      "lstm": _profile([1.0, 1.0], {"h": [1, 2, 3], "c": [4, 5, 6],
                                    "total": [7, 8, 9]},
                       {"h": [1, 1, 1], "c": [2, 2, 2],
                        "total": [3, 3, 3]})}}, "unused.png")
  (ax,) = drawn[0].axes
  lines = {line.get_label(): line for line in ax.get_lines()}
  assert sorted(lines) == ["lstm (initial)", "lstm (trained, 100% test)",
                           "rnn (initial)", "rnn (trained, 80% test)"]
  np.testing.assert_equal(lines["rnn (initial)"].get_ydata(),
                          [1e-3, math.nan, 1.0])
  np.testing.assert_equal(lines["lstm (initial)"].get_ydata(), [7, 8, 9])
  np.testing.assert_equal(lines["lstm (trained, 100% test)"].get_ydata(),
                          [3, 3, 3])
  assert lines["rnn (initial)"].get_linestyle() == "--"
  assert (lines["rnn (initial)"].get_color()
          == lines["rnn (trained, 80% test)"].get_color())
  assert ax.get_yscale() == "log"
  assert ax.get_title().endswith("(N=3, 2 seeds)")


def test_the_gradient_figure_at_initialisation_only(drawn):
  plots.gradient_norms({"length": 2, "seeds": [0], "init_only": True,
                        "cells": {"lstm": _profile([None], {
                            "h": [1, 2], "c": [3, 4], "total": [5, 6]})}},
                       "unused.png")
  (ax,) = drawn[0].axes
  assert _lines(ax) == {"lstm (initial)": ([0, 1], [5, 6])}
  assert ax.get_title().endswith("(N=2, 1 seed, at initialisation)")


def test_the_benchmark_figure_has_a_bar_per_method_measured(drawn):
  def row(cell, method, rate, status="ok"):
    return {"cell": cell, "length": 5, "method": method,
            "label": method.replace("_", " "), "status": status,
            "steps_per_second": rate}

  plots.benchmark([row("rnn", "eager", 12.0), row("rnn", "jit_step", 3456.0),
                   row("lstm", "eager", 7.5),
                   row("lstm", "jit_step", None, "error: x"),
                   row("rnn", "torch", None, "skipped: --torch=off")],
                  "unused.png", title="steps/s")
  (ax,) = drawn[0].axes
  bars = {}
  for container in ax.containers:
    bars[container.get_label()] = [(round(b.get_x() + b.get_width() / 2, 6),
                                    b.get_height()) for b in container]
  # Two methods measured (torch never was): 0.4 wide, either side of each
  # group; lstm has no jit_step bar.
  assert bars == {"eager": [(-0.2, 12.0), (0.8, 7.5)],
                  "jit step": [(0.2, 3456.0)]}
  labels = sorted(t.get_text() for t in ax.texts)
  assert labels == ["12", "3,456", "7.5"]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["rnn N=5",
                                                          "lstm N=5"]
  assert ax.get_yscale() == "log" and ax.get_title() == "steps/s"


def test_a_doubling_search_draws_steps_on_a_log_axis_each_cell_visible(drawn):
  # A horizon search doubles N (200, 400, 800): on a linear axis its first
  # lengths crowd at the left. Two cells that solved in the same steps at
  # each N are drawn a little apart, so neither hides the other.
  rows = [{"cell": cell, "length": n, "status": "ok", "steps_to_solve": 1000}
          for cell in ("mingru", "minlstm") for n in (200, 400, 800)
          for _ in range(3)]
  plots.steps_to_solve(rows, "s.png", budget=10000, log_length=True)
  ax = drawn[0].axes[0]
  assert ax.get_xscale() == "log"
  xs = {label: list(x) for label, (x, _) in _lines(ax).items()}
  assert set(xs) >= {"mingru", "minlstm"}
  for a, b in zip(xs["mingru"], xs["minlstm"]):
    assert a != b and 0.9 < a / b < 1.1
  assert list(ax.get_xticks()) == [200, 400, 800]  # The lengths tried.
  # The sweep's lengths (5, 10, 15, 20) stay on a linear axis, undodged.
  plots.steps_to_solve(rows, "t.png", budget=10000)
  assert drawn[1].axes[0].get_xscale() == "linear"
  assert list(_lines(drawn[1].axes[0])["mingru"][0]) == [200, 400, 800]
