"""The sweep entrypoint as a user runs it: ``python -m experiments.sweep``.

Most tests call its ``main`` in this process, as the command line does
(:meth:`palindrome_jax.cli.Command.execute`); those that need a real process
(signals, a closed pipe, absl's parser behind ``python -m``) start one.
"""

import contextlib
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import horizon as horizon_main
from experiments import sweep as sweep_main
from palindrome_jax import cells
from palindrome_jax import cli
from palindrome_jax import config as config_lib
from palindrome_jax import sweep

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY_FLAGS = ["--train_steps=40", "--log_every=20", "--eval_batches=2",
              "--num_hidden=16", "--batch_size=16"]


def _start(args):
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.sweep", *args], cwd=REPO_ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process, timeout=600):
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    stdout, stderr = process.communicate()
    pytest.fail(f"timed out:\n{stderr[-3000:]}")
  return process.returncode, stdout, stderr


def _in_process(entrypoint, args):
  """``python -m experiments.<entrypoint> ARGS`` in this process: absl's
  flags are parsed, ``main`` is called as the command line calls it, and the
  flags are put back. Returns ``(status, stdout, stderr)``."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = entrypoint.COMMAND.execute(
        entrypoint.main, [entrypoint.__name__, *args])
  return code, out.getvalue(), err.getvalue()


# A tiny sweep, end to end.


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
  results_dir = tmp_path_factory.mktemp("sweep") / "results"
  code, stdout, stderr = _in_process(sweep_main, [
      "--lengths=3,4", "--cells=rnn,lstm", *TINY_FLAGS,
      f"--results_dir={results_dir}"])
  assert code == 0, stderr[-3000:]
  assert "Traceback" not in stderr
  return results_dir, stdout


def _hidden16_params(cell):
  per_gate = 1 * 16 + 16 * 16 + 16
  return {"rnn": per_gate, "lstm": 4 * per_gate}[cell] + 16 * 10 + 10


def test_sweep_writes_config(tiny_sweep):
  results_dir, _ = tiny_sweep
  config = json.loads((results_dir / "config.json").read_text())
  assert config["jax_version"] == jax.__version__
  assert isinstance(config["devices"], list) and config["devices"]
  assert sorted(config["cells"]) == ["lstm", "rnn"]
  assert sorted(config["lengths"]) == [3, 4]
  assert config["training_settings"]["train_steps"] == 40
  assert config["training_settings"]["num_hidden"] == 16


def test_sweep_writes_one_row_per_run(tiny_sweep):
  results_dir, _ = tiny_sweep
  rows = json.loads((results_dir / "results.json").read_text())
  assert len(rows) == 4
  assert {(r["cell"], r["length"]) for r in rows} == {
      (c, n) for c in ("rnn", "lstm") for n in (3, 4)}
  for row in rows:
    assert set(sweep.ROW_FIELDS) <= set(row), row.keys()
    assert row["status"] == "ok"
    assert row["seed"] == 42
    assert row["train_steps"] == 40
    assert row["num_params"] == _hidden16_params(row["cell"])
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert row["history"]["step"] == [20, 40]
    assert len(row["history"]["loss"]) == 2
    assert all(math.isfinite(x) for x in row["history"]["loss"])
    # The same record is in runs/.
    run = json.loads((results_dir / "runs" /
                      f"{row['cell']}_N{row['length']}_seed42.json"
                      ).read_text())
    assert run == row
  assert len(list((results_dir / "runs").glob("*.json"))) == 4


def test_sweep_writes_csv(tiny_sweep):
  results_dir, _ = tiny_sweep
  with open(results_dir / "results.csv", newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    lines = list(reader)
  assert tuple(header) == sweep.ROW_FIELDS
  assert len(lines) == 4
  rows = {(r["cell"], r["length"]): r
          for r in json.loads((results_dir / "results.json").read_text())}
  for line in lines:
    record = dict(zip(header, line))
    row = rows[(record["cell"], int(record["length"]))]
    assert float(record["test_accuracy"]) == pytest.approx(
        row["test_accuracy"])
    assert record["status"] == row["status"]


def test_sweep_writes_the_table(tiny_sweep):
  results_dir, stdout = tiny_sweep
  table = (results_dir / "results.md").read_text()
  rows = json.loads((results_dir / "results.json").read_text())
  lines = table.splitlines()
  assert "| cell | N=3 | N=4 |" in lines
  for cell in ("lstm", "rnn"):
    accuracy = {r["length"]: 100 * r["test_accuracy"] for r in rows
                if r["cell"] == cell}
    assert f"| {cell} | {accuracy[3]:.2f} | {accuracy[4]:.2f} |" in lines
  # The same table is printed at the end.
  printed = [line for line in stdout.splitlines() if line.startswith("|")]
  assert len(printed) == 4 and all(line in lines for line in printed)
  # The report embeds its figures, relative to itself, and they exist.
  for image in ("accuracy_vs_length.png", "steps_to_solve.png",
                "training_curves.png"):
    assert f"]({image})" in table
    assert (results_dir / image).stat().st_size > 0
  assert "## Every run" in table and "## Settings" in table


def test_sweep_writes_plots(tiny_sweep):
  results_dir, _ = tiny_sweep
  for name in ("accuracy_vs_length.png", "training_curves.png"):
    content = (results_dir / name).read_bytes()
    assert content.startswith(PNG_SIGNATURE), name
    assert len(content) > 1000, name


def test_sweep_writes_parameters(tiny_sweep):
  results_dir, _ = tiny_sweep
  files = sorted((results_dir / "params").glob("*.msgpack"))
  assert [f.name for f in files] == sorted(
      f"{c}_N{n}_seed42.msgpack" for c in ("rnn", "lstm") for n in (3, 4))
  for path in files:
    params = flax.serialization.msgpack_restore(path.read_bytes())
    cell = path.name.split("_")[0]
    count = sum(np.size(x) for x in jax.tree.leaves(params))
    assert count == _hidden16_params(cell), path.name
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


# Help and bad flags.


@pytest.fixture(scope="module")
def help_run():
  return _in_process(sweep_main, ["--help"])


def test_help_documents_the_flags(help_run):
  _, stdout, stderr = help_run
  assert "--lengths" in stdout
  assert "Comma-separated palindrome lengths" in stdout
  assert "--results_dir" in stdout
  assert "Traceback" not in stderr
  # Every flag the sweep uses is listed, in its group, with its default.
  for name in [*(cli.flag_name(config_lib.RunConfig, f)
                 for f in sweep_main.common.RUN_FLAGS), "cells", "seeds",
               "checkpoint_every", "vmap_seeds", "cpu_devices",
               "coordinator_address"]:
    assert f"  --{name}: " in stdout, name
  for group in ("Runs:", "Training (palindrome_jax.config.RunConfig):",
                "Results:", "Devices and processes:"):
    assert group in stdout
  assert "--train_steps: Optimizer steps per run (the budget). (default: " \
      "'10000')" in stdout


def test_help_exits_zero(help_run):
  code, _, _ = help_run
  assert code == 0


def test_help_into_a_closed_pipe_is_quiet():
  # `--help | head -3`: the reader goes away before the help is written. A
  # process of its own: the pipe is its standard output.
  process = _start(["--help"])
  process.stdout.close()
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0
  assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def _not_a_directory(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  return f"--results_dir={blocker / 'results'}"


BAD_FLAGS = {
    "lengths_zero": ("--lengths=0", "lengths"),
    "lengths_empty_item": ("--lengths=5,,x", "lengths"),
    "lengths_empty": ("--lengths=", "lengths"),
    "lengths_not_an_integer": ("--lengths=5,x", "lengths"),
    "lengths_repeated": ("--lengths=5,5", "lengths"),
    "unknown_cell": ("--cells=foo", "cells"),
    "cells_repeated": ("--cells=rnn,rnn", "cells"),
    "cells_empty": ("--cells=", "cells"),
    "seeds_zero": ("--seeds=0", "seeds"),
    "seed_negative": ("--seed=-1", "seed"),
    "train_steps_zero": ("--train_steps=0", "train_steps"),
    "train_steps_negative": ("--train_steps=-5", "train_steps"),
    "learning_rate_zero": ("--learning_rate=0", "learning_rate"),
    "learning_rate_negative": ("--learning_rate=-1", "learning_rate"),
    "unknown_optimizer": ("--optimizer=sgd", "optimizer"),
    "unknown_encoding": ("--encoding=binary", "encoding"),
    "batch_size_not_int": ("--batch_size=abc", "batch_size"),
    "results_dir_unwritable": (_not_a_directory, "results_dir"),
    # Tens of GB (at the tiny settings below): refused before compiling.
    "lengths_too_long_for_memory": ("--lengths=10000000", "lengths"),
    "batch_too_large_for_memory": ("--batch_size=100000000", "batch_size"),
    # T_max = 0.5 x N = 1 at the sweep's N=2: refused before anything runs.
    "chrono_per_digit_too_small": ("--chrono_per_digit=0.5",
                                   "chrono_per_digit"),
}


@pytest.mark.parametrize("name", sorted(BAD_FLAGS))
def test_bad_flag_is_a_one_line_error(name, tmp_path):
  """Each gets valid tiny settings first and the bad flag last (the last
  value of a repeated flag wins), so a check that let it through would train
  for seconds, not hours, and write only under a temporary directory."""
  flag, flag_name = BAD_FLAGS[name]
  if callable(flag):
    flag = flag(tmp_path)
  code, stdout, stderr = _in_process(sweep_main, [
      "--lengths=2", "--cells=rnn", *TINY_FLAGS, "--train_steps=2",
      f"--results_dir={tmp_path / 'results'}", flag])
  assert code == 2
  lines = stderr.splitlines()
  assert lines == [lines[0]] and lines[0].startswith("error: "), stderr
  assert f"--{flag_name}" in lines[0], lines[0]
  assert "Results in" not in stdout
  # Nothing was trained: no results were written.
  assert not (tmp_path / "results" / "results.json").exists()


def test_a_length_dependent_setting_is_checked_at_the_lengths_trained(
    tmp_path):
  """T_max = 0.3 x N is above 2 at N=10 (not at N=5, a length not asked
  for): the sweep trains it."""
  code, _, stderr = _in_process(sweep_main, [
      "--lengths=10", "--cells=lstm", *TINY_FLAGS, "--train_steps=2",
      "--chrono_per_digit=0.3", f"--results_dir={tmp_path}"])
  assert code == 0, stderr
  (row,) = json.loads((tmp_path / "results.json").read_text())
  assert row["status"] == "ok" and row["length"] == 10


def test_bad_flag_from_the_command_line_is_one_line(tmp_path):
  # The same path through `python -m`, once: absl's parser, no traceback
  # (the entrypoint's smoke test as a process).
  code, stdout, stderr = _finish(_start(
      ["--lengths=5,,x", f"--results_dir={tmp_path}"]))
  assert code == 2 and not stdout
  assert stderr.strip().splitlines() == ["error: --lengths: empty item in "
                                         "'5,,x'"]


# Ctrl-C and the exit status.


def _wait_for_first_run(process, results_dir, timeout=300):
  """Until one run has finished and a run not finished has saved a
  checkpoint: then a Ctrl-C finds a run in flight (waiting for the first run
  alone raced with the start of the next on a loaded machine, and so did a
  finished run's checkpoint, removed just after its record is written)."""
  deadline = time.monotonic() + timeout
  runs, checkpoints = results_dir / "runs", results_dir / "checkpoints"
  while time.monotonic() < deadline and process.poll() is None:
    # Checkpoints first, then records: a run that finishes in between has
    # its record listed, and its checkpoint (removed just after the record
    # is written) is not taken for that of a run in flight.
    # Names that start with "." are files being written (files'
    # temporaries).
    saved = ({p.stem for p in checkpoints.glob("[!.]*.msgpack")}
             if checkpoints.is_dir() else set())
    finished = ({p.stem for p in runs.glob("[!.]*.json")}
                if runs.is_dir() else set())
    if finished and saved - finished:
      return
    time.sleep(0.05)
  pytest.fail("no run finished and left another in flight before the sweep "
              "ended")


INTERRUPTIBLE = ["--lengths=3,12", "--cells=rnn,lstm", "--train_steps=4000",
                 "--log_every=20", "--eval_batches=2", "--num_hidden=16",
                 "--batch_size=16", "--checkpoint_every=20", "--cpu_devices=1"]


@pytest.mark.parametrize("signal_name, status, announced", [
    ("SIGINT", 130, "interrupt"),
    # A scheduler (SLURM, Kubernetes, `kill`) asks a job to stop with SIGTERM
    # before it kills it: the same stop, status 128 + 15.
    ("SIGTERM", 143, "terminated (SIGTERM)"),
])
def test_a_signal_stops_saves_and_a_rerun_continues(tmp_path, signal_name,
                                                    status, announced):
  results_dir = tmp_path / "results"
  process = _start([*INTERRUPTIBLE, f"--results_dir={results_dir}"])
  _wait_for_first_run(process, results_dir)
  process.send_signal(getattr(signal, signal_name))
  code, stdout, stderr = _finish(process, timeout=120)
  assert code == status, stderr[-3000:]
  assert "Traceback" not in stderr and "Fatal Python error" not in stderr
  assert (f"{announced}: stopping every run at the end of its chunk"
          in stderr)
  assert stderr.strip().splitlines()[-1] == (
      "interrupted; rerun the same command to continue")
  # What finished is summarised; the run in flight left its checkpoint.
  finished = json.loads((results_dir / "results.json").read_text())
  assert 1 <= len(finished) < 4
  assert list((results_dir / "checkpoints").iterdir()), stderr[-3000:]
  # The same command again (in this process: the signal needed one).
  code, stdout, stderr = _in_process(sweep_main, [
      *INTERRUPTIBLE, f"--results_dir={results_dir}"])
  assert code == 0, stderr[-3000:]
  assert "(continued from the checkpoint at step " in stderr
  assert len(json.loads((results_dir / "results.json").read_text())) == 4


def test_a_second_ctrl_c_exits_at_once(tmp_path):
  results_dir = tmp_path / "results"
  process = _start([*INTERRUPTIBLE, f"--results_dir={results_dir}"])
  _wait_for_first_run(process, results_dir)
  process.send_signal(signal.SIGINT)
  time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  code, _, stderr = _finish(process, timeout=30)
  assert code == 130
  assert "Fatal Python error" not in stderr and "Traceback" not in stderr
  assert "interrupted again: exiting now" in stderr


def _failing_init(key, input_dim, hidden_dim):
  del key
  return {"W": jnp.zeros((input_dim + hidden_dim, hidden_dim))}


def _failing_step(params, h, x):
  del params
  if h.shape[0] == 16 and x.shape[-1] == 1:  # Only at training's shapes.
    raise MemoryError("RESOURCE_EXHAUSTED: pretend out of memory")
  return h, h


@pytest.fixture(name="oom_cell")
def _oom_cell(restore_cell_registry):
  """A cell ``oom`` whose training runs out of memory (registered for the
  test only)."""
  del restore_cell_registry
  cells.register("oom", cells.Cell(_failing_init, _failing_step))


def test_a_failed_run_makes_the_exit_status_non_zero(tmp_path, oom_cell):
  del oom_cell
  code, stdout, stderr = _in_process(sweep_main, [
      "--cells=oom,rnn", "--lengths=3", *TINY_FLAGS,
      f"--results_dir={tmp_path / 'results'}"])
  assert code == 1, stderr[-3000:]
  assert stdout.strip().splitlines()[-1] == (
      "this run: 1 ok, 0 diverged, 1 failed")
  rows = json.loads((tmp_path / "results" / "results.json").read_text())
  status = {r["cell"]: r["status"] for r in rows}
  assert status["rnn"] == "ok"
  assert status["oom"].startswith("error: MemoryError: RESOURCE_EXHAUSTED")


def test_a_failed_search_makes_the_horizon_exit_status_non_zero(tmp_path,
                                                                oom_cell):
  del oom_cell
  code, _, stderr = _in_process(horizon_main, [
      "--cells=oom,rnn", "--min_length=3", "--max_length=3", *TINY_FLAGS,
      "--eval_every=20", f"--results_dir={tmp_path / 'results'}"])
  assert code == 1, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      "failed: oom (the error is above; the same command retries it)")
  content = json.loads((tmp_path / "results" / "horizon.json").read_text())
  assert content["cells"]["oom"]["message"].startswith(
      "error: oom_N3_seed42: MemoryError: RESOURCE_EXHAUSTED")
  assert not content["cells"]["rnn"]["message"].startswith("error")
