"""Griffin's recurrent block with the RG-LRU (De et al. 2024), registered as
``"rglru"`` and ``"rglru_parallel"``.

De, Smith, Fernando, Botev, Cristian-Muraru, Gu, Haroun, Berrada, Chen,
Srinivasan, Desjardins, Doucet, Budden, Teh, Pascanu, De Freitas & Gulcehre
2024, "Griffin: Mixing Gated Linear Recurrences with Local Attention for
Efficient Language Models". Widths: ``D`` the input, ``H`` the output
(``hidden_dim``), ``R`` the recurrence (the paper's ``D_RNN``). Per step, on
an input ``x_t [D]``::

    y_t = GeLU(x_t W_y + b_y)                           gate branch    [R]
    v_t = x_t W_x + b_x                                                [R]
    c_t = sum_k w_k v_{t-3+k} + b_c                     causal depthwise conv
    r_t = sigmoid(c_t W_a + b_a)                        recurrence gate
    i_t = sigmoid(c_t W_i + b_i)                        input gate
    log a_t = -8 softplus(-Lambda) r_t                  a_t = a^(8 r_t)
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t c_t)       the RG-LRU
    out_t = (y_t * h_t) W_out + b_out                                  [H]

``a_t`` is computed in log space, ``log sigmoid(Lambda) = -softplus(-Lambda)``,
so it lies in ``(0, 1)`` for any parameters, and ``1 - a_t^2 =
-expm1(2 log a_t)`` keeps its digits when ``a_t`` is near 1. The square root's
derivative is capped at 1000 (where ``1 - a_t^2 < 2.5e-7``), as the official
code (RecurrentGemma's ``sqrt_bound_derivative``) does against NaNs; below the
cap it is exact. The block's residual layer in Griffin follows it with a
gated MLP of expansion 3 (``mlp_expand=3``, :mod:`palindrome_jax.model`).

Choices where the paper leaves room or the task lacks a shape: ``R = H``
(RecurrentGemma's ``lru_width`` default; the paper's ``4H/3`` is not an
integer at H = 128 and would make the carry depend on a rounding); the gate
matrices ``W_a``, ``W_i`` are dense ``[R, R]``, one block (the paper's are
block-diagonal, one block per head; with no heads here, one block is the
general case); biases in every linear layer and GeLU in its tanh form
(``jax.nn.gelu``'s default), as RecurrentGemma. RecurrentGemma also leaves
the first token of each document unnormalised (multiplier 1, no ``sqrt``);
the paper's equation has no such case and neither has this cell.

Initialisation: ``Lambda`` so that ``a^8 = sigmoid(Lambda)^8`` is uniform in
``[0.9, 0.999]`` (the paper's; RecurrentGemma instead puts ``a`` itself on
the ring ``a^2 ~ U[0.81, 0.998]``, i.e. ``a^8`` down to 0.43);
``W_y``, ``W_x``, ``W_a``, ``W_i``, ``W_out`` LeCun normal (std
``1/sqrt(fan_in)``), the conv's ``w`` normal with std ``sqrt(0.01 / 4)``, all
biases zero (RecurrentGemma's; its ``W_out`` scale ``2 / num_layers`` is not
applied: a cell does not know the depth).

The carry is ``(conv_Bx3xR, h_BxR)``: the conv's last three inputs ``v``,
oldest first, and the state. ``[W_y | W_x]`` is the cell's ``project``: both
forms receive ``u_t = [x_t W_y + b_y | x_t W_x + b_x]``. :func:`rglru_step` is
the sequential form; :func:`rglru_sequence`, the parallel form, runs the conv
and the gates for all steps at once and the recurrence ``h_t = a_t h_{t-1} +
b_t`` by ``jax.lax.associative_scan`` over time.
"""

import math

import jax
import jax.numpy as jnp

from palindrome_jax import cells

C = 8.0
CONV_WIDTH = 4
A_MIN = 0.9
A_MAX = 0.999
MAX_SQRT_GRADIENT = 1000.0
CONV_VARIANCE = 0.01
MLP_EXPAND = 3.0  # Griffin's residual block: a gated MLP of expansion 3.


@jax.custom_jvp
def sqrt_bounded_derivative(x: jax.Array) -> jax.Array:
  """``sqrt(x)`` whose derivative is capped at :data:`MAX_SQRT_GRADIENT`."""
  return jnp.sqrt(x)


@sqrt_bounded_derivative.defjvp
def _sqrt_bounded_derivative_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  y = jnp.sqrt(x)
  return y, dx * 0.5 / jnp.maximum(y, 0.5 / MAX_SQRT_GRADIENT)


def lambda_init(key: jax.Array, width: int, a_min: float = A_MIN,
                a_max: float = A_MAX) -> jax.Array:
  """``Lambda [R]`` with ``sigmoid(Lambda)^C`` uniform in ``[a_min, a_max]``:
  ``softplus(-Lambda) = -log(a^C) / C``, inverted."""
  a_c = jax.random.uniform(key, (width,), jnp.float32, a_min, a_max)
  return -jnp.log(jnp.expm1(-jnp.log(a_c) / C))


def _lecun_normal(key: jax.Array, shape: tuple[int, ...],
                  scale: float = 1.0) -> jax.Array:
  """Normal with variance ``scale / shape[0]`` (the fan-in)."""
  return (jax.random.normal(key, shape, jnp.float32)
          * math.sqrt(scale / shape[0]))


def rglru_init(key: jax.Array, input_dim: int, hidden_dim: int,
               a_min: float = A_MIN, a_max: float = A_MAX) -> cells.Params:
  """Recurrent-block parameters (module doc), ``R = hidden_dim``.

  ``W_in [D, 2R]``, ``b_in [2R]`` (``y | v``), ``conv_w [4, R]``
  (``conv_w[3]`` weighs the newest input), ``conv_b [R]``, ``W_gate [R,
  2R]``, ``b_gate [2R]`` (``r | i``), ``Lambda [R]``, ``W_out [R, H]``,
  ``b_out [H]``.
  """
  width = hidden_dim
  keys = jax.random.split(key, 5)
  return {
      "W_in": _lecun_normal(keys[0], (input_dim, 2 * width)),
      "b_in": jnp.zeros((2 * width,), jnp.float32),
      "conv_w": _lecun_normal(keys[1], (CONV_WIDTH, width), CONV_VARIANCE),
      "conv_b": jnp.zeros((width,), jnp.float32),
      "W_gate": _lecun_normal(keys[2], (width, 2 * width)),
      "b_gate": jnp.zeros((2 * width,), jnp.float32),
      "Lambda": lambda_init(keys[3], width, a_min, a_max),
      "W_out": _lecun_normal(keys[4], (width, hidden_dim)),
      "b_out": jnp.zeros((hidden_dim,), jnp.float32),
  }


def rglru_initial_carry(batch_size: int, hidden_dim: int):
  """The zero carry ``(conv_Bx3xR, h_BxR)``."""
  return (jnp.zeros((batch_size, CONV_WIDTH - 1, hidden_dim), jnp.float32),
          cells.zeros_carry(batch_size, hidden_dim))


def rglru_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``u = x W_in + b_in``, ``[..., 2R]`` (the ``y | v`` pre-activations),
  for any leading axes: the part of the block linear in its input."""
  return x @ params["W_in"] + jax.lax.broadcast_to_rank(params["b_in"],
                                                         x.ndim)


def rglru_coefficients(params: cells.Params, c: jax.Array):
  """``(a, b)`` of the RG-LRU's ``h_t = a_t h_{t-1} + b_t`` from the conv's
  output ``c [..., R]``: ``a = exp(log a)``, ``b = sqrt(1 - a^2) i c``."""
  gates = jax.nn.sigmoid(
      c @ params["W_gate"]
      + jax.lax.broadcast_to_rank(params["b_gate"], c.ndim))
  r, i = jnp.split(gates, 2, axis=-1)
  log_a = (-C * jax.lax.broadcast_to_rank(jax.nn.softplus(-params["Lambda"]),
                                          c.ndim) * r)
  multiplier = sqrt_bounded_derivative(-jnp.expm1(2.0 * log_a))
  return jnp.exp(log_a), multiplier * (i * c)


def rglru_output(params: cells.Params, y_pre: jax.Array,
                 h: jax.Array) -> jax.Array:
  """``(GeLU(y_pre) * h) W_out + b_out``, ``[..., H]``, any leading axes."""
  return ((jax.nn.gelu(y_pre) * h) @ params["W_out"]
          + jax.lax.broadcast_to_rank(params["b_out"], h.ndim))


def _conv_step(params: cells.Params, conv_Bx3xR: jax.Array,
               v_BxR: jax.Array):
  """``(the conv's next carry, c_BxR)`` for one new input ``v``."""
  window_Bx4xR = jnp.concatenate([conv_Bx3xR, v_BxR[:, None, :]], axis=1)
  c_BxR = (jnp.sum(window_Bx4xR * params["conv_w"][None], axis=1)
           + params["conv_b"][None, :])
  return window_Bx4xR[:, 1:], c_BxR


def _recur(params: cells.Params, carry, u_Bx2R: jax.Array):
  """The carry after one step, and the gate branch's ``y_pre``."""
  conv_Bx3xR, h_BxR = carry
  y_pre_BxR, v_BxR = jnp.split(u_Bx2R, 2, axis=-1)
  conv_Bx3xR, c_BxR = _conv_step(params, conv_Bx3xR, v_BxR)
  a_BxR, b_BxR = rglru_coefficients(params, c_BxR)
  return (conv_Bx3xR, a_BxR * h_BxR + b_BxR), y_pre_BxR


def rglru_step(params: cells.Params, carry, u_Bx2R: jax.Array):
  """One step on a projected input (see :func:`rglru_project`)."""
  carry, y_pre_BxR = _recur(params, carry, u_Bx2R)
  return carry, rglru_output(params, y_pre_BxR, carry[1])


def rglru_last(params: cells.Params, carry0, u_TxBx2R: jax.Array):
  """Scanning :func:`rglru_step` and keeping the last output (``Cell.last``):
  the scan carries the state alone, the output runs once, at the end."""
  carry, _ = jax.lax.scan(lambda c, u: (_recur(params, c, u)[0], None),
                          carry0, u_TxBx2R)
  y_pre_BxR = jnp.split(u_TxBx2R[-1], 2, axis=-1)[0]
  return carry, rglru_output(params, y_pre_BxR, carry[1])


def _conv_sequence(params: cells.Params, conv_Bx3xR: jax.Array,
                   v_TxBxR: jax.Array):
  """The causal conv over a whole sequence after the carried inputs:
  ``(the last three inputs [B, 3, R], c_TxBxR)``."""
  steps = v_TxBxR.shape[0]
  padded = jnp.concatenate([jnp.swapaxes(conv_Bx3xR, 0, 1), v_TxBxR], axis=0)
  w_Kx1x1xR = params["conv_w"][:, None, None, :]
  c_TxBxR = params["conv_b"][None, None, :]
  for k in range(CONV_WIDTH):
    c_TxBxR = c_TxBxR + padded[k:k + steps] * w_Kx1x1xR[k]
  return jnp.swapaxes(padded[-(CONV_WIDTH - 1):], 0, 1), c_TxBxR


def _linear_scan(a_TxBxR: jax.Array, b_TxBxR: jax.Array,
                 h0_BxR: jax.Array) -> jax.Array:
  """Every ``h_t`` of ``h_t = a_t h_{t-1} + b_t``: pairs compose
  associatively, ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``."""
  b_TxBxR = b_TxBxR.at[0].add(a_TxBxR[0] * h0_BxR)

  def compose(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2

  return jax.lax.associative_scan(compose, (a_TxBxR, b_TxBxR), axis=0)[1]


def _recur_sequence(params: cells.Params, carry0, u_TxBx2R: jax.Array):
  """``(final carry, h_TxBxR, y_pre_TxBxR)`` for a whole sequence."""
  conv0_Bx3xR, h0_BxR = carry0
  y_pre_TxBxR, v_TxBxR = jnp.split(u_TxBx2R, 2, axis=-1)
  conv_Bx3xR, c_TxBxR = _conv_sequence(params, conv0_Bx3xR, v_TxBxR)
  h_TxBxR = _linear_scan(*rglru_coefficients(params, c_TxBxR), h0_BxR)
  return (conv_Bx3xR, h_TxBxR[-1]), h_TxBxR, y_pre_TxBxR


def rglru_sequence(params: cells.Params, carry0, u_TxBx2R: jax.Array):
  """The block over a whole projected sequence (``Cell.sequence``), equal
  to scanning :func:`rglru_step`: ``(final carry, out_TxBxH)``."""
  carry, h_TxBxR, y_pre_TxBxR = _recur_sequence(params, carry0, u_TxBx2R)
  return carry, rglru_output(params, y_pre_TxBxR, h_TxBxR)


def rglru_sequence_last(params: cells.Params, carry0, u_TxBx2R: jax.Array):
  """:func:`rglru_sequence`'s final carry and last output (``Cell.last``):
  the output block runs on the last step only."""
  carry, _, y_pre_TxBxR = _recur_sequence(params, carry0, u_TxBx2R)
  return carry, rglru_output(params, y_pre_TxBxR[-1], carry[1])


def make_cell(parallel: bool = False) -> cells.Cell:
  """The recurrent block; with ``parallel``, the associative scan over time."""
  return cells.Cell(rglru_init, rglru_step, rglru_initial_carry,
                    rglru_project,
                    sequence=rglru_sequence if parallel else None,
                    last=rglru_sequence_last if parallel else rglru_last,
                    mlp_expand=MLP_EXPAND)


cells.register("rglru", make_cell())
cells.register("rglru_parallel", make_cell(parallel=True), keys_of="rglru")
