"""How much the loss at the end still depends on each earlier hidden state.

For a batch of palindromes of length ``T`` we measure, for every step ``t``,
``||dl_b / dcarry_t||``: the gradient of example ``b``'s cross-entropy ``l_b``
with respect to its carry after step ``t`` (the state that step ``t + 1``
reads), averaged over the examples ``b`` of the batch. Small values at small
``t`` are vanishing gradients: the first digit, the one to remember, barely
moves the loss (Bengio, Simard & Frasconi 1994; Pascanu et al. 2013).

The gradients come from one backward pass: :func:`palindrome_jax.model.unroll`
adds ``carry_offsets`` (zeros) to the carry after each step, and the gradient
of ``L = sum_b l_b`` with respect to offset ``[t, b]`` is ``dl_b/dcarry_t`` of
example ``b`` alone, since cells treat the rows of a batch independently.

The readout reads the last output ``h_{T-1}``. Where that output is (a leaf of)
the carry, as for rnn, irnn, gru and the LSTM's ``h``, the loss reads it from
the final carry, so ``t = T - 1`` counts too. Where the output is computed
from the carry (the lru) the final carry feeds nothing and its entry is NaN.

With several layers (``--num_layers``) every layer's carry gets its offsets,
and the parts are ``"layer l"`` (layer ``l``'s whole carry, first layer 1)
and ``"total"`` (all layers together). The offset after step ``t`` reaches the
steps after ``t`` of its own layer (and, through them, the layers above); the
last layer's output at the last step is read before any offset, so the final
step's entry is NaN for every layer.
"""

import dataclasses
import functools
import math
import zlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from palindrome_jax import cells as cells_lib
from palindrome_jax import data
from palindrome_jax import files as io
from palindrome_jax import model
from palindrome_jax import plots
from palindrome_jax import report
from palindrome_jax import results as results_lib
from palindrome_jax import runner
from palindrome_jax import train
from palindrome_jax.results import Run
from palindrome_jax.status import Status

Params = Any

# The status of a seed measured with ``init_only``: it was never trained.
UNTRAINED = Status.untrained("init_only")


def output_leaf(cell: cells_lib.Cell, cell_params: Params,
                inputs_BxTxD: jax.Array, hidden_dim: int) -> Optional[int]:
  """Index of the carry leaf that ``cell.step`` also returns as its output.

  Found by tracing one step: a cell that returns ``h, h`` or ``(c, h), h``
  returns the same traced array twice. None if the output is not in the carry.
  """
  found = []

  def probe(carry, x_BxD):
    new_carry, h = cells_lib.step_on_input(cell, cell_params, carry, x_BxD)
    leaves = jax.tree.leaves(new_carry)
    found.append(next((i for i, leaf in enumerate(leaves) if leaf is h), None))
    return h

  carry = cell.initial_carry(inputs_BxTxD.shape[0], hidden_dim)
  jax.eval_shape(probe, carry, inputs_BxTxD[:, 0])
  return found[0]


def _summed_loss(carry_offsets, cell, params, batch, leaf):
  hidden_dim = params["readout"]["W"].shape[0]
  final_carry, h_TxBxH = model.unroll(cell, params["cell"], batch.inputs,
                                      hidden_dim, carry_offsets=carry_offsets)
  h_BxH = h_TxBxH[-1] if leaf is None else jax.tree.leaves(final_carry)[leaf]
  logits_BxC = model.readout(params, h_BxH)
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxC, batch.targets).sum()


@functools.partial(jax.jit, static_argnames=("cell", "leaf"))
def carry_gradients(cell: cells_lib.Cell, params: Params, batch: data.Batch,
                    leaf: Optional[int]):
  """``dl_b/dcarry_t`` for every ``t`` and ``b``: a carry pytree whose leaves
  have leading axes ``[T, B]``. ``leaf`` is :func:`output_leaf`'s answer."""
  batch_size, length = batch.inputs.shape[:2]
  hidden_dim = params["readout"]["W"].shape[0]
  carry = cell.initial_carry(batch_size, hidden_dim)
  offsets = jax.tree.map(lambda c: jnp.zeros((length,) + c.shape, c.dtype),
                         carry)
  return jax.grad(_summed_loss)(offsets, cell, params, batch, leaf)


def _mean_norm_T(leaves_TxBx_: list[jax.Array]) -> np.ndarray:
  """Per-example norm over all ``leaves`` together, averaged over the batch."""
  squares_TxB = sum(jnp.square(g).reshape(g.shape[:2] + (-1,)).sum(-1)
                    for g in leaves_TxBx_)
  return np.array(jnp.sqrt(squares_TxB).mean(axis=1), np.float64)


@functools.partial(jax.jit, static_argnames=("cell",))
def layer_carry_gradients(cell: cells_lib.Cell, params: Params,
                          batch: data.Batch) -> list:
  """``dl_b/dcarry_t`` of every layer of a model with ``"layers"``: one carry
  pytree per layer, first layer first, its leaves with leading ``[T, B]``."""
  batch_size, length = batch.inputs.shape[:2]
  hidden_dim = params["readout"]["W"].shape[0]
  carry = cell.initial_carry(batch_size, hidden_dim)
  offsets = [jax.tree.map(lambda c: jnp.zeros((length,) + c.shape, c.dtype),
                          carry) for _ in range(model.num_layers_of(params))]

  def summed_loss(offsets):
    logits_BxC = model.apply(cell, params, batch.inputs, carry_offsets=offsets)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_BxC, batch.targets).sum()

  return jax.grad(summed_loss)(offsets)


def _layer_norms(cell: cells_lib.Cell, params: Params,
                 batch: data.Batch) -> dict[str, np.ndarray]:
  """The deep model's parts (module doc): per layer and in total."""
  grads = [jax.tree.leaves(g) for g in layer_carry_gradients(cell, params,
                                                             batch)]
  norms = {f"layer {l + 1}": _mean_norm_T(g) for l, g in enumerate(grads)}
  norms["total"] = _mean_norm_T([leaf for g in grads for leaf in g])
  for values in norms.values():
    values[-1] = math.nan  # Read before any offset (module doc).
  return norms


def hidden_gradient_norms(cell: cells_lib.Cell, params: Params,
                          batch: data.Batch) -> dict[str, np.ndarray]:
  """Mean over the batch of ``||dl_b/dcarry_t||``, each ``[T]`` (module doc).

  A cell whose carry is one array gets ``{"h"}``. A carry of several arrays
  gets ``"total"`` (all of them), and where one of them is the output, ``"h"``
  (that one) and ``"c"`` (the rest; the LSTM's cell state). A model of
  several layers gets ``"layer 1"``, ``"layer 2"``, ... and ``"total"``.
  """
  if "layers" in params:
    return _layer_norms(cell, params, batch)
  hidden_dim = params["readout"]["W"].shape[0]
  leaf = output_leaf(cell, params["cell"], batch.inputs, hidden_dim)
  grads = jax.tree.leaves(carry_gradients(cell, params, batch, leaf))
  if len(grads) == 1:
    norms = {"h": _mean_norm_T(grads)}
  else:
    norms = {"total": _mean_norm_T(grads)}
    if leaf is not None:
      norms["h"] = _mean_norm_T([grads[leaf]])
      norms["c"] = _mean_norm_T(grads[:leaf] + grads[leaf + 1:])
  if leaf is None:
    for values in norms.values():
      values[-1] = math.nan  # The final carry feeds nothing (module doc).
  return norms


def gradient_norms(cfg: train.RunConfig, params: Params,
                   seed: int = 42) -> dict[str, np.ndarray]:
  """:func:`hidden_gradient_norms` of ``params`` (a ``cfg.cell`` model) on
  the batch the gradients tool uses for ``seed``: per carry part, the mean
  over the batch of ``||d loss_b / d carry_t||`` for t = 0 .. N-1."""
  return hidden_gradient_norms(cfg.make_cell(), params,
                               gradient_batch(cfg, seed))


def gradient_batch(cfg: train.RunConfig, seed: int) -> data.Batch:
  """The batch the norms are measured on: a function of seed and length
  only, so every cell sees the same palindromes, from a key of its own."""
  return _make_batch(seed, cfg.length, cfg.batch_size, cfg.encoding)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _make_batch(seed, length: int, batch_size: int, encoding: str):
  key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(b"gradients"))
  key = jax.random.fold_in(key, length)
  return data.make_batch(key, length, batch_size, encoding)


def initial_params(cfg: train.RunConfig, seed: int) -> Params:
  """The parameters training starts from for ``seed``: the same init key."""
  init_key = train.run_keys(seed, cfg.cell, cfg.length)[0]
  return _init_params(init_key, cfg.program())


# One compiled program instead of an op-by-op dispatch of every initialiser.
_init_params = jax.jit(train.init_params, static_argnums=1)


def _to_lists(norms: dict[str, np.ndarray]) -> dict[str, list[float]]:
  return {part: [float(v) for v in values] for part, values in norms.items()}


def _mean_over_seeds(per_seed: list[dict[str, list[float]]]) -> dict:
  """Per-step mean over the seeds whose norms are finite at that step."""
  return {part: [float(x) for x in results_lib.finite_mean(
      [s[part] for s in per_seed], axis=0)] for part in per_seed[0]}


def gradient_profile(cfg: train.RunConfig, records: Sequence[Optional[dict]],
                     params: Sequence[Any]) -> dict:
  """Norms at initialisation and after training ``cfg`` for each seed.

  ``records`` are the seeds' result rows and ``params`` their trained
  parameters (None where there are none). Returns a JSON-able dict: per seed
  its status, test accuracy and the norms ``{"init": {part: [T]},
  "trained": {...}}``, and the same means over the seeds that trained.
  """
  cell = cfg.make_cell()
  per_seed = []
  for record, trained_params in zip(records, params):
    batch = gradient_batch(cfg, record["seed"])
    init = hidden_gradient_norms(cell, initial_params(cfg, record["seed"]),
                                 batch)
    trained = (hidden_gradient_norms(cell, trained_params, batch)
               if trained_params is not None else
               {part: [math.nan] * len(v) for part, v in init.items()})
    per_seed.append({"seed": record["seed"], "status": record["status"],
                     "test_accuracy": record.get("test_accuracy"),
                     "train_steps": record.get("train_steps"),
                     "init": _to_lists(init), "trained": _to_lists(trained)})
  usable = report.usable_seeds(per_seed)
  return {
      "cell": cfg.cell,
      "length": cfg.length,
      "wall_seconds": sum(r.get("wall_seconds") or 0.0 for r in records),
      "init": _mean_over_seeds([s["init"] for s in usable]),
      "trained": _mean_over_seeds([s["trained"] for s in usable]),
      "seeds": per_seed,
  }


def initial_profile(cfg: train.RunConfig, seeds: Sequence[int]) -> dict:
  """:func:`gradient_profile` at initialisation only: nothing is trained,
  and the profile has no ``"trained"`` norms."""
  cell = cfg.make_cell()
  per_seed = [{"seed": seed, "status": UNTRAINED, "test_accuracy": None,
               "train_steps": 0,
               "init": _to_lists(hidden_gradient_norms(
                   cell, initial_params(cfg, seed), gradient_batch(cfg, seed)))}
              for seed in seeds]
  return {"cell": cfg.cell, "length": cfg.length, "wall_seconds": 0.0,
          "init": _mean_over_seeds([s["init"] for s in per_seed]),
          "seeds": per_seed}


def run_gradients(base: train.RunConfig, cells: tuple[str, ...], length: int,
                  seeds: tuple[int, ...], results_dir: str,
                  train_fn: runner.TrainFn = train.train_and_evaluate,
                  devices: Optional[Sequence[jax.Device]] = None,
                  overwrite: bool = False,
                  stop: Callable[[], bool] = lambda: False,
                  init_only: bool = False,
                  profile_dir: Optional[str] = None) -> dict:
  """:func:`gradient_profile` for every cell; writes ``gradients.json``,
  ``gradients.md`` and ``gradients.png``. Returns what the JSON holds.

  The runs are trained (side by side over ``devices``) and kept in
  ``results_dir`` as a sweep keeps them (:mod:`palindrome_jax.results`), so
  a rerun measures again without training again. With ``init_only`` nothing
  is trained: each cell gets :func:`initial_profile`, in seconds. With
  ``profile_dir``, each run traces a few chunks there
  (:func:`runner.train_runs`). A run or a summary that cannot be written (a
  full disk) raises :class:`runner.NotSaved` once the rest is done: a run
  not saved leaves no summary, which would count it as untrained.
  """
  content = {
      "length": length,
      "seeds": list(seeds),
      "examples": base.batch_size,
      "measure": "mean over a batch of ||d loss_b / d carry_t||, loss_b one "
                 "example's cross-entropy, carry_t the carry after step t",
      "training_settings": {**base.training_settings(), "length": length},
      "cells": {},
  }
  if init_only:
    content["init_only"] = True
  with runner.open_results(
      results_dir, base, "a gradients run", overwrite,
      {"cells": list(cells), "lengths": [length], "seeds": list(seeds)},
      devices) as (directory, pool):
    if init_only:
      if jax.process_index() == 0:
        for cell in cells:
          content["cells"][cell] = initial_profile(
              dataclasses.replace(base, cell=cell, length=length), seeds)
        _raise_if_any(write_summaries(content, results_dir))
      return content
    # Several processes: each trains its share, process 0 measures them all.
    outcome = runner.Outcome([], [])
    records = runner.share_then_replay(
        lambda runs: runner.train_runs(runs, base, directory, pool,
                                       train_fn=train_fn, stop=stop,
                                       outcome=outcome,
                                       profile_dir=profile_dir),
        [Run(cell, length, seed) for cell in cells for seed in seeds],
        f"gradients-done-{results_dir}")
    _raise_if_any(outcome.write_errors)
    if jax.process_index() != 0:
      return content
    if stop():  # Interrupted: what trained is kept for the rerun.
      return content
    for cell in cells:
      cfg = dataclasses.replace(base, cell=cell, length=length)
      cell_records, cell_params = [], []
      for seed in seeds:
        run = Run(cell, length, seed)
        record = records.get(run) or {"seed": seed,
                                      "status": Status.untrained()}
        cell_records.append(record)
        cell_params.append(directory.load_params(run)
                           if record["status"].trained else None)
      content["cells"][cell] = gradient_profile(cfg, cell_records, cell_params)
    _raise_if_any(write_summaries(content, results_dir))
  return content


def _raise_if_any(problems: list[str]) -> None:
  if problems:
    raise runner.NotSaved(problems)


def write_summaries(content: dict, results_dir: str) -> list[str]:
  """``gradients.json``, ``gradients.png`` and ``gradients.md``, each
  written whole or not at all; returns a line for each not written (each
  logged), as :func:`results.write_each`."""
  return results_lib.write_each({
      "gradients.json": lambda path: io.write_json(path, content),
      "gradients.png": lambda path: plots.gradient_norms(content, path),
      "gradients.md": lambda path: io.atomic_write_text(
          path, report.gradients_report(content)),
  }, results_dir)


def summary_table(results: dict) -> str:
  """Markdown: the norm at the first and last step, at init and trained
  (:func:`palindrome_jax.report.gradients_table`)."""
  return report.gradients_table(results)
