"""Reloads a sweep's saved parameters and tests them, at any length.

A cell that learned N=10 reads any number of digits (the scan does not care),
so this answers "does it still work at N=12?". At the trained length, with
the sweep's ``eval_batches``, the test batches are the sweep's own, so the
accuracy matches its table (a test checks that it is equal).
"""

import dataclasses
import os
from typing import Iterable, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import io
from palindrome_jax import sweep
from palindrome_jax import train


def load_params(path: str):
  with open(path, "rb") as f:
    return jax.tree.map(jnp.asarray,
                        flax.serialization.msgpack_restore(f.read()))


def base_config(results_dir: str) -> train.RunConfig:
  """The sweep's training settings, from its ``config.json``."""
  path = os.path.join(results_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{results_dir} holds no sweep (no config.json)")
  settings = io.read_json(path)["training_settings"]
  return train.RunConfig(**settings)


def evaluate_saved(results_dir: str, lengths: Optional[Iterable[int]] = None,
                   cells: Optional[Iterable[str]] = None,
                   eval_batches: Optional[int] = None) -> list[dict]:
  """Test accuracy and loss of every saved run (of ``cells``) at ``lengths``.

  ``lengths=None`` tests each run at the length it trained on. Returns one
  row per (run, test length).
  """
  base = base_config(results_dir)
  if eval_batches:
    base = dataclasses.replace(base, eval_batches=eval_batches)
  results = sweep.ResultsDir(results_dir)
  rows = []
  for record in results.all_runs():
    if cells is not None and record["cell"] not in cells:
      continue
    path = results.params_file(record["cell"], record["length"],
                               record["seed"])
    if not os.path.exists(path):
      continue  # Failed runs leave no parameters.
    params = load_params(path)
    for length in (lengths or (record["length"],)):
      cfg = dataclasses.replace(base, cell=record["cell"], length=length)
      _, _, eval_key = train.run_keys(record["seed"], cfg.cell, length)
      metrics = jax.device_get(_evaluate(params, eval_key, cfg))
      rows.append({
          "cell": record["cell"], "seed": record["seed"],
          "trained_length": record["length"], "test_length": length,
          "status": record["status"],
          "test_accuracy": float(metrics["accuracy"]),
          "test_loss": float(metrics["loss"]),
      })
  return rows


_evaluate = jax.jit(train.evaluate, static_argnums=2)


def table(rows: list[dict]) -> str:
  """Markdown: mean test accuracy (%) per (cell, trained N) x test N."""
  test_lengths = sorted({r["test_length"] for r in rows})
  groups = sorted({(r["cell"], r["trained_length"]) for r in rows})
  lines = ["Test accuracy (%) of saved parameters, mean over seeds",
           "",
           "| cell | trained N | " + " | ".join(
               f"test N={n}" for n in test_lengths) + " |",
           "|---|---|" + "---|" * len(test_lengths)]
  for cell, trained in groups:
    entries = []
    for n in test_lengths:
      accs = [r["test_accuracy"] for r in rows if r["cell"] == cell
              and r["trained_length"] == trained and r["test_length"] == n]
      entries.append(f"{100 * np.mean(accs):.2f}" if accs else "–")
    lines.append(f"| {cell} | {trained} | " + " | ".join(entries) + " |")
  return "\n".join(lines) + "\n"
