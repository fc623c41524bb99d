"""Backpropagation through time derived by hand, as ``jax.custom_vjp``.

Autodiff of a ``lax.scan`` computes the recurrent weight gradient inside the
reverse loop: one small ``[H, B] x [B, G]`` matmul per time step, on top of
the ``dz_t W_h^T`` that carries the gradient to ``h_{t-1}``. Here the reverse
loop only carries ``dh`` and ``dc`` back and stores each step's gate gradient
``dz_t``; after it, ``dW_h = sum_t h_{t-1}^T dz_t`` is ONE ``[H, T*B] x
[T*B, G]`` matmul, which runs near the machine's matmul peak. The equations
are those of the original's Question 1.1. Tests check both functions against
autodiff of the plain step (``cells.rnn_step``, ``cells.lstm_step``).

Importing this module registers the cells ``rnn_bptt`` and ``lstm_bptt``.
"""

import jax
import jax.numpy as jnp

from palindrome_jax import cells


def _sum_outer(hs_TxBxH: jax.Array, dz_TxBxG: jax.Array) -> jax.Array:
  """``sum_t hs_t^T dz_t`` as one matmul over all (time, batch) rows."""
  return jnp.einsum("tbh,tbg->hg", hs_TxBxH, dz_TxBxG)


# Vanilla RNN: h_t = tanh(u_t + h_{t-1} W_h + b).


@jax.custom_vjp
def rnn_sequence(w_h_HxH, b_H, h0_BxH, u_TxBxH):
  """All hidden states ``h_TxBxH`` of the vanilla RNN from ``h0``."""
  def body(h_BxH, u_BxH):
    h_BxH = jnp.tanh(u_BxH + h_BxH @ w_h_HxH + b_H[None, :])
    return h_BxH, h_BxH
  return jax.lax.scan(body, h0_BxH, u_TxBxH)[1]


def _rnn_fwd(w_h_HxH, b_H, h0_BxH, u_TxBxH):
  hs_TxBxH = rnn_sequence(w_h_HxH, b_H, h0_BxH, u_TxBxH)
  return hs_TxBxH, (w_h_HxH, h0_BxH, hs_TxBxH)


def _rnn_bwd(residuals, dhs_TxBxH):
  w_h_HxH, h0_BxH, hs_TxBxH = residuals

  def body(dh_BxH, xs):
    h_BxH, dh_out_BxH = xs
    dz_BxH = (dh_BxH + dh_out_BxH) * (1.0 - h_BxH * h_BxH)
    return dz_BxH @ w_h_HxH.T, dz_BxH

  dh0_BxH, dz_TxBxH = jax.lax.scan(body, jnp.zeros_like(h0_BxH),
                                   (hs_TxBxH, dhs_TxBxH), reverse=True)
  h_prev_TxBxH = jnp.concatenate([h0_BxH[None], hs_TxBxH[:-1]])
  return (_sum_outer(h_prev_TxBxH, dz_TxBxH), dz_TxBxH.sum((0, 1)), dh0_BxH,
          dz_TxBxH)


rnn_sequence.defvjp(_rnn_fwd, _rnn_bwd)


# LSTM: gates i, f, g, o fused as in cells.lstm_step.


def _lstm_forward(w_h_Hx4H, b_4H, c0_BxH, h0_BxH, u_TxBx4H):
  def body(carry, u_Bx4H):
    c_BxH, h_BxH = carry
    z_Bx4H = u_Bx4H + h_BxH @ w_h_Hx4H + b_4H[None, :]
    zi, zf, zg, zo = jnp.split(z_Bx4H, 4, axis=-1)
    i, f, g, o = (jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg),
                  jax.nn.sigmoid(zo))
    c_BxH = f * c_BxH + i * g
    h_BxH = o * jnp.tanh(c_BxH)
    return (c_BxH, h_BxH), (c_BxH, h_BxH, jnp.concatenate([i, f, g, o], -1))
  return jax.lax.scan(body, (c0_BxH, h0_BxH), u_TxBx4H)


@jax.custom_vjp
def lstm_sequence(w_h_Hx4H, b_4H, c0_BxH, h0_BxH, u_TxBx4H):
  """``(c_TxBxH, h_TxBxH)``: the LSTM's cell and hidden states at every step."""
  _, (cs_TxBxH, hs_TxBxH, _) = _lstm_forward(w_h_Hx4H, b_4H, c0_BxH, h0_BxH,
                                             u_TxBx4H)
  return cs_TxBxH, hs_TxBxH


def _lstm_fwd(w_h_Hx4H, b_4H, c0_BxH, h0_BxH, u_TxBx4H):
  _, (cs_TxBxH, hs_TxBxH, gates_TxBx4H) = _lstm_forward(
      w_h_Hx4H, b_4H, c0_BxH, h0_BxH, u_TxBx4H)
  residuals = (w_h_Hx4H, c0_BxH, h0_BxH, cs_TxBxH, hs_TxBxH, gates_TxBx4H)
  return (cs_TxBxH, hs_TxBxH), residuals


def _lstm_bwd(residuals, cotangents):
  w_h_Hx4H, c0_BxH, h0_BxH, cs_TxBxH, hs_TxBxH, gates_TxBx4H = residuals
  dcs_TxBxH, dhs_TxBxH = cotangents
  c_prev_TxBxH = jnp.concatenate([c0_BxH[None], cs_TxBxH[:-1]])

  def body(carry, xs):
    dh_BxH, dc_BxH = carry
    c_BxH, c_prev_BxH, gates_Bx4H, dh_out_BxH, dc_out_BxH = xs
    i, f, g, o = jnp.split(gates_Bx4H, 4, axis=-1)
    dh_BxH = dh_BxH + dh_out_BxH
    tanh_c = jnp.tanh(c_BxH)
    dc_BxH = dc_BxH + dc_out_BxH + dh_BxH * o * (1.0 - tanh_c * tanh_c)
    dz_Bx4H = jnp.concatenate([
        dc_BxH * g * i * (1.0 - i),           # input gate
        dc_BxH * c_prev_BxH * f * (1.0 - f),  # forget gate
        dc_BxH * i * (1.0 - g * g),           # candidate
        dh_BxH * tanh_c * o * (1.0 - o),      # output gate
    ], axis=-1)
    return (dz_Bx4H @ w_h_Hx4H.T, dc_BxH * f), dz_Bx4H

  (dh0_BxH, dc0_BxH), dz_TxBx4H = jax.lax.scan(
      body, (jnp.zeros_like(h0_BxH), jnp.zeros_like(c0_BxH)),
      (cs_TxBxH, c_prev_TxBxH, gates_TxBx4H, dhs_TxBxH, dcs_TxBxH),
      reverse=True)
  h_prev_TxBxH = jnp.concatenate([h0_BxH[None], hs_TxBxH[:-1]])
  return (_sum_outer(h_prev_TxBxH, dz_TxBx4H), dz_TxBx4H.sum((0, 1)), dc0_BxH,
          dh0_BxH, dz_TxBx4H)


lstm_sequence.defvjp(_lstm_fwd, _lstm_bwd)


# Whole-sequence paths in the form of `cells.Cell.sequence`.


def rnn_unroll(params, h0_BxH, u_TxBxH):
  hs_TxBxH = rnn_sequence(params["W_h"], params["b"], h0_BxH, u_TxBxH)
  return hs_TxBxH[-1], hs_TxBxH


def lstm_unroll(params, carry0, u_TxBx4H):
  c0_BxH, h0_BxH = carry0
  cs_TxBxH, hs_TxBxH = lstm_sequence(params["W_h"], params["b"], c0_BxH,
                                     h0_BxH, u_TxBx4H)
  return (cs_TxBxH[-1], hs_TxBxH[-1]), hs_TxBxH


# Registered as cells: "rnn_bptt" and "lstm_bptt" are "rnn" and "lstm" (same
# parameters, same numbers) whose unroll uses the hand-derived BPTT above, so
# the sweep and the benchmark can train and time it (--cells=lstm_bptt).


def _rnn_projected_step(params, h_BxH, u_BxH):
  """``cells.rnn_step`` on the projected input ``u = x W_x``."""
  h_BxH = jnp.tanh(u_BxH + h_BxH @ params["W_h"] + params["b"][None, :])
  return h_BxH, h_BxH


def _lstm_projected_step(params, carry, u_Bx4H):
  """``cells.lstm_step`` on the projected input ``u = x W_x``."""
  c_BxH, h_BxH = carry
  z_Bx4H = u_Bx4H + h_BxH @ params["W_h"] + params["b"][None, :]
  i, f, g, o = jnp.split(z_Bx4H, 4, axis=-1)
  c_BxH = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_BxH = jax.nn.sigmoid(o) * jnp.tanh(c_BxH)
  return (c_BxH, h_BxH), h_BxH


def _lstm_bptt_factory(forget_bias: float = 0.0, chrono_t_max=None,
                       **_) -> cells.Cell:
  lstm = cells.get("lstm", forget_bias=forget_bias, chrono_t_max=chrono_t_max)
  return cells.Cell(lstm.init, _lstm_projected_step, lstm.initial_carry,
                    project=cells.project_input, sequence=lstm_unroll)


cells.register("rnn_bptt", cells.Cell(
    cells.rnn_init, _rnn_projected_step, project=cells.project_input,
    sequence=rnn_unroll), keys_of="rnn")
cells.register("lstm_bptt", _lstm_bptt_factory, keys_of="lstm")
