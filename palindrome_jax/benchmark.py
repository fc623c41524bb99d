"""How fast is a training step: eager, jitted, compiled loop, Flax.

Every method does the same work per step: make a batch, run the cell over it,
take the cross-entropy of the logits, backpropagate, clip the gradient and
apply Adam (or RMSprop). The JAX methods call the library's own functions, so
the numbers are those of what the sweep runs:

- ``eager``: :func:`train.train_step` op by op under ``jax.disable_jit()``;
- ``jit_step``: the same step and its batch as one compiled call per step;
- ``compiled_loop``: the sweep's compiled chunk (:func:`train.train_chunk`,
  vmapped over one seed), ``--log_every`` steps per dispatch;
- ``flax_jit_step``: what a Flax user would write instead: ``nn.RNN`` over
  Flax's own cell and a ``Dense`` readout, with a jitted step;
- ``time_major_step`` (not timed unless asked for, stacked models of two or
  more layers only): the same model and step as ``jit_step`` with the layers
  stepped time-major, every layer at each time step inside one scan (the
  order of PyTorch's fused multi-layer kernels), against the library's
  layer-major stack;
- any other method a caller passes in (``extra_methods``): the entrypoint
  adds the PyTorch baselines (``experiments/torch_baselines.py``), which
  need the optional torch extra, so the library never imports torch.

Each is warmed up, then timed ``repeats`` times after ``block_until_ready``,
the methods of one (cell, N) taking turns repeat by repeat (A B A B); steps/s
is the median. Compile time is measured apart (``.lower().compile()``).
The work of a step is counted twice: by hand (:func:`flops_per_step`, the
matmuls only) and by XLA (:func:`xla_flops`, from the compiled jitted step's
``cost_analysis()``, every op).
:func:`run_benchmark` returns the rows; ``experiments/benchmark_report.py``
writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png``.
"""

import dataclasses
import functools
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from palindrome_jax import config as config_lib
from palindrome_jax import data
from palindrome_jax import model as model_lib
from palindrome_jax import train

# (key, label), in table and chart order.
METHODS = (
    ("eager", "JAX eager (op by op)"),
    ("jit_step", "JAX jit step"),
    ("compiled_loop", "JAX compiled loop (the sweep's)"),
    ("flax_jit_step", "Flax nn.RNN + Flax cell, jit step"),
    ("time_major_step", "JAX jit step, layers time-major"),
)
LABELS = dict(METHODS)
# What runs unless --methods says otherwise.
DEFAULT_METHODS = ("eager", "jit_step", "compiled_loop", "flax_jit_step")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """What to measure: every method for ``cells`` x ``lengths`` of ``base``."""

  cells: tuple[str, ...] = config_lib.cells_setting()
  lengths: tuple[int, ...] = config_lib.setting(
      (5, 20), "Comma-separated palindrome lengths N to time.",
      config_lib.length_tuple)
  base: train.RunConfig = train.RunConfig()
  steps: int = config_lib.setting(
      200, "Training steps per timed repeat of every method but eager; more "
      "than --log_every must be a multiple of it.", config_lib.positive_int)
  eager_steps: int = config_lib.setting(
      3, "Steps per timed repeat of JAX eager.", config_lib.positive_int)
  repeats: int = config_lib.setting(
      5, "Timed repeats per method; steps/s is their median.",
      config_lib.positive_int)
  seed: int = config_lib.FIRST_SEED
  methods: tuple[str, ...] = config_lib.setting(
      DEFAULT_METHODS, "Comma-separated methods to time, of "
      f"{', '.join(LABELS)} (time_major_step: stacked models of two or more "
      "layers only); they run in that order, whatever the order given.",
      config_lib.tuple_of("methods", config_lib.one_of(tuple(LABELS))))

  def __post_init__(self):
    config_lib.check_fields(self)
    self.run_configs()  # Each RunConfig checks itself when made.
    if self.steps > self.base.log_every and self.steps % self.base.log_every:
      raise config_lib.ConfigError(
          "steps", f"{self.steps} is not divisible by --log_every, the "
          f"compiled loop's chunk ({self.base.log_every})")

  def run_configs(self) -> list[train.RunConfig]:
    return [dataclasses.replace(self.base, cell=c, length=n)
            for c in self.cells for n in self.lengths]


class Skip(Exception):
  """A method that does not apply to this cell; the message says why."""


class Prepared(NamedTuple):
  """A method ready to time: ``run(n)`` trains ``n`` steps and blocks."""

  run: Callable[[int], None]
  compile_seconds: Optional[float]
  warmup_steps: int


# JAX, eager and jitted: the library's train step with its batch.


def _batch_and_step(state: train.TrainState, cfg: train.RunConfig):
  return train.train_step(state, train.train_batch(state, cfg), cfg)


_jit_step = jax.jit(_batch_and_step, static_argnums=1, donate_argnums=0)


def _new_state(cfg: train.RunConfig, seed: int) -> train.TrainState:
  init_key, data_key, _ = train.run_keys(seed, cfg.cell, cfg.length)
  return train.create_train_state(init_key, data_key, cfg)


def _prepare_eager(cfg: train.RunConfig, seed: int, steps: int) -> Prepared:
  del steps  # One warm-up step compiles every primitive it dispatches.
  state = _new_state(cfg, seed)

  def run(num_steps):
    nonlocal state
    with jax.disable_jit():
      for _ in range(num_steps):
        state, _ = _batch_and_step(state, cfg)
      state = jax.block_until_ready(state)

  return Prepared(run, None, warmup_steps=1)


def _timed_compile(jitted, *args):
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _prepare_jit_step(cfg: train.RunConfig, seed: int, steps: int) -> Prepared:
  return _prepare_step_per_call(_jit_step, _new_state(cfg, seed), cfg, steps)


def _prepare_step_per_call(jitted_step, state, cfg: train.RunConfig,
                           steps: int) -> Prepared:
  """Times ``jitted_step(state, cfg)``, one compiled step per Python call."""
  compiled, compile_seconds = _timed_compile(jitted_step, state, cfg)

  def run(num_steps):
    nonlocal state
    for _ in range(num_steps):
      state, _ = compiled(state)
    state = jax.block_until_ready(state)

  return Prepared(run, compile_seconds, warmup_steps=min(steps, 10))


def _prepare_compiled_loop(cfg: train.RunConfig, seed: int,
                           steps: int) -> Prepared:
  """The sweep's program: one seed, ``--log_every`` steps per dispatch.

  Uses :func:`train.train_and_evaluate`'s own init and compiled chunk, and
  fetches the statistics after each chunk as it does.
  """
  chunk = min(steps, cfg.log_every)
  state = jax.block_until_ready(train.init_states(cfg, (seed,)))
  active = jnp.ones(state.step.shape, bool)
  start = time.perf_counter()
  compiled = train.compile_chunk(cfg, state, chunk, active)
  compile_seconds = time.perf_counter() - start

  def run(num_steps):
    nonlocal state
    if num_steps % chunk:
      raise ValueError(f"{num_steps} steps are not whole chunks of {chunk}")
    for _ in range(num_steps // chunk):
      state, stats = compiled(state, active)
      jax.device_get(stats)  # As the sweep: it checks them after every chunk.
    state = jax.block_until_ready(state)

  return Prepared(run, compile_seconds, warmup_steps=chunk)


# Flax: what a user would write with Flax's own recurrent layers.


def _identity_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.eye(*shape, dtype=dtype)


def flax_cell(cell: str, num_hidden: int) -> nn.RNNCellBase:
  """Flax's cell for one of ours; :class:`Skip` if Flax has none."""
  if cell == "rnn":
    return nn.SimpleCell(num_hidden)
  if cell == "irnn":
    return nn.SimpleCell(num_hidden, activation_fn=jax.nn.relu,
                         recurrent_kernel_init=_identity_init)
  if cell == "lstm":
    return nn.OptimizedLSTMCell(num_hidden)
  if cell == "gru":
    return nn.GRUCell(num_hidden)
  raise Skip(f"Flax has no cell like {cell!r}")


class FlaxClassifier(nn.Module):
  """``nn.RNN`` over a Flax cell, then a ``Dense`` readout of the last step."""

  cell: str
  num_hidden: int
  unroll: int = 1
  num_layers: int = 1

  @nn.compact
  def __call__(self, inputs_BxTxD):
    h_BxTxH = inputs_BxTxD
    for _ in range(self.num_layers):  # Stacked as a Flax user would.
      h_BxTxH = nn.RNN(flax_cell(self.cell, self.num_hidden),
                       unroll=self.unroll)(h_BxTxH)
    return nn.Dense(data.NUM_CLASSES)(h_BxTxH[:, -1])


def _flax_step(state: train.TrainState, cfg: train.RunConfig):
  batch = train.train_batch(state, cfg)

  def loss_fn(params):
    logits_BxC = state.apply_fn({"params": params}, batch.inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxC, batch.targets).mean()
    return loss, (logits_BxC.argmax(-1) == batch.targets).mean()

  (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return state.apply_gradients(grads=grads), (loss, accuracy)


_flax_jit_step = jax.jit(_flax_step, static_argnums=1, donate_argnums=0)


def _prepare_flax(cfg: train.RunConfig, seed: int, steps: int) -> Prepared:
  flax_cell(cfg.cell, cfg.num_hidden)  # Skip early for cells Flax lacks.
  if cfg.block != "stack":
    raise Skip("Flax has no residual block of nn.RNN layers")
  init_key, data_key, _ = train.run_keys(seed, cfg.cell, cfg.length)
  module = FlaxClassifier(cfg.cell, cfg.num_hidden, cfg.unroll,
                          cfg.num_layers)
  example = jnp.zeros((cfg.batch_size, cfg.length, cfg.input_dim))
  params = module.init(init_key, example)["params"]
  state = train.TrainState.create(apply_fn=module.apply, params=params,
                                  tx=train.make_optimizer(cfg),
                                  data_key=data_key)
  return _prepare_step_per_call(_flax_jit_step, state, cfg, steps)


# Time-major depth: what the library's layer-major stack is measured against.


def time_major_apply(cell, params, inputs_BxTxD: jax.Array) -> jax.Array:
  """Logits of a stacked model (``{"layers", "readout"}``) with its layers
  stepped time-major: one scan over time, every layer stepped at each time
  step (the input projection of each layer too, one step at a time). The
  same function as :func:`model.apply`, computed in the other order."""
  layers = params["layers"]
  hidden_dim = params["readout"]["W"].shape[0]
  dtype = jnp.result_type(*jax.tree.leaves(params))
  carry0 = [jax.tree.map(lambda c: c.astype(dtype),
                         cell.initial_carry(inputs_BxTxD.shape[0], hidden_dim))
            for _ in layers]

  def body(carries, x_BxD):
    new_carries, h_BxH = [], x_BxD
    for cell_params, carry in zip(layers, carries):
      if cell.project is not None:
        h_BxH = cell.project(cell_params, h_BxH[None])[0]
      carry, h_BxH = cell.step(cell_params, carry, h_BxH)
      new_carries.append(carry)
    return new_carries, h_BxH

  _, h_TxBxH = jax.lax.scan(body, carry0, jnp.swapaxes(inputs_BxTxD, 0, 1))
  return model_lib.readout(params, h_TxBxH[-1])


def _prepare_time_major(cfg: train.RunConfig, seed: int,
                        steps: int) -> Prepared:
  if cfg.block != "stack" or cfg.num_layers < 2:
    raise Skip("time-major order needs a stack of two or more layers "
               "(--block=stack --num_layers=2 or more)")
  state = _new_state(cfg, seed)
  cell = cfg.make_cell()
  state = state.replace(
      apply_fn=lambda variables, x: time_major_apply(cell,
                                                     variables["params"], x))
  # _flax_step: the jit step's loss and update through ``state.apply_fn``.
  return _prepare_step_per_call(_flax_jit_step, state, cfg, steps)


_PREPARE = {
    "eager": _prepare_eager,
    "jit_step": _prepare_jit_step,
    "compiled_loop": _prepare_compiled_loop,
    "flax_jit_step": _prepare_flax,
    "time_major_step": _prepare_time_major,
}


class Method(NamedTuple):
  """A method passed to :func:`run_benchmark` from outside the library:
  ``prepare(cfg, seed, steps) -> Prepared`` (or raise :class:`Skip`)."""

  label: str
  prepare: Callable[[train.RunConfig, int, int], "Prepared"]


# FLOPs and the machine's matmul rate, to say how far from the limit we are.


def recurrent_width(cfg: train.RunConfig) -> Optional[int]:
  """Columns of the cell's fused ``W_h`` (G*H for G gates), if it has one."""
  init = cfg.make_cell().init
  shapes = jax.eval_shape(
      lambda key: init(key, cfg.input_dim, cfg.num_hidden),
      jax.random.PRNGKey(0))
  if isinstance(shapes, dict) and "W_h" in shapes:
    return int(shapes["W_h"].shape[-1])
  return None


def flops_per_step(cfg: train.RunConfig) -> Optional[float]:
  """Matmul FLOPs of one train step: 3x the forward's (backward is ~2x).

  Forward per time step and layer: ``2*B*(D + H)*G*H`` for ``x_t W_x + h_t
  W_h`` (``D = H`` above the first stacked layer); plus ``2*B*H*C`` for the
  readout. Elementwise work is not counted; None for cells without a fused
  ``W_h`` and for the residual block.
  """
  width = recurrent_width(cfg)
  if width is None or cfg.block != "stack":
    return None
  b, h, d = cfg.batch_size, cfg.num_hidden, cfg.input_dim
  inner = (d + h) + (cfg.num_layers - 1) * (h + h)
  forward = cfg.length * 2 * b * inner * width + 2 * b * h * data.NUM_CLASSES
  return 3.0 * forward


@functools.lru_cache(maxsize=None)
def compiled_step_flops(cfg: train.RunConfig) -> Optional[float]:
  """The ``"flops"`` of XLA's ``cost_analysis()`` of the compiled jitted
  step (``jit_step``: batch, forward, backward, clipping, optimizer), every
  op counted, elementwise work included; None where the backend gives none.
  Compiled from shapes alone, once per configuration. XLA counts the body
  of a loop once, whatever its trip count: see :func:`xla_flops`."""
  state = jax.eval_shape(lambda: _new_state(cfg, config_lib.FIRST_SEED))
  analysis = _jit_step.lower(state, cfg).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # One per device in older JAX.
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def xla_flops(cfg: train.RunConfig) -> dict[str, Optional[float]]:
  """FLOPs of one train step from XLA's cost analysis: ``as_compiled``, what
  it gives for the step (its time loops' bodies counted once), and
  ``per_step``, with every time step counted: ``as_compiled`` at
  ``unroll=1`` plus N - 1 more bodies, a body being what unrolling the loop
  by two adds (measured at an even N: N itself, or N + 1)."""
  as_compiled = compiled_step_flops(cfg)
  rolled = compiled_step_flops(dataclasses.replace(cfg, unroll=1))
  even = dataclasses.replace(cfg, length=cfg.length + cfg.length % 2,
                             unroll=1)
  one, two = (compiled_step_flops(even),
              compiled_step_flops(dataclasses.replace(even, unroll=2)))
  per_step = None
  if None not in (rolled, one, two):
    per_step = rolled + (cfg.length - 1) * (two - one)
  return {"as_compiled": as_compiled, "per_step": per_step}


def _xla_flops_or_none(cfg: train.RunConfig) -> dict[str, Optional[float]]:
  try:
    return xla_flops(cfg)
  except Exception:  # pylint: disable=broad-except
    logging.exception("no XLA cost analysis of %s N=%d", cfg.cell,
                      cfg.length)
    return {"as_compiled": None, "per_step": None}


def _chained_matmul(x_BxH, w_HxW, num_iters):
  """``num_iters`` dependent ``[B, H] x [H, W]`` matmuls (an RNN's recurrence),
  each folded back to ``[B, H]`` so none can be hoisted or skipped."""
  batch, hidden = x_BxH.shape
  groups = w_HxW.shape[1] // hidden

  def body(_, x_BxH):
    y_BxW = x_BxH @ w_HxW
    return jnp.tanh(y_BxW.reshape(batch, groups, hidden).sum(1)
                    / math.sqrt(groups))

  return jax.lax.fori_loop(0, num_iters, body, x_BxH)


# The trip count is static, as a training scan's is: on a GPU, XLA runs a loop
# of unknown trip count by reading its condition back to the host each
# iteration, which would time that round trip instead of the matmul.
_chained_matmul_jit = jax.jit(_chained_matmul, static_argnums=2)


def _calibrated_chain(x_BxH, w_HxW, repeats: int,
                      min_seconds: float) -> tuple[int, float]:
  """``(num_iters, seconds)``: a chain of matmuls long enough that one call
  takes ``min_seconds``, and the median of ``repeats`` calls. Each count is
  compiled (and run once) before it is timed: the compile is not the call."""
  num_iters = 4
  while True:
    chain = _chained_matmul_jit.lower(x_BxH, w_HxW, num_iters).compile()
    jax.block_until_ready(chain(x_BxH, w_HxW))
    seconds = math.inf
    for _ in range(3):  # The fastest of 3: a busy machine only adds time.
      start = time.perf_counter()
      jax.block_until_ready(chain(x_BxH, w_HxW))
      seconds = min(seconds, time.perf_counter() - start)
    if seconds >= min_seconds or num_iters >= 1 << 20:
      break
    # Straight to about the count that takes min_seconds (a power of 2, so
    # few programs compile), at least double.
    factor = 2 ** math.ceil(math.log2(min_seconds / max(seconds, 1e-7)))
    num_iters = min(num_iters * max(factor, 2), 1 << 20)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(chain(x_BxH, w_HxW))
    times.append(time.perf_counter() - start)
  return num_iters, statistics.median(times)


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 3,
                  min_seconds: float = 0.05) -> float:
  """fp32 GFLOP/s of chained ``[rows, inner] x [inner, cols]`` matmuls.

  ``cols`` must be a multiple of ``inner``. The chain grows until one call
  takes ``min_seconds`` (each length compiled before it is timed); the
  median of ``repeats`` calls is reported.
  """
  key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(key_x, (rows, inner), jnp.float32)
  # Gain 1.5 keeps tanh's state O(1): no decay to denormals, no saturation.
  w = 1.5 / math.sqrt(inner) * jax.random.normal(key_w, (inner, cols),
                                                 jnp.float32)
  num_iters, seconds = _calibrated_chain(x, w, repeats, min_seconds)
  return 2.0 * rows * inner * cols * num_iters / seconds / 1e9


def matmul_peaks(config: BenchmarkConfig) -> list[dict[str, Any]]:
  """The big-square fp32 rate and the rate at each cell's recurrent shape."""
  peaks = [{"shape": "1024x1024 @ 1024x1024", "cells": [],
            "gflops": matmul_gflops(1024, 1024, 1024)}]
  # Each cell at its own width H (with --num_params, the sized one).
  shapes: dict[tuple[int, int], list[str]] = {}
  for cell in config.cells:
    cfg = dataclasses.replace(config.base, cell=cell)
    width = recurrent_width(cfg)
    if width is not None:
      shapes.setdefault((cfg.num_hidden, width), []).append(cell)
  b = config.base.batch_size
  for (h, width), cells in sorted(shapes.items()):
    peaks.append({"shape": f"{b}x{h} @ {h}x{width}", "hidden": h,
                  "width": width, "cells": cells,
                  "gflops": matmul_gflops(b, h, width)})
  return peaks


def machine_info(config: BenchmarkConfig) -> dict[str, Any]:
  info = {
      "platform": platform.platform(),
      "processor": platform.processor() or _cpu_model(),
      "cpu_count": os.cpu_count(),
      # Fewer where the process is pinned (`taskset -c 0`: one core's cost).
      "cpus_usable": (len(os.sched_getaffinity(0))
                      if hasattr(os, "sched_getaffinity") else os.cpu_count()),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_kind": jax.devices()[0].device_kind,
  }
  del config
  return info


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


# The run, and what it leaves behind.


def _empty_row(cfg: train.RunConfig, method: str, label: str) -> dict:
  return {"cell": cfg.cell, "length": cfg.length, "method": method,
          "label": label, "status": "ok", "steps_per_second": None,
          "repeats_steps_per_second": [], "steps_per_repeat": None,
          "compile_seconds": None, "speedup_over_eager": None,
          "gflop_per_step": None, "gflops": None,
          "percent_of_matmul_peak": None, "xla_gflop_per_step": None,
          "xla_gflops": None, "xla_gflop_as_compiled": None}


def _failed(row: dict, method: str, cfg: train.RunConfig,
            error: Exception) -> None:
  # One failing method (out of memory, say) must not cost the others.
  logging.exception("%s on %s N=%d failed", method, cfg.cell, cfg.length)
  row["status"] = f"error: {type(error).__name__}: {error}".splitlines()[0]


def measure_together(config: BenchmarkConfig, cfg: train.RunConfig,
                     methods: list[str], peaks: list[dict],
                     extra_methods: Optional[dict[str, Method]] = None
                     ) -> list[dict[str, Any]]:
  """One row per method on ``cfg``; ``status`` says if it was not timed.

  Every method is prepared and warmed up first; then the repeats interleave
  (repeat 1 of each method, then repeat 2, ...: A B A B), so a machine
  that slows down or speeds up while it runs shifts every method alike and
  the ratios between rows stay stable.
  """
  extra_methods = extra_methods or {}
  rows, runs = {}, {}
  for method in methods:
    outside = method in extra_methods
    rows[method] = row = _empty_row(
        cfg, method, extra_methods[method].label if outside
        else LABELS[method])
    prepare = extra_methods[method].prepare if outside else _PREPARE[method]
    steps = config.eager_steps if method == "eager" else config.steps
    try:
      prepared = prepare(cfg, config.seed, steps)
      prepared.run(prepared.warmup_steps)
    except Skip as reason:
      row["status"] = f"skipped: {reason}"
      continue
    except Exception as error:  # pylint: disable=broad-except
      _failed(row, method, cfg, error)
      continue
    runs[method] = (prepared, steps)
    row.update(steps_per_repeat=steps,
               compile_seconds=prepared.compile_seconds)
  for _ in range(config.repeats):
    for method, (prepared, steps) in list(runs.items()):
      try:
        start = time.perf_counter()
        prepared.run(steps)  # It blocks until the state is ready.
        rows[method]["repeats_steps_per_second"].append(
            steps / max(time.perf_counter() - start, 1e-12))
      except Exception as error:  # pylint: disable=broad-except
        _failed(rows[method], method, cfg, error)
        del runs[method]
  for method in runs:
    _add_rates(rows[method], cfg, peaks)
  return [rows[method] for method in methods]


def measure(config: BenchmarkConfig, cfg: train.RunConfig, method: str,
            peaks: list[dict],
            extra_methods: Optional[dict[str, Method]] = None
            ) -> dict[str, Any]:
  """One row: ``method`` on ``cfg``, timed; ``status`` says if it was not."""
  return measure_together(config, cfg, [method], peaks, extra_methods)[0]


def _add_rates(row: dict, cfg: train.RunConfig, peaks: list[dict]) -> None:
  """Steps/s (the median repeat) and the FLOP rates it makes."""
  rates = row["repeats_steps_per_second"]
  rate = row["steps_per_second"] = statistics.median(rates)
  flops = flops_per_step(cfg)
  if flops is not None:
    row.update(gflop_per_step=flops / 1e9, gflops=flops * rate / 1e9)
    width = recurrent_width(cfg)
    peak = next((p["gflops"] for p in peaks if p.get("width") == width
                 and p.get("hidden") == cfg.num_hidden), None)
    if peak:
      row["percent_of_matmul_peak"] = 100 * row["gflops"] / peak
  counted = _xla_flops_or_none(cfg)
  if counted["as_compiled"] is not None:
    row["xla_gflop_as_compiled"] = counted["as_compiled"] / 1e9
  if counted["per_step"] is not None:
    row.update(xla_gflop_per_step=counted["per_step"] / 1e9,
               xla_gflops=counted["per_step"] * rate / 1e9)
  compile_seconds = row["compile_seconds"]
  logging.info("%s N=%d %-16s %10.1f steps/s  (repeats %s)%s", cfg.cell,
               cfg.length, row["method"], rate,
               ", ".join(f"{r:.1f}" for r in rates),
               "" if compile_seconds is None
               else f"  compile {compile_seconds:.2f} s")


def _add_speedups(rows: list[dict]) -> None:
  eager = {(r["cell"], r["length"]): r["steps_per_second"] for r in rows
           if r["method"] == "eager" and r["status"] == "ok"}
  for row in rows:
    base = eager.get((row["cell"], row["length"]))
    if base and row["steps_per_second"] is not None:
      row["speedup_over_eager"] = row["steps_per_second"] / base


@dataclasses.dataclass
class Report:
  """Everything :func:`run_benchmark` measured, and the table it printed."""

  machine: dict[str, Any]
  settings: dict[str, Any]
  matmul_peaks: list[dict[str, Any]]
  rows: list[dict[str, Any]]
  table: str = ""

  def to_json(self) -> dict[str, Any]:
    return {"machine": self.machine, "settings": self.settings,
            "matmul_peaks": self.matmul_peaks, "results": self.rows}


def run_benchmark(config: BenchmarkConfig,
                  extra_methods: Optional[dict[str, Method]] = None,
                  machine_extra: Optional[dict[str, Any]] = None,
                  on_progress: Optional[Callable[[Report], None]] = None
                  ) -> Report:
  """Measures every method for every (cell, length): ``config.methods``,
  then ``extra_methods`` (in their order). Returns the :class:`Report`.
  ``on_progress`` gets the report so far after each (cell, length) but the
  last (the returned report is the whole), so a long benchmark stopped
  part-way keeps what it measured."""
  extra_methods = extra_methods or {}
  machine = {**machine_info(config), **(machine_extra or {})}
  logging.info("benchmark on %s (%s), JAX %s", machine["device_kind"],
               ", ".join(machine["devices"]), machine["jax"])
  peaks = matmul_peaks(config)
  for peak in peaks:
    logging.info("fp32 matmul %s: %.1f GFLOP/s", peak["shape"], peak["gflops"])
  methods = [m for m, _ in METHODS if m in config.methods] + list(
      extra_methods)
  settings = {"cells": list(config.cells), "lengths": list(config.lengths),
              "steps": config.steps, "eager_steps": config.eager_steps,
              "repeats": config.repeats, "seed": config.seed,
              "methods": methods,
              "train_config": config.base.training_settings()}
  rows = []
  run_configs = config.run_configs()
  for k, cfg in enumerate(run_configs, 1):
    rows.extend(measure_together(config, cfg, methods, peaks, extra_methods))
    _add_speedups(rows)
    if on_progress is not None and k < len(run_configs):
      on_progress(Report(machine, settings, peaks, list(rows)))
  return Report(machine, settings, peaks, rows)
