"""Tests for palindrome_jax.runner: runs read back or trained once, claims
between processes, failures recorded, the share of each process, signals."""

import contextlib
import dataclasses
import os
import signal
import threading
import time

import jax
import pytest

from palindrome_jax import devices as devices_lib
from palindrome_jax import files as io
from palindrome_jax import results
from palindrome_jax import runner
from palindrome_jax import train
from palindrome_jax.results import Run

TINY = train.RunConfig(batch_size=8, num_hidden=8, train_steps=60,
                       log_every=20, eval_batches=2)


class FakeTrainer:
  """``train_and_evaluate`` without training: every seed is ``ok`` at test
  accuracy ``0.5 + seed / 100``; records the programs it was asked for."""

  def __init__(self, fail_cell=None):
    self.fail_cell = fail_cell
    self.calls = []

  def __call__(self, cfg, seeds, **unused_kwargs):
    self.calls.append((cfg.cell, cfg.length, tuple(seeds)))
    if cfg.cell == self.fail_cell:
      raise MemoryError("RESOURCE_EXHAUSTED: pretend out of memory")
    return train.GroupResult(
        config=cfg, seeds=[train.SeedResult(
            seed=s, status="ok", test_accuracy=0.5 + s / 100, test_loss=1.0,
            final_train_loss=1.0, final_train_accuracy=0.5, history={},
            train_steps=cfg.train_steps) for s in seeds],
        train_steps=cfg.train_steps, wall_seconds=0.0, compile_seconds=0.0,
        steps_per_second=1.0)


def _train(directory, runs, base=TINY, outcome=None, **kwargs):
  """``train_runs`` into ``directory`` as a tool calls it; returns the
  records and every run then on disk."""
  with runner.open_results(str(directory), base, "a test") as (found, pool):
    records = runner.train_runs(runs, base, found, pool, outcome=outcome,
                                **kwargs)
    return records, found.all_runs()


def test_finished_runs_are_read_back_not_trained_again(tmp_path, capsys):
  runs = [Run("rnn", 3, 1), Run("lstm", 3, 1)]
  first, _ = _train(tmp_path, runs, train_fn=FakeTrainer())
  trainer = FakeTrainer()
  again, on_disk = _train(tmp_path, runs, train_fn=trainer)
  assert trainer.calls == []
  # As saved; on disk each record also says where it trained.
  assert {run: {**r, "trained_on": None} for run, r in again.items()} == {
      run: {**r, "trained_on": None} for run, r in first.items()}
  assert [r["test_accuracy"] for r in on_disk] == [0.51, 0.51]
  assert "2 of 2 runs finished earlier, skipped" in capsys.readouterr().err


def test_a_program_that_raises_is_recorded_failed_and_the_others_train(
    tmp_path):
  outcome = runner.Outcome([], [])
  trainer = FakeTrainer(fail_cell="rnn")
  records, _ = _train(tmp_path, [Run("rnn", 3, 1), Run("lstm", 3, 1)],
                      outcome=outcome, train_fn=trainer)
  assert sorted(trainer.calls) == [("lstm", 3, (1,)), ("rnn", 3, (1,))]
  assert records[Run("lstm", 3, 1)]["status"] == "ok"
  assert records[Run("rnn", 3, 1)]["status"].startswith(
      "error: MemoryError: RESOURCE_EXHAUSTED")
  assert outcome.counts == {"ok": 1, "diverged": 0, "failed": 1}
  # A failed run is not finished: the next call trains it again, alone.
  trainer = FakeTrainer()
  _train(tmp_path, [Run("rnn", 3, 1), Run("lstm", 3, 1)], train_fn=trainer)
  assert trainer.calls == [("rnn", 3, (1,))]


def fail_to_save(monkeypatch, seed):
  """From now on, saving a run of ``seed`` fails as on a full disk."""
  save_run = results.ResultsDir.save_run

  def failing_save(self, run, row, params):
    if run.seed == seed:
      raise OSError(28, "No space left on device", self.run_file(run))
    return save_run(self, run, row, params)

  monkeypatch.setattr(results.ResultsDir, "save_run", failing_save)


def test_a_run_that_cannot_be_saved_is_counted_and_left_untrained(
    tmp_path, monkeypatch):
  fail_to_save(monkeypatch, seed=2)
  outcome = runner.Outcome([], [])
  records, on_disk = _train(tmp_path, [Run("rnn", 3, 1), Run("rnn", 3, 2)],
                            outcome=outcome, train_fn=FakeTrainer())
  assert outcome.write_errors == [
      "cannot save rnn_N3_seed2: No space left on device "
      f"({tmp_path}/runs/rnn_N3_seed2.json)"]
  assert list(records) == [Run("rnn", 3, 1)]
  assert [r["seed"] for r in outcome.new_rows] == [1]
  assert [r["seed"] for r in on_disk] == [1]


def test_a_run_claimed_by_another_process_is_left_to_it(tmp_path, capsys):
  claimed = Run("rnn", 3, 2)
  other = results.ResultsDir(str(tmp_path), TINY.training_settings())
  trainer = FakeTrainer()
  with contextlib.ExitStack() as held:  # As another process holds it.
    assert held.enter_context(other.claim(claimed))
    records, _ = _train(tmp_path, [Run("rnn", 3, 1), claimed],
                        train_fn=trainer)
  assert trainer.calls == [("rnn", 3, (1,))]
  assert list(records) == [Run("rnn", 3, 1)]
  assert ("rnn N=3 seeds [2]: being trained by another process, skipped"
          in capsys.readouterr().err)


def test_a_run_finished_by_another_process_meanwhile_is_not_retrained(
    tmp_path):
  """Two processes on one directory: the run this one reaches second was
  finished by the other after this one listed it; its record is kept."""
  calls = []

  def train_while_another_process_finishes_the_other_run(cfg, seeds,
                                                         **kwargs):
    calls.append(cfg.length)
    if len(calls) == 1:
      other = ({3, 4} - {cfg.length}).pop()
      _train(tmp_path, [Run("rnn", other, 42)])
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  other_record = {}
  real_save = results.ResultsDir.save_run

  def spy_save(self, run, row, params):
    other_record.setdefault(run.length, row["wall_seconds"])
    real_save(self, run, row, params)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(results.ResultsDir, "save_run", spy_save)
    _, rows = _train(
        tmp_path, [Run("rnn", 3, 42), Run("rnn", 4, 42)],
        train_fn=train_while_another_process_finishes_the_other_run)
  assert len(calls) == 1
  assert sorted(r["length"] for r in rows) == [3, 4]
  # Each record is the one first saved: nothing was overwritten.
  assert {r["length"]: r["wall_seconds"] for r in rows} == other_record


def test_a_vmapped_group_trains_only_its_seeds_not_finished_meanwhile(
    tmp_path):
  """Seed 1 of a vmapped group (1, 2) is finished by another process after
  this one listed it: the group trains seed 2 alone, to the numbers seed 2
  gets alone, and seed 1's record is kept."""
  _train(tmp_path, [Run("rnn", 3, 1)])
  first = io.read_json(str(tmp_path / "runs" / "rnn_N3_seed1.json"))
  listed = set()
  real_finished = results.ResultsDir.finished

  def finished_after_listing(self, run):
    if run not in listed:  # The listing saw it unfinished.
      listed.add(run)
      return None
    return real_finished(self, run)

  trained = []

  def spy(cfg, seeds, **kwargs):
    trained.append(tuple(seeds))
    return train.train_and_evaluate(cfg, seeds, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(results.ResultsDir, "finished", finished_after_listing)
    _, rows = _train(tmp_path, [Run("rnn", 3, 1), Run("rnn", 3, 2)],
                     vmap_seeds=True, train_fn=spy)
  assert trained == [(2,)]
  by_seed = {r["seed"]: r for r in rows}
  assert by_seed[1]["wall_seconds"] == first["wall_seconds"]
  alone = train.train_and_evaluate(
      dataclasses.replace(TINY, cell="rnn", length=3), (2,)).seeds[0]
  assert by_seed[2]["test_accuracy"] == alone.test_accuracy
  assert not list(tmp_path.glob("checkpoints/*"))


def test_vmapped_seeds_of_one_cell_and_length_are_one_program():
  runs = [Run("rnn", 3, 1), Run("lstm", 3, 1), Run("rnn", 3, 2),
          Run("rnn", 4, 1)]
  assert runner.programs_of(runs, vmap_seeds=False) == [(r,) for r in runs]
  assert runner.programs_of(runs, vmap_seeds=True) == [
      (Run("rnn", 3, 1), Run("rnn", 3, 2)), (Run("lstm", 3, 1),),
      (Run("rnn", 4, 1),)]


def test_the_expected_cost_is_steps_times_length_times_parameters():
  # An RNN of H units on D inputs has D*H + H*H + H parameters; an LSTM four
  # times as many (a gate each).
  d, h = 1, 8
  rnn = d * h + h * h + h
  for cell, size in [("rnn", rnn), ("lstm", 4 * rnn)]:
    cfg = dataclasses.replace(TINY, cell=cell, length=7)
    assert runner.expected_cost(cfg) == 60 * 7 * size
  runs = [Run("rnn", 3, 2), Run("rnn", 9, 1), Run("lstm", 3, 1),
          Run("rnn", 3, 1)]
  # lstm N=3 costs 4 * 3 = 12 RNN steps' worth; rnn N=9, 9; rnn N=3, 3.
  assert runner.longest_first(runs, TINY) == [
      Run("lstm", 3, 1), Run("rnn", 9, 1), Run("rnn", 3, 1),
      Run("rnn", 3, 2)]


@pytest.mark.parametrize("process, share, replayed", [
    (0, ["a", "c", "e"], True), (1, ["b", "d"], False)])
def test_each_process_works_its_share_and_process_0_replays_them_all(
    monkeypatch, process, share, replayed):
  events = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: process)
  monkeypatch.setattr(devices_lib, "barrier",
                      lambda name: events.append(("barrier", name)))

  def work(items):
    events.append(("work", items))
    return len(items)

  items = ["a", "b", "c", "d", "e"]
  done = runner.share_then_replay(work, items, "done")
  replay = [("work", items)] if replayed else []
  assert events == [("work", share), ("barrier", "done")] + replay
  assert done == (5 if replayed else len(share))
  events.clear()
  runner.share_then_replay(work, items, "done", replay=False)
  assert events == [("work", share), ("barrier", "done")]


def test_a_single_process_works_once_over_every_item():
  events = []
  assert runner.share_then_replay(lambda items: events.append(items) or "x",
                                  ["a", "b"], "done") == "x"
  assert events == [["a", "b"]]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143),
                                            (signal.SIGINT, 130)])
def test_the_first_signal_asks_every_run_to_stop(signum, status, capsys):
  stop = runner.StopRequest()
  before = signal.getsignal(signum)
  with stop.on_signals():
    assert not stop()
    os.kill(os.getpid(), signum)  # Handled at the next bytecode.
    assert stop()
  assert stop.signum == signum and stop.exit_status == status
  assert signal.getsignal(signum) is before
  again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
  assert (f"stopping every run at the end of its chunk ({again} again to "
          "exit now)") in capsys.readouterr().err


def _memory_mappings():
  with open("/proc/self/maps", encoding="utf-8") as f:
    return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"),
                    reason="counts the memory mappings Linux lists")
@pytest.mark.parametrize("crowded,released", [(0.0, True), (1.0, False)])
def test_a_process_near_the_mapping_limit_releases_its_programs(
    crowded, released, tmp_path, monkeypatch):
  # Each (cell, N) compiles programs that hold hundreds of memory mappings
  # (their code); kept in JAX's caches, a long search in one process reached
  # the kernel's limit (vm.max_map_count, 65,530 by default), where the next
  # compile segfaulted. Past runner.CROWDED of it, train_runs releases them.
  monkeypatch.setattr(runner, "CROWDED", crowded)
  jax.clear_caches()
  _train(tmp_path, [Run("lstm", 3, 1)])
  after_one = _memory_mappings()
  for length in (4, 5):
    _train(tmp_path, [Run("lstm", length, 1)])
  # Kept, the two add about 700 mappings each here.
  assert (_memory_mappings() < after_one + 500) == released


def test_runs_side_by_side_on_cpu_devices_wait_for_host_memory(
    tmp_path, monkeypatch):
  # Each run draws its estimate (train.estimate_memory) on the host's memory
  # that CPU devices share: the two N=4 runs, 60% each, train one at a
  # time; the two N=3 runs, 40% each, beside each other.
  monkeypatch.setattr(train, "estimate_memory",
                      lambda cfg, num_seeds=1: {3: 40, 4: 60}[cfg.length])
  lock, running, most = threading.Lock(), [0], {}

  def fake(cfg, seeds, **kwargs):
    with lock:
      running[0] += 1
      most[cfg.length] = max(most.get(cfg.length, 0), running[0])
    time.sleep(0.3)
    with lock:
      running[0] -= 1
    return FakeTrainer()(cfg, seeds, **kwargs)

  class Cpu:
    platform = "cpu"

  pool = devices_lib.DevicePool([Cpu(), Cpu()], host_bytes=100)
  with runner.open_results(str(tmp_path), TINY, "a test") as (found, _):
    for length in (4, 3):
      runner.train_runs([Run("rnn", length, 1), Run("rnn", length, 2)],
                        TINY, found, pool, train_fn=fake)
  assert most == {4: 1, 3: 2}
