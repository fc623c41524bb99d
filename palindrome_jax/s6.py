"""The Mamba block (Gu & Dao 2023): the cells ``"s6"`` and ``"s6_parallel"``.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces" (Algorithm 2, Section 3.4), as the reference ``mamba_simple.py``.
Widths: ``D`` the input, ``H`` the output (``hidden_dim``, the paper's
``d_model``), ``I = E H`` the inner width (expand ``E = 2``), ``N = 16`` the
state per channel, ``K = 4`` the conv width, ``R = ceil(H / 16)`` the rank
of the step size. Per step, on an input ``u_t [D]``::

    x_t, z_t = split(u_t W_in)                            W_in [D, 2I]
    c_t = SiLU(sum_k w_k x_{t-K+1+k} + b)                 causal depthwise conv
    dt_t | B_t | C_t = c_t W_x                            [R | N | N]
    Delta_t = softplus(dt_t W_dt + b_dt)                  [I], > 0
    h_t = exp(Delta_t A) h_{t-1} + (Delta_t c_t) B_t      [I, N]
    y_t = h_t C_t + D c_t                                 [I]
    out_t = (y_t * SiLU(z_t)) W_out                       W_out [I, H]

with ``A = -exp(A_log)`` ``[I, N]``. ``exp(Delta A)`` is the zero-order
hold of ``A``; ``Delta B`` is the paper's
simplified (Euler) hold of ``B``, as in the reference code. The decay
``exp(Delta A)`` lies in (0, 1) for any parameters (``Delta > 0``, ``A <
0``), so no stabilised form is needed.

Initialisation as the reference's: ``A`` the S4D-real ``A_n = -(n + 1)``
for every channel; ``D`` ones; ``softplus(b_dt)`` log-uniform in ``[1e-3,
1e-1]`` (floored at 1e-4, which that range never reaches), so ``b_dt =
dt + log(-expm1(-dt))``; ``W_dt`` uniform in ``±R^(-1/2)``; the conv's
weights and bias uniform in ``±1/sqrt(K)`` and ``W_in``, ``W_x``, ``W_out``
uniform in ``±1/sqrt(fan_in)``: PyTorch's default init, which the reference
keeps, the law of :func:`palindrome_jax.cells.uniform_fan_in` (drawn in one
go, see :func:`s6_init`). No biases in ``W_in``,
``W_out`` (``bias=False``). Deviations: the reference's language model
divides ``W_out`` by ``sqrt(num_layers)`` (GPT-2's residual rescaling); a
cell does not know the depth, so that is not done here. The input width
``D`` may differ from ``H`` (a scalar digit into the first layer): the
paper's block has ``D = H``.

The carry is ``(conv_Bx(K-1)xI, ssm_BxIxN)``: the last ``K - 1`` inputs of
the conv (oldest first) and the state ``h``. ``W_in`` is linear in the input,
so it is the cell's ``project``: both forms receive ``u_t W_in`` (what the
code calls ``u_Bx2I``).

:func:`s6_step` is the sequential (recurrent) form, registered as ``"s6"``.
:func:`s6_sequence` is the parallel form, ``"s6_parallel"``: the conv for all
steps at once and the diagonal linear recurrence ``h_t = a_t h_{t-1} + b_t``
by ``jax.lax.associative_scan`` over time. Its memory: it materialises ``a``
and ``b`` as ``[T, B, I, N]`` float32, 2.1 GB each at T=1000, B=128, H=128
(``I = 256``); with the scan's levels, XLA's compiled forward keeps 10.4 GB
of temporaries and its gradient 36 GB, against none and 2.6 GB for the
sequential form (whose step is rematerialised, see :func:`s6_step`; the
``memory_analysis`` of the CPU compilation of one layer on a 128-wide
input). The paper's kernel avoids both by scanning in SRAM and recomputing
the states in the backward pass. On a CPU the parallel form is the slower
(3x per gradient at T=20 and 100, B=128, H=128); its ``O(log T)`` depth is
for accelerators (not measured here), where the memory fits.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from palindrome_jax import cells

EXPAND = 2
D_STATE = 16
D_CONV = 4
DT_MIN = 1e-3
DT_MAX = 1e-1
DT_INIT_FLOOR = 1e-4


def dt_rank(hidden_dim: int) -> int:
  """The rank of the step size's projection: the reference's ``"auto"``."""
  return math.ceil(hidden_dim / 16)


def s6_init(key: jax.Array, input_dim: int, hidden_dim: int,
            expand: int = EXPAND, d_state: int = D_STATE,
            d_conv: int = D_CONV) -> cells.Params:
  """Mamba block parameters, initialised as the reference (module doc).

  ``in_proj [D, 2I]``, ``conv_w [K, I]`` (``conv_w[K-1]`` weighs the newest
  input), ``conv_b [I]``, ``x_proj [I, R + 2N]`` (columns ``dt | B | C``),
  ``dt_proj [R, I]``, ``dt_bias [I]``, ``A_log [I, N]``, ``D [I]``,
  ``out_proj [I, H]``.
  """
  inner, rank = expand * hidden_dim, dt_rank(hidden_dim)
  # Each weight uniform in +-1/sqrt(fan_in) (cells.uniform_fan_in's law; a
  # depthwise conv's fan_in is K, its bias's too), and the step sizes, from
  # one uniform draw: each draw costs compile time (1.0 s, not 2.4 s for
  # seven, on a CPU).
  fan_ins = {"in_proj": input_dim, "conv_w": d_conv, "conv_b": d_conv,
             "x_proj": inner, "dt_proj": rank, "out_proj": inner}
  shapes = {"in_proj": (input_dim, 2 * inner), "conv_w": (d_conv, inner),
            "conv_b": (inner,), "x_proj": (inner, rank + 2 * d_state),
            "dt_proj": (rank, inner), "out_proj": (inner, hidden_dim),
            "dt": (inner,)}
  sizes = [math.prod(shape) for shape in shapes.values()]
  uniform = dict(zip(shapes, jnp.split(
      jax.random.uniform(key, (sum(sizes),), jnp.float32),
      list(itertools.accumulate(sizes))[:-1])))
  params = {name: ((2.0 * uniform[name] - 1.0)
                   / math.sqrt(fan_in)).reshape(shapes[name])
            for name, fan_in in fan_ins.items()}
  # dt log-uniform in [DT_MIN, DT_MAX]; dt_bias its softplus inverse.
  dt = jnp.maximum(DT_MIN * (DT_MAX / DT_MIN) ** uniform["dt"], DT_INIT_FLOOR)
  params["dt_bias"] = dt + jnp.log(-jnp.expm1(-dt))
  a_n = jnp.arange(1, d_state + 1, dtype=jnp.float32)
  params["A_log"] = jnp.log(jnp.broadcast_to(a_n[None, :], (inner, d_state)))
  params["D"] = jnp.ones((inner,), jnp.float32)
  return params


def make_initial_carry(expand: int = EXPAND, d_state: int = D_STATE,
                       d_conv: int = D_CONV):
  """``initial_carry(batch_size, hidden_dim)`` of a block of these sizes."""
  def initial_carry(batch_size: int, hidden_dim: int):
    inner = expand * hidden_dim
    return (jnp.zeros((batch_size, d_conv - 1, inner), jnp.float32),
            jnp.zeros((batch_size, inner, d_state), jnp.float32))
  return initial_carry


s6_initial_carry = make_initial_carry()


def s6_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``u = x W_in``, ``[..., 2I]`` (the ``x | z`` halves), for any leading
  axes: the part of the block linear in its input."""
  return x @ params["in_proj"]


def _selection(params: cells.Params, c: jax.Array):
  """``(Delta, B, C)`` from the conv's output ``c [..., I]``: ``[..., I]``,
  ``[..., N]``, ``[..., N]``."""
  rank = params["dt_proj"].shape[0]
  d_state = params["A_log"].shape[1]
  dt, b, c_out = jnp.split(c @ params["x_proj"],
                           [rank, rank + d_state], axis=-1)
  delta = jax.nn.softplus(
      dt @ params["dt_proj"]
      + jax.lax.broadcast_to_rank(params["dt_bias"], c.ndim))
  return delta, b, c_out


def _discretise(params: cells.Params, delta: jax.Array, b: jax.Array,
                c: jax.Array):
  """``(exp(Delta A), Delta c B)``, each ``[..., I, N]``: the recurrence
  ``h_t = a_t h_{t-1} + b_t``'s coefficients."""
  a_IxN = -jnp.exp(params["A_log"])
  decay = jnp.exp(delta[..., None] * jax.lax.broadcast_to_rank(
      a_IxN, delta.ndim + 1))
  return decay, (delta * c)[..., None] * jnp.expand_dims(b, -2)


def _output(params: cells.Params, h: jax.Array, c: jax.Array, z: jax.Array,
            c_out: jax.Array) -> jax.Array:
  """``(y * SiLU(z)) W_out``, ``y = h C + D c``, for any leading axes."""
  y = (jnp.einsum("...in,...n->...i", h, c_out)
       + jax.lax.broadcast_to_rank(params["D"], c.ndim) * c)
  return (y * jax.nn.silu(z)) @ params["out_proj"]


def _advance(params: cells.Params, carry, u_Bx2I: jax.Array):
  """One step of the conv and the state: ``(carry, (c, z, C))``."""
  conv_BxK1xI, h_BxIxN = carry
  x_BxI, z_BxI = jnp.split(u_Bx2I, 2, axis=-1)
  window_BxKxI = jnp.concatenate([conv_BxK1xI, x_BxI[:, None, :]], axis=1)
  c_BxI = jax.nn.silu(jnp.sum(window_BxKxI * params["conv_w"][None], axis=1)
                      + params["conv_b"][None, :])
  delta_BxI, b_BxN, c_out_BxN = _selection(params, c_BxI)
  decay_BxIxN, input_BxIxN = _discretise(params, delta_BxI, b_BxN, c_BxI)
  h_BxIxN = decay_BxIxN * h_BxIxN + input_BxIxN
  return (window_BxKxI[:, 1:], h_BxIxN), (c_BxI, z_BxI, c_out_BxN)


@jax.checkpoint
def s6_step(params: cells.Params, carry, u_Bx2I: jax.Array):
  """One step on a projected input (see :func:`s6_project`):
  ``(carry, out_BxH)``.

  Its ``[B, I, N]`` intermediates are recomputed in the backward pass
  (``jax.checkpoint``), as the paper's kernel recomputes them: a scan of it
  then keeps only the carry of each step. At T=1000, B=128, H=128 the
  gradient's temporaries are 2.6 GB instead of 17 GB, and on a (shared)
  CPU the gradient at T=100 took 1.3 s instead of 3.6 s: less memory
  traffic."""
  carry, (c_BxI, z_BxI, c_out_BxN) = _advance(params, carry, u_Bx2I)
  return carry, _output(params, carry[1], c_BxI, z_BxI, c_out_BxN)


_advance_remat = jax.checkpoint(_advance)


def s6_last(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """Scanning :func:`s6_step`, the final carry and last output only
  (``Cell.last``): the scan carries the conv and the state, and the last
  step's ``(c, z, C)``, and the output gate and ``W_out`` (the step's
  largest matmul) run once, after it."""
  def body(carry_and_last, u_Bx2I):
    return _advance_remat(params, carry_and_last[0], u_Bx2I), None

  batch, inner = u_TxBx2I.shape[1], params["D"].shape[0]
  zeros = lambda *shape: jnp.zeros(shape, u_TxBx2I.dtype)
  last0 = (zeros(batch, inner), zeros(batch, inner),
           zeros(batch, params["A_log"].shape[1]))
  (carry, last), _ = jax.lax.scan(body, (carry0, last0), u_TxBx2I)
  return carry, _output(params, carry[1], *last)


def _parallel_states(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """Every step at once: ``(final carry, h_TxBxIxN, (c, z, C))``."""
  conv_BxK1xI, h0_BxIxN = carry0
  x_TxBxI, z_TxBxI = jnp.split(u_TxBx2I, 2, axis=-1)
  steps, width = x_TxBxI.shape[0], params["conv_w"].shape[0]
  padded = jnp.concatenate([jnp.swapaxes(conv_BxK1xI, 0, 1), x_TxBxI], axis=0)
  conv_TxBxI = sum(params["conv_w"][k][None, None, :] * padded[k:k + steps]
                   for k in range(width))
  c_TxBxI = jax.nn.silu(conv_TxBxI + params["conv_b"][None, None, :])
  delta_TxBxI, b_TxBxN, c_out_TxBxN = _selection(params, c_TxBxI)
  a_TxBxIxN, b_TxBxIxN = _discretise(params, delta_TxBxI, b_TxBxN, c_TxBxI)
  b_TxBxIxN = b_TxBxIxN.at[0].add(a_TxBxIxN[0] * h0_BxIxN)

  def compose(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2

  _, h_TxBxIxN = jax.lax.associative_scan(compose, (a_TxBxIxN, b_TxBxIxN),
                                          axis=0)
  carry = (jnp.swapaxes(padded[steps:], 0, 1), h_TxBxIxN[-1])
  return carry, h_TxBxIxN, (c_TxBxI, z_TxBxI, c_out_TxBxN)


def s6_sequence(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """The block over a whole projected sequence at once, from ``carry0``.

  Equal to scanning :func:`s6_step` (``Cell.sequence``): returns ``(final
  carry, out_TxBxH)``. The conv runs on the carry's last ``K - 1`` inputs
  followed by the sequence; ``h_t = a_t h_{t-1} + b_t`` composes
  associatively, ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``, so
  ``jax.lax.associative_scan`` gives every ``h_t`` in ``O(log T)`` depth, at
  the memory cost of materialising ``[T, B, I, N]`` (module doc)."""
  carry, h_TxBxIxN, extras = _parallel_states(params, carry0, u_TxBx2I)
  return carry, _output(params, h_TxBxIxN, *extras)


def s6_sequence_last(params: cells.Params, carry0, u_TxBx2I: jax.Array):
  """:func:`s6_sequence`'s final carry and last output only
  (``Cell.last``)."""
  carry, _, extras = _parallel_states(params, carry0, u_TxBx2I)
  return carry, _output(params, carry[1], *(e[-1] for e in extras))


def make_cell(expand: int = EXPAND, d_state: int = D_STATE,
              d_conv: int = D_CONV, parallel: bool = False) -> cells.Cell:
  """A Mamba block of these sizes; with ``parallel``, run over time by
  :func:`s6_sequence` (same numbers, ``O(log T)`` depth, ``[T, B, I, N]``
  memory). No MLP follows it (``mlp_expand=0``): Mamba's block has none."""
  if d_conv < 1 or expand < 1 or d_state < 1:
    raise ValueError(f"need expand, d_state, d_conv >= 1, got {expand}, "
                     f"{d_state}, {d_conv}")
  init = functools.partial(s6_init, expand=expand, d_state=d_state,
                           d_conv=d_conv)
  return cells.Cell(init, s6_step, make_initial_carry(expand, d_state, d_conv),
                    s6_project,
                    sequence=s6_sequence if parallel else None,
                    last=s6_sequence_last if parallel else s6_last,
                    mlp_expand=0.0)


cells.register("s6", make_cell())
cells.register("s6_parallel", make_cell(parallel=True), keys_of="s6")
