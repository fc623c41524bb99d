"""How fast is a training step: eager, jitted, compiled loop, Flax, PyTorch.

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
- ``torch_original`` and ``torch_fused`` (when torch is installed): the
  original's hand-written cells with its per-example DataLoader, and PyTorch's
  fused ``nn.RNN``/``nn.LSTM`` with batches made on tensors.

Each is warmed up, then timed ``repeats`` times after ``block_until_ready``;
steps/s is the median. Compile time is measured apart (``.lower().compile()``).
:func:`run_benchmark` writes ``benchmark.json``, ``benchmark.md`` and
``benchmark.png``.
"""

import dataclasses
import importlib.util
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

from palindrome_jax import data
from palindrome_jax import io
from palindrome_jax import train
from palindrome_jax import validation

TORCH_MODES = ("auto", "on", "off")

# (key, label), in table and chart order.
METHODS = (
    ("eager", "JAX eager (op by op)"),
    ("jit_step", "JAX jit step"),
    ("compiled_loop", "JAX compiled loop (the sweep's)"),
    ("flax_jit_step", "Flax nn.RNN + Flax cell, jit step"),
    ("torch_original", "torch original (eager cells + per-example loader)"),
    ("torch_fused", "torch fused (nn.RNN / nn.LSTM / nn.GRU)"),
)
LABELS = dict(METHODS)


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """What to measure: every method for ``cells`` x ``lengths`` of ``base``."""

  cells: tuple[str, ...] = ("rnn", "lstm")
  lengths: tuple[int, ...] = (5, 20)
  base: train.RunConfig = train.RunConfig()
  steps: int = 200  # Steps per timed repeat (all but eager).
  eager_steps: int = 3  # Steps per timed repeat of the eager method.
  repeats: int = 5
  torch: str = "auto"
  seed: int = 42
  methods: tuple[str, ...] = tuple(key for key, _ in METHODS)

  def run_configs(self) -> list[train.RunConfig]:
    return [dataclasses.replace(self.base, cell=c, length=n)
            for c in self.cells for n in self.lengths]


def torch_installed() -> bool:
  return importlib.util.find_spec("torch") is not None


def validate(config: BenchmarkConfig) -> BenchmarkConfig:
  """Raises :class:`validation.FlagError` on anything that would fail later."""
  if not config.cells:
    raise validation.FlagError("cells", "must not be empty")
  if not config.lengths:
    raise validation.FlagError("lengths", "must not be empty")
  config.run_configs()  # Each RunConfig checks itself when made.
  for flag in ("steps", "eager_steps", "repeats"):
    value = getattr(config, flag)
    if not isinstance(value, int) or value < 1:
      raise validation.FlagError(flag, f"must be a positive integer, got "
                                 f"{value}")
  if config.steps > config.base.log_every:
    validation.divisible("steps", config.steps, config.base.log_every,
                         "--log_every, the compiled loop's chunk")
  validation.choice("torch", config.torch, TORCH_MODES)
  unknown = sorted(set(config.methods) - set(LABELS))
  if unknown or not config.methods:
    raise ValueError(f"methods must be some of {', '.join(LABELS)}; got "
                     f"{', '.join(config.methods) or 'none'}")
  if config.torch == "on" and not torch_installed():
    raise validation.FlagError("torch", "torch is not installed (pip install "
                               "'palindrome_jax[torch]'); use --torch=auto")
  return config


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

  @nn.compact
  def __call__(self, inputs_BxTxD):
    h_BxTxH = nn.RNN(flax_cell(self.cell, self.num_hidden),
                     unroll=self.unroll)(inputs_BxTxD)
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
  init_key, data_key, _ = train.run_keys(seed, cfg.cell, cfg.length)
  module = FlaxClassifier(cfg.cell, cfg.num_hidden, cfg.unroll)
  example = jnp.zeros((cfg.batch_size, cfg.length, cfg.input_dim))
  params = module.init(init_key, example)["params"]
  state = train.TrainState.create(apply_fn=module.apply, params=params,
                                  tx=train.make_optimizer(cfg),
                                  data_key=data_key)
  return _prepare_step_per_call(_flax_jit_step, state, cfg, steps)


# PyTorch (optional): see palindrome_jax.torch_baselines.


def _prepare_torch(which: str):
  def prepare(cfg: train.RunConfig, seed: int, steps: int) -> Prepared:
    from palindrome_jax import torch_baselines  # pylint: disable=g-import-not-at-top
    cells = (torch_baselines.ORIGINAL_CELLS if which == "original"
             else torch_baselines.FUSED_CELLS)
    if cfg.cell not in cells:
      raise Skip(f"{'the original' if which == 'original' else 'PyTorch'} "
                 f"has no {cfg.cell} (only {', '.join(cells)})")
    device = torch_baselines.device_for(jax.default_backend())
    make = (torch_baselines.original_trainer if which == "original"
            else torch_baselines.fused_trainer)
    return Prepared(make(cfg, seed, device), None,
                    warmup_steps=min(steps, 10))
  return prepare


_PREPARE = {
    "eager": _prepare_eager,
    "jit_step": _prepare_jit_step,
    "compiled_loop": _prepare_compiled_loop,
    "flax_jit_step": _prepare_flax,
    "torch_original": _prepare_torch("original"),
    "torch_fused": _prepare_torch("fused"),
}


def time_steps(run: Callable[[int], None], steps: int, repeats: int,
               warmup_steps: int) -> list[float]:
  """Steps/s of ``repeats`` timed runs of ``steps`` steps, after a warm-up."""
  run(warmup_steps)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(steps)
    rates.append(steps / max(time.perf_counter() - start, 1e-12))
  return rates


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

  Forward per time step: ``2*B*(D + H)*G*H`` for ``x_t W_x + h_t W_h``; plus
  ``2*B*H*C`` for the readout. Elementwise work is not counted.
  """
  width = recurrent_width(cfg)
  if width is None:
    return None
  b, h, d = cfg.batch_size, cfg.num_hidden, cfg.input_dim
  forward = cfg.length * 2 * b * (d + h) * width + 2 * b * h * data.NUM_CLASSES
  return 3.0 * forward


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


_chained_matmul_jit = jax.jit(_chained_matmul)


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 3,
                  min_seconds: float = 0.05) -> float:
  """fp32 GFLOP/s of chained ``[rows, inner] x [inner, cols]`` matmuls.

  ``cols`` must be a multiple of ``inner``. The iteration count doubles until
  one call takes ``min_seconds``; the median of ``repeats`` calls is reported.
  """
  key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(key_x, (rows, inner), jnp.float32)
  # Gain 1.5 keeps tanh's state O(1): no decay to denormals, no saturation.
  w = 1.5 / math.sqrt(inner) * jax.random.normal(key_w, (inner, cols),
                                                 jnp.float32)
  num_iters = 4
  while True:
    start = time.perf_counter()
    jax.block_until_ready(_chained_matmul_jit(x, w, num_iters))
    if time.perf_counter() - start >= min_seconds or num_iters >= 1 << 20:
      break
    num_iters *= 2
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(_chained_matmul_jit(x, w, num_iters))
    times.append(time.perf_counter() - start)
  return 2.0 * rows * inner * cols * num_iters / statistics.median(times) / 1e9


def matmul_peaks(config: BenchmarkConfig) -> list[dict[str, Any]]:
  """The big-square fp32 rate and the rate at each cell's recurrent shape."""
  peaks = [{"shape": "1024x1024 @ 1024x1024", "cells": [],
            "gflops": matmul_gflops(1024, 1024, 1024)}]
  widths: dict[int, list[str]] = {}
  for cell in config.cells:
    width = recurrent_width(dataclasses.replace(config.base, cell=cell))
    if width is not None:
      widths.setdefault(width, []).append(cell)
  b, h = config.base.batch_size, config.base.num_hidden
  for width, cells in sorted(widths.items()):
    peaks.append({"shape": f"{b}x{h} @ {h}x{width}", "width": width,
                  "cells": cells, "gflops": matmul_gflops(b, h, width)})
  return peaks


def machine_info(config: BenchmarkConfig) -> dict[str, Any]:
  info = {
      "platform": platform.platform(),
      "processor": platform.processor() or _cpu_model(),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_kind": jax.devices()[0].device_kind,
      "torch": None, "torch_threads": None, "torch_device": None,
  }
  if use_torch(config):
    from palindrome_jax import torch_baselines  # pylint: disable=g-import-not-at-top
    info.update(torch=torch_baselines.version(),
                torch_threads=torch_baselines.num_threads(),
                torch_device=str(torch_baselines.device_for(info["backend"])))
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


def use_torch(config: BenchmarkConfig) -> bool:
  return config.torch == "on" or (config.torch == "auto" and torch_installed())


# The run, and what it leaves behind.


def measure(config: BenchmarkConfig, cfg: train.RunConfig, method: str,
            peaks: list[dict]) -> dict[str, Any]:
  """One row: ``method`` on ``cfg``, timed; ``status`` says if it was not."""
  row = {"cell": cfg.cell, "length": cfg.length, "method": method,
         "label": LABELS[method], "status": "ok", "steps_per_second": None,
         "repeats_steps_per_second": [], "steps_per_repeat": None,
         "compile_seconds": None, "speedup_over_eager": None,
         "gflop_per_step": None, "gflops": None, "percent_of_matmul_peak": None}
  if method.startswith("torch") and not use_torch(config):
    row["status"] = ("skipped: --torch=off" if config.torch == "off"
                     else "skipped: torch is not installed")
    return row
  steps = config.eager_steps if method == "eager" else config.steps
  try:
    prepared = _PREPARE[method](cfg, config.seed, steps)
    rates = time_steps(prepared.run, steps, config.repeats,
                       prepared.warmup_steps)
  except Skip as reason:
    row["status"] = f"skipped: {reason}"
    return row
  except Exception as error:  # pylint: disable=broad-except
    # One failing method (out of memory, say) must not cost the others.
    logging.exception("%s on %s N=%d failed", method, cfg.cell, cfg.length)
    row["status"] = f"error: {type(error).__name__}: {error}".splitlines()[0]
    return row
  flops = flops_per_step(cfg)
  rate = statistics.median(rates)
  row.update(steps_per_second=rate, repeats_steps_per_second=rates,
             steps_per_repeat=steps, compile_seconds=prepared.compile_seconds)
  if flops is not None:
    row.update(gflop_per_step=flops / 1e9, gflops=flops * rate / 1e9)
    width = recurrent_width(cfg)
    peak = next((p["gflops"] for p in peaks if p.get("width") == width), None)
    if peak:
      row["percent_of_matmul_peak"] = 100 * row["gflops"] / peak
  logging.info("%s N=%d %-16s %10.1f steps/s  (repeats %s)%s", cfg.cell,
               cfg.length, method, rate, ", ".join(f"{r:.1f}" for r in rates),
               "" if prepared.compile_seconds is None
               else f"  compile {prepared.compile_seconds:.2f} s")
  return row


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


def run_benchmark(config: BenchmarkConfig, results_dir: str) -> Report:
  """Measures every method for every (cell, length); writes the results.

  Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` in
  ``results_dir`` and returns the :class:`Report`.
  """
  validate(config)
  machine = machine_info(config)
  logging.info("benchmark on %s (%s), JAX %s%s", machine["device_kind"],
               ", ".join(machine["devices"]), machine["jax"],
               f", torch {machine['torch']} ({machine['torch_threads']} "
               f"threads, {machine['torch_device']})" if machine["torch"]
               else "")
  peaks = matmul_peaks(config)
  for peak in peaks:
    logging.info("fp32 matmul %s: %.1f GFLOP/s", peak["shape"], peak["gflops"])
  rows = []
  for cfg in config.run_configs():
    for method, _ in METHODS:
      if method in config.methods:
        rows.append(measure(config, cfg, method, peaks))
  _add_speedups(rows)
  settings = {"cells": list(config.cells), "lengths": list(config.lengths),
              "steps": config.steps, "eager_steps": config.eager_steps,
              "repeats": config.repeats, "torch": config.torch,
              "seed": config.seed, "methods": list(config.methods),
              "train_config": config.base.training_settings()}
  report = Report(machine, settings, peaks, rows)
  report.table = markdown(report)
  io.write_json(os.path.join(results_dir, "benchmark.json"), report.to_json())
  io.atomic_write_text(os.path.join(results_dir, "benchmark.md"), report.table)
  bar_chart(rows, os.path.join(results_dir, "benchmark.png"),
            title=_chart_title(report))
  return report


def _number(x: Optional[float], digits: int = 3) -> str:
  """A number to about ``digits`` significant figures, "–" if there is none."""
  if x is None or not math.isfinite(x):
    return "–"
  if x == 0 or abs(x) >= 10 ** (digits - 1):
    return f"{x:,.0f}"
  decimals = digits - 1 - int(math.floor(math.log10(abs(x))))
  return f"{x:,.{decimals}f}"


def _device_line(machine: dict[str, Any]) -> str:
  kind = machine["device_kind"]
  if machine["backend"] == "cpu":
    kind = f"{machine['processor'] or 'CPU'}, {machine['cpu_count']} cores"
  return f"{kind} (JAX {machine['jax']}, {machine['backend']})"


def _chart_title(report: Report) -> str:
  train_config = report.settings["train_config"]
  return (f"Training steps per second, batch {train_config['batch_size']}, "
          f"{train_config['num_hidden']} hidden\n"
          f"{_device_line(report.machine)}")


def markdown(report: Report) -> str:
  """One long table, a row per (cell, N, method), and what was measured on."""
  machine, settings = report.machine, report.settings
  train_config = settings["train_config"]
  lines = [
      "# Training step throughput",
      "",
      f"- device: {_device_line(machine)}; devices "
      f"{', '.join(machine['devices'])}",
  ]
  if machine["torch"]:
    elsewhere = (" (not the JAX device: this torch build has no CUDA)"
                 if machine["torch_device"] == "cpu"
                 and machine["backend"] != "cpu" else "")
    lines.append(f"- torch {machine['torch']} on {machine['torch_device']}"
                 f"{elsewhere}, {machine['torch_threads']} threads")
  lines += [
      f"- batch {train_config['batch_size']}, {train_config['num_hidden']} "
      f"hidden, {train_config['encoding']} input, {train_config['optimizer']} "
      f"after clipping; median of {settings['repeats']} repeats of "
      f"{settings['steps']} steps ({settings['eager_steps']} for eager), "
      "after a warm-up",
      "- fp32 matmul rate: " + "; ".join(
          f"{p['shape']} {_number(p['gflops'])} GFLOP/s"
          + (f" ({', '.join(p['cells'])})" if p["cells"] else "")
          for p in report.matmul_peaks),
      "",
      "| cell | N | method | steps/s | × eager | compile (s) | GFLOP/s "
      "| % of matmul rate |",
      "|---|---|---|---:|---:|---:|---:|---:|",
  ]
  notes = []
  for row in report.rows:
    if row["status"] != "ok":
      note = f"{row['label']}: {row['status']}"
      if note not in notes:
        notes.append(note)
      continue
    speedup = row["speedup_over_eager"]
    lines.append(
        f"| {row['cell']} | {row['length']} | {row['label']} "
        f"| {_number(row['steps_per_second'])} "
        f"| {'–' if speedup is None else '×' + _number(speedup, 2)} "
        f"| {_number(row['compile_seconds'], 2)} "
        f"| {_number(row['gflops'])} "
        f"| {_number(row['percent_of_matmul_peak'], 2)} |")
  lines += [
      "",
      "GFLOP/s counts the recurrent and readout matmuls only (3x the "
      "forward's); the % is of the chained fp32 matmul rate at the cell's "
      "[B, H] x [H, G*H] shape, the recurrence's own ceiling.",
  ]
  if notes:
    lines += ["", "Not measured:", ""] + [f"- {note}" for note in notes]
  return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: str, title: str = "") -> None:
  """Steps/s on a log scale: a group per (cell, N), a bar per method."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  groups = list(dict.fromkeys((r["cell"], r["length"]) for r in rows))
  methods = [m for m, _ in METHODS
             if any(r["method"] == m and r["status"] == "ok" for r in rows)]
  rate = {(r["cell"], r["length"], r["method"]): r["steps_per_second"]
          for r in rows if r["status"] == "ok"}
  width = 0.8 / max(len(methods), 1)
  fig, ax = plt.subplots(figsize=(max(6.5, 1.9 * len(groups) + 2.5), 5.2))
  colors = plt.cm.tab10.colors
  for i, method in enumerate(methods):
    xs, ys = [], []
    for g, (cell, length) in enumerate(groups):
      value = rate.get((cell, length, method))
      if value is not None:
        xs.append(g + (i - (len(methods) - 1) / 2) * width)
        ys.append(value)
    bars = ax.bar(xs, ys, width, label=LABELS[method],
                  color=colors[i % len(colors)])
    ax.bar_label(bars, [_number(y, 2) for y in ys], fontsize=7, rotation=90,
                 padding=2)
  ax.set_yscale("log")
  ax.set_xticks(range(len(groups)))
  ax.set_xticklabels([f"{cell} N={length}" for cell, length in groups])
  ax.set_ylabel("training steps / s (log scale)")
  ax.margins(y=0.25)
  ax.grid(axis="y", which="major", alpha=0.3)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08),
            ncol=2, frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
