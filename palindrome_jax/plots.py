"""Figures from result rows (see :mod:`palindrome_jax.sweep`)."""

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from palindrome_jax.data import NUM_CLASSES


def _ok_accuracy(run: dict[str, Any]) -> float:
  acc = run.get("test_accuracy")
  if run["status"] != "ok" or acc is None or not math.isfinite(acc):
    return math.nan
  return acc


def accuracy_vs_length(rows: list[dict], path: str) -> None:
  """Test accuracy against N, one line per cell, error bars over seeds.

  Runs that diverged or failed are drawn as red crosses at the bottom.
  """
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  cells = sorted({r["cell"] for r in rows})
  failed_drawn = False
  for cell in cells:
    lengths = sorted({r["length"] for r in rows if r["cell"] == cell})
    means, stds, ns = [], [], []
    for n in lengths:
      accs = [_ok_accuracy(r) for r in rows
              if r["cell"] == cell and r["length"] == n]
      ok = [a for a in accs if math.isfinite(a)]
      means.append(100 * np.mean(ok) if ok else math.nan)
      stds.append(100 * np.std(ok) if len(ok) > 1 else 0.0)
      ns.append(len(ok))
      bad = len(accs) - len(ok)
      if bad:
        ax.scatter([n], [0], marker="x", color="red", zorder=3,
                   label=None if failed_drawn else "diverged / failed")
        failed_drawn = True
    ax.errorbar(lengths, means, yerr=stds, marker="o", capsize=4, label=cell)
  ax.axhline(100 / NUM_CLASSES, color="gray", linestyle=":", label="chance")
  seeds = max((sum(1 for r in rows if r["cell"] == c and r["length"] == n)
               for c in cells for n in {r["length"] for r in rows}), default=0)
  ax.set_xlabel("palindrome length N (digits read)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(-3, 103)
  ax.set_title("Predicting the last digit of a palindrome"
               + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""))
  lengths_all = sorted({r["length"] for r in rows})
  if lengths_all:
    ax.set_xticks(lengths_all)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def training_curves(rows: list[dict], path: str) -> None:
  """Loss (top) and accuracy (bottom) against step: a column per cell, a line
  per length (the mean over seeds)."""
  cells = sorted({r["cell"] for r in rows})
  fig, axes = plt.subplots(2, max(len(cells), 1), squeeze=False,
                           figsize=(4.2 * max(len(cells), 1), 6.4),
                           sharex=True)
  lengths = sorted({r["length"] for r in rows})
  colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(lengths), 1)))
  for col, cell in enumerate(cells):
    for color, n in zip(colors, lengths):
      runs = [r for r in rows if r["cell"] == cell and r["length"] == n
              and r["history"]["step"]]
      if not runs:
        continue
      steps = min((r["history"]["step"] for r in runs), key=len)
      k = len(steps)
      loss = np.nanmean([_floats(r["history"]["loss"][:k]) for r in runs], 0)
      acc = np.nanmean([_floats(r["history"]["accuracy"][:k]) for r in runs],
                       0)
      axes[0, col].plot(steps, loss, color=color, label=f"N={n}")
      axes[1, col].plot(steps, 100 * acc, color=color, label=f"N={n}")
    axes[0, col].set_title(cell)
    axes[0, col].set_yscale("log")
    axes[1, col].set_xlabel("training step")
    axes[1, col].set_ylim(-3, 103)
    for ax in axes[:, col]:
      ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("train loss (chunk mean)")
  axes[1, 0].set_ylabel("train accuracy (%)")
  axes[0, -1].legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _floats(values) -> np.ndarray:
  return np.array([math.nan if v is None else v for v in values], float)
