"""The leaderboard: per cell and size its best learning rate, sizes counted by
hand, costs from a benchmark, its files and its flags."""

import dataclasses
import os
import subprocess
import sys

import pytest

from experiments import compare as compare_main
from palindrome_jax import compare
from palindrome_jax import files as io
from palindrome_jax import leaderboard
from palindrome_jax import plots
from palindrome_jax import report
from tests.compare_test import PNG, _load, _search, _sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _limits(table):
  return lambda cell, n, seed: 1.0 if n <= table[cell] else 0.1


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
  """An lstm grid of two learning rates (horizons 30 and 40), an rnn search
  (12) and an rnn at equal parameters (20)."""
  root = tmp_path_factory.mktemp("searches")
  return [
      _search(root / "lr1", ("rnn", "lstm"), _limits({"rnn": 12, "lstm": 30}),
              learning_rate=1e-3),
      _search(root / "lr3", ("lstm",), _limits({"lstm": 40}),
              learning_rate=3e-3),
      _search(root / "equal", ("rnn",), _limits({"rnn": 20}),
              num_params=67850, learning_rate=1e-3)]


def test_each_cell_and_size_reads_its_best_learning_rate(searches):
  rows = leaderboard.standings(compare.recipes(_load(*searches)))
  assert [(s.cell, s.num_hidden, s.best.entry["horizon"]) for s in rows] == [
      ("lstm", 128, 40), ("rnn", 255, 20), ("rnn", 128, 12)]
  lstm = rows[0]
  assert lstm.learning_rate == 3e-3 and lstm.learning_rates == [1e-3, 3e-3]
  assert [r.directory for r in lstm.tried] == [searches[1], searches[0]]
  assert not lstm.searching


def test_sizes_are_the_counts_done_by_hand(searches):
  rows = {(s.cell, s.num_hidden): s for s in leaderboard.standings(
      compare.recipes(_load(*searches)))}
  readout = 128 * 10 + 10
  # LSTM: W_x [1, 4H], W_h [H, 4H], b [4H]; the state is h and c.
  assert rows[("lstm", 128)].num_params == (512 + 128 * 512 + 512) + readout
  assert rows[("lstm", 128)].num_params == 67850
  assert rows[("lstm", 128)].state_size == 256
  # RNN: H^2 + 12 H + 10 parameters; 67,850 is nearest at H = 255 (68,095;
  # H = 254 gives 67,574).
  assert rows[("rnn", 128)].num_params == 128 * 128 + 12 * 128 + 10 == 17930
  assert rows[("rnn", 255)].num_params == 255 * 255 + 12 * 255 + 10 == 68095
  assert rows[("rnn", 255)].state_size == 255


def _bench(width, rate, length=100, **train_config):
  return {"settings": {"train_config": {
      "num_layers": 1, "block": "stack", "num_hidden": width,
      "encoding": "scalar", "batch_size": 128, **train_config}},
          "results": [{"cell": "lstm", "length": length,
                       "method": "compiled_loop", "status": "ok",
                       "steps_per_second": rate}]}


def test_the_cost_is_the_benchmarked_loop_of_the_same_model(searches):
  found = compare.recipes(_load(*searches), cells={"lstm"})
  assert leaderboard.standings(found)[0].cost is None
  # Another width, another length: not this model's cost.
  others = [_bench(64, 10.0), _bench(128, 10.0, length=20)]
  assert leaderboard.standings(found, others)[0].cost is None
  rows = leaderboard.standings(found, others + [_bench(128, 4.0)])
  assert rows[0].cost == pytest.approx(250.0)  # 1,000 steps at 4 steps/s.
  assert leaderboard.standings(
      found, [_bench(128, 4.0, num_layers=2)])[0].cost is None


def test_a_search_under_way_reads_its_bound_so_far(searches, tmp_path):
  found = compare.recipes(_load(*searches), cells={"rnn"})
  content = compare.load(searches[0])
  del content["cells"]["rnn"]["message"]  # As a search still running.
  content["cells"]["rnn"]["horizon"] = None
  running = compare.recipes([(str(tmp_path), content)], cells={"rnn"})
  rows = leaderboard.standings([found[0], running[0]])
  # The ended search is the best: a search under way is judged only alone.
  assert rows[0].best.directory == searches[0] and not rows[0].searching
  alone = leaderboard.standings(running)[0]
  assert alone.searching and alone.best.horizon == "≥ 12, < 13 so far"
  # Once it has passed a longer N than the ended search's horizon, it leads:
  # its horizon can only be longer still.
  for e in content["cells"]["rnn"]["evaluations"]:
    if e["length"] == 15:
      e["passed"], e["solved"] = True, [True] * len(e["solved"])
      e["steps_to_solve"] = [10] * len(e["solved"])
  ahead = compare.recipes([(str(tmp_path), content)], cells={"rnn"})
  rows = leaderboard.standings([found[0], ahead[0]])
  assert rows[0].best.directory == str(tmp_path) and rows[0].searching
  assert [r.directory for r in rows[0].tried] == [str(tmp_path), searches[0]]


def test_the_files_and_the_command_line(searches, tmp_path):
  bench = tmp_path / "benchmark.json"
  io.write_json(str(bench), _bench(128, 4.0))
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.compare",
       f"--dirs={','.join(searches)}", "--leaderboard", f"--costs={bench}",
       f"--results_dir={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = io.read_json(str(out / "leaderboard.json"))
  assert [(r["cell"], r["horizon"], r["num_params"]) for r in saved] == [
      ("lstm", 40, 67850), ("rnn", 20, 68095), ("rnn", 12, 17930)]
  assert saved[0]["cost_core_seconds_per_1000_steps"] == pytest.approx(250)
  with open(out / "leaderboard.md", encoding="utf-8") as f:
    text = f.read()
  assert ("| 1 | lstm | 1 | 128 | 67,850 | 256 | **40** | 10 | 41: 0/3 | "
          "0.003 (of 0.001, 0.003) | 250 |") in text
  with open(out / "leaderboard.png", "rb") as f:
    assert f.read(8) == PNG
  assert "| 1 | lstm |" in proc.stdout


@pytest.mark.parametrize("flags, message", [
    (["--costs=x.json"], "error: --costs: give --leaderboard too: the costs "
     "are the leaderboard's"),
    (["--leaderboard", "--costs=missing.json"],
     "error: --costs: 'missing.json': cannot read it: No such file or "
     "directory"),
    (["--equal_params=67850"], "error: --equal_params: give --leaderboard "
     "too: it picks the leaderboard's rows"),
    (["--leaderboard", "--equal_params=0"],
     "error: --equal_params: must be >= 1, got 0"),
    (["--leaderboard", "--equal_params=1000"],
     "error: --equal_params: no model of the searches has within 1% of "
     "1,000 parameters (17,930 to 67,850)"),
])
def test_bad_leaderboard_flags_get_one_line(searches, tmp_path, flags,
                                            message):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.compare", f"--dirs={searches[0]}",
       f"--results_dir={tmp_path / 'out'}", *flags],
      cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [message]
  assert not (tmp_path / "out").exists()  # Refused before writing anything.


def test_the_equal_parameter_table_keeps_the_models_of_that_size(searches):
  # The RNN sized to 67,850 (255 units: 68,095, 0.4% over) stands beside the
  # LSTM at 128 units (67,850 exactly); the RNN at 128 units (17,930) does
  # not. So the LSTM's one search serves both tables.
  rows = leaderboard.standings(compare.recipes(_load(*searches)))
  kept = leaderboard.at_params(rows, 67850)
  assert [(s.cell, s.num_hidden) for s in kept] == [("lstm", 128),
                                                    ("rnn", 255)]
  assert leaderboard.at_params(rows, 17930)[0].num_params == 17930
  assert leaderboard.at_params(rows, 30000) == []


def test_the_command_line_writes_the_equal_parameter_table(searches,
                                                           tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.compare",
       f"--dirs={','.join(searches)}", "--leaderboard",
       "--equal_params=67850", f"--results_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = io.read_json(str(tmp_path / "leaderboard.json"))
  assert [(r["cell"], r["num_params"]) for r in saved] == [
      ("lstm", 67850), ("rnn", 68095)]
  with open(tmp_path / "leaderboard.md", encoding="utf-8") as f:
    text = f.read()
  assert "# Memory leaderboard at 67,850 parameters" in text
  assert "within 1% of 67,850" in text


def test_a_sweep_stands_beside_the_searches_of_its_model(searches, tmp_path):
  # The first numbers of a model (a sweep at N = 5, 20, 80) bound its
  # horizon before a search does: a new model gets a row of its own, and a
  # model also searched keeps the better of the two.
  swept = _sweep(tmp_path / "swept", ("lstm", "gru"), (5, 20, 80),
                 _limits({"lstm": 80, "gru": 30}), learning_rate=3e-3)
  rows = leaderboard.standings(compare.recipes(
      _load(*searches, swept), labels=["rnn", "lstm", "lstm lr 3e-3", "rnn 255",
                                       "lstm swept", "gru swept"]))
  by_cell = {(s.cell, s.num_hidden): s for s in rows}
  lstm, gru = by_cell[("lstm", 128)], by_cell[("gru", 128)]
  assert lstm.best.directory == swept and lstm.bound == 80
  assert lstm.horizon_text == "≥ 80 (sweep: N = 5, 20, 80)"
  assert [r.directory for r in lstm.tried] == [swept, searches[1],
                                               searches[0]]
  assert gru.bound == 20 and not gru.searching
  assert gru.horizon_text == "≥ 20, < 80 (sweep: N = 5, 20, 80)"
  text = report.leaderboard_report(rows)
  assert [line.split(" | ")[2] for line in text.splitlines()
          if line.startswith("| 1 | lstm | `")] == [
              f"`{swept}` (a sweep)", f"`{searches[1]}`", f"`{searches[0]}`"]


def test_the_figure_has_a_bar_per_bound_and_every_label_inside(
    searches, tmp_path, monkeypatch):
  # A model with no horizon (its shortest sweep length failed) sits last,
  # with no bar: its text must stay above the axis, not on it.
  swept = _sweep(tmp_path / "swept", ("gru",), (5, 20),
                 lambda cell, n, seed: 0.1)
  rows = leaderboard.standings(compare.recipes(_load(searches[0], swept)))
  assert [s.cell for s in rows] == ["lstm", "rnn", "gru"]
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  plots.leaderboard(rows, "unused.png")
  (ax,) = figures[0].axes
  assert [round(p.get_width()) for p in ax.patches] == [30, 12]
  texts = {t.get_text(): t.get_position() for t in ax.texts}
  assert list(texts) == ["30", "12", "< 5 (sweep: N = 5, 20)"]
  low, high = ax.get_ylim()
  assert all(low + 0.5 <= y <= high - 0.5 for _, y in texts.values())


def test_the_longest_bar_keeps_its_text_inside_the_axes(tmp_path,
                                                       monkeypatch):
  # The leader's text starts where its bar ends, and a long model label
  # narrows the axes: the axis must reach far enough for the text, however
  # little width the labels leave.
  swept = _sweep(tmp_path / "swept", ("lstm",), (5, 20, 80),
                 lambda cell, n, seed: 1.0)
  (row,) = leaderboard.standings(compare.recipes(_load(swept)))
  rows = [dataclasses.replace(row, cell="lstm_from_a_cell_module_" * 2)]
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  plots.leaderboard(rows, "unused.png")
  fig = figures[0]
  (ax,) = fig.axes
  renderer = fig.canvas.get_renderer()
  inside = ax.get_window_extent(renderer)
  assert ax.texts[0].get_text() == "≥ 80 (sweep: N = 5, 20, 80)"
  for t in ax.texts:
    assert t.get_window_extent(renderer).x1 <= inside.x1, t.get_text()


def test_the_sources_give_each_directorys_command_and_wall_time(searches,
                                                                tmp_path):
  content = compare.load(searches[0])
  for e in content["cells"]["rnn"]["evaluations"]:
    e["wall_seconds"] = 90.0
  tried = len(content["cells"]["rnn"]["evaluations"])
  found = compare.recipes([(searches[0], content)], cells={"rnn"})
  command = "python -m experiments.horizon --flagfile=experiments/x.flags"
  leaderboard.write(leaderboard.standings(found), str(tmp_path),
                    commands={searches[0]: command})
  text = (tmp_path / "leaderboard.md").read_text()
  assert (f"| 1 | rnn | `{searches[0]}` | `{command}` | "
          f"{report.seconds(90.0 * tried)} |") in text
  (saved,) = io.read_json(str(tmp_path / "leaderboard.json"))
  assert saved["sources"] == [{"directory": searches[0], "command": command,
                               "run_wall_seconds": 90.0 * tried}]
  # A directory no recipe commits has no command to give.
  leaderboard.write(leaderboard.standings(found), str(tmp_path))
  assert f"| 1 | rnn | `{searches[0]}` | – |" in (
      tmp_path / "leaderboard.md").read_text()


def test_recipe_commands_read_each_recipes_tool_and_directory(tmp_path):
  recipes = tmp_path / "experiments" / "recipes"
  recipes.mkdir(parents=True)
  (recipes / "a.flags").write_text(
      "# tool: experiments.horizon\n# Its search. Committed:\n# "
      "experiments/results/a.\n--cells=rnn\n")
  (recipes / "b.flags").write_text(
      "# tool: experiments.sweep\n# Committed: experiments/results/a, "
      "beside a.\n--cells=rnn\n")
  (recipes / "c.flags").write_text("# tool: experiments.sweep\n--cells=rnn\n")
  (recipes / "d.flags").write_text(
      "# Committed: experiments/results/d.\n--cells=rnn\n")
  assert compare_main.recipe_commands(str(recipes)) == {
      str(tmp_path / "experiments" / "results" / "a"):
          "python -m experiments.horizon "
          "--flagfile=experiments/recipes/a.flags; python -m "
          "experiments.sweep --flagfile=experiments/recipes/b.flags"}


def test_a_grid_points_command_is_its_grids_recipe(tmp_path):
  # A leaderboard row from a grid's point (lr_grid/learning_rate=0.003)
  # names the recipe that committed the grid; a directory that is not a
  # grid's point has none.
  grid_dir = str(tmp_path / "lr_grid")
  point_dir = os.path.join(grid_dir, "learning_rate=0.003")
  commands = {grid_dir: "python -m experiments.horizon --flagfile=g"}

  def recipe(directory, point=None):
    return compare.Recipe(label="rnn", directory=directory, cell="rnn",
                          changes={}, protocol={}, settings={}, entry={},
                          point=point)

  in_grid = compare.GridPoint(grid=grid_dir, values={"learning_rate": 3e-3})
  assert compare_main.command_of(recipe(point_dir, in_grid),
                                 commands) == commands[grid_dir]
  assert compare_main.command_of(recipe(grid_dir), commands) == commands[
      grid_dir]
  assert compare_main.command_of(recipe(point_dir), commands) is None


@pytest.mark.parametrize("recipe", ["leaderboard.flags",
                                    "leaderboard_equal_params.flags"])
def test_every_directory_of_the_leaderboards_has_its_recipe(recipe):
  with open(os.path.join(compare_main.RECIPES_DIR, recipe),
            encoding="utf-8") as f:
    (dirs,) = [line.split("=", 1)[1].strip() for line in f
               if line.startswith("--dirs=")]
  commands = compare_main.recipe_commands()
  assert [d for d in dirs.split(",")
          if os.path.join(REPO, d) not in commands] == []
