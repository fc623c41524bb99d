"""Long Expressive Memory (Rusch, Mishra, Erichson & Mahoney 2022), registered
as ``"lem"``.

Rusch, Mishra, Erichson & Mahoney 2022, "Long Expressive Memory for Sequence
Modeling" (ICLR 2022), eq. 3: a multiscale discretisation of two coupled
ODEs, with two states ``y``, ``z`` and learned, input-dependent time steps::

    dt_t     = Dt sigmoid(y_{t-1} W_1 + u_t V_1 + b_1)
    dt_bar_t = Dt sigmoid(y_{t-1} W_2 + u_t V_2 + b_2)
    z_t = (1 - dt_t) * z_{t-1} + dt_t * tanh(y_{t-1} W_z + u_t V_z + b_z)
    y_t = (1 - dt_bar_t) * y_{t-1} + dt_bar_t * tanh(z_t W_y + u_t V_y + b_y)

The output is ``h_t = y_t``. The time steps use the sigmoid and the two
candidates ``tanh``, as the paper (its ``sigma-hat`` and ``sigma``) and the
official code (tk-rusch/LEM). ``Dt = 1`` by default, the official ``LEM``
model's default (its tasks tune it: 0.0242 for the adding problem, 0.21 for
sMNIST). With ``Dt <= 1`` each state is a convex combination of its last
value and a ``tanh``, so from the zero state both stay in ``(-1, 1)`` (the
paper's bound on the hidden states, Proposition 1).

Initialisation as the official code: every weight and bias uniform in
``±1/sqrt(H)``, the input weights too. One bias per gate, as the paper's
equations and the official CUDA extension (``LEM_cuda``, which its README
recommends); the plain PyTorch cell (``src/*/network.py``) has two
(``inp2hid`` and ``hid2hid`` both carry one), redundant. Parameters, fused
as in :mod:`palindrome_jax.cells`: ``W_x [D, 4H]`` (``V_1 | V_2 | V_z |
V_y``), ``W_y [H, 3H]`` (``W_1 | W_2 | W_z``), ``W_z [H, H]`` (``W_y``),
``b [4H]`` (``b_1 | b_2 | b_z | b_y``): ``4 H (D + H) + 4 H`` in all, the
LSTM's count. The carry is ``(y, z)``, each ``[B, H]``. Sequential only:
``z_t`` enters ``y_t``'s candidate through ``W_y``, a recurrent matmul, so
there is no parallel form; no MLP follows it (``mlp_expand=0``).
"""

import functools
import math

import jax
import jax.numpy as jnp

from palindrome_jax import cells

DT = 1.0


def lem_init(key: jax.Array, input_dim: int, hidden_dim: int) -> cells.Params:
  """LEM parameters (module doc), all uniform in ``±1/sqrt(hidden_dim)``."""
  h = hidden_dim
  bound = 1.0 / math.sqrt(h)
  uniform = lambda k, shape: jax.random.uniform(k, shape, jnp.float32,
                                                -bound, bound)
  keys = jax.random.split(key, 4)
  return {
      "W_x": uniform(keys[0], (input_dim, 4 * h)),
      "W_y": uniform(keys[1], (h, 3 * h)),
      "W_z": uniform(keys[2], (h, h)),
      "b": uniform(keys[3], (4 * h,)),
  }


def lem_initial_carry(batch_size: int, hidden_dim: int):
  """The zero states ``(y, z)``."""
  return (cells.zeros_carry(batch_size, hidden_dim),
          cells.zeros_carry(batch_size, hidden_dim))


def lem_step(params: cells.Params, carry, x_BxD: jax.Array,
             dt: float = DT):
  """One step of eq. 3: ``((y, z), y)``."""
  y_BxH, z_BxH = carry
  u_Bx4H = x_BxD @ params["W_x"] + params["b"][None, :]
  u_dt, u_dt_bar, u_z, u_y = jnp.split(u_Bx4H, 4, axis=-1)
  r_dt, r_dt_bar, r_z = jnp.split(y_BxH @ params["W_y"], 3, axis=-1)
  dt_BxH = dt * jax.nn.sigmoid(u_dt + r_dt)
  dt_bar_BxH = dt * jax.nn.sigmoid(u_dt_bar + r_dt_bar)
  z_BxH = (1.0 - dt_BxH) * z_BxH + dt_BxH * jnp.tanh(u_z + r_z)
  y_BxH = ((1.0 - dt_bar_BxH) * y_BxH
           + dt_bar_BxH * jnp.tanh(z_BxH @ params["W_z"] + u_y))
  return (y_BxH, z_BxH), y_BxH


def make_cell(dt: float = DT) -> cells.Cell:
  """A LEM cell with time step ``Dt = dt`` (the official default 1)."""
  if not dt > 0:
    raise ValueError(f"dt must be > 0, got {dt}")
  step = lem_step if dt == DT else functools.partial(lem_step, dt=dt)
  return cells.Cell(lem_init, step, lem_initial_carry, mlp_expand=0.0)


cells.register("lem", make_cell())
