"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024), registered as
``"gated_deltanet"`` and ``"gated_deltanet_parallel"``.

Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with
Delta Rule" (ICLR 2025), as its official code (NVlabs/GatedDeltaNet,
``lit_gpt/gated_delta_net.py``). Linear attention whose state, per head, is a
matrix ``S_t`` in ``R^{d_v x d_k}`` (the paper's convention: ``S_t k`` reads
a value; the official kernels store the transpose) written by the paper's
gated delta rule::

    S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T
        = alpha_t S_{t-1} + beta_t (v_t - alpha_t S_{t-1} k_t) k_t^T
    o_t = S_t q_t

``alpha_t`` in (0, 1) decays every association (Mamba2's gate); the delta
rule replaces the value stored under ``k_t`` by ``v_t`` at the rate
``beta_t`` in (0, 1). Widths: ``D`` the input, ``H`` the output
(``hidden_dim``), ``n`` heads of key width ``d_k`` and value width ``d_v``,
``K = n d_k``, ``V = n d_v``. Per step, on an input ``x_t [D]``::

    q, k, v = SiLU(causal depthwise conv_4(x W_q | x W_k | x W_v))  no bias
    q = L2norm(q) / sqrt(d_k),  k = L2norm(k)                     per head
    alpha = exp(-exp(A_log) softplus(x W_a + dt_bias))            [n]
    beta = sigmoid(x W_b + b_beta)                                [n]
    out = (RMSNorm(o) * w * SiLU(x W_g)) W_out                    per head

The ``1/sqrt(d_k)`` on ``q`` is the official kernels' ``scale`` (the paper's
equations omit it; the RMSNorm that follows cancels it but for its eps).
The L2 norm is ``x / sqrt(|x|^2 + 1e-6)`` and the RMSNorm's eps is 1e-5,
as the official code (fla's kernels). The paper's model follows each of
these blocks with a SwiGLU MLP, 6144 wide at ``n_embd = 1536`` in its 0.4B
config: ``mlp_expand = 4`` (its 1.3B config: 5888 at 2400, 2.45). The
residual model's gated MLP is a GeGLU (:func:`palindrome_jax.model.gated_mlp`),
not a SwiGLU.

Sizes: the official block's ``expand_k = 0.75``, ``expand_v = 1.5``, so
``d_k = int(0.75 H) // n``, ``d_v = int(1.5 H) // n`` (at least 1). Heads:
``n = 4``, a choice made here (the official 9 heads of ``d_k = 128`` suit a
1536 width, not this task's 32 to 128), so at ``H = 128``: ``d_k = 24``,
``d_v = 48``. About ``6 H^2`` parameters in a residual layer (``D = H``), as the
paper's block (Mamba2's budget).

Initialisation as the official code with its model's ``mamba_init``, which
keeps PyTorch's defaults: the projections and ``W_out`` uniform in
``±1/sqrt(fan_in)`` (:func:`palindrome_jax.cells.uniform_fan_in`), the
conv's weights uniform in ``±1/sqrt(4)``, biases zero (only ``b_proj``, the
``beta`` gate, has one); ``A = exp(A_log)`` uniform in ``(0, 16]`` (bounded
below by 1e-4 here, to keep its log finite); ``softplus(dt_bias)``
log-uniform in ``[1e-3, 1e-1]``; the norm's ``w`` ones. The official
layer also creates a ``D [n]`` that it never uses; it is left out here.

The carry is ``(conv_Bx3xQ, S_BxnxVxK)`` with ``Q = 2K + V`` channels: the
conv's last three raw inputs (oldest first) and the state. All of the block
that is linear in the input (``W_q, W_k, W_v, W_g, W_a, W_b`` and ``beta``'s
bias) is one matmul, the cell's ``project``.

:func:`gated_deltanet_step` is the recurrent form, registered as
``"gated_deltanet"``. :func:`gated_deltanet_sequence` is the paper's
chunkwise-parallel form, ``"gated_deltanet_parallel"``: the steps are cut
into chunks of 64; within a chunk the delta rule's
updates are unrolled into the WY representation, whose lower-triangular
system ``(I + A) U = ...`` is solved at once (the UT transform, Joffrain et
al. 2006), and only the state passes from chunk to chunk. Decays enter
through their logs: every ``alpha`` product is ``exp`` of a non-positive
sum of ``log alpha``, never a ratio of products (which underflow).
"""

import functools
import math

import jax
import jax.numpy as jnp

from palindrome_jax import cells

NUM_HEADS = 4
EXPAND_K = 0.75
EXPAND_V = 1.5
CONV_WIDTH = 4
CHUNK_SIZE = 64
A_MAX = 16.0
DT_MIN = 1e-3
DT_MAX = 1e-1
DT_INIT_FLOOR = 1e-4
L2_EPS = 1e-6
NORM_EPS = 1e-5
MLP_EXPAND = 4.0


def head_dims(hidden_dim: int, num_heads: int = NUM_HEADS,
              expand_k: float = EXPAND_K,
              expand_v: float = EXPAND_V) -> tuple[int, int]:
  """``(d_k, d_v)``: each head's key and value widths at ``hidden_dim``."""
  return (max(1, int(expand_k * hidden_dim) // num_heads),
          max(1, int(expand_v * hidden_dim) // num_heads))


def gated_deltanet_init(key: jax.Array, input_dim: int, hidden_dim: int,
                        num_heads: int = NUM_HEADS,
                        expand_k: float = EXPAND_K,
                        expand_v: float = EXPAND_V,
                        conv_width: int = CONV_WIDTH) -> cells.Params:
  """Gated DeltaNet block parameters, initialised as the official code.

  ``W_in [D, 2K + 2V + 2n]`` (columns ``q | k | v | g | a | b``),
  ``b_beta [n]``, ``conv_w [4, Q]`` with ``Q = 2K + V`` (``conv_w[3]``
  weighs the newest input), ``A_log [n]``, ``dt_bias [n]``, ``norm [d_v]``
  and ``W_out [V, H]``.
  """
  n = num_heads
  d_k, d_v = head_dims(hidden_dim, n, expand_k, expand_v)
  width_k, width_v = n * d_k, n * d_v
  keys = jax.random.split(key, 5)
  a = jax.random.uniform(keys[2], (n,), jnp.float32, 1e-4, A_MAX)
  log_dt = jax.random.uniform(keys[3], (n,), jnp.float32, math.log(DT_MIN),
                              math.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_INIT_FLOOR)
  return {
      "W_in": cells.uniform_fan_in(
          keys[0], (input_dim, 2 * width_k + 2 * width_v + 2 * n)),
      "b_beta": jnp.zeros((n,), jnp.float32),
      "conv_w": cells.uniform_fan_in(keys[1],
                                     (conv_width, 2 * width_k + width_v)),
      "A_log": jnp.log(a),
      # The inverse of softplus, so that softplus(dt_bias) = dt.
      "dt_bias": dt + jnp.log(-jnp.expm1(-dt)),
      "norm": jnp.ones((d_v,), jnp.float32),
      "W_out": cells.uniform_fan_in(keys[4], (width_v, hidden_dim)),
  }


def _sizes(params: cells.Params) -> tuple[int, int, int]:
  """``(n, d_k, d_v)`` from the parameters' shapes."""
  n, d_v = params["A_log"].shape[0], params["norm"].shape[0]
  d_k = (params["conv_w"].shape[1] - n * d_v) // (2 * n)
  return n, d_k, d_v


def make_initial_carry(num_heads: int = NUM_HEADS,
                       expand_k: float = EXPAND_K,
                       expand_v: float = EXPAND_V,
                       conv_width: int = CONV_WIDTH):
  """``initial_carry(batch_size, hidden_dim)`` of a block of these sizes."""
  def initial_carry(batch_size: int, hidden_dim: int):
    d_k, d_v = head_dims(hidden_dim, num_heads, expand_k, expand_v)
    channels = num_heads * (2 * d_k + d_v)
    return (jnp.zeros((batch_size, conv_width - 1, channels), jnp.float32),
            jnp.zeros((batch_size, num_heads, d_v, d_k), jnp.float32))
  return initial_carry


def gated_deltanet_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``x W_in`` plus the ``beta`` gate's bias, ``[..., 2K + 2V + 2n]``, for
  any leading axes: the part of the block linear in its input."""
  n = params["b_beta"].shape[0]
  bias = jnp.concatenate([jnp.zeros((params["W_in"].shape[1] - n,),
                                    params["b_beta"].dtype), params["b_beta"]])
  return x @ params["W_in"] + jax.lax.broadcast_to_rank(bias, x.ndim)


def _split(params: cells.Params, u: jax.Array):
  """``(qkv, g, a, b)`` of a projected input: the conv's ``Q`` channels, the
  output gate, the decay's and ``beta``'s pre-activations."""
  n, d_k, d_v = _sizes(params)
  channels = n * (2 * d_k + d_v)
  return jnp.split(u, [channels, channels + n * d_v,
                       channels + n * d_v + n], axis=-1)


def l2_normalize(x: jax.Array) -> jax.Array:
  """``x / sqrt(|x|^2 + eps)`` over the last axis (fla's ``l2norm``)."""
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)
                           + L2_EPS)


def _features(params: cells.Params, c: jax.Array, a: jax.Array,
              b: jax.Array):
  """``(q, k, v, log alpha, beta)`` per head from the conv's output ``c
  [..., Q]``: ``[..., n, d_k]`` twice, ``[..., n, d_v]``, ``[..., n]``
  twice. ``log alpha = -exp(A_log) softplus(a + dt_bias) < 0``."""
  n, d_k, d_v = _sizes(params)
  lead = c.shape[:-1]
  q, k, v = jnp.split(jax.nn.silu(c), [n * d_k, 2 * n * d_k], axis=-1)
  q = l2_normalize(q.reshape(lead + (n, d_k))) / math.sqrt(d_k)
  k = l2_normalize(k.reshape(lead + (n, d_k)))
  v = v.reshape(lead + (n, d_v))
  log_alpha = -(jax.lax.broadcast_to_rank(jnp.exp(params["A_log"]), a.ndim)
                * jax.nn.softplus(
                    a + jax.lax.broadcast_to_rank(params["dt_bias"], a.ndim)))
  return q, k, v, log_alpha, jax.nn.sigmoid(b)


def _output(params: cells.Params, o: jax.Array, g: jax.Array) -> jax.Array:
  """``(RMSNorm(o) * w * SiLU(g)) W_out`` per head, ``o [..., n, d_v]``,
  ``g [..., V]``, for any leading axes."""
  o = (o * jax.lax.rsqrt(jnp.mean(jnp.square(o), axis=-1, keepdims=True)
                         + NORM_EPS)
       * jax.lax.broadcast_to_rank(params["norm"], o.ndim))
  o = o.reshape(g.shape) * jax.nn.silu(g)
  return o @ params["W_out"]


def delta_rule_step(s: jax.Array, k: jax.Array, v: jax.Array,
                    alpha: jax.Array, beta: jax.Array) -> jax.Array:
  """The gated delta rule, ``alpha S + beta (v - alpha S k) k^T``, for ``S
  [..., d_v, d_k]``, ``k [..., d_k]``, ``v [..., d_v]``, ``alpha``, ``beta``
  ``[...]``."""
  sk = jnp.einsum("...vk,...k->...v", s, k)
  delta = beta[..., None] * (v - alpha[..., None] * sk)
  return alpha[..., None, None] * s + delta[..., None] * k[..., None, :]


def _advance(params: cells.Params, carry, u_BxP: jax.Array):
  """One step of the conv and the state: ``(carry, (q, g))``."""
  conv_BxWxQ, s_BxnxVxK = carry
  qkv_BxQ, g_BxV, a_Bxn, b_Bxn = _split(params, u_BxP)
  window_BxWxQ = jnp.concatenate([conv_BxWxQ, qkv_BxQ[:, None, :]], axis=1)
  c_BxQ = jnp.sum(window_BxWxQ * params["conv_w"][None], axis=1)
  q, k, v, log_alpha, beta = _features(params, c_BxQ, a_Bxn, b_Bxn)
  s_BxnxVxK = delta_rule_step(s_BxnxVxK, k, v, jnp.exp(log_alpha), beta)
  return (window_BxWxQ[:, 1:], s_BxnxVxK), (q, g_BxV)


def gated_deltanet_step(params: cells.Params, carry, u_BxP: jax.Array):
  """One step on a projected input (see :func:`gated_deltanet_project`):
  ``(carry, out_BxH)``."""
  carry, (q_BxnxK, g_BxV) = _advance(params, carry, u_BxP)
  o_BxnxV = jnp.einsum("bnvk,bnk->bnv", carry[1], q_BxnxK)
  return carry, _output(params, o_BxnxV, g_BxV)


def gated_deltanet_last(params: cells.Params, carry0, u_TxBxP: jax.Array):
  """Scanning :func:`gated_deltanet_step`, the final carry and last output
  only (``Cell.last``): the steps before the last update the conv and the
  state alone, without the read-out, the norm, the gate and ``W_out``."""
  carry, _ = jax.lax.scan(lambda c, u: (_advance(params, c, u)[0], None),
                          carry0, u_TxBxP[:-1])
  return gated_deltanet_step(params, carry, u_TxBxP[-1])


@jax.custom_vjp
def unit_lower_solve(a, b):
  """``X`` with ``(I + A) X = B`` for ``A [..., C, C]`` strictly lower
  triangular (its diagonal and upper part are not read), ``B [..., C, m]``.

  One triangular solve forward and one backward, never two side by side: on a
  CPU each is a LAPACK call that waits on its batch's tasks in XLA's
  intra-op pool, and two independent ones can take every thread of a small
  pool and wait for each other for ever (a 2-core machine hung on about one
  gradient step in five at T=200, B=16). JAX's own rule solves the backward
  twice, independently (once for ``B``'s gradient, once for ``A``'s); this
  one reuses the first.
  """
  return _unit_lower_solve_fwd(a, b)[0]


def _unit_lower_solve_fwd(a, b):
  x = jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=True,
                                      unit_diagonal=True)
  return x, (a, x)


def _unit_lower_solve_bwd(residuals, g_x):
  a, x = residuals
  g_b = jax.lax.linalg.triangular_solve(a, g_x, left_side=True, lower=True,
                                        transpose_a=True, unit_diagonal=True)
  strict = jnp.tril(jnp.ones(a.shape[-2:], bool), -1)
  g_a = jnp.where(strict, -jnp.einsum("...rm,...im->...ri", g_b, x), 0.0)
  return g_a.astype(a.dtype), g_b


unit_lower_solve.defvjp(_unit_lower_solve_fwd, _unit_lower_solve_bwd)


def chunkwise_delta_rule(q, k, v, log_alpha, beta, s0, chunk_size: int):
  """The gated delta rule over a sequence, chunk by chunk.

  ``q, k [T, B, n, d_k]``, ``v [T, B, n, d_v]``, ``log_alpha, beta [T, B,
  n]``, ``s0 [B, n, d_v, d_k]``; returns ``(S_T, o [T, B, n, d_v])``, equal
  to ``T`` steps of :func:`delta_rule_step`. Within a chunk (positions
  ``r``, ``G_r`` the sum of ``log alpha`` up to and including ``r``, ``S_0``
  the state before it), ``S_r = e^{G_r} S_0 + sum_{i<=r} e^{G_r - G_i} u_i
  k_i^T`` with pseudo-values ``u_r = beta_r (v_r - alpha_r S_{r-1} k_r)``,
  i.e. ``(I + A) U = diag(beta) V - diag(beta e^G) K S_0^T`` with ``A_ri =
  beta_r e^{G_r - G_i} k_r . k_i`` for ``i < r``. So ``U = U~ - W S_0^T``
  with ``W = M diag(beta e^G) K``, ``U~ = M diag(beta) V``, ``M = (I +
  A)^{-1}`` (one triangular solve for all chunks at once), and ``o_r = e^{G_r}
  S_0 q_r + sum_{i<=r} e^{G_r - G_i} (k_i . q_r) u_i``. The last chunk is
  padded with steps that change nothing (``k = v = q = 0``, ``beta = 0``,
  ``alpha = 1``).
  """
  steps = q.shape[0]
  size = min(chunk_size, steps)
  num_chunks = -(-steps // size)
  pad = num_chunks * size - steps

  def chunks(x):  # [T, B, n, ...] -> [N, B, n, C, ...]
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    x = x.reshape((num_chunks, size) + x.shape[1:])
    return jnp.moveaxis(x, 1, 3)

  q, k, v, log_alpha, beta = map(chunks, (q, k, v, log_alpha, beta))
  g_cum = jnp.cumsum(log_alpha, axis=-1)  # [N, B, n, C], non-increasing.
  causal_CxC = jnp.tril(jnp.ones((size, size), bool))
  strict_CxC = jnp.tril(jnp.ones((size, size), bool), -1)
  causal, strict = (jax.lax.broadcast_to_rank(m, g_cum.ndim + 1)
                    for m in (causal_CxC, strict_CxC))
  # e^{G_r - G_i} for i <= r, else 0; the exponent is masked before exp, so
  # neither the value nor its gradient meets an overflow.
  diff = g_cum[..., :, None] - g_cum[..., None, :]
  decay = jnp.where(causal, jnp.exp(jnp.where(causal, diff, 0.0)), 0.0)
  a = jnp.where(strict, beta[..., :, None] * decay
                * jnp.einsum("...rd,...id->...ri", k, k), 0.0)
  # Both right-hand sides in one solve (see unit_lower_solve).
  d_k = k.shape[-1]
  w_u = unit_lower_solve(a, jnp.concatenate(
      [(beta * jnp.exp(g_cum))[..., None] * k, beta[..., None] * v], axis=-1))
  w, u_tilde = w_u[..., :d_k], w_u[..., d_k:]
  attn = decay * jnp.einsum("...rd,...id->...ri", q, k)
  to_end = jnp.exp(g_cum[..., -1:] - g_cum)  # e^{G_C - G_i} <= 1.

  def body(s, xs):
    w_c, u_tilde_c, q_c, k_c, attn_c, g_c, to_end_c = xs
    u_c = u_tilde_c - jnp.einsum("bnck,bnvk->bncv", w_c, s)
    o_c = (jnp.exp(g_c)[..., None] * jnp.einsum("bnck,bnvk->bncv", q_c, s)
           + jnp.einsum("bnri,bniv->bnrv", attn_c, u_c))
    s = (jnp.exp(g_c[..., -1])[..., None, None] * s
         + jnp.einsum("bnc,bncv,bnck->bnvk", to_end_c, u_c, k_c))
    return s, o_c

  s, o = jax.lax.scan(body, s0, (w, u_tilde, q, k, attn, g_cum, to_end))
  o = jnp.moveaxis(o, 3, 1)  # [N, C, B, n, d_v]
  return s, o.reshape((num_chunks * size,) + o.shape[2:])[:steps]


def _parallel_states(params: cells.Params, carry0, u_TxBxP: jax.Array,
                     chunk_size: int):
  """Every step at once: ``(final carry, o_TxBxnxV, g_TxBxV)``."""
  conv_BxWxQ, s0 = carry0
  qkv_TxBxQ, g_TxBxV, a_TxBxn, b_TxBxn = _split(params, u_TxBxP)
  steps, width = qkv_TxBxQ.shape[0], params["conv_w"].shape[0]
  padded = jnp.concatenate([jnp.swapaxes(conv_BxWxQ, 0, 1), qkv_TxBxQ], 0)
  c_TxBxQ = sum(params["conv_w"][j][None, None, :] * padded[j:j + steps]
                for j in range(width))
  q, k, v, log_alpha, beta = _features(params, c_TxBxQ, a_TxBxn, b_TxBxn)
  s, o_TxBxnxV = chunkwise_delta_rule(q, k, v, log_alpha, beta, s0,
                                      chunk_size)
  return (jnp.swapaxes(padded[steps:], 0, 1), s), o_TxBxnxV, g_TxBxV


def gated_deltanet_sequence(params: cells.Params, carry0, u_TxBxP: jax.Array,
                            chunk_size: int = CHUNK_SIZE):
  """The block over a whole projected sequence at once, from ``carry0``
  (``Cell.sequence``): equal to scanning :func:`gated_deltanet_step`,
  ``(final carry, out_TxBxH)``. The conv runs on the carry's last three
  inputs followed by the sequence; the state by
  :func:`chunkwise_delta_rule`."""
  carry, o, g = _parallel_states(params, carry0, u_TxBxP, chunk_size)
  return carry, _output(params, o, g)


def gated_deltanet_sequence_last(params: cells.Params, carry0,
                                 u_TxBxP: jax.Array,
                                 chunk_size: int = CHUNK_SIZE):
  """:func:`gated_deltanet_sequence`'s final carry and last output only
  (``Cell.last``): the output block runs on the last step alone."""
  carry, o, g = _parallel_states(params, carry0, u_TxBxP, chunk_size)
  return carry, _output(params, o[-1], g[-1])


def make_cell(num_heads: int = NUM_HEADS, expand_k: float = EXPAND_K,
              expand_v: float = EXPAND_V, conv_width: int = CONV_WIDTH,
              parallel: bool = False,
              chunk_size: int = CHUNK_SIZE) -> cells.Cell:
  """A Gated DeltaNet block of these sizes; with ``parallel``, run over time
  by :func:`gated_deltanet_sequence` in chunks of ``chunk_size`` (same
  numbers). A SwiGLU-sized gated MLP follows it in a residual layer
  (``mlp_expand=4``, the paper's 0.4B model)."""
  if num_heads < 1 or conv_width < 1 or chunk_size < 1:
    raise ValueError(f"need num_heads, conv_width, chunk_size >= 1, got "
                     f"{num_heads}, {conv_width}, {chunk_size}")
  init = functools.partial(gated_deltanet_init, num_heads=num_heads,
                           expand_k=expand_k, expand_v=expand_v,
                           conv_width=conv_width)
  sequence = functools.partial(gated_deltanet_sequence, chunk_size=chunk_size)
  sequence_last = functools.partial(gated_deltanet_sequence_last,
                                    chunk_size=chunk_size)
  return cells.Cell(init, gated_deltanet_step,
                    make_initial_carry(num_heads, expand_k, expand_v,
                                       conv_width),
                    gated_deltanet_project,
                    sequence=sequence if parallel else None,
                    last=sequence_last if parallel else gated_deltanet_last,
                    mlp_expand=MLP_EXPAND)


cells.register("gated_deltanet", make_cell())
cells.register("gated_deltanet_parallel", make_cell(parallel=True),
               keys_of="gated_deltanet")
