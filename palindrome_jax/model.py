"""Cells unrolled over time with ``jax.lax.scan``, stacked, then a readout.

The model returns logits (no softmax): the loss applies log-softmax itself.

Depth is layer-major: each layer runs over the whole sequence and its output
sequence ``h_TxBxH`` is the next layer's input, so a cell's ``project`` (or a
parallel ``sequence``) covers every step of a layer at once. Two blocks:

- ``stack`` (PyTorch's ``nn.LSTM(num_layers=L)``): layer 1 reads the input,
  layer ``l + 1`` reads layer ``l``'s hidden sequence; the readout reads the
  last layer's last output. One layer is the original model, with the same
  parameters (``{"cell", "readout"}``) and numbers as before depth existed.
- ``residual`` (the modern papers' block, e.g. Mamba, Griffin, xLSTM): a
  linear input projection to ``hidden_dim``, then per layer ``x + cell(
  RMSNorm(x))``, followed, for a cell with ``mlp_expand > 0``, by ``x +
  GatedMLP(RMSNorm(x))`` (GeGLU, as Griffin's), and a final RMSNorm before
  the readout.

The parameters say which model they are: ``{"cell", "readout"}`` (one stacked
layer), ``{"layers": [...], "readout"}`` (stacked) or ``{"embed", "layers":
[{"norm", "cell"[, "mlp_norm", "mlp"]}], "norm", "readout"}`` (residual), so
:func:`apply` needs no depth argument and a registered cell gets depth with
no code of its own.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from palindrome_jax import cells as cells_lib
from palindrome_jax.data import NUM_CLASSES

Params = Any


BLOCKS = ("stack", "residual")
RMS_NORM_EPS = 1e-6


def init(key: jax.Array, cell: cells_lib.Cell, input_dim: int, hidden_dim: int,
         num_classes: int = NUM_CLASSES, num_layers: int = 1,
         block: str = "stack") -> Params:
  """The model's parameters (see the module doc); readout as the original's.

  Layer ``l``'s cell is initialised from ``fold_in(key_cell, l)`` (layer 0
  from ``key_cell`` itself), so the first layer of a stack equals the
  one-layer model's cell.
  """
  if block not in BLOCKS:
    raise ValueError(f"unknown block {block!r}; choose from {BLOCKS}")
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  key_cell, key_out = jax.random.split(key)
  readout_params = {
      "W": cells_lib.uniform_fan_in(key_out, (hidden_dim, num_classes)),
      "b": jnp.zeros((num_classes,), jnp.float32),
  }
  layer_keys = [key_cell] + [jax.random.fold_in(key_cell, l)
                             for l in range(1, num_layers)]
  if block == "stack":
    layers = [cell.init(k, input_dim if l == 0 else hidden_dim, hidden_dim)
              for l, k in enumerate(layer_keys)]
    if num_layers == 1:
      return {"cell": layers[0], "readout": readout_params}
    return {"layers": layers, "readout": readout_params}
  key_w, key_b = jax.random.split(jax.random.fold_in(key_out, 1))
  return {
      # The bias is drawn as the weights are, not zero: with the scalar
      # encoding x = d w + b, and a zero b the first RMSNorm would map every
      # digit d > 0 to one vector.
      "embed": {"W": cells_lib.uniform_fan_in(key_w, (input_dim, hidden_dim)),
                "b": cells_lib.uniform_fan_in(key_b, (input_dim, hidden_dim)
                                              )[0]},
      "layers": [_residual_layer_init(k, cell, hidden_dim) for k in layer_keys],
      "norm": jnp.ones((hidden_dim,), jnp.float32),
      "readout": readout_params,
  }


def _residual_layer_init(key: jax.Array, cell: cells_lib.Cell,
                         hidden_dim: int) -> Params:
  layer = {"norm": jnp.ones((hidden_dim,), jnp.float32),
           "cell": cell.init(key, hidden_dim, hidden_dim)}
  width = mlp_width(cell, hidden_dim)
  if width:
    key_in, key_out = jax.random.split(jax.random.fold_in(key, 0x4D4C50))
    layer["mlp_norm"] = jnp.ones((hidden_dim,), jnp.float32)
    layer["mlp"] = {
        "W_in": cells_lib.uniform_fan_in(key_in, (hidden_dim, 2 * width)),
        "W_out": cells_lib.uniform_fan_in(key_out, (width, hidden_dim)),
    }
  return layer


def mlp_width(cell: cells_lib.Cell, hidden_dim: int) -> int:
  """Hidden width of the gated MLP after ``cell`` in a residual layer (0:
  none): ``round(cell.mlp_expand * hidden_dim)``."""
  return int(round(cell.mlp_expand * hidden_dim))


def rms_norm(scale_H: jax.Array, x: jax.Array) -> jax.Array:
  """RMSNorm over the last axis (Zhang & Sennrich 2019), any leading axes."""
  ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
  return (x * jax.lax.rsqrt(ms + RMS_NORM_EPS)
          * jax.lax.broadcast_to_rank(scale_H, x.ndim))


def gated_mlp(mlp: Params, x: jax.Array) -> jax.Array:
  """``(GELU(x W_gate) * (x W_value)) W_out``: the GeGLU MLP of Griffin's
  residual block (Shazeer 2020), any leading axes."""
  gate, value = jnp.split(x @ mlp["W_in"], 2, axis=-1)
  return (jax.nn.gelu(gate) * value) @ mlp["W_out"]


def num_layers_of(params: Params) -> int:
  return len(params["layers"]) if "layers" in params else 1


def block_of(params: Params) -> str:
  return "residual" if "embed" in params else "stack"


def layer_cell_params(params: Params) -> list[Params]:
  """Each layer's cell parameters, first layer first."""
  if "cell" in params:
    return [params["cell"]]
  if block_of(params) == "stack":
    return list(params["layers"])
  return [layer["cell"] for layer in params["layers"]]


def param_counts(params: Params) -> dict[str, Any]:
  """Parameter counts: ``total``, ``per_layer`` (a list, first layer first,
  each layer's cell with its norms and MLP), ``readout`` and, for the
  residual block, ``embed`` (with the final norm)."""
  count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
  if "cell" in params:
    per_layer = [count(params["cell"])]
  else:
    per_layer = [count(layer) for layer in params["layers"]]
  counts = {"total": count(params), "per_layer": per_layer,
            "readout": count(params["readout"])}
  if "embed" in params:
    counts["embed"] = count(params["embed"]) + count(params["norm"])
  return counts


def unroll(cell: cells_lib.Cell, cell_params: Params, inputs_BxTxD: jax.Array,
           hidden_dim: int, carry_offsets: Optional[Any] = None, unroll_steps: int = 1):
  """Runs ``cell`` over time; returns ``(final carry, h_TxBxH)``.

  ``carry_offsets``, a carry pytree with a leading time axis, is added to the
  carry after each step: all zeros it changes nothing, and the gradient of the
  loss with respect to it is ``dL/dcarry_t`` (see :mod:`gradients`).
  """
  carry0, xs_TxBxD = _scan_inputs(cell, cell_params, inputs_BxTxD,
                                  hidden_dim)
  if cell.sequence is not None and carry_offsets is None:
    return cell.sequence(cell_params, carry0, xs_TxBxD)

  def body(carry, xs):
    x_t, offset_t = xs
    carry, h_t = cell.step(cell_params, carry, x_t)
    if offset_t is not None:
      carry = jax.tree.map(jnp.add, carry, offset_t)
    return carry, h_t

  return jax.lax.scan(body, carry0, (xs_TxBxD, carry_offsets),
                      unroll=unroll_steps)


def _scan_inputs(cell: cells_lib.Cell, cell_params: Params,
                 inputs_BxTxD: jax.Array, hidden_dim: int):
  """``(carry0, xs_TxBx*)``: the zero carry and the time-major inputs, projected
  if ``cell`` projects."""
  xs_TxBxD = jnp.swapaxes(inputs_BxTxD, 0, 1)
  if cell.project is not None:
    # Linear in x: one [T*B, D] x [D, G] matmul for all steps, out of the loop.
    xs_TxBxD = cell.project(cell_params, xs_TxBxD)
  carry0 = cell.initial_carry(inputs_BxTxD.shape[0], hidden_dim)
  # The carry takes the parameters' precision (float64 in gradient checks).
  dtype = jnp.result_type(*jax.tree.leaves(cell_params))
  return jax.tree.map(lambda c: c.astype(dtype), carry0), xs_TxBxD


def apply(cell: cells_lib.Cell, params: Params, inputs_BxTxD: jax.Array,
          **unroll_kwargs) -> jax.Array:
  """Logits ``[B, num_classes]`` from the last layer's last output."""
  hidden_dim = params["readout"]["W"].shape[0]
  if "layers" in params:
    return readout(params, _deep_last(cell, params, inputs_BxTxD,
                                      **unroll_kwargs))
  if cell.last is not None and unroll_kwargs.get("carry_offsets") is None:
    _, h_BxH = cell.last(params["cell"], *_scan_inputs(
        cell, params["cell"], inputs_BxTxD, hidden_dim))
    return readout(params, h_BxH)
  _, h_TxBxH = unroll(cell, params["cell"], inputs_BxTxD, hidden_dim,
                      **unroll_kwargs)
  return readout(params, h_TxBxH[-1])


def _layer_sequence(cell: cells_lib.Cell, cell_params: Params,
                    xs_TxBxD: jax.Array, hidden_dim: int, unroll_steps: int,
                    last_only: bool, carry_offsets: Optional[Any] = None):
  """One layer over a time-major sequence: ``h_TxBxH``, or with
  ``last_only`` the last step's ``h_BxH`` (through ``cell.last`` if any)."""
  inputs_BxTxD = jnp.swapaxes(xs_TxBxD, 0, 1)
  if last_only and cell.last is not None and carry_offsets is None:
    return cell.last(cell_params, *_scan_inputs(cell, cell_params,
                                                inputs_BxTxD, hidden_dim))[1]
  _, h_TxBxH = unroll(cell, cell_params, inputs_BxTxD, hidden_dim,
                      carry_offsets, unroll_steps)
  return h_TxBxH[-1] if last_only else h_TxBxH


def _deep_last(cell: cells_lib.Cell, params: Params, inputs_BxTxD: jax.Array,
               unroll_steps: int = 1,
               carry_offsets: Optional[list] = None) -> jax.Array:
  """The last layer's output at the last step, ``[B, H]``; the final norm
  applied for the residual block."""
  h_BxH = layer_outputs(cell, params, inputs_BxTxD, unroll_steps,
                        last_only=True, carry_offsets=carry_offsets)[-1]
  return rms_norm(params["norm"], h_BxH) if "norm" in params else h_BxH


def layer_outputs(cell: cells_lib.Cell, params: Params,
                  inputs_BxTxD: jax.Array, unroll_steps: int = 1,
                  last_only: bool = False,
                  carry_offsets: Optional[list] = None) -> list[jax.Array]:
  """Each layer's output sequence ``h_TxBxH``, layer-major, first layer
  first: the cell's outputs for the stack, the residual stream after the
  layer for the residual block (before the final norm). With ``last_only``
  the last layer gives its last step only, ``[B, H]``. ``carry_offsets``: a
  list, one per layer, of what :func:`unroll` takes (or None)."""
  hidden_dim = params["readout"]["W"].shape[0]
  xs_TxBxD = jnp.swapaxes(inputs_BxTxD, 0, 1)
  num_layers = num_layers_of(params)
  offsets = carry_offsets or [None] * num_layers
  outputs = []
  if block_of(params) == "stack":
    for l, cell_params in enumerate(layer_cell_params(params)):
      xs_TxBxD = _layer_sequence(cell, cell_params, xs_TxBxD, hidden_dim,
                                 unroll_steps,
                                 last_only and l == num_layers - 1, offsets[l])
      outputs.append(xs_TxBxD)
    return outputs
  embed = params["embed"]
  x = xs_TxBxD @ embed["W"] + jax.lax.broadcast_to_rank(embed["b"], 3)
  for l, layer in enumerate(params["layers"]):
    last = last_only and l == num_layers - 1
    h = _layer_sequence(cell, layer["cell"], rms_norm(layer["norm"], x),
                        hidden_dim, unroll_steps, last, offsets[l])
    x = (x[-1] if last else x) + h
    if "mlp" in layer:
      x = x + gated_mlp(layer["mlp"], rms_norm(layer["mlp_norm"], x))
    outputs.append(x)
  return outputs


def readout(params: Params, h_BxH: jax.Array) -> jax.Array:
  return h_BxH @ params["readout"]["W"] + params["readout"]["b"][None, :]


def num_params(params: Params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
