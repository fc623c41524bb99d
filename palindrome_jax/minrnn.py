"""minGRU and minLSTM (Feng et al. 2024), registered as ``"mingru"``,
``"minlstm"`` and their log-space parallel forms ``"mingru_parallel"``,
``"minlstm_parallel"``.

Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?".
The GRU and the LSTM with every dependence on ``h_{t-1}`` removed from their
gates and candidate, so each step is ``h_t = a_t * h_{t-1} + b_t`` with ``a``,
``b`` functions of ``x_t`` alone: a linear recurrence in time, parallel by a
scan. Per step, on an input ``x_t [D]``, state ``h [R]``::

    minGRU:   z_t = sigmoid(Linear_z(x_t)),  h~_t = g(Linear_h(x_t))
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM:  f_t = sigmoid(Linear_f(x_t)),  i_t = sigmoid(Linear_i(x_t))
              f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
              h_t = f'_t * h_{t-1} + i'_t * g(Linear_h(x_t))
    output:   out_t = Linear_out(h_t)                               [H]

``g(x) = x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below: the paper's
activation that keeps ``h~`` positive, so the parallel form can run in log
space (Appendix). The minLSTM's normalisation ``f' + i' = 1`` makes the
state's scale independent of the sequence's length (the paper's
"length-independence scaling"). The gates see only the current input, as in
the paper: mixing across steps comes from depth.

The layer is the paper's code's (BorealisAI/minRNNs, ``models/minRNNs.py``):
one fused ``Linear`` to the candidate and the gates, the scan over a state of
width ``R = expansion * H``, and a ``Linear`` back to ``H`` (its ``to_out``).
Here ``expansion = 1`` (``R = H``); :func:`make_cell` takes others. The
paper's equations stop at ``h_t``; ``to_out`` is what lets the layer's output
take either sign in a residual stream (``h`` is positive from a positive
start). All weights and biases are uniform in ``±1/sqrt(fan_in)``, PyTorch's
``nn.Linear`` default, which the paper's code keeps. The code's optional
learned initial state and forget-bias offset are not used. Its model wraps the
layer in a residual block with an optional conv before it and an optional
(ungated) MLP after it; neither is part of this cell, and ``mlp_expand`` is
0: the model's residual block adds no MLP.

The carry is ``h [B, R]``; the fused input ``Linear`` is the cell's
``project``, so both forms receive ``u_t = x_t W_in + b_in``. The sequential
form (:func:`mingru_step`, :func:`minlstm_step`) is the plain formula. The
parallel form (:func:`mingru_sequence`, :func:`minlstm_sequence`) takes the
paper's log-space coefficients, ``log a_t`` and ``log b_t`` (finite for any
parameters: softplus, never a log of a difference), and composes them with
``jax.lax.associative_scan`` in log space, ``(la1, lb1) then (la2, lb2) =
(la1 + la2, logaddexp(la2 + lb1, lb2))``: ``log A_t = sum log a``, ``log B_t =
log`` of the scan from zero. Unlike the paper's ``logcumsumexp(log b - a*) +
a*`` no two large logs are subtracted. The start enters outside the logs,
``h_t = A_t h_0 + B_t``, so the carry ``h_0`` may have any sign: the two
forms agree from any carry (the paper's form, ``log h_0`` in the scan, needs
``h_0 > 0``).
"""

import functools

import jax
import jax.numpy as jnp

from palindrome_jax import cells

EXPANSION = 1.0


def g(x: jax.Array) -> jax.Array:
  """The paper's positive activation: ``x + 0.5`` for ``x >= 0``, else
  ``sigmoid(x)`` (continuous at 0, where both are 0.5)."""
  return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: jax.Array) -> jax.Array:
  """``log g(x)`` without forming ``g``: ``log(x + 0.5)`` or
  ``-softplus(-x)``; the ``relu`` keeps the unused branch finite."""
  return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5),
                   -jax.nn.softplus(-x))


def inner_width(hidden_dim: int, expansion: float = EXPANSION) -> int:
  """The state's width ``R = round(expansion * hidden_dim)``."""
  return int(round(expansion * hidden_dim))


def _linear_init(key: jax.Array, fan_in: int, fan_out: int):
  """``(W [fan_in, fan_out], b [fan_out])`` uniform in ``±1/sqrt(fan_in)``,
  PyTorch's ``nn.Linear`` default."""
  key_w, key_b = jax.random.split(key)
  bound = fan_in ** -0.5
  return (cells.uniform_fan_in(key_w, (fan_in, fan_out)),
          jax.random.uniform(key_b, (fan_out,), jnp.float32, -bound, bound))


def min_init(key: jax.Array, input_dim: int, hidden_dim: int,
             num_parts: int, expansion: float = EXPANSION) -> cells.Params:
  """``W_in [D, P R]``, ``b_in [P R]`` (the parts ``h~ | gates``, ``P = 2``
  for minGRU, 3 for minLSTM), ``W_out [R, H]``, ``b_out [H]``."""
  inner = inner_width(hidden_dim, expansion)
  key_in, key_out = jax.random.split(key)
  w_in, b_in = _linear_init(key_in, input_dim, num_parts * inner)
  w_out, b_out = _linear_init(key_out, inner, hidden_dim)
  return {"W_in": w_in, "b_in": b_in, "W_out": w_out, "b_out": b_out}


def make_initial_carry(expansion: float = EXPANSION):
  """``initial_carry(batch_size, hidden_dim)``: the zero state ``[B, R]``."""
  def initial_carry(batch_size: int, hidden_dim: int) -> jax.Array:
    return cells.zeros_carry(batch_size, inner_width(hidden_dim, expansion))
  return initial_carry


def min_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``u = x W_in + b_in``, ``[..., P R]``, for any leading axes."""
  return x @ params["W_in"] + jax.lax.broadcast_to_rank(params["b_in"],
                                                         x.ndim)


def min_output(params: cells.Params, h: jax.Array) -> jax.Array:
  """``h W_out + b_out``, ``[..., H]``, for any leading axes."""
  return h @ params["W_out"] + jax.lax.broadcast_to_rank(params["b_out"],
                                                          h.ndim)


# The sequential forms: the plain formulas, one step on a projected input.


def mingru_coefficients(u: jax.Array):
  """``(a, b)`` of ``h_t = a h_{t-1} + b``: ``(1 - z, z g(h~))``."""
  hidden, gate = jnp.split(u, 2, axis=-1)
  z = jax.nn.sigmoid(gate)
  return 1.0 - z, z * g(hidden)


def minlstm_coefficients(u: jax.Array):
  """``(a, b)`` of ``h_t = a h_{t-1} + b``: ``(f', i' g(h~))``."""
  hidden, forget, inp = jnp.split(u, 3, axis=-1)
  f, i = jax.nn.sigmoid(forget), jax.nn.sigmoid(inp)
  return f / (f + i), i / (f + i) * g(hidden)


def _step(coefficients, params: cells.Params, h_BxR: jax.Array,
          u_BxPR: jax.Array):
  a_BxR, b_BxR = coefficients(u_BxPR)
  h_BxR = a_BxR * h_BxR + b_BxR
  return h_BxR, min_output(params, h_BxR)


mingru_step = functools.partial(_step, mingru_coefficients)
minlstm_step = functools.partial(_step, minlstm_coefficients)


def _last(coefficients, params: cells.Params, h0_BxR: jax.Array,
          u_TxBxPR: jax.Array):
  """Scanning the step and keeping the last output (``Cell.last``): the scan
  carries the state alone, ``Linear_out`` runs once on the last state."""
  def body(h_BxR, u_BxPR):
    a_BxR, b_BxR = coefficients(u_BxPR)
    return a_BxR * h_BxR + b_BxR, None

  h_BxR, _ = jax.lax.scan(body, h0_BxR, u_TxBxPR)
  return h_BxR, min_output(params, h_BxR)


# The parallel forms: log-space coefficients and a log-space scan.


def mingru_log_coefficients(u: jax.Array):
  """``(log a, log b)`` of :func:`mingru_coefficients`, as the paper's
  Appendix: ``log(1 - z) = -softplus(k)``, ``log z = -softplus(-k)``."""
  hidden, gate = jnp.split(u, 2, axis=-1)
  return -jax.nn.softplus(gate), -jax.nn.softplus(-gate) + log_g(hidden)


def minlstm_log_coefficients(u: jax.Array):
  """``(log a, log b)`` of :func:`minlstm_coefficients`, as the paper's
  Appendix: with ``d = softplus(-k_f) - softplus(-k_i) = log i - log f``,
  ``log f' = -softplus(d)`` and ``log i' = -softplus(-d)``."""
  hidden, forget, inp = jnp.split(u, 3, axis=-1)
  diff = jax.nn.softplus(-forget) - jax.nn.softplus(-inp)
  return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(hidden)


def log_space_scan(log_a_TxBxR: jax.Array, log_b_TxBxR: jax.Array,
                   h0_BxR: jax.Array) -> jax.Array:
  """Every ``h_t`` of ``h_t = a_t h_{t-1} + b_t`` (``a, b > 0`` given as
  logs, ``h_0`` of any sign), ``[T, B, R]``, in ``O(log T)`` depth."""
  def compose(earlier, later):
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_a2 + log_b1, log_b2)

  log_prod_TxBxR, log_from_zero_TxBxR = jax.lax.associative_scan(
      compose, (log_a_TxBxR, log_b_TxBxR), axis=0)
  return (jnp.exp(log_prod_TxBxR) * h0_BxR[None]
          + jnp.exp(log_from_zero_TxBxR))


def _sequence(log_coefficients, params: cells.Params, h0_BxR: jax.Array,
              u_TxBxPR: jax.Array):
  """The whole sequence at once (``Cell.sequence``): ``(h_T, out_TxBxH)``."""
  h_TxBxR = log_space_scan(*log_coefficients(u_TxBxPR), h0_BxR)
  return h_TxBxR[-1], min_output(params, h_TxBxR)


def _sequence_last(log_coefficients, params: cells.Params, h0_BxR: jax.Array,
                   u_TxBxPR: jax.Array):
  """:func:`_sequence`'s final state and last output only (``Cell.last``)."""
  h_BxR = log_space_scan(*log_coefficients(u_TxBxPR), h0_BxR)[-1]
  return h_BxR, min_output(params, h_BxR)


mingru_last = functools.partial(_last, mingru_coefficients)
minlstm_last = functools.partial(_last, minlstm_coefficients)
mingru_sequence = functools.partial(_sequence, mingru_log_coefficients)
minlstm_sequence = functools.partial(_sequence, minlstm_log_coefficients)
mingru_sequence_last = functools.partial(_sequence_last,
                                         mingru_log_coefficients)
minlstm_sequence_last = functools.partial(_sequence_last,
                                          minlstm_log_coefficients)

# kind: (parts of W_in, step, last, sequence, sequence_last).
_KINDS = {
    "mingru": (2, mingru_step, mingru_last, mingru_sequence,
               mingru_sequence_last),
    "minlstm": (3, minlstm_step, minlstm_last, minlstm_sequence,
                minlstm_sequence_last),
}


def make_cell(kind: str, expansion: float = EXPANSION,
              parallel: bool = False) -> cells.Cell:
  """A ``"mingru"`` or ``"minlstm"`` cell with state width ``expansion *
  hidden_dim``; with ``parallel``, the log-space scan over time."""
  if kind not in _KINDS:
    raise ValueError(f"kind must be one of {tuple(_KINDS)}, got {kind!r}")
  if expansion <= 0:
    raise ValueError(f"expansion must be > 0, got {expansion}")
  parts, step, last, sequence, sequence_last = _KINDS[kind]
  init = functools.partial(min_init, num_parts=parts, expansion=expansion)
  return cells.Cell(init, step, make_initial_carry(expansion), min_project,
                    sequence=sequence if parallel else None,
                    last=sequence_last if parallel else last)


cells.register("mingru", make_cell("mingru"))
cells.register("mingru_parallel", make_cell("mingru", parallel=True),
               keys_of="mingru")
cells.register("minlstm", make_cell("minlstm"))
cells.register("minlstm_parallel", make_cell("minlstm", parallel=True),
               keys_of="minlstm")
