"""Recipes compared: names from the recorded settings, horizons and seeds as
the searches found them, refusals of mixed budgets, and the command line."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments import compare as compare_main
from palindrome_jax import compare
from palindrome_jax import horizon
from palindrome_jax import plots
from palindrome_jax import report
from palindrome_jax import results
from palindrome_jax import sweep
from palindrome_jax import train
from tests.horizon_test import FakeTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


def _search(directory, cells, accuracy, seeds=(0, 1, 2), **base):
  # Every seed of every length tried, failing ones too: the reports'
  # per-seed counts ("31: 1/3") are what these tests read.
  config = horizon.HorizonConfig(
      cells=cells, seeds=seeds, min_length=5, max_length=80,
      skip_failed_lengths=False,
      base=train.RunConfig(**{"train_steps": 10, "eval_every": 10,
                              "stop_when_solved": True, **base}))
  horizon.run_horizon(config, str(directory), train_fn=FakeTrainer(accuracy))
  return str(directory)


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
  """Two searches: the defaults (rnn learns up to 12 on every seed; lstm up
  to 30, and seed 2 also 31 to 40), and an lstm recipe that learns up to 70."""
  root = tmp_path_factory.mktemp("searches")
  def first(cell, n, seed):
    limit = {"rnn": 12, "lstm": 40 if seed == 2 else 30}[cell]
    return 1.0 if n <= limit else 0.1
  plain = _search(root / "plain", ("rnn", "lstm"), first)
  recipe = _search(root / "recipe", ("lstm",),
                   lambda cell, n, seed: 1.0 if n <= 70 else 0.1,
                   forget_bias=1.0, learning_rate=3e-4)
  return plain, recipe


def _load(*directories):
  return [(d, compare.load(d)) for d in directories]


def test_recipes_are_named_by_what_differs_and_keep_the_searches_horizons(
    searches):
  found = compare.recipes(_load(*searches))
  assert [r.label for r in found] == [
      "rnn", "lstm", "lstm: learning_rate=0.0003, forget_bias=1"]
  assert [r.entry["horizon"] for r in found] == [12, 30, 70]
  assert [r.horizon for r in found] == ["12", "30", "70"]
  # eval_every=10 is how the fakes were checked, not what they learned with.
  assert all(r.protocol == {"eval_every": 10} for r in found)
  assert found[2].changes == {"learning_rate": 3e-4, "forget_bias": 1.0}
  # Seeds as recorded: at N=40 only seed 2 of the plain lstm solved.
  rows = [row for row in found[1].rows() if row["length"] == 40]
  assert [(row["seed"], row["steps_to_solve"]) for row in rows] == [
      (0, None), (1, None), (2, 10)]


def test_cells_and_labels_choose_and_name_the_recipes(searches):
  found = compare.recipes(_load(*searches), cells={"lstm"},
                          labels=["original", "forget bias 1"])
  assert [(r.label, r.directory) for r in found] == [
      ("original", searches[0]), ("forget bias 1", searches[1])]
  with pytest.raises(compare.CompareError, match="2 labels for 3") as error:
    compare.recipes(_load(*searches), labels=["a", "b"])
  assert error.value.about == "labels"
  with pytest.raises(compare.CompareError, match="no search has cells"):
    compare.recipes(_load(*searches), cells={"gru"})


def test_the_training_programs_version_names_no_recipe(searches, tmp_path):
  # The committed searches trained with version 1 of the program: the same
  # recipes as the defaults', rounded otherwise.
  old = _search(tmp_path / "old", ("gru",), lambda *unused: 1.0,
                training_program=1)
  assert compare.load(old)["settings"]["training"]["training_program"] == 1
  (recipe,) = compare.recipes(_load(old))
  assert recipe.label == "gru"
  assert recipe.changes == {} and recipe.protocol == {"eval_every": 10}


def test_a_search_of_an_older_format_or_the_wrong_shape_is_one_error(
    searches, tmp_path):
  content = compare.load(searches[0])
  (tmp_path / "old").mkdir()
  old = {k: v for k, v in content.items() if k != "format_version"}
  (tmp_path / "old" / "horizon.json").write_text(json.dumps(old))
  with pytest.raises(results.FormatError, match=(
      "results format 1.*: python -m experiments.migrate "
      f"--results_dir={tmp_path}/old$")):
    compare.load(str(tmp_path / "old"))
  (tmp_path / "typo").mkdir()
  content["cells"]["rnn"]["evaluations"][0]["seeds"] = "0,1,2"
  (tmp_path / "typo" / "horizon.json").write_text(json.dumps(content))
  with pytest.raises(ValueError, match=r"horizon.json is not a horizon "
                     r"search's: cells.rnn.evaluations\[0\].seeds is not a "
                     "list of integers"):
    compare.load(str(tmp_path / "typo"))


def test_one_recipe_twice_is_refused(searches):
  with pytest.raises(compare.CompareError, match="both hold the recipe 'rnn'"):
    compare.recipes(_load(searches[0], searches[0]))


@pytest.mark.parametrize("setting", [{"train_steps": 20},
                                     {"solved_accuracy": 0.9}])
def test_another_budget_or_criterion_is_refused(setting, tmp_path, searches):
  other = _search(tmp_path / "other", ("gru",), lambda *unused: 1.0,
                  **setting)
  with pytest.raises(compare.CompareError,
                     match=f"differ in {next(iter(setting))}") as error:
    compare.recipes(_load(searches[0], other))
  assert error.value.about == "searches"


def test_write_reports_what_the_searches_recorded(searches, tmp_path):
  found = compare.recipes(_load(*searches))
  compare.write(found, str(tmp_path))
  report = (tmp_path / "compare.md").read_text()
  assert ("| lstm | 3 (0, 1, 2) | 30 | 5: 3/3 (10) ✓, 10: 3/3 (10) ✓, "
          "20: 3/3 (10) ✓, 30: 3/3 (10) ✓, 31: 1/3 (10) ✗, 32: 1/3 (10) ✗, "
          "35: 1/3 (10) ✗, 40: 1/3 (10) ✗ |") in report
  assert "- rnn: eval_every=10" in report
  assert (tmp_path / "compare.png").read_bytes().startswith(PNG)
  records = json.loads((tmp_path / "compare.json").read_text())
  assert [(r["label"], r["horizon"]) for r in records] == [
      ("rnn", 12), ("lstm", 30),
      ("lstm: learning_rate=0.0003, forget_bias=1", 70)]


def test_the_figure_draws_each_recipe_and_stars_its_horizon(searches,
                                                            monkeypatch):
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  found = compare.recipes(_load(*searches))
  plots.recipes(found, "unused.png")
  top, bottom = figures[0].axes
  lines = {line.get_label(): line for line in top.get_lines()}
  assert list(lines) == ["rnn (horizon 12)", "lstm (horizon 30)",
                         "lstm: learning_rate=0.0003, forget_bias=1 "
                         "(horizon 70)"]
  # The share of seeds that solved each length, lines offset 1.5 apart.
  for r, offset, line in zip(found, (-1.5, 0.0, 1.5), lines.values()):
    tried = sorted(r.entry["evaluations"], key=lambda e: e["length"])
    assert list(line.get_xdata()) == [e["length"] for e in tried]
    assert list(line.get_ydata()) == [
        100 * sum(e["solved"]) / 3 + offset for e in tried]
  stars = [tuple(c.get_offsets()[0]) for c in top.collections]
  assert stars == [(12, 98.5), (30, 100.0), (70, 101.5)]
  # Below, steps to solve per recipe, in the same colours, and the budget.
  below = {line.get_label(): line.get_color() for line in bottom.get_lines()}
  assert {label: below[label] for label in [r.label for r in found]} == {
      r.label: line.get_color() for r, line in zip(found, lines.values())}
  assert bottom.get_xscale() == "log"


def _compare_process(*args):
  """``python -m experiments.compare ARGS``: the entrypoint's one smoke test
  in a process of its own."""
  process = subprocess.run(
      [sys.executable, "-m", "experiments.compare", *args], cwd=REPO,
      capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, "PYTHONPATH": REPO})
  return process.returncode, process.stdout, process.stderr


def _compare(capsys, *args):
  """The same command in this process (``Command.execute`` puts the flags
  back); returns ``(status, stdout, stderr)``."""
  capsys.readouterr()
  code = compare_main.COMMAND.execute(compare_main.main, ["compare", *args])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_the_command_line_compares_and_refuses_in_one_line(searches,
                                                           tmp_path, capsys):
  out = tmp_path / "out"
  code, stdout, stderr = _compare_process(f"--dirs={','.join(searches)}",
                                          f"--results_dir={out}")
  assert code == 0, stderr
  assert "| lstm: learning_rate=0.0003, forget_bias=1 | 3 (0, 1, 2) | 70 |" in (
      stdout)
  assert sorted(os.listdir(out)) == ["compare.json", "compare.md",
                                     "compare.png"]
  code, stdout, stderr = _compare(
      capsys, f"--dirs={searches[0]},{tmp_path}/none", f"--results_dir={out}")
  assert code == 2 and not stdout
  assert stderr.strip().splitlines() == [
      f"error: --dirs: '{tmp_path}/none' holds neither a horizon search "
      "(horizon.json) nor a sweep (config.json with its lengths)"]
  # The search's file instead of its directory; a damaged horizon.json.
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "horizon.json").write_text('{"cells": {}}')
  (tmp_path / "old").mkdir()  # Of a format before the format had a number.
  (tmp_path / "old" / "horizon.json").write_text(
      '{"settings": {}, "cells": {}}')
  for given, problem in [
      (f"{searches[0]}/horizon.json", "holds neither a horizon search"),
      (f"{tmp_path}/bad", "horizon.json is not a horizon search's"),
      (f"{tmp_path}/old", "migrate the directory once with: python -m "
       f"experiments.migrate --results_dir={tmp_path}/old")]:
    code, stdout, stderr = _compare(
        capsys, f"--dirs={searches[0]},{given}", f"--results_dir={out}")
    assert code == 2 and not stdout
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: --dirs: ") and given in line
    assert problem in line


def test_searches_outside_a_grid_have_no_verdict(searches, tmp_path):
  found = compare.recipes(_load(*searches))
  assert compare.best_of_grids(found) == []
  assert all(r.point is None for r in found)
  compare.write(found, str(tmp_path))
  assert "Best of each grid" not in (tmp_path / "compare.md").read_text()
  records = json.loads((tmp_path / "compare.json").read_text())
  assert all("grid" not in r for r in records)


def _sweep(directory, cells, lengths, accuracy, seeds=(0, 1, 2), **base):
  config = sweep.SweepConfig(
      cells=cells, lengths=lengths, seeds=seeds,
      base=train.RunConfig(**{"train_steps": 10, "eval_every": 10,
                              "stop_when_solved": True, **base}))
  fake = FakeTrainer(accuracy)

  def trainer(cfg, seeds, **kwargs):  # With the curves a sweep plots.
    group = fake(cfg, seeds, **kwargs)
    return dataclasses.replace(group, seeds=[dataclasses.replace(
        s, history={"step": [cfg.train_steps], "loss": [1.0],
                    "accuracy": [s.test_accuracy]}) for s in group.seeds])

  sweep.run_sweep(config, str(directory), train_fn=trainer)
  return str(directory)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """A sweep at N = 5, 20, 80: rnn learns up to 12, lstm everything, gru
  nothing on seed 1, and irnn N=5 and N=80 but not N=20."""
  def learns(cell, n, seed):
    solved = {"rnn": n <= 12, "lstm": True, "gru": seed != 1,
              "irnn": n != 20}[cell]
    return 1.0 if solved else 0.1
  return _sweep(tmp_path_factory.mktemp("swept"),
                ("rnn", "lstm", "gru", "irnn"), (5, 20, 80), learns)


def test_a_sweep_reads_as_a_search_bounded_between_its_lengths(swept):
  found = {r.cell: r for r in compare.recipes(_load(swept))}
  assert {cell: r.entry["horizon"] for cell, r in found.items()} == {
      "rnn": 5, "lstm": 80, "gru": None, "irnn": 5}
  assert {cell: r.horizon for cell, r in found.items()} == {
      "rnn": "≥ 5, < 20 (sweep: N = 5, 20, 80)",
      "lstm": "≥ 80 (sweep: N = 5, 20, 80)",
      "gru": "< 5 (sweep: N = 5, 20, 80)",
      "irnn": "≥ 5, < 20 (sweep: N = 5, 20, 80)"}
  # A search never tries a length past its first fail: nor does the reading.
  assert [e["length"] for e in found["irnn"].entry["evaluations"]] == [5, 20]
  assert found["lstm"].entry["message"] == (
      "a sweep of N = 5, 20, 80: every seed solves (99%) up to N=80")
  assert found["rnn"].entry["message"].endswith("up to N=5, not at N=20")
  # Each seed as its run recorded it.
  assert [(row["seed"], row["steps_to_solve"]) for row in found["gru"].rows()
          ] == [(0, 10), (1, None), (2, 10)]
  assert all(compare.ended(r) for r in found.values())


def test_a_sweep_not_finished_reads_as_a_search_under_way(swept, tmp_path):
  partial = tmp_path / "partial"
  shutil.copytree(swept, partial)
  os.remove(partial / "runs" / "lstm_N80_seed1.json")  # As not trained yet.
  (lstm,) = compare.recipes(_load(str(partial)), cells={"lstm"})
  assert not compare.ended(lstm) and lstm.entry["horizon"] is None
  assert lstm.horizon == "≥ 20 so far (sweep: N = 5, 20, 80)"
  assert [e["length"] for e in lstm.entry["evaluations"]] == [5, 20]


def test_a_length_a_finished_seed_failed_has_failed_before_the_rest_finish(
    swept, tmp_path):
  """gru's seed 1 fails N=5: with seed 2 not trained yet, N=5 has already
  failed whatever seed 2 does, so the reading has ended (< 5), counting only
  the seeds finished (1/2); irnn's N=20 likewise with seed 0 missing."""
  partial = tmp_path / "partial"
  shutil.copytree(swept, partial)
  os.remove(partial / "runs" / "gru_N5_seed2.json")
  os.remove(partial / "runs" / "irnn_N20_seed0.json")
  found = {r.cell: r for r in compare.recipes(_load(str(partial)),
                                              cells={"gru", "irnn"})}
  assert all(compare.ended(r) for r in found.values())
  assert {cell: r.horizon for cell, r in found.items()} == {
      "gru": "< 5 (sweep: N = 5, 20, 80)",
      "irnn": "≥ 5, < 20 (sweep: N = 5, 20, 80)"}
  (gru_5,) = found["gru"].entry["evaluations"]
  assert gru_5["seeds"] == [0, 1] and gru_5["solved"] == [True, False]
  assert not gru_5["passed"]
  assert report.tried_text(gru_5) == "5: 1/2 (10) ✗"
  irnn_20 = found["irnn"].entry["evaluations"][-1]
  assert irnn_20["seeds"] == [1, 2] and not irnn_20["passed"]
  assert found["irnn"].entry["message"].endswith(
      "up to N=5, not at N=20 (2 of 3 seeds finished)")
  # A missing seed beside seeds that all solved still awaits it.
  os.remove(partial / "runs" / "irnn_N5_seed1.json")
  (irnn,) = compare.recipes(_load(str(partial)), cells={"irnn"})
  assert not compare.ended(irnn) and irnn.entry["evaluations"] == []


def test_a_search_without_its_horizon_or_a_damaged_config_is_one_error(
    searches, tmp_path, capsys):
  (tmp_path / "search").mkdir()  # A search that has written no horizon.json.
  shutil.copy(os.path.join(searches[0], "config.json"),
              tmp_path / "search" / "config.json")
  (tmp_path / "damaged").mkdir()
  (tmp_path / "damaged" / "config.json").write_text(
      '{"format_version": 2, "lengths": [5]}')
  for name, problem in [
      ("search", f"'{tmp_path}/search' holds neither a horizon search "
       "(horizon.json) nor a sweep (config.json with its lengths)"),
      ("damaged", f"{tmp_path}/damaged has no horizon.json, and its "
       "config.json is not a sweep's (no cells, lengths, seeds or training "
       "settings)")]:
    code, stdout, stderr = _compare(capsys, f"--dirs={tmp_path}/{name}",
                                    f"--results_dir={tmp_path}/out")
    assert code == 2 and not stdout
    assert stderr.strip().splitlines() == [f"error: --dirs: {problem}"]


def test_the_command_line_compares_a_sweep_beside_a_search(searches, swept,
                                                          tmp_path, capsys):
  code, stdout, stderr = _compare(
      capsys, f"--dirs={searches[0]},{swept}", "--labels=rnn,lstm,rnn swept,"
      "lstm swept,gru swept,irnn swept", f"--results_dir={tmp_path}")
  assert code == 0, stderr
  assert "| lstm swept | 3 (0, 1, 2) | ≥ 80 (sweep: N = 5, 20, 80) |" in stdout
  records = json.loads((tmp_path / "compare.json").read_text())
  assert [r["horizon"] for r in records] == [12, 30, 5, 80, None, 5]


def test_the_figure_names_many_recipes_beside_the_lines(swept, searches,
                                                        monkeypatch):
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  few = compare.recipes(_load(*searches))
  many = compare.recipes(_load(*searches, swept), labels=[
      "rnn", "lstm", "lstm recipe", "rnn sweep", "lstm sweep", "gru sweep",
      "irnn sweep"])
  assert len(few) <= plots.RECIPES_IN_LEGEND < len(many)
  for found in (few, many):
    plots.recipes(found, "unused.png")
  for fig, found, inside in zip(figures, (few, many), (True, False)):
    fig.canvas.draw()
    top = next(ax for ax in fig.axes if ax.get_title())
    (bottom,) = [ax for ax in fig.axes if ax.get_xlabel()]
    legend = max((ax.get_legend() for ax in fig.axes if ax.get_legend()),
                 key=lambda l: len(l.get_texts()))
    box, axes = legend.get_window_extent(), top.get_window_extent()
    assert (box.x1 <= axes.x1) == inside
    assert [t.get_text() for t in legend.get_texts()] == [
        f"{r.label} (horizon {r.horizon})" for r in found]
    # Every name is on the figure, and the panels share N.
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    assert top.get_shared_x_axes().joined(top, bottom)
