"""Provenance: every run record and ``config.json`` say which code made them,
how, where and when (palindrome_jax.results.provenance), the reports show
it, and it never decides which runs share a directory."""

import datetime
import importlib.metadata
import logging
import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from palindrome_jax import files as io
from palindrome_jax import horizon
from palindrome_jax import report
from palindrome_jax import results
from palindrome_jax import sweep
from palindrome_jax import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=40,
                       log_every=20, eval_every=20, eval_batches=2)


class FakeTrainer:
  """``train_and_evaluate`` without training: every seed ``ok``, solved at
  the first check (or raising, for ``fail_length``)."""

  def __init__(self, fail_length=None):
    self.fail_length = fail_length
    self.calls = []

  def __call__(self, cfg, seeds, **unused_kwargs):
    self.calls.append((cfg.cell, cfg.length, tuple(seeds)))
    if cfg.length == self.fail_length:
      raise MemoryError("pretend out of memory")
    params = train.init_params(jax.random.PRNGKey(0), cfg)
    return train.GroupResult(
        config=cfg, seeds=[train.SeedResult(
            seed=s, status="ok", test_accuracy=1.0, test_loss=1.0,
            final_train_loss=1.5, final_train_accuracy=1.0,
            history={"step": [cfg.train_steps], "loss": [1.5],
                     "accuracy": [1.0]},
            params=params, steps_to_solve=cfg.eval_every,
            train_steps=cfg.train_steps) for s in seeds],
        train_steps=cfg.train_steps, wall_seconds=0.0, compile_seconds=0.0,
        steps_per_second=1.0)


def _sweep(directory, lengths=(3,), trainer=None):
  config = sweep.SweepConfig(cells=("rnn",), lengths=lengths, base=TINY)
  return sweep.run_sweep(config, str(directory),
                         train_fn=trainer or FakeTrainer())


def _time(text):
  return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
      tzinfo=datetime.timezone.utc)


def _git(directory, *args):
  return subprocess.run(
      ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C",
       str(directory), *args], capture_output=True, text=True, check=True,
      timeout=60).stdout


# The commit, from git.


def test_the_commit_and_dirty_flag_are_those_of_the_checkout(tmp_path):
  _git(tmp_path, "init", "-q")
  module = tmp_path / "module.py"
  module.write_text("x = 1\n")
  _git(tmp_path, "add", "module.py")
  _git(tmp_path, "commit", "-q", "-m", "first")
  head = _git(tmp_path, "rev-parse", "HEAD").strip()
  assert results.git_state(str(module)) == {"commit": head, "dirty": False}
  (tmp_path / "results.json").write_text("{}")  # Untracked: still clean.
  assert results.git_state(str(module)) == {"commit": head, "dirty": False}
  module.write_text("x = 2\n")
  assert results.git_state(str(module)) == {"commit": head, "dirty": True}
  # A file the checkout does not track is not of this checkout's code.
  assert results.git_state(str(tmp_path / "results.json")) == {}


def test_outside_a_checkout_or_without_git_there_is_no_commit(
    tmp_path, monkeypatch):
  outside = tmp_path / "module.py"
  outside.write_text("x = 1\n")
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
  assert results.git_state(str(outside)) == {}
  monkeypatch.setenv("PATH", str(tmp_path / "no_git_here"))
  assert results.git_state(results.__file__) == {}


def test_a_git_that_hangs_is_given_up_in_bounded_time(tmp_path, monkeypatch):
  fake = tmp_path / "bin" / "git"
  fake.parent.mkdir()
  fake.write_text("#!/bin/sh\nexec sleep 60\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setattr(results, "GIT_TIMEOUT_SECONDS", 0.5)
  start = time.monotonic()
  assert results.git_state(results.__file__) == {}
  assert time.monotonic() - start < 10


# In every record and config.json.


def test_every_record_and_config_json_give_their_provenance(tmp_path):
  before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
  _sweep(tmp_path, lengths=(3, 4), trainer=FakeTrainer(fail_length=4))
  after = datetime.datetime.now(datetime.timezone.utc)
  try:
    head = _git(REPO_ROOT, "rev-parse", "HEAD").strip()
    dirty = bool(_git(REPO_ROOT, "status", "--porcelain",
                      "--untracked-files=no").strip())
    code = {"commit": head, "dirty": dirty}
  except (OSError, subprocess.CalledProcessError):
    code = {}  # Not a checkout: no commit, and no error.
  versions = {name: importlib.metadata.version(name)
              for name in ("jax", "jaxlib", "flax", "optax", "numpy")}
  config = io.read_json(tmp_path / "config.json")
  for name in ("rnn_N3_seed42", "rnn_N4_seed42"):  # Trained, and failed.
    provenance = io.read_json(tmp_path / "runs" / f"{name}.json")[
        "provenance"]
    assert provenance == {**code, "command": sys.argv,
                          "host": socket.gethostname(),
                          "started": provenance["started"],
                          "ended": provenance["ended"], "versions": versions}
    assert before <= _time(provenance["started"]) <= _time(
        provenance["ended"]) <= after
    # The tool's call holds the runs it trained.
    assert (_time(config["provenance"]["started"])
            <= _time(provenance["started"]))
    assert _time(provenance["ended"]) <= _time(config["provenance"]["ended"])
  assert config["provenance"]["command"] == sys.argv
  assert {k: config["provenance"].get(k) for k in code} == code


def test_runs_of_two_commits_share_a_directory_and_the_report_names_both(
    tmp_path, monkeypatch):
  _sweep(tmp_path)
  first = io.read_json(tmp_path / "runs" / "rnn_N3_seed42.json")["provenance"]
  monkeypatch.setattr(results, "code_version",
                      lambda: {"commit": "f" * 40, "dirty": True})
  trainer = FakeTrainer()
  outcome = _sweep(tmp_path, lengths=(3, 4), trainer=trainer)
  assert trainer.calls == [("rnn", 4, (42,))]  # N=3 reused, not retrained.
  assert len(outcome.rows) == 2
  assert io.read_json(tmp_path / "runs" / "rnn_N4_seed42.json")[
      "provenance"]["commit"] == "f" * 40
  row = next(line for line in (tmp_path / "results.md").read_text()
             .splitlines() if line.startswith("| commit |"))
  assert "`ffffffffffff` with uncommitted changes: 1 run" in row
  if "commit" in first:
    assert f"`{first['commit'][:12]}`" in row
  else:
    assert "not a git checkout: 1 run" in row


def test_a_record_written_before_provenance_still_reads(tmp_path):
  _sweep(tmp_path, lengths=(3, 4))
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  record = io.read_json(path)
  del record["provenance"]
  io.write_json(path, record)
  assert results.record_problem(record) is None
  trainer = FakeTrainer()
  _sweep(tmp_path, lengths=(3, 4), trainer=trainer)
  assert trainer.calls == [] and path.exists()
  text = (tmp_path / "results.md").read_text()
  assert ("| without provenance | 1 run (recorded before it was kept) |"
          in text)
  # A page of such runs alone has no provenance table.
  alone = report.sweep_report(
      [{**r, "provenance": None} for r in results.ResultsDir(
          str(tmp_path), TINY.training_settings()).all_runs()], {})
  assert "| provenance |" not in alone


def test_a_provenance_of_the_wrong_shape_is_moved_aside_naming_the_field(
    tmp_path, caplog):
  _sweep(tmp_path)
  path = tmp_path / "runs" / "rnn_N3_seed42.json"
  record = io.read_json(path)
  record["provenance"]["host"] = 3
  io.write_json(path, record)
  trainer = FakeTrainer()
  with caplog.at_level(logging.WARNING):
    _sweep(tmp_path, trainer=trainer)
  assert trainer.calls == [("rnn", 3, (42,))]
  assert (tmp_path / "runs" / "rnn_N3_seed42.json.corrupt").exists()
  assert any("provenance.host is not a string: 3" in r.getMessage()
             for r in caplog.records)


# In the reports' settings sections.


def _settings_section(text):
  return text[text.index("## Settings"):]


@pytest.mark.parametrize("tool", ["sweep", "horizon"])
def test_the_report_shows_the_provenance_in_its_settings(tmp_path, tool):
  if tool == "sweep":
    _sweep(tmp_path)
    page = "results.md"
  else:
    config = horizon.HorizonConfig(
        cells=("rnn",), seeds=(42,), min_length=2, max_length=3,
        base=train.RunConfig(train_steps=40, eval_every=20, log_every=20,
                             stop_when_solved=True))
    horizon.run_horizon(config, str(tmp_path), train_fn=FakeTrainer())
    page = "horizon.md"
  every = [io.read_json(path)["provenance"]
           for path in (tmp_path / "runs").iterdir()]
  section = _settings_section((tmp_path / page).read_text())
  assert "| provenance | value |" in section
  assert f"| host | {socket.gethostname()} |" in section
  # The first start and the last end of the runs shown.
  assert f"| started | {min(p['started'] for p in every)} |" in section
  assert f"| ended | {max(p['ended'] for p in every)} |" in section
  assert f"jax {every[0]['versions']['jax']}" in section
  assert f"| command | `{sys.argv[0]}" in section
