"""The Linear Recurrent Unit (Orvieto et al. 2023), registered as ``"lru"``.

Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023, "Resurrecting
Recurrent Neural Networks for Long Sequences". The state is a diagonal complex
linear recurrence,

    x_t = lambda * x_{t-1} + gamma * (u_t B),    y_t = Re(x_t C) + u_t D,

with ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` so that ``|lambda| < 1``
for any parameters (the recurrence cannot blow up) and ``gamma =
exp(gamma_log)``, initially ``sqrt(1 - |lambda|^2)``, keeping the state's scale
independent of how close ``|lambda|`` is to 1. At initialisation ``|lambda|``
is uniform on the ring ``r_min <= |lambda| <= r_max`` and its phase uniform in
``[0, max_phase)``. The output is the paper's position-wise block with a skip,
``h_t = y_t + GLU(GELU(y_t))``: the recurrence is linear, so all the
nonlinearity (say, telling ten digits apart from one scalar input) is here.

As a :class:`~palindrome_jax.cells.Cell` the complex state is carried as two
real arrays ``(x_re, x_im)``, each ``[batch, hidden]``, so carry offsets and
optimizers see ordinary float32 pytrees. Being linear in time, the recurrence
can also run in parallel over time with ``jax.lax.associative_scan``
(:func:`lru_sequence`, :func:`lru_parallel`); :func:`lru_step` is its
sequential form, which the registered cell uses. The loss reads only the
last step's output, so the model runs :func:`lru_last` for it: the state
recurrence alone in the scan, the output block once at the end (7x the
steps/s on a CPU).
"""

import functools
import math

import jax
import jax.numpy as jnp

from palindrome_jax import cells

R_MIN = 0.9
R_MAX = 0.999
MAX_PHASE = 2 * math.pi


def lru_init(key: jax.Array, input_dim: int, hidden_dim: int,
             r_min: float = R_MIN, r_max: float = R_MAX,
             max_phase: float = MAX_PHASE) -> cells.Params:
  """LRU parameters; the state has ``hidden_dim`` complex units.

  ``nu_log``, ``theta_log``, ``gamma_log`` ``[H]``; ``B_re``, ``B_im`` ``[D,
  H]``; ``C_re``, ``C_im`` ``[H, H]``; ``D`` ``[D, H]``; the GLU's ``W_glu``
  ``[H, 2H]`` and ``b_glu`` ``[2H]``. Initialised as in the paper (its
  Algorithm 1 and Appendix A).
  """
  if not 0 <= r_min < r_max < 1:
    raise ValueError(f"need 0 <= r_min < r_max < 1, got {r_min}, {r_max}")
  key_ring, key_in, key_out, key_glu = jax.random.split(key, 4)
  h = hidden_dim
  # One draw per shape, not per matrix: each random draw costs compile time.
  # u bounded away from 0 keeps log(theta) finite.
  u1, u2 = jax.random.uniform(key_ring, (2, h), jnp.float32, 1e-4, 1.0)
  nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
  theta_log = jnp.log(max_phase * u2)
  modulus = jnp.exp(-jnp.exp(nu_log))
  gamma_log = jnp.log(jnp.sqrt(1.0 - jnp.square(modulus)))
  b_re, b_im, d = jax.random.normal(key_in, (3, input_dim, h), jnp.float32)
  c_re, c_im = jax.random.normal(key_out, (2, h, h), jnp.float32)
  return {
      "nu_log": nu_log,
      "theta_log": theta_log,
      "gamma_log": gamma_log,
      "B_re": b_re / math.sqrt(2 * input_dim),
      "B_im": b_im / math.sqrt(2 * input_dim),
      "C_re": c_re / math.sqrt(h),
      "C_im": c_im / math.sqrt(h),
      "D": d / math.sqrt(input_dim),
      "W_glu": cells.uniform_fan_in(key_glu, (h, 2 * h)),
      "b_glu": jnp.zeros((2 * h,), jnp.float32),
  }


def lru_initial_carry(batch_size: int, hidden_dim: int):
  """The zero complex state as ``(x_re, x_im)``."""
  return (cells.zeros_carry(batch_size, hidden_dim),
          cells.zeros_carry(batch_size, hidden_dim))


def lru_lambda(params: cells.Params) -> tuple[jax.Array, jax.Array]:
  """The recurrence's diagonal ``(Re lambda, Im lambda)``, each ``[H]``."""
  modulus = jnp.exp(-jnp.exp(params["nu_log"]))
  phase = jnp.exp(params["theta_log"])
  return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def lru_project(params: cells.Params, x: jax.Array) -> jax.Array:
  """``[gamma * x B_re, gamma * x B_im, x D]``, ``[..., 3H]``: all of the step
  that is linear in the input, as one matmul, for any leading axes."""
  gamma_1xH = jnp.exp(params["gamma_log"])[None, :]
  w_Dx3H = jnp.concatenate([gamma_1xH * params["B_re"],
                            gamma_1xH * params["B_im"], params["D"]], axis=1)
  return x @ w_Dx3H


def lru_output(params: cells.Params, x_re: jax.Array, x_im: jax.Array,
               du: jax.Array) -> jax.Array:
  """``h = y + GLU(GELU(y))``, ``y = Re(x C) + u D``, for any leading axes."""
  y = x_re @ params["C_re"] - x_im @ params["C_im"] + du
  z = (jax.nn.gelu(y) @ params["W_glu"]
       + jax.lax.broadcast_to_rank(params["b_glu"], y.ndim))
  values, gates = jnp.split(z, 2, axis=-1)
  return y + values * jax.nn.sigmoid(gates)


def _recur(lam_re, lam_im, carry, bu_re, bu_im):
  """``x_t = lambda x_{t-1} + bu_t`` in real arithmetic."""
  x_re, x_im = carry
  return (lam_re * x_re - lam_im * x_im + bu_re,
          lam_re * x_im + lam_im * x_re + bu_im)


def lru_step(params: cells.Params, carry, u_Bx3H: jax.Array):
  """One step on a projected input (see :func:`lru_project`)."""
  bu_re, bu_im, du = jnp.split(u_Bx3H, 3, axis=-1)
  lam_re_1xH, lam_im_1xH = (lam[None, :] for lam in lru_lambda(params))
  x_re, x_im = _recur(lam_re_1xH, lam_im_1xH, carry, bu_re, bu_im)
  return (x_re, x_im), lru_output(params, x_re, x_im, du)


def lru_last(params: cells.Params, carry0, u_TxBx3H: jax.Array):
  """``(final carry, h of the last step)``: scanning :func:`lru_step` and
  keeping the last output, but the scan carries the state alone and the
  output block runs once, on the last state (``Cell.last``). The loss needs
  no other output, so this spares the block's three matmuls at every other
  step, forward and backward.

  ``lambda`` enters the loop broadcast to ``[B, H]``: its gradient then
  accumulates elementwise and is summed over the batch once, after the loop.
  Summed at every step instead, with the seeds' axis in front (the sweep's
  vmap), the backward pass ran 3.5x slower on a CPU."""
  bu_re, bu_im, du = jnp.split(u_TxBx3H, 3, axis=-1)
  lam_re_BxH, lam_im_BxH = (jnp.broadcast_to(lam[None, :], bu_re.shape[1:])
                            for lam in lru_lambda(params))

  def body(carry, bu_t):
    return _recur(lam_re_BxH, lam_im_BxH, carry, *bu_t), None

  (x_re, x_im), _ = jax.lax.scan(body, carry0, (bu_re, bu_im))
  return (x_re, x_im), lru_output(params, x_re, x_im, du[-1])


def lru_sequence(params: cells.Params, carry0, u_TxBx3H: jax.Array):
  """The LRU over a whole projected sequence at once, from ``carry0``.

  Equal to scanning :func:`lru_step` (the form of ``Cell.sequence``): returns
  ``((x_re, x_im) after the last step, h_TxBxH)``. The linear recurrence
  ``x_t = a x_{t-1} + b_t`` composes associatively, ``(a1, b1) then (a2, b2) =
  (a1 a2, a2 b1 + b2)``, so ``jax.lax.associative_scan`` computes every
  ``x_t`` in ``O(log T)`` parallel depth instead of ``T`` sequential steps.
  On a CPU the scan is the faster (about 2x); the depth pays on accelerators.
  """
  bu_re, bu_im, du = jnp.split(u_TxBx3H, 3, axis=-1)
  lam_re, lam_im = lru_lambda(params)
  b_TxBxH = jax.lax.complex(bu_re, bu_im)
  a_TxBxH = jnp.broadcast_to(jax.lax.complex(lam_re, lam_im), b_TxBxH.shape)
  x0_BxH = jax.lax.complex(*carry0)
  b_TxBxH = b_TxBxH.at[0].add(a_TxBxH[0] * x0_BxH)

  def compose(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2

  _, x_TxBxH = jax.lax.associative_scan(compose, (a_TxBxH, b_TxBxH), axis=0)
  x_re, x_im = jnp.real(x_TxBxH), jnp.imag(x_TxBxH)
  return (x_re[-1], x_im[-1]), lru_output(params, x_re, x_im, du)


def lru_sequence_last(params: cells.Params, carry0, u_TxBx3H: jax.Array):
  """:func:`lru_sequence`'s final carry and last output only (``Cell.last``).

  The outputs of the other steps are never used, so XLA drops their work."""
  du_BxH = jnp.split(u_TxBx3H[-1], 3, axis=-1)[2]
  carry, _ = lru_sequence(params, carry0, u_TxBx3H)
  return carry, lru_output(params, *carry, du_BxH)


def lru_parallel(params: cells.Params, u_TxBxD: jax.Array):
  """:func:`lru_sequence` on raw inputs ``[T, B, D]`` from the zero state:
  what :func:`palindrome_jax.model.unroll` returns for the ``"lru"`` cell."""
  batch_size, hidden_dim = u_TxBxD.shape[1], params["nu_log"].shape[0]
  return lru_sequence(params, lru_initial_carry(batch_size, hidden_dim),
                      lru_project(params, u_TxBxD))


def make_cell(r_min: float = R_MIN, r_max: float = R_MAX,
              max_phase: float = MAX_PHASE,
              parallel: bool = False) -> cells.Cell:
  """An LRU cell with its own initial ring of eigenvalues, e.g. to register
  ``cells.register("lru_slow", lru.make_cell(r_min=0.99, r_max=0.9999))``.
  With ``parallel`` the model runs it over time with ``associative_scan``
  (:func:`lru_sequence`; same numbers, O(log T) depth, slower on a CPU)."""
  init = functools.partial(lru_init, r_min=r_min, r_max=r_max,
                           max_phase=max_phase)
  return cells.Cell(init, lru_step, lru_initial_carry, lru_project,
                    sequence=lru_sequence if parallel else None,
                    last=lru_sequence_last if parallel else lru_last)


cells.register("lru", make_cell())
cells.register("lru_parallel", make_cell(parallel=True), keys_of="lru")
