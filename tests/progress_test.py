"""Tests for palindrome_jax.progress: bars in a terminal, lines in a pipe."""

import io

from palindrome_jax import progress


class FakeClock:

  def __init__(self, monkeypatch):
    self.now = 0.0
    monkeypatch.setattr(progress.time, "perf_counter", lambda: self.now)


def test_a_pipe_gets_a_line_per_interval_not_per_chunk(monkeypatch):
  clock = FakeClock(monkeypatch)
  out = io.StringIO()
  job = progress.Progress(total_work=2.0, stream=out, interval=15.0)
  assert not job.bars
  a = job.start_run("a", "lstm N=20 seed 42", 1000, cost=1.0)
  b = job.start_run("b", "rnn N=20 seed 42", 1000, cost=1.0)
  for step in range(100, 1001, 100):  # A chunk every second.
    clock.now += 1.0
    a.update(step, 0.5, 0.75, 100.0)
    b.update(step // 2, 2.3, 0.1, 50.0)
  assert out.getvalue() == ""  # 10 chunks in 10 s: nothing yet.
  clock.now += 6.0
  a.update(1000, 0.1, 1.0, 100.0)
  b.update(600, 2.3, 0.1, 50.0)
  lines = out.getvalue().splitlines()
  assert len(lines) == 1  # One line for both runs, at 16 s.
  assert lines[0].startswith("[0:16] 0 runs done")
  assert "lstm N=20 seed 42 1000/1000" in lines[0]
  assert "rnn N=20 seed 42 500/1000" in lines[0]  # As of the line.
  a.finish("lstm_N20_seed42: ok")
  assert out.getvalue().splitlines()[-1] == "lstm_N20_seed42: ok"
  assert job.finished == 1


def test_a_terminal_gets_bars_and_finished_runs_leave_one_line():
  class Terminal(io.StringIO):

    def isatty(self):
      return True

  out = Terminal()
  job = progress.Progress(total_work=1.0, stream=out)
  assert job.bars
  run = job.start_run("a", "gru N=5 seed 1", 100, cost=1.0)
  run.update(50, 1.2, 0.4, 200.0)
  assert "gru N=5 seed 1" in out.getvalue()
  assert "40.0%" in out.getvalue()
  run.finish("gru_N5_seed1: ok, test accuracy 100.00%")
  job.close()
  assert "gru_N5_seed1: ok, test accuracy 100.00%\n" in out.getvalue()
