"""Tests for palindrome_jax.migrate: a directory of format 1 is refused,
migrated once, and then reads as its runs trained; the committed results are
of this format and read back as committed."""

import dataclasses
import fcntl
import glob
import logging
import os
import pathlib
import shlex
import subprocess

import jax
import pytest

from experiments import sweep as sweep_main
from palindrome_jax import compare
from palindrome_jax import files as io
from palindrome_jax import horizon
from palindrome_jax import migrate
from palindrome_jax import report
from palindrome_jax import results
from palindrome_jax import runner
from palindrome_jax import train
from palindrome_jax.results import Run
from tests.horizon_test import FakeTrainer as FakeSearchTrainer
from tests.horizon_test import config as search_config
from tests.runner_test import FakeTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(REPO, "experiments", "results")
# What runs recorded in format 1 trained with: solve checks unconfirmed,
# version 1 of the training program.
OLD = train.RunConfig(batch_size=8, num_hidden=8, train_steps=60,
                      log_every=20, eval_batches=2, confirm_batches=0,
                      training_program=1)
RUNS = [Run("rnn", 3, 1), Run("rnn", 3, 2)]
# Settings added after format-1 records were written: theirs is the value
# of FORMAT_1_SETTINGS.
ADDED_LATER = ("confirm_batches", "eval_every", "num_layers", "block",
               "training_program")


def _train(directory, base=OLD, trainer=None):
  """The runs trained into ``directory`` as the tools do (no training: the
  runner tests' fake); returns every record then on disk."""
  with runner.open_results(str(directory), base, "a test") as (found, pool):
    runner.train_runs(RUNS, base, found, pool,
                      train_fn=trainer or FakeTrainer())
    return found.all_runs()


def _as_format_1(directory, settings=ADDED_LATER, search=()):
  """Rewrites ``directory`` as format 1 wrote it: no version, no
  ``settings`` added later, records without ``trained_on``, a search without
  the ``search`` settings added later."""
  config = io.read_json(os.path.join(directory, "config.json"))
  del config["format_version"]
  for name in settings:
    del config["training_settings"][name]
  io.write_json(os.path.join(directory, "config.json"), config)
  for path in glob.glob(os.path.join(directory, "runs", "*.json")):
    record = io.read_json(path)
    del record["format_version"], record["trained_on"]
    for name in settings:
      del record["settings"][name]
    io.write_json(path, record)
  path = os.path.join(directory, "horizon.json")
  if os.path.exists(path):
    content = io.read_json(path)
    del content["format_version"]
    for name in settings:
      del content["settings"]["training"][name]
    for name in search:
      del content["settings"][name]
    io.write_json(path, content)


def _files(directory):
  paths = glob.glob(os.path.join(directory, "**", "*.json"), recursive=True)
  return {path: pathlib.Path(path).read_bytes() for path in sorted(paths)}


def test_every_training_setting_has_the_value_format_1_records_imply():
  settings = set(train.RunConfig().training_settings())
  assert set(migrate.FORMAT_1_SETTINGS) == settings, (
      "a training setting added or removed is a new results format: bump "
      "results.FORMAT_VERSION and add its migration step (what runs recorded "
      "before it trained with) to palindrome_jax.migrate")
  # Records made before the version existed trained with version 1; before
  # confirm_batches, solve checks were not confirmed.
  assert migrate.FORMAT_1_SETTINGS["training_program"] == 1
  assert migrate.FORMAT_1_SETTINGS["confirm_batches"] == 0
  assert migrate.FORMAT_1_SEARCH == {"resolution": 1}


def test_a_format_1_directory_is_refused_then_migrated_reads_as_it_trained(
    tmp_path):
  first = _train(tmp_path)
  _as_format_1(tmp_path)
  with pytest.raises(results.FormatError, match=(
      "config.json is in results format 1.*once with: python -m "
      f"experiments.migrate --results_dir={tmp_path}$")):
    _train(tmp_path)
  done = migrate.migrate(str(tmp_path))
  assert (len(done.migrated), done.current, done.moved_aside) == (3, [], [])
  assert done.summary("d") == ("d: 3 files migrated to results format 2, 0 "
                               "already in it")
  # Each file says what its runs trained with, and where (config.json's
  # machine: this one).
  config = io.read_json(tmp_path / "config.json")
  assert config["format_version"] == 2
  assert config["training_settings"] == OLD.training_settings()
  for record, before in zip(_records(tmp_path), first, strict=True):
    assert record == {**before, "trained_on": {
        "jax": jax.__version__, "backend": "cpu", "device_kind": "cpu",
        "matmul_precision": "default"}}
  # Its runs are reused by what they trained with, refused otherwise: the
  # runs of format 1 checked without confirmation, with program version 1.
  trainer = FakeTrainer()
  assert _train(tmp_path, trainer=trainer) == _records(tmp_path)
  assert trainer.calls == []
  for other, differs in [({"confirm_batches": 100}, "confirm_batches"),
                         ({"training_program": 2}, "training_program")]:
    with pytest.raises(results.SettingsMismatchError, match=differs):
      _train(tmp_path, dataclasses.replace(OLD, **other))


def _records(directory):
  return [io.read_json(path) for path in
          sorted(glob.glob(os.path.join(directory, "runs", "*.json")))]


def test_migrating_twice_changes_nothing(tmp_path):
  _train(tmp_path)
  _as_format_1(tmp_path)
  migrate.migrate(str(tmp_path))
  once = _files(tmp_path)
  done = migrate.migrate(str(tmp_path))
  assert _files(tmp_path) == once
  assert (done.migrated, len(done.current)) == ([], 3)


def test_a_format_1_search_keeps_its_earlier_cells_once_migrated(tmp_path):
  # A horizon.json written before --resolution existed searched exactly.
  trainer = FakeSearchTrainer(lambda cell, n, seed: 1.0 if n <= 9 else 0.1)
  horizon.run_horizon(search_config(cells=("rnn",)), str(tmp_path),
                      train_fn=trainer)
  _as_format_1(tmp_path, settings=("num_layers", "block"),
               search=("resolution",))
  with pytest.raises(results.FormatError, match="horizon.json is in results "
                     "format 1"):
    horizon.run_horizon(search_config(cells=("gru",)), str(tmp_path),
                        train_fn=trainer)
  migrate.migrate(str(tmp_path))
  assert io.read_json(tmp_path / "horizon.json")["settings"]["resolution"] == 1
  content = horizon.run_horizon(search_config(cells=("gru",)), str(tmp_path),
                                train_fn=trainer)
  assert sorted(content["cells"]) == ["gru", "rnn"]
  assert content["cells"]["rnn"]["horizon"] == 9


def test_what_holds_nothing_to_migrate_is_moved_aside(tmp_path, caplog):
  _train(tmp_path)
  _as_format_1(tmp_path)
  io.write_json(tmp_path / "runs" / "junk.json", [1, 2])
  record = io.read_json(tmp_path / "runs" / "rnn_N3_seed1.json")
  io.write_json(tmp_path / "runs" / "rnn_N3_seed9.json",
                {k: v for k, v in record.items() if k != "settings"})
  io.write_json(tmp_path / "runs" / "rnn_N3_seed8.json",
                {**record, "seed": 8, "test_accuracy": "abc"})
  with caplog.at_level(logging.WARNING):
    done = migrate.migrate(str(tmp_path))
  assert [os.path.basename(p) for p in done.moved_aside] == [
      "junk.json", "rnn_N3_seed8.json", "rnn_N3_seed9.json"]
  assert len(done.migrated) == 3
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING]
  assert len(warnings) == 3
  assert "test_accuracy is not a number or null: 'abc'" in warnings[1]
  assert sorted(os.listdir(tmp_path / "runs")) == [
      "junk.json.corrupt", "rnn_N3_seed1.json", "rnn_N3_seed2.json",
      "rnn_N3_seed8.json.corrupt", "rnn_N3_seed9.json.corrupt"]


def test_a_directory_in_use_or_of_a_newer_format_is_left_as_it_is(tmp_path):
  _train(tmp_path)
  _as_format_1(tmp_path)
  before = _files(tmp_path)
  with open(tmp_path / ".lock", "a+") as lock:  # As a running tool holds it.
    fcntl.flock(lock, fcntl.LOCK_SH)
    with pytest.raises(results.BusyError, match="in use by another process"):
      migrate.migrate(str(tmp_path))
  path = tmp_path / "runs" / "rnn_N3_seed2.json"
  io.write_json(path, {**io.read_json(path), "format_version": 3})
  before[str(path)] = path.read_bytes()
  with pytest.raises(results.FormatError, match="format 3, newer"):
    migrate.migrate(str(tmp_path))
  assert _files(tmp_path) == before  # Refused before anything is written.


def test_the_command_line_migrates_what_a_tool_refuses(tmp_path, capsys):
  _train(tmp_path)
  _as_format_1(tmp_path)
  capsys.readouterr()
  # The sweep in this process, as the command line calls its main.
  status = sweep_main.COMMAND.execute(sweep_main.main, [
      "sweep", "--cells=rnn", "--lengths=3", "--seeds=2", "--seed=1",
      "--batch_size=8", "--num_hidden=8", "--train_steps=60",
      "--log_every=20", "--eval_batches=2", "--confirm_batches=0",
      f"--results_dir={tmp_path}"])
  stderr = capsys.readouterr().err
  assert status == 2, stderr[-2000:]
  line = stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: --results_dir: {tmp_path}/config.json is "
                         "in results format 1"), line
  command = line.split("once with: ")[1]  # As the user copies it.
  # The migration's one smoke test: the command run as it is printed.
  migrated = subprocess.run(shlex.split(command), cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            check=False)
  assert migrated.returncode == 0, migrated.stderr[-2000:]
  assert migrated.stdout == (f"{tmp_path}: 3 files migrated to results "
                             "format 2, 0 already in it\n")
  assert _train(tmp_path) == _records(tmp_path)


# The committed horizon searches of format 1, migrated once; the searches
# trained since are of format 2 from the start (training program 2).
MIGRATED = ("horizon_irnn_onehot", "horizon_irnn_onehot_lr3e-4",
            "horizon_lru_6seeds", "horizon_lstm_chrono1_decay",
            "horizon_lstm_chrono500", "horizon_lstm_chrono_per_digit1",
            "horizon_lstm_chrono_per_digit2", "horizon_lstm_forget_bias1",
            "horizon_lstm_onehot", "horizon_original_budget")


def _committed_dirs():
  return sorted(os.path.dirname(p) for p in
                glob.glob(os.path.join(COMMITTED, "horizon_*", "config.json")))


def test_the_committed_results_are_of_this_format():
  names = [os.path.basename(d) for d in _committed_dirs()]
  assert set(MIGRATED) <= set(names)
  for directory in _committed_dirs():
    config = io.read_json(os.path.join(directory, "config.json"))
    assert config["format_version"] == results.FORMAT_VERSION, directory
    settings = config["training_settings"]
    if os.path.basename(directory) in MIGRATED:
      assert set(settings) == set(migrate.FORMAT_1_SETTINGS), directory
      assert settings["training_program"] == 1, directory
    else:
      assert settings["training_program"] == 2, directory
    content = horizon.read_search(os.path.join(directory, "horizon.json"))
    assert content["settings"]["training"] == settings, directory
    for path in glob.glob(os.path.join(directory, "runs", "*.json")):
      record = io.read_json(path)
      assert results.record_problem(record) is None, path
      assert record["settings"] == settings, path
    # Every report reads back as committed (with the provenance of its
    # runs, where they have one).
    runs = results.ResultsDir(directory, settings).all_runs()
    with open(os.path.join(directory, "horizon.md"), encoding="utf-8") as f:
      assert report.horizon_report(
          content, horizon.runs_tried(content, runs)) == f.read(), directory


@pytest.mark.parametrize("flagfile", ["compare_all", "compare_lstm"])
def test_the_committed_comparisons_read_back_as_committed(flagfile, tmp_path,
                                                          monkeypatch):
  # The recipes are named by what they learned with, not by the training
  # program's version (1 for every committed search, 2 by default now).
  with open(os.path.join(REPO, "experiments", "recipes", f"{flagfile}.flags"),
            encoding="utf-8") as f:
    flags = dict(line.strip()[2:].split("=", 1) for line in f
                 if line.startswith("--"))
  monkeypatch.chdir(REPO)  # The flagfile's directories are the repo's.
  found = compare.recipes(
      [(d, compare.load(d)) for d in flags["dirs"].split(",")],
      set(flags["only_cells"].split(",")) if "only_cells" in flags else None)
  compare.write(found, str(tmp_path))
  committed = os.path.join(REPO, flags["results_dir"])
  for name in ("compare.md", "compare.json"):
    with open(os.path.join(committed, name), encoding="utf-8") as f:
      assert (tmp_path / name).read_text(encoding="utf-8") == f.read(), name
