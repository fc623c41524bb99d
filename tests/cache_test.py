"""JAX's persistent compilation cache, as the entrypoints use it.

The rest of the suite runs with the cache off (see conftest.py); here a sweep
runs twice in processes of its own with ``--compilation_cache_dir``: the
first writes the compiled programs, the second reads them back.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = ["--cells=rnn", "--lengths=3", "--batch_size=8", "--num_hidden=8",
         "--train_steps=40", "--log_every=20", "--eval_batches=2",
         "--cpu_devices=1"]


def _sweep(results_dir, cache_dir):
  env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "true",
         # Every program is written, however fast it compiled.
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", *SWEEP,
       f"--results_dir={results_dir}", f"--compilation_cache_dir={cache_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(results_dir, "runs", "rnn_N3_seed42.json"),
            encoding="utf-8") as f:
    return json.load(f)


def test_a_rerun_reads_the_programs_back_and_trains_the_same(tmp_path):
  cache = tmp_path / "cache"
  first = _sweep(tmp_path / "a", cache)
  written = sorted(os.listdir(cache))
  assert written  # The first run wrote its programs...
  second = _sweep(tmp_path / "b", cache)
  assert sorted(os.listdir(cache)) == written  # ...the second compiled none.
  for field in ("test_accuracy", "test_loss", "final_train_loss"):
    assert second[field] == first[field]
  assert second["history"] == first["history"]
