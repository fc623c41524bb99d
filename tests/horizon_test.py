"""The horizon search with a fake trainer, and one tiny real run of the tool."""

import contextlib
import logging
import math
import os
import re
import subprocess
import sys
import threading

import jax
import pytest

from experiments import horizon as horizon_main
from palindrome_jax import config as config_lib
from palindrome_jax import horizon
from palindrome_jax import files as io
from palindrome_jax import report
from palindrome_jax import results
from palindrome_jax import train
from palindrome_jax.status import Kind, Status
from tests.runner_test import fail_to_save

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeTrainer:
  """``train_and_evaluate`` whose test accuracy is ``accuracy(cell, N, seed)``;
  records the (cell, N) it was asked to train."""

  def __init__(self, accuracy):
    self.accuracy = accuracy
    self.calls = []

  def __call__(self, cfg, seeds, **unused_kwargs):
    self.calls.append((cfg.cell, cfg.length, tuple(seeds)))
    results = []
    for seed in seeds:
      acc = self.accuracy(cfg.cell, cfg.length, seed)
      results.append(train.SeedResult(
          seed=seed,
          status="ok" if math.isfinite(acc) else "diverged at step 3",
          test_accuracy=acc, test_loss=0.0, final_train_loss=0.0,
          final_train_accuracy=acc, history={},
          steps_to_solve=cfg.eval_every if acc >= cfg.solved_accuracy
          else None, train_steps=cfg.train_steps))
    return train.GroupResult(config=cfg, seeds=results,
                             train_steps=cfg.train_steps, wall_seconds=0.0,
                             compile_seconds=0.0, steps_per_second=1.0)


def config(threshold=0.99, **kwargs):
  return horizon.HorizonConfig(**{"cells": ("rnn",), "base": train.RunConfig(
      train_steps=10, eval_every=10, stop_when_solved=True,
      solved_accuracy=threshold),
                                  **kwargs})


def up_to(limit):
  """The accuracy of a cell that solves every N up to ``limit`` and none
  beyond: one limit for every cell, or a dict of one per cell."""
  limit_of = limit.__getitem__ if isinstance(limit, dict) else (
      lambda cell: limit)
  return lambda cell, n, seed: 1.0 if n <= limit_of(cell) else 0.1


def test_search_finds_exact_horizon_in_log_many_steps():
  tried = []
  def passes(n):
    tried.append(n)
    return n <= 37
  assert horizon.search(passes, 5, 200) == 37
  assert tried[:4] == [5, 10, 20, 40]
  assert len(tried) == len(set(tried))
  assert len(tried) <= 2 * math.ceil(math.log2(200 / 5)) + 2


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 6, 17, 63, 64, 65, 99, 100])
def test_search_matches_brute_force(limit):
  assert horizon.search(lambda n: n <= limit, 2, 100) == (
      None if limit < 2 else limit)


def test_search_edges():
  assert horizon.search(lambda n: False, 5, 200) is None
  tried = []
  assert horizon.search(lambda n: tried.append(n) or True, 5, 200) == 200
  assert tried == [5, 10, 20, 40, 80, 160, 200]
  assert horizon.search(lambda n: True, 7, 7) == 7
  with pytest.raises(ValueError):
    horizon.search(lambda n: True, 8, 7)


@pytest.mark.parametrize("limit", [5, 9, 37, 63, 64, 150, 199])
@pytest.mark.parametrize("resolution", [1, 4, 10])
def test_search_stops_bisecting_within_the_resolution(limit, resolution):
  tried = []
  def passes(n):
    tried.append(n)
    return n <= limit
  found = horizon.search(passes, 5, 200, resolution=resolution)
  failed_above = [n for n in tried if n > limit]
  # The last pass, and the first fail above it no more than `resolution`
  # further: the horizon lies between.
  assert found <= limit and found in tried
  assert min(failed_above) - found <= resolution
  assert limit < min(failed_above)
  if resolution == 1:
    assert found == limit
  exact = []
  horizon.search(lambda n: exact.append(n) or n <= limit, 5, 200)
  assert len(tried) <= len(exact)


def test_a_search_at_a_resolution_reports_its_bracket(tmp_path):
  trainer = FakeTrainer(up_to(37))
  content = horizon.run_horizon(config(resolution=10), str(tmp_path),
                                train_fn=trainer)
  entry = content["cells"]["rnn"]
  assert entry["search_order"] == [5, 10, 20, 40, 30]
  assert entry["horizon"] == 30
  assert entry["message"] == (
      "every seed solves (99%) up to N=30, not at N=40 (the lengths between "
      "are not searched: --resolution=10)")
  table = (tmp_path / "horizon.md").read_text()
  assert "| rnn | ≥ 30, < 40 |" in table
  assert content["settings"]["resolution"] == 10


def test_run_horizon_writes_files_and_messages(tmp_path):
  trainer = FakeTrainer(lambda cell, n, seed: {"rnn": 1.0 if n <= 37 else 0.1,
                                               "lstm": 0.5, "gru": 1.0}[cell])
  content = horizon.run_horizon(config(cells=("rnn", "lstm", "gru")),
                                str(tmp_path), train_fn=trainer)
  cells = content["cells"]
  assert cells["rnn"]["horizon"] == 37
  assert cells["lstm"]["horizon"] is None
  assert "even at the shortest length, N=5" in cells["lstm"]["message"]
  assert [e["length"] for e in cells["lstm"]["evaluations"]] == [5]
  assert cells["gru"]["horizon"] == 200
  assert "may be longer" in cells["gru"]["message"]
  for name in ("horizon.json", "horizon.md", "horizon.png"):
    assert os.path.getsize(tmp_path / name) > 0
  saved = io.read_json(str(tmp_path / "horizon.json"))
  assert saved["cells"]["rnn"]["horizon"] == 37
  assert saved["settings"]["threshold"] == 0.99
  table = (tmp_path / "horizon.md").read_text()
  assert "| rnn | 37 |" in table and "| lstm | < 5 |" in table
  assert "| gru | ≥ 200 |" in table


def test_a_length_passes_only_when_every_seed_solves_it(tmp_path):
  # Mean 0.985 over the seeds, but one seed misses the threshold: the old
  # mean-based rule and the every-seed rule agree here; below they differ.
  trainer = FakeTrainer(lambda cell, n, seed: {
      (5, 0): 1.0, (5, 1): 0.97}.get((n, seed), 0.0))
  content = horizon.run_horizon(config(seeds=(0, 1)), str(tmp_path / "a"),
                                train_fn=trainer)
  record = content["cells"]["rnn"]["evaluations"][0]
  assert record["accuracies"] == [1.0, 0.97] and not record["passed"]
  assert record["solved"] == [True, False]
  assert record["fraction_solved"] == 0.5

  # Seeds 0 and 1 solve N <= 40; seed 2 only N <= 20. The mean over the
  # three seeds at N=40 is 0.7 ... but a mean of 1.0, 1.0, 0.985 would pass a
  # 0.99 threshold: seed 2 fails N=40 and the horizon is 20's bisection.
  def accuracy(cell, n, seed):
    if seed == 2:
      return 1.0 if n <= 20 else 0.985
    return 1.0 if n <= 40 else 0.1
  content = horizon.run_horizon(config(seeds=(0, 1, 2)), str(tmp_path / "c"),
                                train_fn=FakeTrainer(accuracy))
  entry = content["cells"]["rnn"]
  assert entry["horizon"] == 20
  at_40 = next(e for e in entry["evaluations"] if e["length"] == 40)
  assert at_40["solved"] == [True, True, False] and not at_40["passed"]
  assert at_40["mean_accuracy"] >= 0.99  # A mean-based rule would pass it.
  assert "| rnn | 20 |" in (tmp_path / "c" / "horizon.md").read_text()
  assert "40: 2/3" in (tmp_path / "c" / "horizon.md").read_text()

  trainer = FakeTrainer(lambda cell, n, seed: math.nan if seed else 1.0)
  content = horizon.run_horizon(config(seeds=(0, 1)), str(tmp_path / "b"),
                                train_fn=trainer)
  assert content["cells"]["rnn"]["horizon"] is None


def test_rerun_reuses_lengths_and_refuses_other_settings(tmp_path):
  trainer = FakeTrainer(up_to(37))
  horizon.run_horizon(config(), str(tmp_path), train_fn=trainer)
  first = list(trainer.calls)
  trainer.calls.clear()
  content = horizon.run_horizon(config(cells=("rnn", "gru")), str(tmp_path),
                                train_fn=trainer)
  assert trainer.calls and all(cell == "gru" for cell, _, _ in trainer.calls)
  assert content["cells"]["rnn"]["horizon"] == 37
  assert len(content["cells"]["rnn"]["search_order"]) == len(first)

  with pytest.raises(results.SettingsMismatchError, match="solved_accuracy"):
    horizon.run_horizon(config(threshold=0.5), str(tmp_path),
                        train_fn=trainer)
  content = horizon.run_horizon(config(threshold=0.5), str(tmp_path),
                                overwrite=True, train_fn=trainer)
  assert list(content["cells"]) == ["rnn"]


def test_a_search_of_other_cells_keeps_the_earlier_ones_in_the_report(
    tmp_path):
  trainer = FakeTrainer(up_to({"rnn": 9, "lstm": 44, "gru": 100}))
  horizon.run_horizon(config(cells=("rnn", "lstm")), str(tmp_path),
                      train_fn=trainer)
  content = horizon.run_horizon(config(cells=("gru",)), str(tmp_path),
                                train_fn=trainer)
  assert {c: e["horizon"] for c, e in content["cells"].items()} == {
      "rnn": 9, "lstm": 44, "gru": 100}
  assert io.read_json(str(tmp_path / "horizon.json")) == content
  table = (tmp_path / "horizon.md").read_text()
  assert "| rnn | 9 |" in table and "| gru | 100 |" in table
  # Searched over other lengths, they are not kept (they would read as
  # this search's): the runs stay on disk for a search that asks for them.
  content = horizon.run_horizon(config(cells=("gru",), max_length=50),
                                str(tmp_path), train_fn=trainer)
  assert list(content["cells"]) == ["gru"]


def test_a_rerun_of_some_cells_keeps_the_order_of_the_cells_on_disk(
    tmp_path):
  # Reports and experiments.compare's --labels read the cells in
  # horizon.json's order: continuing one cell's search (or a command
  # beside it writing last) must not move that cell to the end.
  trainer = FakeTrainer(up_to({"rnn": 9, "lstm": 44, "gru": 100}))
  horizon.run_horizon(config(cells=("rnn", "lstm", "gru")), str(tmp_path),
                      train_fn=trainer)
  for cells in (("rnn",), ("lstm", "rnn")):
    content = horizon.run_horizon(config(cells=cells), str(tmp_path),
                                  train_fn=trainer)
    for written in (content, io.read_json(str(tmp_path / "horizon.json"))):
      assert list(written["cells"]) == ["rnn", "lstm", "gru"]
    table = (tmp_path / "horizon.md").read_text()
    assert (table.index("| rnn | 9 |") < table.index("| lstm | 44 |")
            < table.index("| gru | 100 |"))


def test_searches_of_other_cells_at_once_on_one_directory_keep_both(
    tmp_path):
  # Two commands on one directory, one searching rnn, the other gru (more
  # cores put to work): the gru search starts and ends while the rnn one
  # runs. horizon.json keeps both cells, whichever search writes last.
  limits = {"rnn": 9, "gru": 100}
  accuracy = up_to(limits)
  other = FakeTrainer(accuracy)
  directory = str(tmp_path)

  class SearchGruMidway(FakeTrainer):

    def __call__(self, cfg, seeds, **kwargs):
      if len(self.calls) == 1:  # The rnn search has written its first N.
        horizon.run_horizon(config(cells=("gru",)), directory,
                            train_fn=other)
      return super().__call__(cfg, seeds, **kwargs)

  content = horizon.run_horizon(config(cells=("rnn",)), directory,
                                train_fn=SearchGruMidway(accuracy))
  assert other.calls
  on_disk = io.read_json(str(tmp_path / "horizon.json"))
  for written in (content, on_disk):
    assert {c: e["horizon"] for c, e in written["cells"].items()} == limits
  assert "| gru | 100 |" in (tmp_path / "horizon.md").read_text()


def test_an_interrupted_search_beside_another_writes_a_report_of_both(
    tmp_path):
  # Two commands on one directory, one searching rnn, the other gru: the
  # gru search runs after the rnn one's last write of horizon.json, then
  # the rnn one is interrupted (SIGINT) and writes its summaries. The
  # report on disk reads what horizon.json holds: both cells.
  limits = {"rnn": 9, "gru": 100}
  trainer = FakeTrainer(up_to(limits))
  other = FakeTrainer(up_to(limits))
  directory = str(tmp_path)

  def stop_after_the_gru_search():
    if not trainer.calls:
      return False
    if not other.calls:
      horizon.run_horizon(config(cells=("gru",)), directory,
                          train_fn=other)
    return True

  horizon.run_horizon(config(cells=("rnn",)), directory, train_fn=trainer,
                      stop=stop_after_the_gru_search)
  assert other.calls
  content = horizon.read_search(str(tmp_path / "horizon.json"))
  assert set(content["cells"]) == {"rnn", "gru"}
  settings = io.read_json(str(tmp_path / "config.json"))["training_settings"]
  runs = results.ResultsDir(directory, settings).all_runs()
  assert (tmp_path / "horizon.md").read_text() == report.horizon_report(
      content, horizon.runs_tried(content, runs))


def test_an_earlier_search_of_an_older_format_is_refused_naming_the_migration(
    tmp_path):
  trainer = FakeTrainer(up_to(9))
  horizon.run_horizon(config(cells=("rnn",)), str(tmp_path),
                      train_fn=trainer)
  path = str(tmp_path / "horizon.json")
  old = io.read_json(path)
  del old["format_version"]  # As written before the format had a number.
  io.write_json(path, old)
  with pytest.raises(results.FormatError,
                     match="results format 1.*python -m experiments.migrate "
                     f"--results_dir={tmp_path}$"):
    horizon.run_horizon(config(cells=("gru",)), str(tmp_path),
                        train_fn=trainer)
  # --overwrite replaces it (the runs are of these settings: kept).
  content = horizon.run_horizon(config(cells=("gru",)), str(tmp_path),
                                overwrite=True, train_fn=trainer)
  assert list(content["cells"]) == ["gru"]


@pytest.mark.parametrize("damage, field", [
    (lambda c: c["cells"]["rnn"]["evaluations"][0].update(statuses=[7]),
     "cells.rnn.evaluations[0].statuses"),
    (lambda c: c["cells"]["rnn"]["evaluations"][0].update(solved=[]),
     "cells.rnn.evaluations[0].solved has 0 entries for 1 seed(s)"),
    (lambda c: c["settings"].update(min_length="5"), "settings.min_length"),
    (lambda c: c["cells"]["rnn"].update(horizon="9"), "cells.rnn.horizon"),
])
def test_a_horizon_json_of_the_wrong_shape_is_moved_aside_naming_the_field(
    tmp_path, caplog, damage, field):
  trainer = FakeTrainer(up_to(9))
  horizon.run_horizon(config(cells=("rnn",)), str(tmp_path),
                      train_fn=trainer)
  path = str(tmp_path / "horizon.json")
  content = io.read_json(path)
  damage(content)
  io.write_json(path, content)
  with pytest.raises(ValueError, match=re.escape(field)):
    horizon.read_search(path)
  trainer.calls.clear()
  with caplog.at_level(logging.WARNING):
    again = horizon.run_horizon(config(cells=("gru",)), str(tmp_path),
                                train_fn=trainer)
  # Set aside with one line naming it and the field; the new search goes on.
  assert list(again["cells"]) == ["gru"]
  assert os.path.exists(path + ".corrupt")
  (warning,) = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING]
  assert path in warning and field in warning


def test_a_search_read_back_has_its_statuses_parsed(tmp_path):
  trainer = FakeTrainer(lambda cell, n, seed: math.nan if n > 5 else 1.0)
  horizon.run_horizon(config(seeds=(0,)), str(tmp_path), train_fn=trainer)
  content = horizon.read_search(str(tmp_path / "horizon.json"))
  statuses = [e["statuses"][0] for e in content["cells"]["rnn"]["evaluations"]]
  assert statuses == ["ok", "diverged at step 3", "diverged at step 3",
                      "diverged at step 3"]  # N = 5, 6, 7, 10.
  assert [(s.kind, s.step) for s in statuses[:2]] == [(Kind.OK, None),
                                                      (Kind.DIVERGED, 3)]


def test_a_failing_cell_does_not_stop_the_others(tmp_path):
  def accuracy(cell, n, seed):
    if (cell == "gru" and n == 10) or cell == "lstm":
      raise RuntimeError("out of memory")
    return 1.0 if n <= 37 else 0.1
  content = horizon.run_horizon(config(cells=("gru", "lstm", "rnn")),
                                str(tmp_path), train_fn=FakeTrainer(accuracy))
  assert content["cells"]["gru"]["message"].startswith(
      "error: gru_N10_seed42: RuntimeError: out of memory")
  assert [e["length"] for e in content["cells"]["gru"]["evaluations"]] == [5]
  assert content["cells"]["lstm"]["evaluations"] == []
  assert content["cells"]["rnn"]["horizon"] == 37
  assert "| gru | error |" in (tmp_path / "horizon.md").read_text()


def test_entrypoint_end_to_end(tmp_path):
  """The real trainer at tiny settings: the files appear. The entrypoint's
  one smoke test in a process of its own."""
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.horizon", "--cells=rnn",
       "--train_steps=5", "--log_every=5", "--num_hidden=4", "--batch_size=8",
       "--eval_batches=1", "--eval_every=5", "--confirm_batches=1",
       "--min_length=2", "--max_length=2", "--threshold=0.01",
       f"--results_dir={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  content = io.read_json(str(out / "horizon.json"))
  assert content["cells"]["rnn"]["evaluations"]
  assert "message" in content["cells"]["rnn"]
  assert (out / "horizon.png").exists() and (out / "horizon.md").exists()
  assert "| rnn |" in proc.stdout


@pytest.mark.parametrize("flags, error", [
    (["--min_length=9", "--max_length=4"],
     "error: --max_length: 4 is below --min_length (9)"),
    (["--resolution=0"],
     "error: --resolution: must be a positive integer, got 0"),
    # T_max = 1.0 x N is 2 at the shortest length the search may train.
    (["--cells=lstm", "--min_length=2", "--max_length=4",
      "--chrono_per_digit=1"],
     "error: --chrono_per_digit: T_max = 1.0 x N = 2.0 must be > 2"),
])
def test_entrypoint_rejects_bad_flags(flags, error, tmp_path, capsys):
  # In this process, as the command line calls main (the flags put back).
  status = horizon_main.COMMAND.execute(
      horizon_main.main, ["horizon", *flags, f"--results_dir={tmp_path}"])
  assert status == 2
  assert capsys.readouterr().err.strip().splitlines() == [error]
  assert not (tmp_path / "horizon.json").exists()


def test_a_length_is_solved_by_the_confirmed_check_not_the_final_test():
  # Seed 1 passed its confirmed check, then scored 98.98% on the final test
  # (noise around a bar it had just crossed): solved. Seed 2 scored 100% on
  # the test but never passed a check: not solved.
  def record(seed, accuracy, steps_to_solve):
    return {"seed": seed, "status": Status.OK, "test_accuracy": accuracy,
            "steps_to_solve": steps_to_solve, "train_steps": 1000}
  both = horizon.length_record(
      70, [record(0, 1.0, 500), record(1, 0.9898, 1000)])
  assert both["solved"] == [True, True] and both["passed"]
  unchecked = horizon.length_record(
      70, [record(0, 1.0, 500), record(2, 1.0, None)])
  assert unchecked["solved"] == [True, False] and not unchecked["passed"]
  diverged = horizon.length_record(
      70, [dict(record(0, 0.1, 500), status=Status.diverged(600))])
  assert diverged["solved"] == [False]


def test_a_budget_without_a_solve_check_is_refused():
  with pytest.raises(config_lib.ConfigError, match="^eval_every: 500 is "
                     "beyond --train_steps"):
    horizon.HorizonConfig(base=train.RunConfig(train_steps=300))


def test_a_truncated_horizon_json_blocks_nothing(tmp_path):
  trainer = FakeTrainer(up_to(37))
  first = horizon.run_horizon(config(), str(tmp_path), train_fn=trainer)
  (tmp_path / "horizon.json").write_text('{"settings": {"thresh')
  trainer.calls.clear()
  again = horizon.run_horizon(config(), str(tmp_path), train_fn=trainer)
  assert trainer.calls == []  # Every run is still on disk.
  assert again["cells"]["rnn"]["horizon"] == first["cells"]["rnn"]["horizon"]
  assert io.read_json(str(tmp_path / "horizon.json"))["cells"]["rnn"][
      "horizon"] == 37


def _claimed_by_another_process(results_dir, run):
  """Holds ``run``'s claim as another process would: ``ResultsDir.claim`` on
  an open file of its own, so this process's claim of it fails until the
  returned stack is closed."""
  held = contextlib.ExitStack()
  assert held.enter_context(results_dir.claim(run))
  return held


@pytest.mark.parametrize("other_finishes", [True, False])
def test_a_seed_in_another_process_is_awaited_not_failed(
    tmp_path, monkeypatch, other_finishes):
  # Two searches on one directory (a second command started to use more
  # cores): seed 1 at N=5 is being trained by the other one. The length is
  # decided on its record once it is written, not counted as failed while
  # it trains; if the other process stops without a record, this one trains
  # the seed itself.
  monkeypatch.setattr(horizon, "WAIT_POLL_SECONDS", 0.02)
  cfg = config(seeds=(0, 1), min_length=5, max_length=5)
  directory = str(tmp_path / "h")
  run = results.Run("rnn", 5, 1)
  other = results.ResultsDir(directory, cfg.base.training_settings())
  handle = _claimed_by_another_process(other, run)
  trainer = FakeTrainer(up_to(100))

  def other_process():
    if other_finishes:
      row = {field: None for field in results.ROW_FIELDS}
      row.update(cell="rnn", length=5, seed=1, status="ok",
                 test_accuracy=0.995, test_loss=0.1, steps_to_solve=10,
                 train_steps=10, seeds_in_program=1, history={})
      other.save_run(run, row, None)
    handle.close()  # Releases the claim.

  timer = threading.Timer(0.5, other_process)
  timer.start()
  try:
    content = horizon.run_horizon(cfg, directory, train_fn=trainer)
  finally:
    timer.join()
  (evaluation,) = content["cells"]["rnn"]["evaluations"]
  assert evaluation["solved"] == [True, True]
  assert content["cells"]["rnn"]["horizon"] == 5
  trained = [seeds for _, _, seeds in trainer.calls]
  if other_finishes:
    assert trained == [(0,)]
    assert evaluation["accuracies"] == [1.0, 0.995]
  else:
    assert sorted(trained) == [(0,), (1,)]
    assert evaluation["accuracies"] == [1.0, 1.0]


def test_a_run_that_cannot_be_saved_stops_the_search_not_fails_the_length(
    tmp_path, monkeypatch):
  fail_to_save(monkeypatch, seed=1)
  content = horizon.run_horizon(config(seeds=(0, 1), min_length=5,
                                       max_length=5),
                                str(tmp_path), train_fn=FakeTrainer(up_to(9)))
  entry = content["cells"]["rnn"]
  assert entry["horizon"] is None and entry["evaluations"] == []
  assert entry["message"].startswith("error: cannot save rnn_N5_seed1: No "
                                     "space left on device")


# One device: the seeds of a length train one after another, in order.
ONE_DEVICE = jax.devices()[:1]


def _seed_0_fails_past_20(cell, n, seed):
  return 1.0 if n <= (20 if seed == 0 else 40) else 0.1


def test_the_seeds_of_a_failed_length_are_not_trained(tmp_path):
  # Seed 0 fails N=40 (and every length the bisection tries above 20); the
  # search's answer needs no other seed there, and a failing run costs the
  # whole budget: seeds 1 and 2 are not trained at those lengths, and each
  # length's record holds the seed that finished.
  trainer = FakeTrainer(_seed_0_fails_past_20)
  content = horizon.run_horizon(config(seeds=(0, 1, 2), max_length=40),
                                str(tmp_path), train_fn=trainer,
                                devices=ONE_DEVICE)
  entry = content["cells"]["rnn"]
  assert entry["horizon"] == 20
  past_20 = [(n, seeds) for _, n, seeds in trainer.calls if n > 20]
  assert past_20 and all(seeds == (0,) for _, seeds in past_20)
  for evaluation in entry["evaluations"]:
    if evaluation["length"] > 20:
      assert evaluation["seeds"] == [0] and evaluation["solved"] == [False]
      assert not evaluation["passed"]
    else:
      assert evaluation["solved"] == [True] * 3
  assert "40: 0/1" in (tmp_path / "horizon.md").read_text()

  # A rerun replays the search from disk and trains nothing, the skipped
  # seeds included; --noskip_failed_lengths trains exactly those.
  trainer.calls.clear()
  again = horizon.run_horizon(config(seeds=(0, 1, 2), max_length=40),
                              str(tmp_path), train_fn=trainer,
                              devices=ONE_DEVICE)
  assert trainer.calls == [] and again["cells"]["rnn"]["horizon"] == 20
  every = horizon.run_horizon(
      config(seeds=(0, 1, 2), max_length=40, skip_failed_lengths=False),
      str(tmp_path), train_fn=trainer, devices=ONE_DEVICE)
  assert sorted(seeds for _, _, seeds in trainer.calls) == sorted(
      [(1,), (2,)] * len(past_20))
  assert {n for _, n, _ in trainer.calls} == {n for n, _ in past_20}
  at_40 = next(e for e in every["cells"]["rnn"]["evaluations"]
               if e["length"] == 40)
  assert at_40["seeds"] == [0, 1, 2]
  assert at_40["solved"] == [False, True, True]
  assert every["cells"]["rnn"]["horizon"] == 20


def test_without_skipping_every_seed_of_a_failed_length_trains(tmp_path):
  trainer = FakeTrainer(_seed_0_fails_past_20)
  content = horizon.run_horizon(
      config(seeds=(0, 1, 2), max_length=40, skip_failed_lengths=False),
      str(tmp_path), train_fn=trainer, devices=ONE_DEVICE)
  assert content["cells"]["rnn"]["horizon"] == 20
  assert all(len(e["seeds"]) == 3
             for e in content["cells"]["rnn"]["evaluations"])
  assert "40: 2/3" in (tmp_path / "horizon.md").read_text()
