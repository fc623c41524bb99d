"""A grid over training settings: several values of a training flag, each
point trained into its own results directory, resumed, and compared.

The entrypoints run in this process (as in ``sweep_cli_test``) with a fake
training function in place of ``train_and_evaluate``: nothing trains, so
every point's records are what the fake says, and each call it gets says
which settings the point trained with.
"""

import contextlib
import dataclasses
import functools
import json

from absl import flags
import pytest

from experiments import common
from experiments import compare as compare_main
from experiments import gradients as gradients_main
from experiments import horizon as horizon_main
from experiments import sweep as sweep_main
from palindrome_jax import cli
from palindrome_jax import compare
from palindrome_jax import config
from palindrome_jax import grid
from palindrome_jax import horizon
from palindrome_jax import sweep
from palindrome_jax import train
from palindrome_jax import validation
from tests.sweep_cli_test import _in_process

SWEEP_ARGS = ["--cells=rnn,lstm", "--lengths=3,4", "--train_steps=40",
              "--log_every=20", "--eval_batches=2", "--num_hidden=16",
              "--batch_size=16"]


class FakeTrainer:
  """``train_and_evaluate`` without training. Every seed is ``ok`` and
  solves with ``steps(cfg, N)`` steps if ``solves(cfg, N)`` (default:
  always, in ``cfg.eval_every`` steps); records each call's settings."""

  def __init__(self, solves=lambda cfg, n: True,
               steps=lambda cfg, n: cfg.eval_every):
    self.solves, self.steps = solves, steps
    self.calls = []

  def __call__(self, cfg, seeds, **unused_kwargs):
    self.calls.append((cfg.learning_rate, cfg.num_layers, cfg.cell,
                       cfg.length, tuple(seeds)))
    solved = self.solves(cfg, cfg.length)
    return train.GroupResult(
        config=cfg, seeds=[train.SeedResult(
            seed=s, status="ok", test_accuracy=1.0 if solved else 0.1,
            test_loss=0.0, final_train_loss=0.0, final_train_accuracy=1.0,
            history={"step": [cfg.train_steps], "loss": [0.5],
                     "accuracy": [1.0]},
            train_steps=cfg.train_steps,
            steps_to_solve=self.steps(cfg, cfg.length) if solved else None)
                                for s in seeds],
        train_steps=cfg.train_steps, wall_seconds=0.0, compile_seconds=0.0,
        steps_per_second=1.0)


@pytest.fixture(name="fake")
def _fake(monkeypatch):
  """The sweep and the search of the entrypoints train with a
  :class:`FakeTrainer` (returned; replace its ``solves`` and ``steps``)."""
  trainer = FakeTrainer()
  monkeypatch.setattr(sweep, "run_sweep", functools.partial(
      sweep.run_sweep, train_fn=lambda *a, **k: trainer(*a, **k)))
  monkeypatch.setattr(horizon, "run_horizon", functools.partial(
      horizon.run_horizon, train_fn=lambda *a, **k: trainer(*a, **k)))
  return trainer


def _sweep(tmp_path, *args):
  return _in_process(sweep_main, [*SWEEP_ARGS,
                                  f"--results_dir={tmp_path / 'grid'}", *args])


def _one_error_line(stderr):
  lines = stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  return lines[0]


# Parsing.


@dataclasses.dataclass(frozen=True)
class _Tool:
  rate: float = config.setting(0.5, "A rate.", config.fraction)
  layers: int = config.setting(1, "Layers.", config.positive_int)
  kind: str = config.setting("a", "A kind.", config.one_of(("a", "b")))
  switch: bool = config.setting(False, "A switch.")

  def __post_init__(self):
    config.check_fields(self)


@pytest.fixture(name="tool_flags")
def _tool_flags():
  values = flags.FlagValues()
  return values, cli.define_flags(_Tool, flag_values=values, several=True)


def test_one_value_parses_as_a_flag_of_its_type(tool_flags):
  values, holders = tool_flags
  values(["prog", "--rate=0.25", "--layers=0x3", "--kind=b", "--switch"])
  assert cli.several_values(_Tool, holders) == {}
  assert cli.from_flags(_Tool, holders) == _Tool(0.25, 3, "b", True)
  # The help shows the default as absl's typed flags do.
  assert values["rate"].default_as_str == "'0.5'"
  assert values["rate"].flag_type() == "float"
  with pytest.raises(flags.IllegalFlagValueError, match="--rate=x"):
    values(["prog", "--rate=x"])  # absl's own error, as before.


def test_several_values_are_parsed_checked_and_kept_in_the_fields_order(
    tool_flags):
  values, holders = tool_flags
  values(["prog", "--kind=b, a", "--rate=1e-1,0.2,1"])
  assert cli.several_values(_Tool, holders) == {
      "rate": (0.1, 0.2, 1.0), "kind": ("b", "a")}
  assert str(holders["rate"].value) == "1e-1,0.2,1"
  # A config takes one value: several are refused, naming the flag.
  with pytest.raises(validation.FlagError,
                     match=r"^--rate: takes one value here, got '1e-1,0.2,1'"):
    cli.from_flags(_Tool, holders)
  # With the grid's values given, the flag's are not read.
  assert cli.from_flags(_Tool, holders, rate=0.2, kind="a") == _Tool(
      rate=0.2, kind="a")


@pytest.mark.parametrize("arg, problem", [
    ("--rate=0.5,x", "--rate: 'x' is not a number (in '0.5,x')"),
    ("--rate=0.5,", "--rate: empty item in '0.5,'"),
    ("--rate=0.5,2", "--rate: must be in (0, 1], got 2.0 (in '0.5,2')"),
    ("--rate=0.5,5e-1", "--rate: repeated value '5e-1' (in '0.5,5e-1')"),
    ("--layers=1,2.5", "--layers: '2.5' is not an integer (in '1,2.5')"),
    ("--kind=a,c", "--kind: unknown 'c'; choose from a, b (in 'a,c')"),
])
def test_a_bad_value_among_several_is_one_flag_error(tool_flags, arg,
                                                     problem):
  values, holders = tool_flags
  values(["prog", arg])
  with pytest.raises(validation.FlagError) as error:
    cli.several_values(_Tool, holders)
  assert str(error.value) == problem


def test_a_bool_takes_one_value(tool_flags):
  values, _ = tool_flags
  with pytest.raises(flags.IllegalFlagValueError):
    values(["prog", "--switch=true,false"])


@pytest.mark.parametrize("arg, line", [
    ("--learning_rate=1e-3,x",
     "error: --learning_rate: 'x' is not a number (in '1e-3,x')"),
    ("--learning_rate=1e-3,0.001",
     "error: --learning_rate: repeated value '0.001' (in '1e-3,0.001')"),
    ("--optimizer=adam,sgd", "error: --optimizer: unknown 'sgd'; choose "
     "from adam, rmsprop (in 'adam,sgd')"),
    # A check that involves another field runs on each point's config.
    ("--chrono_per_digit=1,0.5", "error: --chrono_per_digit: T_max = 0.5 x "
     "N = 1.5 must be > 2"),
])
def test_a_bad_grid_is_one_line_status_2_and_trains_nothing(tmp_path, fake,
                                                            arg, line):
  code, stdout, stderr = _sweep(tmp_path, arg)
  assert code == 2 and "Results in" not in stdout
  assert _one_error_line(stderr) == line
  assert fake.calls == [] and not (tmp_path / "grid").exists()


def test_a_tool_without_grids_takes_one_value(tmp_path):
  code, _, stderr = _in_process(gradients_main, [
      "--cells=rnn", "--learning_rate=1e-3,3e-3", "--init_only",
      f"--results_dir={tmp_path}"])
  assert code == 2
  assert _one_error_line(stderr).startswith(
      "error: --learning_rate: takes one value here, got '1e-3,3e-3'")


def test_help_says_the_training_flags_take_several_values():
  for entrypoint in (sweep_main, horizon_main):
    _, stdout, _ = _in_process(entrypoint, ["--help"])
    training = stdout.split("Training (palindrome_jax.config.RunConfig):\n"
                            )[1]
    assert training.startswith("  Each takes one value, or several "
                               "comma-separated (--learning_rate=3e-4,1e-3;")
    assert "--learning_rate: Learning rate of the optimizer. (default: " \
        "'0.001')" in stdout
  _, stdout, _ = _in_process(gradients_main, ["--help"])
  assert "several comma-separated" not in stdout


# Points and their directories.


def test_points_are_the_product_named_in_the_order_of_their_fields():
  values = {"learning_rate": (3e-4, 1e-3), "num_layers": (2, 1)}
  assert [grid.point_name(p) for p in grid.points(values)] == [
      "learning_rate=0.0003,num_layers=2", "learning_rate=0.0003,num_layers=1",
      "learning_rate=0.001,num_layers=2", "learning_rate=0.001,num_layers=1"]
  assert grid.points({}) == [{}]


@pytest.mark.parametrize("value, text", [
    (3e-5, "3e-05"), (0.100000000001, "0.100000000001"), (2, "2"), (1.0, "1.0"),
    ("adam", "adam"), ("a/b c", "a%2Fb%20c")])
def test_a_value_is_spelled_to_read_back_and_be_one_path_component(value,
                                                                   text):
  assert grid.spell(value) == text
  if isinstance(value, float):
    assert float(grid.spell(value)) == value


# Each point trained into its own directory.


def _settings(directory):
  return json.loads((directory / "config.json").read_text())[
      "training_settings"]


def test_each_point_trains_with_its_settings_into_its_own_directory(
    tmp_path, fake):
  code, stdout, stderr = _sweep(tmp_path, "--learning_rate=3e-4,1e-3",
                                "--num_layers=1,2")
  assert code == 0, stderr
  # In RunConfig's order of fields, whatever the order of the flags.
  names = [f"num_layers={layers},learning_rate={lr}"
           for layers in (1, 2) for lr in ("0.0003", "0.001")]
  assert [line for line in stdout.splitlines() if line.startswith("## ")] == [
      f"## {name} (point {k} of 4)" for k, name in enumerate(names, 1)]
  parent = tmp_path / "grid"
  assert sorted(p.name for p in parent.iterdir()
                if not p.name.startswith(".")) == sorted(names + ["grid.json"])
  # Every run of every point, once, with the point's settings.
  assert sorted(fake.calls) == sorted(
      (lr, layers, cell, n, (42,)) for lr in (3e-4, 1e-3) for layers in (1, 2)
      for cell in ("rnn", "lstm") for n in (3, 4))
  for lr in (3e-4, 1e-3):
    for layers in (1, 2):
      point = parent / f"num_layers={layers},learning_rate={lr}"
      settings = _settings(point)
      assert (settings["learning_rate"], settings["num_layers"]) == (lr,
                                                                     layers)
      assert settings["train_steps"] == 40
      rows = json.loads((point / "results.json").read_text())
      assert sorted((r["cell"], r["length"]) for r in rows) == [
          ("lstm", 3), ("lstm", 4), ("rnn", 3), ("rnn", 4)]
      assert f"Results in {point}/" in stdout
  record = json.loads((parent / "grid.json").read_text())
  assert record["format_version"] == grid.FORMAT_VERSION
  assert record["tool"] == "experiments.sweep"
  assert record["flags"] == {"num_layers": [1, 2],
                             "learning_rate": [3e-4, 1e-3]}
  assert [p["directory"] for p in record["points"]] == names
  assert record["points"][1]["settings"] == {"num_layers": 1,
                                             "learning_rate": 1e-3}
  # The settings every point shares: all but the grid's.
  assert "learning_rate" not in record["settings"]
  assert record["settings"]["train_steps"] == 40


def test_one_value_trains_into_the_directory_itself_as_before(tmp_path,
                                                              fake):
  code, stdout, stderr = _sweep(tmp_path, "--learning_rate=3e-4")
  assert code == 0, stderr
  parent = tmp_path / "grid"
  assert not (parent / "grid.json").exists()
  assert _settings(parent)["learning_rate"] == 3e-4
  assert len(json.loads((parent / "results.json").read_text())) == 4
  assert "## " not in stdout and f"Results in {parent}/" in stdout
  assert {call[0] for call in fake.calls} == {3e-4}


class _StopAfter:
  """A stop request that comes once ``trainer`` has trained ``calls``
  programs, as a Ctrl-C would."""

  exit_status = 130

  def __init__(self, trainer, calls):
    self.trainer, self.calls = trainer, calls

  def __call__(self):
    return len(self.trainer.calls) >= self.calls


def test_an_interrupted_grid_resumes_and_trains_nothing_twice(
    tmp_path, fake, monkeypatch):
  grid_args = ("--learning_rate=3e-4,1e-3",)
  with monkeypatch.context() as patch:
    patch.setattr(common, "stop_on_interrupt",
                  lambda: contextlib.nullcontext(_StopAfter(fake, 3)))
    code, stdout, stderr = _sweep(tmp_path, *grid_args)
  assert code == 130, stderr
  assert "interrupted; rerun the same command to continue" in stderr
  assert "## learning_rate=0.001" not in stdout  # The next point not begun.
  first = list(fake.calls)
  # Programs on two devices may both start before the stop: 3 or 4 runs.
  assert len(first) in (3, 4) and {call[0] for call in first} == {3e-4}
  fake.calls.clear()
  code, stdout, stderr = _sweep(tmp_path, *grid_args)
  assert code == 0, stderr
  # The rest of the first point and all of the second, none again.
  assert sorted(first + fake.calls) == sorted(
      (lr, 1, cell, n, (42,)) for lr in (3e-4, 1e-3)
      for cell in ("rnn", "lstm") for n in (3, 4))
  fake.calls.clear()
  assert _sweep(tmp_path, *grid_args)[0] == 0 and fake.calls == []


def test_a_rerun_with_new_values_adds_points_another_grid_is_refused(
    tmp_path, fake):
  assert _sweep(tmp_path, "--learning_rate=3e-4,1e-3")[0] == 0
  fake.calls.clear()
  code, _, stderr = _sweep(tmp_path, "--learning_rate=1e-3,3e-3")
  assert code == 0, stderr
  assert {call[0] for call in fake.calls} == {3e-3}  # 1e-3 is on disk.
  parent = tmp_path / "grid"
  record = json.loads((parent / "grid.json").read_text())
  assert record["flags"] == {"learning_rate": [3e-4, 1e-3, 3e-3]}
  assert [p["directory"] for p in record["points"]] == [
      "learning_rate=0.0003", "learning_rate=0.001", "learning_rate=0.003"]
  fake.calls.clear()
  refusals = {
      ("--num_layers=1,2",): "holds a grid over --learning_rate, not over "
                             "--num_layers",
      ("--learning_rate=3e-4,1e-3", "--train_steps=20"):
          "holds a grid over --learning_rate whose points share other "
          "settings (train_steps)",
      ("--learning_rate=1e-3",): "holds a grid over --learning_rate "
                                 "(grid.json)",
  }
  for args, problem in refusals.items():
    code, _, stderr = _sweep(tmp_path, *args)
    assert code == 2
    line = _one_error_line(stderr)
    assert line.startswith(f"error: --results_dir: {parent} {problem}"), line
  code, _, stderr = _in_process(horizon_main, [
      "--cells=rnn", "--learning_rate=3e-4,1e-3",
      f"--results_dir={parent}"])
  assert code == 2 and "a grid of experiments.sweep, not of " \
      "experiments.horizon" in _one_error_line(stderr)
  assert fake.calls == []
  assert json.loads((parent / "grid.json").read_text()) == record


def test_a_grid_is_refused_where_runs_of_one_setting_are(tmp_path, fake):
  assert _sweep(tmp_path)[0] == 0
  code, _, stderr = _sweep(tmp_path, "--learning_rate=3e-4,1e-3")
  assert code == 2
  assert _one_error_line(stderr).startswith(
      f"error: --results_dir: {tmp_path / 'grid'} holds runs of its own "
      "(config.json)")
  assert len(fake.calls) == 4  # The first sweep's only.


# A grid of horizon searches compared.

# Per cell and learning rate: the longest N every seed solves, and the steps
# to solve at every N. lstm: the largest horizon wins (3e-3). rnn: one
# horizon; the fewest steps win (1e-3). gru: a tie; the first point listed.
HORIZONS = {"lstm": {3e-4: 10, 1e-3: 20, 3e-3: 30},
            "rnn": {3e-4: 10, 1e-3: 10, 3e-3: 10},
            "gru": {3e-4: 10, 1e-3: 10, 3e-3: 10}}
STEPS = {"lstm": {3e-4: 300, 1e-3: 300, 3e-3: 300},
         "rnn": {3e-4: 300, 1e-3: 100, 3e-3: 200},
         "gru": {3e-4: 100, 1e-3: 100, 3e-3: 100}}


@pytest.fixture(name="horizon_grid")
def _horizon_grid(tmp_path, fake):
  fake.solves = lambda cfg, n: n <= HORIZONS[cfg.cell][cfg.learning_rate]
  fake.steps = lambda cfg, n: STEPS[cfg.cell][cfg.learning_rate]
  parent = tmp_path / "search"
  code, stdout, stderr = _in_process(horizon_main, [
      "--cells=lstm,rnn,gru", "--seeds=2", "--min_length=5",
      "--max_length=40", "--train_steps=1000", "--eval_every=100",
      "--num_hidden=16", "--batch_size=16", "--checkpoint_every=0",
      "--learning_rate=3e-4,1e-3,3e-3", f"--results_dir={parent}"])
  assert code == 0, stderr
  assert stdout.count("## learning_rate=") == 3
  return parent


def test_each_point_of_a_horizon_grid_is_a_search_of_its_own(horizon_grid):
  for lr in (3e-4, 1e-3, 3e-3):
    point = horizon_grid / grid.point_name({"learning_rate": lr})
    content = horizon.read_search(str(point / "horizon.json"))
    assert content["settings"]["training"]["learning_rate"] == lr
    assert {cell: entry["horizon"] for cell, entry in
            content["cells"].items()} == {
                cell: HORIZONS[cell][lr] for cell in HORIZONS}


def test_compare_names_each_cells_best_value_and_why_it_won(horizon_grid,
                                                           tmp_path):
  out = tmp_path / "compare"
  code, stdout, stderr = _in_process(compare_main, [
      f"--dirs={horizon_grid}", f"--results_dir={out}"])
  assert code == 0, stderr
  report = (out / "compare.md").read_text()
  assert "## Best of each grid" in report
  assert (f"| `{horizon_grid}` | lstm | learning_rate=0.003 | 30 | 300 | "
          "learning_rate=0.003 wins: the largest horizon, 30 "
          "(learning_rate=0.001: 20) |") in report
  assert (f"| `{horizon_grid}` | rnn | learning_rate=0.001 | 10 | 100 | "
          "learning_rate=0.001 wins: horizon 10 as learning_rate=0.003, in "
          "fewer median steps to solve at N=10: 100 (learning_rate=0.003: "
          "200) |") in report
  assert (f"| `{horizon_grid}` | gru | learning_rate=0.0003 | 10 | 100 | "
          "tie: learning_rate=0.0003, learning_rate=0.001, "
          "learning_rate=0.003 (horizon 10, median steps 100); "
          "learning_rate=0.0003 listed first |") in report
  # The default learning rate, named as the grid's value.
  assert "| lstm: batch_size=16, num_hidden=16, learning_rate=0.001 |" in report
  assert "learning_rate=0.003 wins: the largest horizon" in stdout
  records = json.loads((out / "compare.json").read_text())
  best = {r["cell"]: r["grid"]["point"] for r in records
          if r["grid"]["best"]}
  assert best == {"lstm": {"learning_rate": 3e-3},
                  "rnn": {"learning_rate": 1e-3},
                  "gru": {"learning_rate": 3e-4}}
  (rnn_best,) = [r for r in records if r["cell"] == "rnn"
                 and r["grid"]["best"]]
  assert rnn_best["grid"]["rank"] == 1
  assert rnn_best["grid"]["median_steps_at_horizon"] == 100
  assert rnn_best["grid"]["directory"] == str(horizon_grid)
  assert rnn_best["grid"]["why"].startswith("learning_rate=0.001 wins")
  assert sorted(r["grid"]["rank"] for r in records if r["cell"] == "rnn") == [
      1, 2, 3]


def test_a_point_still_searching_is_not_judged(horizon_grid):
  searches, points, missing = compare.load_all(str(horizon_grid))
  assert missing == []
  # The 3e-3 search of lstm, as it stands mid-search: no horizon yet.
  path = str(horizon_grid / "learning_rate=0.003")
  content = dict(searches)[path]
  del content["cells"]["lstm"]["message"]
  found = compare.recipes(searches, {"lstm"}, points=points)
  (verdict,) = compare.best_of_grids(found)
  assert verdict.best.point.values == {"learning_rate": 1e-3}
  assert [r.point.values for r in verdict.unjudged] == [{"learning_rate":
                                                         3e-3}]
  assert "(still searching)" in compare.summary_table(found)


def test_compare_names_the_best_point_of_a_grid_of_sweeps(tmp_path, fake):
  # Each point's sweep reads as a search of its lengths (3 and 4): lstm
  # solves both at 1e-3, only N=3 at 3e-4; rnn solves N=3 at both, in
  # fewer steps at 3e-4.
  fake.solves = lambda cfg, n: (n == 3 or cfg.cell == "lstm"
                                and cfg.learning_rate == 1e-3)
  fake.steps = lambda cfg, n: 20 if cfg.learning_rate == 3e-4 else 40
  assert _sweep(tmp_path, "--learning_rate=3e-4,1e-3",
                "--eval_every=20")[0] == 0
  out = tmp_path / "out"
  code, stdout, stderr = _in_process(compare_main, [
      f"--dirs={tmp_path / 'grid'}", f"--results_dir={out}"])
  assert code == 0, stderr
  assert "learning_rate=0.001 wins: the largest horizon, ≥ 4" in stdout
  records = json.loads((out / "compare.json").read_text())
  assert {r["cell"]: r["grid"]["point"] for r in records
          if r["grid"]["best"]} == {"lstm": {"learning_rate": 1e-3},
                                    "rnn": {"learning_rate": 3e-4}}
  assert {(r["cell"], r["grid"]["point"]["learning_rate"]): r["horizon_text"]
          for r in records} == {
              ("lstm", 3e-4): "3 (sweep: N = 3, 4)",
              ("lstm", 1e-3): "≥ 4 (sweep: N = 3, 4)",
              ("rnn", 3e-4): "3 (sweep: N = 3, 4)",
              ("rnn", 1e-3): "3 (sweep: N = 3, 4)"}


def test_no_point_wins_where_none_solves_the_shortest_length(tmp_path, fake):
  fake.solves = lambda cfg, n: False
  parent = tmp_path / "search"
  code, _, stderr = _in_process(horizon_main, [
      "--cells=rnn", "--min_length=5", "--max_length=10",
      "--train_steps=100", "--eval_every=100", "--checkpoint_every=0",
      "--learning_rate=3e-4,1e-3", f"--results_dir={parent}"])
  assert code == 0, stderr
  searches, points, _ = compare.load_all(str(parent))
  (verdict,) = compare.best_of_grids(compare.recipes(searches,
                                                     points=points))
  assert verdict.best is None and len(verdict.ranked) == 2
  assert verdict.why() == ("none wins: no point's seeds all solve the "
                           "shortest length, N=5")
