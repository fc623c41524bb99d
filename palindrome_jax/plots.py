"""Figures from plain data: a sweep's result rows, a horizon search's
``horizon.json``, the gradients tool's ``gradients.json``, recipes compared
and the benchmark's rows. A figure names things as its table does
(:mod:`palindrome_jax.report`)."""

import functools
import io as std_io
import math
from typing import Any

import numpy as np

from palindrome_jax import files as io
from palindrome_jax import report
from palindrome_jax.data import NUM_CLASSES
from palindrome_jax.results import finite_mean
from palindrome_jax.status import Kind
from palindrome_jax.status import Status


@functools.cache
def _matplotlib():
  """``matplotlib``, with ``pyplot`` on the Agg backend (files, no window)
  and ``ticker`` loaded.

  Imported at the first figure, not with this module, for start-up time:
  every tool imports this module, and a command that draws nothing (its
  ``--help``, a refused flag) need not wait the half second matplotlib takes.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot  # pylint: disable=g-import-not-at-top,unused-import
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top,unused-import
  return matplotlib


def _subplots(*args, **kwargs):
  return _matplotlib().pyplot.subplots(*args, **kwargs)


def save(fig, path: str) -> None:
  """Renders ``fig`` to memory, then writes it atomically: a crash or a full
  disk never leaves a truncated PNG in place of a good one."""
  buffer = std_io.BytesIO()
  try:
    fig.savefig(buffer, dpi=120, format="png")
  finally:
    _matplotlib().pyplot.close(fig)
  io.atomic_write_bytes(path, buffer.getvalue())


def _ok_accuracy(run: dict[str, Any]) -> float:
  acc = run.get("test_accuracy")
  if (Status(run["status"]).kind is not Kind.OK or acc is None
      or not math.isfinite(acc)):
    return math.nan
  return acc


def accuracy_vs_length(rows: list[dict], path: str) -> None:
  """Test accuracy against N, one line per cell, error bars over seeds.

  Runs that diverged or failed are drawn as red crosses at the bottom.
  """
  fig, ax = _subplots(figsize=(6.5, 4.2))
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
  seeds = _most_seeds(rows)
  ax.set_xlabel("palindrome length N (digits read)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(-3, 103)
  ax.set_title("Predicting the last digit of a palindrome"
               + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""))
  lengths_all = sorted({r["length"] for r in rows})
  if lengths_all:
    ax.set_xticks(lengths_all)
  ax.grid(alpha=0.3)
  if len(cells) > 4:  # beside the axes: inside, it would cover the lines
    fig.set_size_inches(8.0, 4.2)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5),
              fontsize="small")
  else:
    ax.legend()
  fig.tight_layout()
  save(fig, path)


def steps_to_solve(rows: list[dict], path: str, budget: int,
                   title: str = "How fast each cell learns",
                   log_length: bool = False) -> None:
  """Steps to solve against N, one line per cell: the median over seeds,
  the range shaded. A seed that never solved counts at the budget (drawn as
  an open marker there), so the median is a lower bound once any seed
  failed; lengths where no seed solved sit on the budget line. With
  ``log_length`` (a horizon search's doubling lengths), N is on a log scale
  and the cells' lines are drawn a little apart, so equal ones stay seen."""
  fig, ax = _subplots(figsize=(6.5, 4.2))
  _draw_steps_to_solve(ax, sorted(rows, key=lambda r: r["cell"]), budget,
                       dodge=log_length)
  seeds = _most_seeds(rows)
  if log_length:
    lengths = sorted({r["length"] for r in rows})
    _log_length_axis(ax, lengths, lengths[:1] + lengths[-1:], [])
  else:
    ax.set_xlabel("palindrome length N (digits read)")
  ax.set_title(title + (f" (median, range; {seeds} seeds)" if seeds > 1
                        else ""), fontsize="medium")
  ax.legend(fontsize="small")
  fig.tight_layout()
  save(fig, path)


def _most_seeds(rows: list[dict]) -> int:
  """The most runs of one (cell, length) in ``rows``."""
  counts = {}
  for r in rows:
    counts[r["cell"], r["length"]] = counts.get((r["cell"], r["length"]), 0) + 1
  return max(counts.values(), default=0)


def _line_styles(num_lines: int) -> list[dict[str, str]]:
  """A style per line: the colour cycle's ten colours, then the same colours
  dashed with square markers, and so on, so that no two lines look alike."""
  colors = _matplotlib().rcParams["axes.prop_cycle"].by_key()["color"]
  looks = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
  styles = []
  for i in range(num_lines):
    linestyle, marker = looks[(i // len(colors)) % len(looks)]
    styles.append({"color": colors[i % len(colors)], "linestyle": linestyle,
                   "marker": marker})
  return styles


# On a log axis, the factor between neighbouring lines' N when dodged.
_DODGE = 1.03


def _draw_steps_to_solve(ax, rows: list[dict], budget: int,
                         dodge: bool = False) -> dict[str, Any]:
  """Draws :func:`steps_to_solve`'s lines on ``ax``, in the order the cells
  first appear in ``rows`` (with ``dodge``, for a log axis, each moved by a
  factor of :data:`_DODGE` from the next, centred on the lengths); returns
  each cell's style (colour, line style and marker, as ``plot``'s
  keywords)."""
  names = list(dict.fromkeys(r["cell"] for r in rows))
  styles = dict(zip(names, _line_styles(len(names))))
  for k, cell in enumerate(names):
    lengths = sorted({r["length"] for r in rows if r["cell"] == cell})
    factor = _DODGE ** (k - (len(names) - 1) / 2) if dodge else 1
    medians, lows, highs, unsolved_at = [], [], [], []
    for n in lengths:
      runs = [r for r in rows if r["cell"] == cell and r["length"] == n
              and Status(r["status"]).kind is not Kind.ERROR]
      steps = [r["steps_to_solve"] if r.get("steps_to_solve") is not None
               and Status(r["status"]).kind is Kind.OK else budget
               for r in runs]
      if not steps:
        steps = [math.nan]
      medians.append(np.median(steps))
      lows.append(np.min(steps))
      highs.append(np.max(steps))
      if any(s == budget for s in steps):
        unsolved_at.append(n)
    at = [n * factor for n in lengths]
    line, = ax.plot(at, medians, label=cell, **styles[cell])
    if len(lengths) > 1:
      ax.fill_between(at, lows, highs, color=line.get_color(), alpha=0.15)
    else:
      below = [m - l for m, l in zip(medians, lows)]
      above = [h - m for m, h in zip(medians, highs)]
      ax.errorbar(at, medians, yerr=[below, above],
                  color=line.get_color(), capsize=4)
    if unsolved_at:
      ax.scatter([n * factor for n in unsolved_at],
                 [budget] * len(unsolved_at), marker="o",
                 facecolor="white", edgecolor=line.get_color(), zorder=3, s=60)
  ax.axhline(budget, color="black", linestyle="--", linewidth=1,
             label=f"budget ({budget} steps): not solved")
  ax.set_ylabel("training steps to solve")
  ax.set_ylim(0, budget * 1.08)
  ax.grid(alpha=0.3)
  return styles


# The most recipes whose names fit inside the upper panel of :func:`recipes`.
RECIPES_IN_LEGEND = 6


def recipes(found: list, path: str) -> None:
  """Recipes compared (:mod:`palindrome_jax.compare`), against N on a log
  scale: above, the share of seeds that solved each length tried, each
  recipe's horizon starred; below, steps to solve as in
  :func:`steps_to_solve`."""
  # Past a few recipes their names would cover the lines: they go beside.
  beside = len(found) > RECIPES_IN_LEGEND
  if beside:  # A column of their own, the height of both panels.
    fig, axes = _matplotlib().pyplot.subplot_mosaic(
        [["top", "names"], ["bottom", "names"]], figsize=(13, 7.5),
        width_ratios=[3, 2], height_ratios=[2, 3])
    top, bottom, names = axes["top"], axes["bottom"], axes["names"]
    bottom.sharex(top)
    top.tick_params(labelbottom=False)
    names.axis("off")
  else:
    fig, (top, bottom) = _subplots(2, 1, figsize=(7.5, 7.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 3]})
  rows = [row for r in found for row in r.rows()]
  training = found[0].settings["training"]
  styles = _draw_steps_to_solve(bottom, rows, training["train_steps"],
                                dodge=True)
  lengths_all, horizons = set(), []
  # Many recipes solve every seed up to some N: offset their lines a little
  # so that each stays visible where they all read 100%.
  offsets = np.linspace(-1.5, 1.5, len(found)) if len(found) > 1 else [0.0]
  for r, offset in zip(found, offsets):
    evaluations = sorted(r.entry["evaluations"], key=lambda e: e["length"])
    lengths = [e["length"] for e in evaluations]
    lengths_all.update(lengths)
    shares = [100 * sum(e["solved"]) / max(len(e["solved"]), 1) + offset
              for e in evaluations]
    # A recipe without runs has no line below, so no style of its own.
    style = styles.get(r.label, {"marker": "o"})
    top.plot(lengths, shares, **style,
             label=f"{r.label} (horizon {r.horizon})")
    found_at = r.entry.get("horizon")
    if found_at is not None and found_at in lengths:
      horizons.append(found_at)
      top.scatter([found_at], [shares[lengths.index(found_at)]], marker="*",
                  s=220, color=style.get("color"), edgecolor="black",
                  zorder=4)
  top.set_ylabel("seeds that solved (%;\nlines offset ±1.5 apart)")
  top.set_ylim(-5, 105)
  top.grid(alpha=0.3)
  if beside:
    names.legend(*top.get_legend_handles_labels(), fontsize="x-small",
                 loc="upper left", borderaxespad=0)
  else:
    top.legend(fontsize="x-small", loc="lower left")
  seeds = _most_seeds(rows)
  top.set_title(f"Recipes compared: {training['train_steps']} steps, "
                f"{100 * training['solved_accuracy']:g}% to solve"
                + (f", {seeds} seeds" if seeds > 1 else ""),
                fontsize="medium")
  lengths_all = sorted(lengths_all)
  _log_length_axis(bottom, lengths_all, lengths_all[:1] + lengths_all[-1:],
                   horizons)
  # The recipes are named above; below, only the budget line is.
  handles, labels = bottom.get_legend_handles_labels()
  bottom.legend(handles[-1:], labels[-1:], fontsize="small",
                loc="upper left")
  fig.tight_layout()
  save(fig, path)


def training_curves(rows: list[dict], path: str) -> None:
  """Loss (top) and accuracy (bottom) against step: a column per cell, a line
  per length (the mean over seeds)."""
  cells = sorted({r["cell"] for r in rows})
  fig, axes = _subplots(2, max(len(cells), 1), squeeze=False,
                        figsize=(4.2 * max(len(cells), 1), 6.4), sharex=True)
  lengths = sorted({r["length"] for r in rows})
  colors = _matplotlib().cm.viridis(np.linspace(0, 0.9, max(len(lengths), 1)))
  for col, cell in enumerate(cells):
    for color, n in zip(colors, lengths):
      runs = [r for r in rows if r["cell"] == cell and r["length"] == n
              and r["history"]["step"]]
      if not runs:
        continue
      steps = max((r["history"]["step"] for r in runs), key=len)
      loss = finite_mean([_padded(r, "loss", len(steps)) for r in runs],
                         axis=0)
      acc = finite_mean([_padded(r, "accuracy", len(steps)) for r in runs],
                        axis=0)
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
  if lengths and any(ax.lines for ax in axes[0]):
    next(ax for ax in axes[0] if ax.lines).legend(fontsize="small")
  fig.tight_layout()
  save(fig, path)


def _padded(run: dict[str, Any], key: str, length: int) -> np.ndarray:
  """``run``'s history of ``key`` over ``length`` log points: a run that
  stopped once solved keeps its last value (its parameters froze there);
  one that ended otherwise (diverged) is NaN after its end."""
  values = _floats(run["history"][key])
  stopped_solved = (run.get("steps_to_solve") is not None and
                    run["history"]["step"][-1] == run["steps_to_solve"])
  fill = values[-1] if stopped_solved and values.size else math.nan
  return np.concatenate([values, np.full(length - values.size, fill)])


def _floats(values) -> np.ndarray:
  return np.array([math.nan if v is None else v for v in values], float)


def horizon(content: dict[str, Any], path: str) -> None:
  """Mean test accuracy against N (log scale) for every cell of a horizon
  search (see :mod:`palindrome_jax.horizon`): seeds as dots, the threshold
  dashed, each cell's horizon a star."""
  settings = content["settings"]
  fig, ax = _subplots(figsize=(6.5, 4.2))
  lengths_all = set()
  for cell, entry in sorted(content["cells"].items()):
    evaluations = sorted(entry["evaluations"], key=lambda e: e["length"])
    if not evaluations:
      continue
    lengths = [e["length"] for e in evaluations]
    lengths_all.update(lengths)
    means = [100 * _nan_if_none(e["mean_accuracy"]) for e in evaluations]
    found = entry.get("horizon")
    text = report.horizon_text(entry, settings)  # As horizon.md has it.
    label = (f"{cell} (search failed)" if text == "error" else
             f"{cell} (unfinished)" if text == "unfinished" else
             f"{cell} (horizon {text})")
    line, = ax.plot(lengths, means, marker="o", label=label)
    # A length passes on the solve checks of every seed, not on the final
    # test: a failed one can test above the threshold, so it is drawn hollow.
    failed = [(n, m) for n, m, e in zip(lengths, means, evaluations)
              if not e.get("passed", True)]
    if failed:
      ax.scatter(*zip(*failed), marker="o", s=44, facecolors="white",
                 edgecolors=line.get_color(), linewidths=1.5, zorder=3)
    if len(settings["seeds"]) > 1:
      for e in evaluations:
        accs = [100 * _nan_if_none(a) for a in e["accuracies"]]
        ax.scatter([e["length"]] * len(accs), accs, s=10, alpha=0.5,
                   color=line.get_color())
    if found is not None:
      ax.scatter([found], [means[lengths.index(found)]], marker="*", s=220,
                 color=line.get_color(), edgecolor="black", zorder=4)
  ax.axhline(100 * settings["threshold"], color="black", linestyle="--",
             linewidth=1, label=f"threshold {100 * settings['threshold']:g}%"
             " (for every seed's solve checks)")
  ax.axhline(100 / NUM_CLASSES, color="gray", linestyle=":", label="chance")
  ax.scatter([], [], marker="o", facecolors="white", edgecolors="gray",
             label="length failed (a seed never solved it)")
  horizons = [e.get("horizon") for e in content["cells"].values()]
  _log_length_axis(ax, sorted(lengths_all),
                   [settings["min_length"], settings["max_length"]],
                   [h for h in horizons if h is not None])
  seeds = len(settings["seeds"])
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(-3, 103)
  ax.set_title(f"Memory horizon: {settings['training']['train_steps']} steps, "
               f"{seeds} seed{'s' * (seeds > 1)}"
               + (" (mean, seeds as dots)" if seeds > 1 else ""))
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  save(fig, path)


def _log_length_axis(ax, lengths: list[int], span: list[int],
                     horizons: list[int]) -> None:
  """N on a log scale over ``span`` (shortest and longest, padded; empty:
  matplotlib's choice), the ``lengths`` tried marked, labelled where they
  do not crowd each other, ``horizons`` first."""
  ax.set_xscale("log")
  if span:
    ax.set_xlim(span[0] / 1.2, span[-1] * 1.2)
  if lengths:
    ax.set_xticks(_spaced_ticks(lengths, ax.get_xlim(), horizons))
    ax.set_xticks(lengths, minor=True)
  ticker = _matplotlib().ticker
  ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel("palindrome length N (log scale; the lengths tried)")


def _spaced_ticks(lengths: list[int], xlim, first: list[int],
                  gap: float = 0.045) -> list[int]:
  """The lengths to label on a log axis, at least ``gap`` of its width
  apart; those in ``first`` (the horizons) get their labels before others."""
  position = lambda n: math.log(n / xlim[0]) / math.log(xlim[1] / xlim[0])
  kept = []
  for n in [n for n in first if n in lengths] + lengths:
    if all(abs(position(n) - position(k)) >= gap for k in kept):
      kept.append(n)
  return sorted(kept)


def gradient_norms(results: dict[str, Any], path: str) -> None:
  """Mean ``||dl/dcarry_t||`` against t (log scale) for every cell, at
  initialisation (dashed) and after training (solid); see
  :mod:`palindrome_jax.gradients`. Shows the whole carry ("total") where the
  carry has more than ``h``."""
  fig, ax = _subplots(figsize=(6.5, 4.2))
  length = results["length"]
  steps = np.arange(length)
  for cell, profile in results["cells"].items():
    part = report.summary_part(profile["init"])
    init = _floats(profile["init"][part])
    if "trained" not in profile:  # init_only: nothing was trained.
      ax.plot(steps, _positive(init), linestyle="--", marker=".",
              label=f"{cell} (initial)")
      continue
    trained = _floats(profile["trained"][part])
    accuracy = report.mean_test_accuracy(profile)
    line, = ax.plot(steps, _positive(trained), marker=".",
                    label=f"{cell} (trained, {100 * accuracy:.0f}% test)")
    ax.plot(steps, _positive(init), linestyle="--", color=line.get_color(),
            label=f"{cell} (initial)")
  ax.set_yscale("log")
  ax.xaxis.set_major_locator(
      _matplotlib().ticker.MaxNLocator(integer=True))
  ax.set_xlabel("time step t (t=0 reads the digit to remember)")
  ax.set_ylabel("mean ||dloss / dcarry_t||")
  seeds = len(results["seeds"])
  ax.set_title(f"How much the loss depends on the state at t (N={length}, "
               f"{seeds} seed{'s' * (seeds > 1)}"
               + (", at initialisation)" if results.get("init_only") else ")"),
               fontsize="medium")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize="small")
  fig.tight_layout()
  save(fig, path)


def _nan_if_none(value) -> float:
  return math.nan if value is None else value


def _positive(values: np.ndarray) -> np.ndarray:
  """Zeros (say, an underflowed gradient) are left out of a log-scale plot."""
  return np.where(values > 0, values, math.nan)


def benchmark(rows: list[dict], path: str, title: str = "") -> None:
  """Steps/s on a log scale: a group per (cell, N), a bar per method (the
  benchmark's rows, :mod:`palindrome_jax.benchmark`); each bar labelled with
  its rate."""
  groups = list(dict.fromkeys((r["cell"], r["length"]) for r in rows))
  labels = {r["method"]: r["label"] for r in rows}
  methods = [m for m in dict.fromkeys(r["method"] for r in rows)
             if any(r["method"] == m and r["status"] == "ok" for r in rows)]
  rate = {(r["cell"], r["length"], r["method"]): r["steps_per_second"]
          for r in rows if r["status"] == "ok"}
  width = 0.8 / max(len(methods), 1)
  fig, ax = _subplots(figsize=(max(6.5, 1.9 * len(groups) + 2.5), 5.2))
  colors = _matplotlib().cm.tab10.colors
  for i, method in enumerate(methods):
    xs, ys = [], []
    for g, (cell, length) in enumerate(groups):
      value = rate.get((cell, length, method))
      if value is not None:
        xs.append(g + (i - (len(methods) - 1) / 2) * width)
        ys.append(value)
    bars = ax.bar(xs, ys, width, label=labels[method],
                  color=colors[i % len(colors)])
    ax.bar_label(bars, [report.significant(y, 2) for y in ys], fontsize=7,
                 rotation=90, padding=2)
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
  save(fig, path)


def leaderboard(standings: list, path: str, subtitle: str = "") -> None:
  """The leaderboard at a glance: per standing
  (:class:`palindrome_jax.leaderboard.Standing`, best first, top to bottom)
  a bar to its horizon on a log axis, labelled with the horizon's text; a
  bound still open (the search's maximum, or still searching) hatched.
  ``subtitle``: a line under the title (which table this is)."""
  n = len(standings)
  fig, ax = _subplots(figsize=(8, 1.2 + 0.42 * n))
  training = standings[0].best.settings["training"]
  values = [s.bound for s in standings]
  labels = [f"{s.label}, {s.num_layers} layer{'s' if s.num_layers > 1 else ''}"
            f"{' (residual)' if s.block == 'residual' else ''}"
            f", {report.number(s.num_params, ',.0f')} params"
            for s in standings]
  y = np.arange(n)[::-1]
  top = max([v for v in values if v] or [10])
  for yi, s, value in zip(y, standings, values):
    text = s.best.horizon
    open_bound = s.searching or ("≥" in text and "<" not in text)
    if value:
      ax.barh(yi, value, color="#4c72b0" if not open_bound else "white",
              edgecolor="#4c72b0", hatch="//" if open_bound else None,
              height=0.7)
    ax.text((value or 1) * 1.08, yi, s.horizon_text, va="center",
            fontsize="small")
  ax.set_xscale("log")
  ax.set_xlim(1, top * 5)
  ax.xaxis.set_major_formatter(
      _matplotlib().ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
  ax.set_yticks(y)
  ax.set_yticklabels(labels, fontsize="small")
  ax.set_ylim(-0.7, n - 0.3)  # A row with no bar keeps its text off the axis.
  ax.set_xlabel("memory horizon N (log scale)")
  ax.grid(axis="x", alpha=0.3)
  ax.set_title("The longest N every seed solves within "
               f"{training['train_steps']:,} steps"
               + (f"\n{subtitle}" if subtitle else "")
               + "\n(hatched: a lower bound, the search not ended)",
               fontsize="medium")
  fig.tight_layout()
  _widen_for_texts(fig, ax)
  save(fig, path)


def _widen_for_texts(fig, ax, pad_px: float = 6.0) -> None:
  """Widens ``ax``'s log x axis until each of its texts (placed in data
  coordinates, left-aligned) ends inside it. A text of w pixels starting at
  x on an axis W pixels wide spanning D decades from x_low ends inside when
  D >= log10(x / x_low) / (1 - w / W); the layout is redone after each
  widening, as the tick labels may change the axes' width."""
  renderer = fig.canvas.get_renderer()
  for _ in range(3):
    width = ax.get_window_extent(renderer).width
    low, high = ax.get_xlim()
    decades = math.log10(high / low)
    for t in ax.texts:
      w = t.get_window_extent(renderer).width + pad_px
      if w < width:
        decades = max(decades,
                      math.log10(t.get_position()[0] / low) / (1 - w / width))
    if decades <= math.log10(high / low) + 1e-9:
      return
    ax.set_xlim(low, low * 10 ** decades)
    fig.tight_layout()
