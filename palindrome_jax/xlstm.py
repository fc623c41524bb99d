"""xLSTM's sLSTM and mLSTM blocks, registered as ``"slstm"``, ``"mlstm"`` and
``"mlstm_parallel"``.

Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter &
Hochreiter 2024, "xLSTM: Extended Long Short-Term Memory", as the official
code (``NX-AI/xlstm``: ``blocks/slstm``, ``blocks/mlstm``) where the paper
leaves a detail open. Both cells have exponential input gates and sigmoid
forget gates (``log f = log sigmoid(f~)``), stabilised by a state ``m`` in
log space (the paper's stabilisation, Section 2.2):

    m_t = max(log f_t + m_{t-1}, log i_t)
    i'_t = exp(log i_t - m_t),    f'_t = exp(log f_t + m_{t-1} - m_t)

so that ``i', f' <= 1``. The stabilised states are the plain ones times
``exp(-m_t)``; every output is a ratio in which that factor cancels, so the
outputs equal the plain, unstabilised formulas (``exp`` gates without ``m``)
for any ``m`` (the zero carry has ``m_0 = 0``; the sLSTM's first step from
it takes ``m_1 = log i_1``, see :func:`make_slstm`), while the plain
formulas overflow in float32 once ``log i`` passes about 88.

Both blocks map an input ``[B, D]`` to ``[B, H]`` (``H = hidden_dim``) with
``NUM_HEADS = 4`` heads. Their input width ``D`` may differ from ``H`` (a
scalar digit into the first layer); the paper's blocks have ``D = H``.
Where the official code initialises with the "embedding dimension", the
matrices that read the input use ``D`` and the others ``H``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import cells

NUM_HEADS = 4
NORM_EPS = 1e-5  # The official MultiHeadLayerNorm's (a per-head group norm).
SLSTM_MLP_EXPAND = 4 / 3  # The sLSTM block's post up-projection MLP.
MLSTM_EXPAND = 2  # The mLSTM block's pre up-projection factor.
CONV_WIDTH = 4
QKV_BLOCK = 4  # The official qkv_proj_blocksize: block-diagonal q, k, v.
FORGET_GATES = ("sigmoid", "exp")
FORGET_INITS = ("powerlaw", "linspace")


def small_init(key: jax.Array, shape: tuple[int, ...],
               dim: int) -> jax.Array:
  """Normal with std ``sqrt(2 / (5 dim))`` (Nguyen & Salazar 2019), the
  official code's ``small_init_init_``."""
  return math.sqrt(2 / (5 * dim)) * jax.random.normal(key, shape, jnp.float32)


def group_norm(scale: jax.Array, x: jax.Array, num_heads: int) -> jax.Array:
  """Layer norm within each head's features (the official
  ``MultiHeadLayerNorm``: a group norm with a weight and no bias), for any
  leading axes; ``x [..., NH * d]``, ``scale [NH * d]``."""
  heads = x.reshape(*x.shape[:-1], num_heads, -1)
  mean = jnp.mean(heads, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(heads - mean), axis=-1, keepdims=True)
  normed = ((heads - mean) * jax.lax.rsqrt(var + NORM_EPS)).reshape(x.shape)
  return normed * jax.lax.broadcast_to_rank(scale, x.ndim)


def _stabilised_gates(log_i: jax.Array, log_f: jax.Array, m: jax.Array):
  """``(i', f', m_t)`` from the log gates and ``m_{t-1}`` (module doc)."""
  m_new = jnp.maximum(log_f + m, log_i)
  return jnp.exp(log_i - m_new), jnp.exp(log_f + m - m_new), m_new


# sLSTM: scalar memory, memory mixing through block-diagonal recurrent
# matrices (the paper's Section 2.2) in the sLSTM block (post up-projection).


def slstm_forget_bias(head_dim: int, forget_init: str = "powerlaw"
                      ) -> np.ndarray:
  """One head's initial forget-gate bias ``[head_dim]``.

  ``"powerlaw"``: the official default (``powerlaw_blockdependent``) for the
  first block, ``5 - 12 (j / (d - 1))^0.3``, from 5 down to -7 (the official
  code raises the exponent to ``0.3 + 1.3 l / (L - 1)`` in block ``l`` of
  ``L``; a cell does not know its depth). ``"linspace"``: the official
  ``small_init``, ``linspace(3, 6)``, the mLSTM's forget init.
  """
  if forget_init == "linspace":
    return np.linspace(3.0, 6.0, head_dim)
  if forget_init != "powerlaw":
    raise ValueError(f"unknown forget_init {forget_init!r}; choose from "
                     f"{FORGET_INITS}")
  ratio = np.arange(head_dim) / max(head_dim - 1, 1)
  return 5.0 - 12.0 * ratio**0.3


def slstm_init(key: jax.Array, input_dim: int, hidden_dim: int,
               num_heads: int = NUM_HEADS,
               forget_init: str = "powerlaw") -> cells.Params:
  """sLSTM parameters (see :func:`make_slstm`).

  ``W [D, 4H]`` (columns ``i | f | z | o``, small init with ``D``), ``R [NH,
  d, 4, d]`` (head ``n``'s recurrent matrix from its ``d = H / NH`` outputs
  to its ``d`` units of each gate; zeros, the official
  ``recurrent_weight_init``), ``b [4H]`` (zeros but the forget gate's,
  :func:`slstm_forget_bias` in every head), ``norm [H]`` (ones).
  """
  if hidden_dim % num_heads:
    raise ValueError(f"hidden_dim {hidden_dim} is not a multiple of "
                     f"num_heads {num_heads}")
  head_dim = hidden_dim // num_heads
  forget = np.tile(slstm_forget_bias(head_dim, forget_init), num_heads)
  bias = np.zeros((4, hidden_dim))
  bias[1] = forget
  return {
      "W": small_init(key, (input_dim, 4 * hidden_dim), input_dim),
      "R": jnp.zeros((num_heads, head_dim, 4, head_dim), jnp.float32),
      "b": jnp.asarray(bias.reshape(-1), jnp.float32),
      "norm": jnp.ones((hidden_dim,), jnp.float32),
  }


def slstm_initial_carry(batch_size: int, hidden_dim: int):
  """``(h, c, n, m)``, each ``[B, H]``, all zeros."""
  return tuple(cells.zeros_carry(batch_size, hidden_dim) for _ in range(4))


def slstm_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``x W + b``, ``[..., 4H]``: the gates' input part, for any leading axes."""
  return x @ params["W"] + jax.lax.broadcast_to_rank(params["b"], x.ndim)


def _slstm_step(params: cells.Params, carry, u_Bx4H: jax.Array,
                forget_gate: str):
  h_BxH, c_BxH, n_BxH, m_BxH = carry
  num_heads, head_dim = params["R"].shape[:2]
  batch = h_BxH.shape[0]
  rec_Bx4xNxD = jnp.einsum("bnd,ndge->bgne",
                           h_BxH.reshape(batch, num_heads, head_dim),
                           params["R"])
  raw_Bx4H = u_Bx4H + rec_Bx4xNxD.reshape(batch, -1)
  log_i, f_raw, z_raw, o_raw = jnp.split(raw_Bx4H, 4, axis=-1)
  log_f = f_raw if forget_gate == "exp" else jax.nn.log_sigmoid(f_raw)
  # From the zero state, m_1 = log i_1 (the official code's rule): then
  # n_1 = 1 and n_t >= 1 after, so h = c / n never divides by a tiny n.
  # (m_0 = log i_1 - log f_1 gives it through the usual rule, with f'_1 = 1
  # on the zero state, where exp(log f_1 - log i_1) could overflow.)
  # Without it, m_1 = max(log f_1, log i_1) gives n_1 = i_1 / f_1, whose
  # square underflows float32 once log i_1 < -44: the gradient turned inf
  # and a run whose first input gates had closed that far diverged.
  m_BxH = jnp.where(n_BxH == 0, log_i - log_f, m_BxH)
  i_gate, f_gate, m_BxH = _stabilised_gates(log_i, log_f, m_BxH)
  c_BxH = f_gate * c_BxH + i_gate * jnp.tanh(z_raw)
  n_BxH = f_gate * n_BxH + i_gate
  h_BxH = jax.nn.sigmoid(o_raw) * c_BxH / n_BxH
  out_BxH = group_norm(params["norm"], h_BxH, num_heads)
  return (h_BxH, c_BxH, n_BxH, m_BxH), out_BxH


def slstm_step(params: cells.Params, carry, u_Bx4H: jax.Array):
  """One step on a projected input (:func:`slstm_project`), sigmoid forget
  gate: ``((h, c, n, m), GroupNorm(h))``."""
  return _slstm_step(params, carry, u_Bx4H, "sigmoid")


def make_slstm(num_heads: int = NUM_HEADS, forget_gate: str = "sigmoid",
               forget_init: str = "powerlaw") -> cells.Cell:
  """The sLSTM block's mixer (the paper's Section 2.2 and sLSTM block).

  Per step, on a projected input ``u_t = x_t W + b`` and the previous
  output ``h_{t-1}``, with the block-diagonal ``R`` (``NH`` heads: memory
  mixes within a head only)::

      i~ | f~ | z~ | o~ = u_t + h_{t-1} R               each [H]
      log i = i~,   log f = log sigmoid(f~)  (or f~ with forget_gate="exp")
      m_t, i', f' as in the module doc
      c_t = f' c_{t-1} + i' tanh(z~),    n_t = f' n_{t-1} + i'
      h_t = sigmoid(o~) c_t / n_t,       out_t = GroupNorm(h_t)  per head

  The carry is ``(h, c, n, m)``, each ``[B, H]``. The block's gated MLP
  (post up-projection, factor 4/3) is the residual model's: ``mlp_expand =
  4/3``. The sLSTM has recurrent connections, so it has no parallel form.

  Initialisation (official code): ``W`` small init, ``R`` zeros, biases zero
  but the forget gate's (:func:`slstm_forget_bias`), the norm's weight one.

  Deviations from the official block: its gates' input projections are
  block-diagonal per head (they need ``D = H``; a scalar input has ``D =
  1``), here one dense ``W`` as in the paper's equations; its optional
  causal conv (width 4, SiLU) before the input and forget gates is left
  out: its state would be ``[B, 3, D]`` and a cell's carry knows ``H``
  only. Where the state is zero (``n = 0``), ``m_1 = log i_1``, as the
  official code (per unit; the official code when every ``n`` is zero):
  ``n_1 = 1``, and ``n_t >= 1`` after. The outputs do not depend on ``m`` in
  exact arithmetic, but the usual rule from ``m_0 = 0`` gives ``n_1 = i_1 /
  f_1``, and once ``log i_1 < -44`` the gradient of ``c / n`` is inf in
  float32.
  """
  if forget_gate not in FORGET_GATES:
    raise ValueError(f"unknown forget_gate {forget_gate!r}; choose from "
                     f"{FORGET_GATES}")
  slstm_forget_bias(2, forget_init)  # Checks the name now, not at init.
  init = functools.partial(slstm_init, num_heads=num_heads,
                           forget_init=forget_init)
  step = (slstm_step if forget_gate == "sigmoid" else
          functools.partial(_slstm_step, forget_gate=forget_gate))
  return cells.Cell(init, step, slstm_initial_carry, slstm_project,
                    mlp_expand=SLSTM_MLP_EXPAND)


# mLSTM: matrix memory with a covariance update (the paper's Section 2.3) in
# the mLSTM block (pre up-projection; the official mLSTMLayer).


def mlstm_init(key: jax.Array, input_dim: int, hidden_dim: int,
               num_heads: int = NUM_HEADS) -> cells.Params:
  """mLSTM block parameters (see :func:`make_mlstm`); ``I = 2H``.

  ``W_up [D, 2I]`` (columns ``x | z``), ``conv_w [K, I]`` (``conv_w[K-1]``
  weighs the newest input) and ``conv_b [I]``, ``W_q``, ``W_k``, ``W_v``
  ``[I / 4, 4, 4]`` (block-diagonal, ``in x out`` per block), ``W_i``,
  ``W_f`` ``[3I, NH]`` and ``b_i``, ``b_f`` ``[NH]`` (the gates read ``q |
  k | v``), ``norm [I]``, ``skip [I]``, ``W_down [I, H]``.
  """
  inner = MLSTM_EXPAND * hidden_dim
  if inner % num_heads or inner % QKV_BLOCK:
    raise ValueError(f"the inner width 2 x {hidden_dim} is not a multiple "
                     f"of num_heads {num_heads} and {QKV_BLOCK}")
  keys = jax.random.split(key, 8)
  conv_bound = 1.0 / math.sqrt(CONV_WIDTH)  # fan_in of a depthwise filter.
  blocks = (inner // QKV_BLOCK, QKV_BLOCK, QKV_BLOCK)
  return {
      "W_up": small_init(keys[0], (input_dim, 2 * inner), input_dim),
      "conv_w": cells.uniform_fan_in(keys[1], (CONV_WIDTH, inner)),
      "conv_b": jax.random.uniform(keys[2], (inner,), jnp.float32,
                                   -conv_bound, conv_bound),
      "W_q": small_init(keys[3], blocks, hidden_dim),
      "W_k": small_init(keys[4], blocks, hidden_dim),
      "W_v": small_init(keys[5], blocks, hidden_dim),
      "W_i": jnp.zeros((3 * inner, num_heads), jnp.float32),
      "b_i": 0.1 * jax.random.normal(keys[6], (num_heads,), jnp.float32),
      "W_f": jnp.zeros((3 * inner, num_heads), jnp.float32),
      "b_f": jnp.linspace(3.0, 6.0, num_heads, dtype=jnp.float32),
      "norm": jnp.ones((inner,), jnp.float32),
      "skip": jnp.ones((inner,), jnp.float32),
      # wang_init with one block: std 2 / sqrt(H).
      "W_down": (2 / math.sqrt(hidden_dim)) * jax.random.normal(
          keys[7], (inner, hidden_dim), jnp.float32),
  }


def make_mlstm_initial_carry(num_heads: int = NUM_HEADS):
  """``initial_carry(batch_size, hidden_dim)`` of an mLSTM block with
  ``num_heads``: ``(conv [B, K-1, I], C [B, NH, d, d], n [B, NH, d], m [B,
  NH])``, ``d = I / NH``, all zeros."""
  def initial_carry(batch_size: int, hidden_dim: int):
    inner = MLSTM_EXPAND * hidden_dim
    head_dim = inner // num_heads
    return (jnp.zeros((batch_size, CONV_WIDTH - 1, inner), jnp.float32),
            jnp.zeros((batch_size, num_heads, head_dim, head_dim),
                      jnp.float32),
            jnp.zeros((batch_size, num_heads, head_dim), jnp.float32),
            jnp.zeros((batch_size, num_heads), jnp.float32))
  return initial_carry


mlstm_initial_carry = make_mlstm_initial_carry()


def mlstm_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``x W_up``, ``[..., 2I]`` (the ``x | z`` halves), for any leading axes:
  the part of the block linear in its input."""
  return x @ params["W_up"]


def _headwise(w: jax.Array, x: jax.Array) -> jax.Array:
  """The block-diagonal ``x W`` of ``w [I / 4, 4, 4]``, any leading axes."""
  blocks = x.reshape(*x.shape[:-1], w.shape[0], w.shape[1])
  return jnp.einsum("...ki,kio->...ko", blocks, w).reshape(x.shape)


def _qkv_gates(params: cells.Params, x: jax.Array, conv: jax.Array):
  """``(q, k, v, log i, log f)`` for any leading axes ``...``: ``q``, ``k``
  (scaled by ``1 / sqrt(d)``), ``v`` ``[..., NH, d]``, the log gates
  ``[..., NH]``. ``q``, ``k`` read the conv's output, ``v`` its input."""
  num_heads = params["b_i"].shape[0]
  q, k, v = (_headwise(params["W_q"], conv), _headwise(params["W_k"], conv),
             _headwise(params["W_v"], x))
  gates_in = jnp.concatenate([q, k, v], axis=-1)
  log_i = (gates_in @ params["W_i"]
           + jax.lax.broadcast_to_rank(params["b_i"], x.ndim))
  log_f = jax.nn.log_sigmoid(
      gates_in @ params["W_f"]
      + jax.lax.broadcast_to_rank(params["b_f"], x.ndim))
  heads = lambda a: a.reshape(*a.shape[:-1], num_heads, -1)
  q, k, v = heads(q), heads(k), heads(v)
  return q, k / math.sqrt(k.shape[-1]), v, log_i, log_f


def _readout(c: jax.Array, n: jax.Array, m: jax.Array,
             q: jax.Array) -> jax.Array:
  """``h~ = C q / max(|n . q|, exp(-m))``, ``[..., NH, d]``: the plain
  ``C q / max(|n . q|, 1)`` in the stabilised states' units."""
  numerator = jnp.einsum("...vk,...k->...v", c, q)
  denominator = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))
  return numerator / denominator[..., None]


def _mlstm_output(params: cells.Params, h: jax.Array, conv: jax.Array,
                  z: jax.Array) -> jax.Array:
  """``((GroupNorm(h~) + skip * conv) * SiLU(z)) W_down``, any leading
  axes; ``h [..., NH, d]``, ``conv``, ``z`` ``[..., I]``."""
  num_heads = h.shape[-2]
  h = group_norm(params["norm"], h.reshape(conv.shape), num_heads)
  h = h + jax.lax.broadcast_to_rank(params["skip"], conv.ndim) * conv
  return (h * jax.nn.silu(z)) @ params["W_down"]


def _mlstm_advance(params: cells.Params, carry, u_Bx2I: jax.Array):
  """One step of the conv and the memory: ``(carry, (q, conv, z))``."""
  conv_BxK1xI, c_BxNxVxK, n_BxNxK, m_BxN = carry
  x_BxI, z_BxI = jnp.split(u_Bx2I, 2, axis=-1)
  window_BxKxI = jnp.concatenate([conv_BxK1xI, x_BxI[:, None, :]], axis=1)
  conv_BxI = jax.nn.silu(jnp.sum(window_BxKxI * params["conv_w"][None],
                                 axis=1) + params["conv_b"][None, :])
  q, k, v, log_i, log_f = _qkv_gates(params, x_BxI, conv_BxI)
  i_gate, f_gate, m_BxN = _stabilised_gates(log_i, log_f, m_BxN)
  c_BxNxVxK = (f_gate[..., None, None] * c_BxNxVxK
               + i_gate[..., None, None] * v[..., :, None] * k[..., None, :])
  n_BxNxK = f_gate[..., None] * n_BxNxK + i_gate[..., None] * k
  carry = (window_BxKxI[:, 1:], c_BxNxVxK, n_BxNxK, m_BxN)
  return carry, (q, conv_BxI, z_BxI)


def mlstm_step(params: cells.Params, carry, u_Bx2I: jax.Array):
  """One step on a projected input (:func:`mlstm_project`):
  ``(carry, out_BxH)``."""
  carry, (q, conv_BxI, z_BxI) = _mlstm_advance(params, carry, u_Bx2I)
  h_BxNxD = _readout(*carry[1:], q)
  return carry, _mlstm_output(params, h_BxNxD, conv_BxI, z_BxI)


def mlstm_last(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """Scanning :func:`mlstm_step`, the final carry and last output only
  (``Cell.last``): the steps before the last update the memory alone,
  without the readout, the norm, the gate and ``W_down``."""
  carry, _ = jax.lax.scan(
      lambda c, u: (_mlstm_advance(params, c, u)[0], None), carry0,
      u_TxBx2I[:-1])
  return mlstm_step(params, carry, u_TxBx2I[-1])


def _parallel_inputs(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """The conv over every step at once (on the carry's last ``K - 1`` inputs
  followed by the sequence) and what it feeds: ``(conv state after the
  last step, conv, z, (q, k, v, log i, log f))``, time-major."""
  conv_BxK1xI = carry0[0]
  x_TxBxI, z_TxBxI = jnp.split(u_TxBx2I, 2, axis=-1)
  steps = x_TxBxI.shape[0]
  padded = jnp.concatenate([jnp.swapaxes(conv_BxK1xI, 0, 1), x_TxBxI], axis=0)
  conv_TxBxI = jax.nn.silu(
      sum(params["conv_w"][k][None, None, :] * padded[k:k + steps]
          for k in range(CONV_WIDTH)) + params["conv_b"][None, None, :])
  return (jnp.swapaxes(padded[steps:], 0, 1), conv_TxBxI, z_TxBxI,
          _qkv_gates(params, x_TxBxI, conv_TxBxI))


def _log_weights(log_i_TxBxN: jax.Array, log_f_TxBxN: jax.Array,
                 m0_BxN: jax.Array):
  """The parallel form's log gate matrix and its stabiliser, ``[B, NH, ...]``.

  With ``F_t = sum_{s <= t} log f_s``, the input of step ``j`` enters the
  state after step ``t >= j`` with weight ``exp(log D_tj)``, ``log D_tj =
  F_t - F_j + log i_j`` (``-inf`` for ``j > t``), and the carry's state
  with ``exp(F_t + m_0)``. Returns ``(log D [B, NH, T, T], F + m_0 [B, NH,
  T], m [B, NH, T])``, ``m_t`` the row-wise max of both: unrolled, the
  recurrent stabiliser ``max(log f_t + m_{t-1}, log i_t)`` is exactly
  that max, so the two forms stabilise alike.
  """
  f_BxNxT = jnp.cumsum(jnp.moveaxis(log_f_TxBxN, 0, -1), axis=-1)
  log_i_BxNxT = jnp.moveaxis(log_i_TxBxN, 0, -1)
  steps = f_BxNxT.shape[-1]
  causal_TxT = jnp.tril(jnp.ones((steps, steps), bool))
  log_d = jnp.where(causal_TxT[None, None],
                    f_BxNxT[..., :, None] - f_BxNxT[..., None, :]
                    + log_i_BxNxT[..., None, :], -jnp.inf)
  log_carry = f_BxNxT + m0_BxN[..., None]
  m_BxNxT = jnp.maximum(jnp.max(log_d, axis=-1), log_carry)
  return log_d, log_carry, m_BxNxT


def _final_state(carry0, weights_BxNxT: jax.Array, carry_weight_BxN: jax.Array,
                 k: jax.Array, v: jax.Array):
  """``(C_T, n_T)``: the inputs' outer products and keys (``k``, ``v``
  ``[T, B, NH, d]``) weighted by the last row, plus the carry's."""
  _, c0_BxNxVxK, n0_BxNxK, _ = carry0
  c_BxNxVxK = (jnp.einsum("bnt,tbnv,tbnk->bnvk", weights_BxNxT, v, k)
               + carry_weight_BxN[..., None, None] * c0_BxNxVxK)
  n_BxNxK = (jnp.einsum("bnt,tbnk->bnk", weights_BxNxT, k)
             + carry_weight_BxN[..., None] * n0_BxNxK)
  return c_BxNxVxK, n_BxNxK


def mlstm_sequence(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """The block over a whole projected sequence at once, from ``carry0``.

  Equal to scanning :func:`mlstm_step` (``Cell.sequence``): returns ``(final
  carry, out_TxBxH)``. The paper's stabilised parallel form (its appendix's
  ``D`` matrix; the official ``parallel_stabilized_simple``), with the
  carry's state as one more term: with ``D~_tj = exp(log D_tj - m_t)`` (see
  :func:`_log_weights`) and ``w_t = exp(F_t + m_0 - m_t)``,

      h~_t = (sum_j D~_tj (q_t . k_j) v_j + w_t C_0 q_t) /
             max(|sum_j D~_tj (q_t . k_j) + w_t n_0 . q_t|, exp(-m_t))

  The official code has no carry and stabilises without its term; the
  outputs are the same either way. Costs ``O(T^2)`` per head: the ``[B,
  NH, T, T]`` matrices of an attention layer.
  """
  conv_state, conv_TxBxI, z_TxBxI, (q, k, v, log_i, log_f) = (
      _parallel_inputs(params, carry0, u_TxBx2I))
  log_d, log_carry, m_BxNxT = _log_weights(log_i, log_f, carry0[3])
  d_BxNxTxT = jnp.exp(log_d - m_BxNxT[..., None])
  w_BxNxT = jnp.exp(log_carry - m_BxNxT)
  scores_BxNxTxT = jnp.einsum("tbnd,sbnd->bnts", q, k) * d_BxNxTxT
  w_TxBxN = jnp.moveaxis(w_BxNxT, -1, 0)
  _, c0_BxNxVxK, n0_BxNxK, _ = carry0
  numerator = (jnp.einsum("bnts,sbnv->tbnv", scores_BxNxTxT, v)
               + w_TxBxN[..., None]
               * jnp.einsum("bnvk,tbnk->tbnv", c0_BxNxVxK, q))
  denominator = jnp.maximum(
      jnp.abs(jnp.moveaxis(jnp.sum(scores_BxNxTxT, axis=-1), -1, 0)
              + w_TxBxN * jnp.einsum("bnk,tbnk->tbn", n0_BxNxK, q)),
      jnp.exp(-jnp.moveaxis(m_BxNxT, -1, 0)))
  h_TxBxNxD = numerator / denominator[..., None]
  c_BxNxVxK, n_BxNxK = _final_state(carry0, d_BxNxTxT[..., -1, :],
                                    w_BxNxT[..., -1], k, v)
  carry = (conv_state, c_BxNxVxK, n_BxNxK, m_BxNxT[..., -1])
  return carry, _mlstm_output(params, h_TxBxNxD, conv_TxBxI, z_TxBxI)


def mlstm_sequence_last(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """:func:`mlstm_sequence`'s final carry and last output only
  (``Cell.last``): the last row of the gate matrix gives the final state in
  ``O(T)``, and the last output is read from it."""
  conv_state, conv_TxBxI, z_TxBxI, (q, k, v, log_i, log_f) = (
      _parallel_inputs(params, carry0, u_TxBx2I))
  f_TxBxN = jnp.cumsum(log_f, axis=0)
  # The last row of _log_weights: log D_Tj = F_T - F_j + log i_j.
  log_d_BxNxT = jnp.moveaxis(f_TxBxN[-1][None] - f_TxBxN + log_i, 0, -1)
  log_carry_BxN = f_TxBxN[-1] + carry0[3]
  m_BxN = jnp.maximum(jnp.max(log_d_BxNxT, axis=-1), log_carry_BxN)
  c_BxNxVxK, n_BxNxK = _final_state(
      carry0, jnp.exp(log_d_BxNxT - m_BxN[..., None]),
      jnp.exp(log_carry_BxN - m_BxN), k, v)
  carry = (conv_state, c_BxNxVxK, n_BxNxK, m_BxN)
  h_BxNxD = _readout(c_BxNxVxK, n_BxNxK, m_BxN, q[-1])
  return carry, _mlstm_output(params, h_BxNxD, conv_TxBxI[-1], z_TxBxI[-1])


def make_mlstm(num_heads: int = NUM_HEADS,
               parallel: bool = False) -> cells.Cell:
  """The mLSTM block (the paper's Section 2.3 and mLSTM block), ``I = 2H``.

  Per step, on a projected input ``u_t = x_t W_up`` (pre up-projection)::

      x_t | z_t = u_t                                          [I] each
      c_t = SiLU(sum_k w_k x_{t-K+1+k} + b)                    causal conv, K=4
      q_t, k_t = c_t W_q, c_t W_k / sqrt(d),  v_t = x_t W_v    [NH, d] each
      g_t = [q_t | c_t W_k | v_t]                              [3I]
      log i_t = g_t W_i + b_i,   log f_t = log sigmoid(g_t W_f + b_f)
      m_t, i', f' as in the module doc                         [NH] each
      C_t = f' C_{t-1} + i' v_t k_t^T,   n_t = f' n_{t-1} + i' k_t
      h~_t = C_t q_t / max(|n_t . q_t|, exp(-m_t))             per head
      out_t = ((GroupNorm(h~_t) + skip * c_t) * SiLU(z_t)) W_down

  ``C``, ``n`` are the stabilised states, so ``h~`` is the plain ``C q /
  max(|n . q|, 1)``. ``W_q``, ``W_k``, ``W_v`` are block-diagonal with 4 x
  4 blocks; the gates are one scalar per head, read from ``q``, the unscaled
  key and ``v`` (the official code). The carry is ``(conv [B, K-1, I], C [B,
  NH, d, d], n [B, NH, d], m [B, NH])``. The block has no MLP
  (``mlp_expand = 0``).
  With ``parallel`` the model runs :func:`mlstm_sequence`, the stabilised
  parallel form over the whole sequence (same numbers).

  Initialisation (the official code): ``W_up``, ``W_q``, ``W_k``, ``W_v``
  small init, ``W_down`` normal with std ``2 / sqrt(H)`` (its ``wang_init``
  of one block), the conv as PyTorch's default, the gates' weights zero,
  ``b_f = linspace(3, 6)`` over the heads, ``b_i ~ N(0, 0.1^2)``, the
  norm's weight and the skip one.

  Deviations: the output gate is the block's ``SiLU(z)`` branch, as in the
  official mLSTMLayer; the cell equations' sigmoid ``o_t`` is not added on
  top of it. The official readout adds ``1e-6`` to the denominator; here
  none (it is at least ``exp(-m_t) > 0``). ``W_down``'s std is ``2 /
  sqrt(H)`` whatever the depth (the official divides by the number of
  blocks; a cell does not know it).
  """
  init = functools.partial(mlstm_init, num_heads=num_heads)
  return cells.Cell(init, mlstm_step, make_mlstm_initial_carry(num_heads),
                    mlstm_project,
                    sequence=mlstm_sequence if parallel else None,
                    last=mlstm_sequence_last if parallel else mlstm_last,
                    mlp_expand=0.0)


cells.register("slstm", make_slstm())
cells.register("mlstm", make_mlstm())
cells.register("mlstm_parallel", make_mlstm(parallel=True), keys_of="mlstm")
