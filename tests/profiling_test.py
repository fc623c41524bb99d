"""Tests for palindrome_jax.profiling: ``--profile_dir`` traces a few chunks
after the first, compile left out, one trace per run, and changes nothing
the run computes or records."""

import contextlib
import gzip
import io
import json
import os

import jax
import jax.numpy as jnp

from experiments import sweep as sweep_main
from palindrome_jax import files
from palindrome_jax import profiling
from palindrome_jax import sweep
from palindrome_jax import train

TINY = train.RunConfig(cell="rnn", length=3, batch_size=8, num_hidden=8,
                       train_steps=100, log_every=20, eval_batches=2)


def _traces(directory):
  """``[(xplane file, perfetto events)]`` of each trace in ``directory``."""
  found = []
  profile = os.path.join(directory, "plugins", "profile")
  for name in sorted(os.listdir(profile)):
    session = os.path.join(profile, name)
    xplane = [f for f in os.listdir(session) if f.endswith(".xplane.pb")]
    with gzip.open(os.path.join(session, "perfetto_trace.json.gz")) as f:
      events = json.load(f)["traceEvents"]
    found.append((os.path.join(session, xplane[0]), events))
  return found


def test_the_chunks_after_the_first_are_traced_without_compiling(tmp_path):
  traced = train.train_and_evaluate(TINY, (42,), profile_dir=str(tmp_path))
  (xplane, events), = _traces(str(tmp_path))
  assert os.path.getsize(xplane) > 0
  # Chunks 1, 2 and 3 of the five (counted from 0): none compiled there.
  chunks = [e["args"]["step_num"] for e in events
            if e.get("name") == "train_chunk"]
  assert chunks == [str(k) for k in range(1, 1 + profiling.NUM_CHUNKS)]
  assert any("train_chunk" in e.get("name", "") and "jit" in e["name"]
             for e in events)
  assert not [e["name"] for e in events if "Compile" in e.get("name", "")]
  # What the run computed is what it computes untraced.
  plain = train.train_and_evaluate(TINY, (42,))
  assert traced.seeds[0].history == plain.seeds[0].history
  assert traced.seeds[0].test_accuracy == plain.seeds[0].test_accuracy


def test_one_trace_at_a_time_the_next_run_traces_once_the_profiler_is_free(
    tmp_path):
  first = profiling.ChunkTrace(str(tmp_path / "first"), num_chunks=2)
  second = profiling.ChunkTrace(str(tmp_path / "second"), num_chunks=2)
  x = jnp.ones(3)
  for _ in range(6):  # Interleaved, as runs side by side.
    for trace in (first, second):
      with trace.chunk():
        x = jax.block_until_ready(x + 1)
  first.close()
  second.close()
  # The first traced its chunks 1 and 2; the second waited until then.
  assert (first.traced, second.traced) == (2, 2)
  for name, chunks in (("first", ["1", "2"]), ("second", ["2", "3"])):
    (_, events), = _traces(str(tmp_path / name))
    assert [e["args"]["step_num"] for e in events
            if e.get("name") == "train_chunk"] == chunks


def test_one_trace_per_run_of_a_sweep(tmp_path):
  # On one device the runs train one after the other, each traced.
  config = sweep.SweepConfig(cells=("rnn",), lengths=(3,), seeds=(42, 43),
                             base=TINY, profile_dir=str(tmp_path / "profile"))
  sweep.run_sweep(config, str(tmp_path / "results"),
                  devices=jax.devices()[:1])
  assert sorted(os.listdir(tmp_path / "profile")) == ["rnn_N3_seed42",
                                                      "rnn_N3_seed43"]
  for run in ("rnn_N3_seed42", "rnn_N3_seed43"):
    (xplane, _), = _traces(str(tmp_path / "profile" / run))
    assert os.path.getsize(xplane) > 0


def test_the_profile_dir_flag_traces_and_is_not_a_setting(tmp_path):
  results_dir, profile_dir = tmp_path / "results", tmp_path / "profile"
  flags = ["--cells=rnn", "--lengths=3", "--train_steps=100",
           "--log_every=20", "--eval_batches=2", "--num_hidden=8",
           "--batch_size=8", f"--results_dir={results_dir}"]

  def run(*extra):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), \
        contextlib.redirect_stderr(err):
      code = sweep_main.COMMAND.execute(
          sweep_main.main, ["experiments.sweep", *flags, *extra])
    assert code == 0, err.getvalue()[-3000:]
    return err.getvalue()

  run(f"--profile_dir={profile_dir}")
  (xplane, _), = _traces(str(profile_dir / "rnn_N3_seed42"))
  assert os.path.getsize(xplane) > 0
  config = files.read_json(results_dir / "config.json")
  del config["provenance"]  # Its command line is pytest's.
  assert "profile_dir" not in json.dumps(config)
  # Untraced, the same command finds the run finished: the same settings.
  assert "1 of 1 runs finished earlier, skipped" in run()
