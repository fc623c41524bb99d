"""The benchmark's report: ``benchmark.json``, ``benchmark.md`` (one long
table) and ``benchmark.png`` (steps/s per method, log scale), written
beside the entrypoint that needs them, from :class:`benchmark.Report`."""

import math
import os
from typing import Any, Optional

from palindrome_jax import io
from palindrome_jax import plots
from palindrome_jax.benchmark import Report


def write(report: Report, results_dir: str) -> None:
  report.table = markdown(report)
  io.write_json(os.path.join(results_dir, "benchmark.json"), report.to_json())
  io.atomic_write_text(os.path.join(results_dir, "benchmark.md"), report.table)
  bar_chart(report.rows, os.path.join(results_dir, "benchmark.png"),
            title=_chart_title(report))


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
  if machine.get("torch"):
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
  labels = {r["method"]: r["label"] for r in rows}
  methods = [m for m in dict.fromkeys(r["method"] for r in rows)
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
    bars = ax.bar(xs, ys, width, label=labels[method],
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
  plots.save(fig, path)
