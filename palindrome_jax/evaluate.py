"""Reloads a sweep's saved parameters and tests them, at any length.

A cell that learned N=10 reads any number of digits (the scan does not care),
so this answers "does it still work at N=12?". At the trained length, with
the sweep's ``eval_batches``, the test batches are the sweep's own, so the
accuracy matches its table (a test checks that it is equal). Each row also
counts, on the same batches, which digit the model answered for each target
digit (:func:`confusion`): a model that remembers only part of the first
digit (say, whether it was 0) reads 100% on those digits and chance on the
rest.
"""

import dataclasses
import os
from typing import Any, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import data
from palindrome_jax import model
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import train
from palindrome_jax.results import Run
from palindrome_jax.status import Kind


def base_config(results_dir: str) -> train.RunConfig:
  """The sweep's training settings, from its ``config.json``."""
  path = os.path.join(results_dir, "config.json")
  config = results_lib.read_json_or_move_aside(path)
  results_lib.check_format(config, path, results_dir)
  if not isinstance(config, dict) or "training_settings" not in config:
    raise FileNotFoundError(f"{results_dir} holds no sweep (no readable "
                            "config.json)")
  known = {f.name for f in dataclasses.fields(train.RunConfig)}
  settings = {k: v for k, v in config["training_settings"].items()
              if k in known}
  # Checked at the sweep's shortest length, where its runs were: a setting
  # that depends on N (T_max = c x N) may not hold at the default length.
  lengths = config.get("lengths") or [train.RunConfig.length]
  return train.RunConfig(length=min(lengths), **settings)


def evaluate_saved(results_dir: str, lengths: Optional[Iterable[int]] = None,
                   cells: Optional[Iterable[str]] = None,
                   eval_batches: Optional[int] = None) -> list[dict]:
  """Test accuracy and loss of every saved run (of ``cells``) at ``lengths``.

  ``lengths=None`` tests each run at the length it trained on. Returns one
  row per (run, test length); a run whose parameters are missing or
  unreadable gets one row saying so, and the others are evaluated.
  """
  base = base_config(results_dir)
  results = results_lib.ResultsDir(results_dir, base.training_settings())
  base = _for_evaluation(base)
  if eval_batches:
    base = dataclasses.replace(base, eval_batches=eval_batches)
  rows = []
  for record in results.all_runs():
    if cells is not None and record["cell"] not in cells:
      continue
    run = Run(record["cell"], record["length"], record["seed"])
    row = {"cell": run.cell, "seed": run.seed, "trained_length": run.length,
           "status": record["status"]}
    try:
      params = results.load_params(run)
    except FileNotFoundError:
      rows.append({**row, "test_length": None, "status": (
          "no parameters" if record["status"].kind is Kind.ERROR
          else f"error: {results.params_file(run)} is missing")})
      continue
    except Exception as error:  # pylint: disable=broad-except
      rows.append({**row, "test_length": None, "status":
                   f"error: {results.params_file(run)} is unreadable "
                   f"({type(error).__name__})"})
      continue
    for length in (lengths or (run.length,)):
      cfg = dataclasses.replace(base, cell=run.cell, length=length)
      _, _, eval_key = train.run_keys(run.seed, cfg.cell, length)
      metrics = jax.device_get(_evaluate(params, eval_key, cfg.program(),
                                         cfg.eval_batches))
      counts = np.asarray(_confusion(params, eval_key, cfg.program(),
                                     cfg.eval_batches))
      rows.append({**row, "test_length": length,
                   "test_accuracy": float(metrics["accuracy"]),
                   "test_loss": float(metrics["loss"]),
                   "accuracy_by_digit": by_digit(counts),
                   "confusion": counts.tolist()})
  return rows


def confusion(params: Any, eval_key: jax.Array, cfg: train.RunConfig,
              num_batches: Optional[int] = None) -> jax.Array:
  """Counts ``[10, 10]`` over the batches :func:`train.evaluate` tests on
  (the same ``num_batches`` drawn from ``eval_key``): row the target digit,
  column the digit the model answered (its largest logit)."""
  cell = cfg.make_cell()
  num_batches = num_batches or cfg.eval_batches

  def body(counts_CxC, i):
    batch = data.make_batch(jax.random.fold_in(eval_key, i), cfg.length,
                            cfg.batch_size, cfg.encoding)
    logits_BxC = model.apply(cell, params, batch.inputs,
                             unroll_steps=cfg.unroll)
    return counts_CxC.at[batch.targets, logits_BxC.argmax(-1)].add(1), None

  counts_CxC, _ = jax.lax.scan(
      body, jnp.zeros((data.NUM_CLASSES, data.NUM_CLASSES), jnp.int32),
      jnp.arange(num_batches))
  return counts_CxC


def by_digit(counts_CxC: np.ndarray) -> list[Optional[float]]:
  """Per target digit, the fraction answered right (None where the batches
  held no such target)."""
  counts_CxC = np.asarray(counts_CxC)
  totals = counts_CxC.sum(axis=1)
  return [float(counts_CxC[d, d] / totals[d]) if totals[d] else None
          for d in range(len(totals))]


_evaluate = jax.jit(train.evaluate, static_argnums=(2, 3))
_confusion = jax.jit(confusion, static_argnums=(2, 3))


def _for_evaluation(cfg: train.RunConfig) -> train.RunConfig:
  """``cfg`` without what only initialises a run: T_max = c x N need not
  be valid at a test length shorter than the one trained."""
  return dataclasses.replace(cfg, chrono_per_digit=None)


def evaluate_params(params: Any, cfg: train.RunConfig, lengths: Iterable[int],
                    seed: int = 42) -> dict[int, dict[str, float]]:
  """Test accuracy and loss of ``params`` (a ``cfg.cell`` model) at each
  length: ``cfg.eval_batches`` fresh batches, the sweep's test batches for
  ``seed`` at that length. A cell reads any number of digits, so this asks
  whether what it learned at one N still works at another."""
  out = {}
  cfg = _for_evaluation(cfg)
  for length in lengths:
    at = dataclasses.replace(cfg, length=length)
    _, _, eval_key = train.run_keys(seed, at.cell, length)
    metrics = jax.device_get(_evaluate(params, eval_key, at.program(),
                                       at.eval_batches))
    out[length] = {"accuracy": float(metrics["accuracy"]),
                   "loss": float(metrics["loss"])}
  return out


def evaluated(rows: list[dict]) -> bool:
  """Whether any of ``rows`` (:func:`evaluate_saved`'s) was evaluated."""
  return any(r["test_length"] is not None for r in rows)


def table(rows: list[dict]) -> str:
  """Markdown: test accuracy (%) per (cell, trained N) x test N
  (:func:`palindrome_jax.report.evaluate_table`), then per run and test N
  the accuracy by target digit (:func:`palindrome_jax.report.digit_table`);
  when nothing could be
  evaluated, a line that says so and each run with its reason, no table."""
  if evaluated(rows):
    return report.evaluate_table(rows) + "\n" + report.digit_table(rows)
  if not rows:
    return "Nothing evaluated: the directory holds no finished run.\n"
  return "\n".join([
      "Nothing evaluated: no saved run's parameters could be read.", "",
      "Not evaluated:",
      *(f"- {r['cell']} N={r['trained_length']} seed {r['seed']}: "
        f"{r['status']}" for r in rows)]) + "\n"
