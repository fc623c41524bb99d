"""The pages a person reads: every markdown report and table of every tool,
the formatters they share (a value that is missing or not finite prints as
"–", everywhere), and the words a figure shares with its table.

Every table is drawn by :func:`table`. The reports take plain data, as the
tools record it: a sweep's rows, a horizon search's ``horizon.json``, the
gradients tool's ``gradients.json``, the recipes compared, saved parameters
evaluated, the benchmark's rows. ``results.md`` (a sweep), ``horizon.md``,
``gradients.md`` and ``compare.md`` embed their figures with relative links,
so they read well on GitHub and in an editor's preview.
"""

import collections
import math
import shlex
from typing import Any, Optional, Sequence

import numpy as np

from palindrome_jax.results import finite_mean, solved
from palindrome_jax.status import Kind, Status

MISSING = "–"


def is_number(value) -> bool:
  return _number(value) is not None


def _number(value) -> Optional[float]:
  if isinstance(value, (int, float)) and not isinstance(value, bool) and (
      math.isfinite(value)):
    return float(value)
  return None


def percent(value, digits: int = 2) -> str:
  """A fraction as a percentage, ``"–"`` if missing or not finite."""
  value = _number(value)
  return MISSING if value is None else f"{100 * value:.{digits}f}"


def number(value, spec: str = ".3g") -> str:
  value = _number(value)
  return MISSING if value is None else format(value, spec)


def scientific(value) -> str:
  return number(value, ".2e")


def seconds(value) -> str:
  """``m:ss`` or ``h:mm:ss``."""
  value = _number(value)
  if value is None:
    return MISSING
  minutes, secs = divmod(int(round(value)), 60)
  hours, minutes = divmod(minutes, 60)
  return (f"{hours}:{minutes:02d}:{secs:02d}" if hours else
          f"{minutes}:{secs:02d}")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]],
          right: int = 0) -> list[str]:
  """Markdown table lines; the last ``right`` columns align right (numbers).
  """
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * (len(header) - right) + "---:|" * right]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines


def _grid(rows: list[dict], entry) -> list[str]:
  cells = sorted({r["cell"] for r in rows})
  lengths = sorted({r["length"] for r in rows})
  body = []
  for cell in cells:
    body.append([cell] + [
        entry([r for r in rows if r["cell"] == cell and r["length"] == n])
        for n in lengths])
  return table(["cell"] + [f"N={n}" for n in lengths], body)


def accuracy_entry(runs: list[dict]) -> str:
  """Mean ± std of test accuracy (%) over the runs that ended ok; diverged
  and failed runs are counted beside it, never averaged in."""
  if not runs:
    return MISSING
  ok = [100 * r["test_accuracy"] for r in runs
        if r["status"].kind is Kind.OK
        and _number(r.get("test_accuracy")) is not None]
  diverged = sum(r["status"].kind is Kind.DIVERGED for r in runs)
  failed = sum(r["status"].kind is Kind.ERROR for r in runs)
  parts = []
  if ok:
    mean = float(np.mean(ok))
    parts.append(f"{mean:.2f} ± {float(np.std(ok)):.2f}" if len(ok) > 1
                 else f"{mean:.2f}")
    if len(ok) != len(runs):
      parts[0] += f" (n={len(ok)})"
  if diverged:
    parts.append(f"{diverged} diverged")
  if failed:
    parts.append(f"{failed} failed")
  return ", ".join(parts)


def steps_entry(runs: list[dict]) -> str:
  """Seeds solved, and the median steps to solve of those that did."""
  runs = [r for r in runs if r["status"].kind is not Kind.ERROR]
  if not runs:
    return MISSING
  steps = [r["steps_to_solve"] for r in runs if solved(r)]
  text = f"{len(steps)}/{len(runs)}"
  if steps:
    text += f" ({int(np.median(steps))})"
  return text


def left_chance_entry(runs: list[dict]) -> str:
  """The median step at which the runs' training accuracy first reached
  :data:`LEFT_CHANCE_ACCURACY`, and each seed's (by seed; "–" never)."""
  runs = sorted((r for r in runs if (r.get("history") or {}).get("step")),
                key=lambda r: r["seed"])
  if not runs:
    return MISSING
  per_seed, median = _left_chance(runs)
  return f"{median} ({per_seed})"


def accuracy_table(rows: list[dict]) -> str:
  """Test accuracy (%) per cell x length: what the sweep prints."""
  return "\n".join(["Test accuracy (%), mean ± std over seeds", "",
                    *_grid(rows, accuracy_entry)]) + "\n"


def _machine(trained_on: dict[str, str]) -> str:
  """``JAX 0.11.2 on gpu (NVIDIA H200)``, with a precision that is not the
  backend's default."""
  backend = trained_on.get("backend", "?")
  details = [trained_on.get("device_kind", "?")]
  if details[0] == backend:
    details = []
  precision = trained_on.get("matmul_precision", "default")
  if precision != "default":
    details.append(f"matmul precision {precision}")
  return (f"JAX {trained_on.get('jax', '?')} on {backend}"
          + (f" ({', '.join(details)})" if details else ""))


def _where_trained(rows: list[dict], config: dict[str, Any]) -> str:
  """Where the runs trained, from their records; several machines are
  named with their run counts, as their float32 numbers differ."""
  machines = collections.Counter(_machine(r["trained_on"]) for r in rows)
  devices = f"{len(config.get('devices', []))} device(s)"
  if len(machines) <= 1:
    return ", ".join([*machines, devices]) + "."
  return ("Trained on several machines, whose float32 rounding differs: "
          + "; ".join(f"{m}: {n} run{'s' if n > 1 else ''}"
                      for m, n in sorted(machines.items())) + ".")


def sweep_report(rows: list[dict], config: dict[str, Any]) -> str:
  """``results.md``: settings, tables, figures, every run, what went wrong."""
  settings = config.get("training_settings", {})
  budget = settings.get("train_steps")
  lines = ["# Palindrome sweep", ""]
  def listed(key):
    return ", ".join(str(v) for v in sorted({r[key] for r in rows}))
  lines += [f"{len(rows)} runs: cells {listed('cell')}; N = "
            f"{listed('length')}; seeds {listed('seed')}. "
            f"{_where_trained(rows, config)}", ""]
  lines += _sizes(rows, settings)
  lines += ["## Test accuracy", "",
            f"Mean ± std over seeds, on {settings.get('eval_batches', '?')} "
            "fresh test batches (%).", "",
            *_grid(rows, accuracy_entry), "",
            "![accuracy against N](accuracy_vs_length.png)", ""]
  lines += ["## Steps to solve", "",
            f"Seeds whose solve check (10 held-out batches every "
            f"{settings.get('eval_every', '?')} steps"
            + (f", confirmed on {settings['confirm_batches']} more"
               if settings.get("confirm_batches") else "") + ") reached "
            f"{percent(settings.get('solved_accuracy'), 0)}% within "
            f"{budget} steps, and their median step"
            + (" (each stopped there: --stop_when_solved)."
               if settings.get("stop_when_solved") else "."), "",
            *_grid(rows, steps_entry), "",
            "![steps to solve against N](steps_to_solve.png)", "",
            "## Leaving chance", "",
            f"The step at which training accuracy first reached "
            f"{100 * LEFT_CHANCE_ACCURACY:g}% (logged every "
            f"{settings.get('log_every', '?')} steps): the median, and each "
            "seed's (\"–\": never).", "",
            *_grid(rows, left_chance_entry), "",
            "## Training curves", "",
            "![training curves](training_curves.png)", ""]
  lines += ["## Every run", "",
            *table(["cell", "N", "seed", "status", "test acc. (%)",
                    "steps to solve", "steps trained", "steps/s", "wall",
                    "compile (s)"],
                   [[r["cell"], r["length"], r["seed"], r["status"],
                     percent(r.get("test_accuracy")),
                     r.get("steps_to_solve") if r.get("steps_to_solve")
                     is not None else MISSING,
                     r.get("train_steps", MISSING),
                     number(r.get("steps_per_second"), ".0f"),
                     seconds(r.get("wall_seconds")),
                     number(r.get("compile_seconds"), ".1f")]
                    for r in rows]), ""]
  problems = [r for r in rows if r["status"].kind is not Kind.OK]
  if problems:
    lines += ["## Diverged or failed", ""]
    lines += [f"- {r['cell']} N={r['length']} seed {r['seed']}: {r['status']}"
              for r in problems]
    lines.append("")
  lines += ["## Settings", "", *_settings_table(settings), ""]
  provenance = provenance_table(rows)
  if provenance:
    lines += [*provenance, ""]
  return "\n".join(lines)


def _sizes(rows: list[dict], settings: dict[str, Any]) -> list[str]:
  """Each cell's width, parameters and state size (its first run's)."""
  first = {}
  for r in rows:
    if r.get("num_params") is not None and is_number(r["num_params"]):
      first.setdefault(r["cell"], r)
  if not first:
    return []
  budget = settings.get("num_params")
  return ["## Model sizes", "",
          (f"Each cell at the width whose parameter count is closest to "
           f"{budget:,} (--num_params). " if budget else "")
          + "State: the floats one example carries from step to step, over "
          "all layers.", "",
          *table(["cell", "layers", "width", "parameters", "state"],
                 [[cell, settings.get("num_layers", 1),
                   r.get("num_hidden", settings.get("num_hidden", MISSING)),
                   f"{int(r['num_params']):,}",
                   MISSING if r.get("state_size") is None
                   else f"{r['state_size']:,}"]
                  for cell, r in first.items()]), ""]


def _settings_table(settings: dict[str, Any]) -> list[str]:
  return table(["setting", "value"],
               [[k, v] for k, v in sorted(settings.items())])


def _counted(values: Sequence[str]) -> str:
  """``a`` if every value is ``a``; else each with its count of runs."""
  counts = collections.Counter(values)
  if len(counts) == 1:
    return next(iter(counts))
  return "; ".join(f"{v}: {n} run{'s' * (n > 1)}"
                   for v, n in sorted(counts.items()))


def _commit(provenance: dict[str, Any]) -> str:
  if "commit" not in provenance:
    return "not a git checkout"
  return (f"`{provenance['commit'][:12]}`"
          + (" with uncommitted changes" if provenance.get("dirty") else ""))


def provenance_table(rows: Sequence[dict]) -> list[str]:
  """Where the runs come from, as their records give it (the provenance of
  ``palindrome_jax.results``): commits, commands, hosts and library
  versions, each with its count of runs where they differ, and the first
  start and last end. Runs recorded before provenance was kept are
  counted apart; none (a page of those alone) when no run has it."""
  known = [r["provenance"] for r in rows if r.get("provenance")]
  missing = len(rows) - len(known)
  if not known:
    return []
  ended = [p["ended"] for p in known if p.get("ended")]
  body = [
      ["commit", _commit_counts(known)],
      ["command", _counted([f"`{shlex.join(p['command'])}`"
                            for p in known])],
      ["host", _counted([p["host"] for p in known])],
      ["started", min(p["started"] for p in known)],
      ["ended", max(ended) if ended else MISSING],
      ["versions", _counted([", ".join(f"{k} {v}" for k, v in
                                       sorted(p["versions"].items()))
                             for p in known])],
  ]
  if missing:
    body.append(["without provenance", f"{missing} run"
                 f"{'s' * (missing != 1)} (recorded before it was kept)"])
  return table(["provenance", "value"],
               [[k, v.replace("|", "\\|")] for k, v in body])


def _commit_counts(known: Sequence[dict]) -> str:
  return _counted([_commit(p) for p in known])


# A horizon search: its horizon.json (see palindrome_jax.horizon).


def first_fail(found: Optional[int], failed: Sequence[int]) -> Optional[int]:
  """The shortest failed length above ``found``: the horizon's upper bound."""
  above = [n for n in failed if found is not None and n > found]
  return min(above) if above else None


def tried_text(e: dict) -> str:
  """One length tried: seeds solved, their median steps to solve, and
  whether it passed (``40: 2/3 (1200) ✗``)."""
  solved_steps = [s for s in e["steps_to_solve"] if s is not None]
  median = (f" ({int(np.median(solved_steps))})" if solved_steps else "")
  return (f"{e['length']}: {sum(e['solved'])}/{len(e['solved'])}{median} "
          f"{'✓' if e['passed'] else '✗'}")


def _tried(evaluations: list[dict]) -> str:
  return ", ".join(tried_text(e) for e in evaluations) or MISSING


def horizon_text(entry: dict, settings: dict) -> str:
  """A cell's horizon as its table and its figure state it: ``37``; ``≥ 30,
  < 40`` (bisected to a ``--resolution``); ``< 5`` or ``≥ 200`` at the ends
  of the range searched; ``error``; the bounds so far while it searches.
  A sweep read as a search (``sweep_lengths``) says so: ``≥ 20, < 100
  (sweep: N = 5, 20, 100)``."""
  text = _horizon_bounds(entry, settings)
  if settings.get("sweep_lengths"):
    text += (" (sweep: N = "
             + ", ".join(str(n) for n in settings["sweep_lengths"]) + ")")
  return text


def _horizon_bounds(entry: dict, settings: dict) -> str:
  if "message" not in entry:  # Still searching: the bounds found so far.
    passed = [e["length"] for e in entry["evaluations"] if e["passed"]]
    if not passed:
      return "unfinished"
    failed = [e["length"] for e in entry["evaluations"] if not e["passed"]
              and e["length"] > max(passed)]
    upper = f", < {min(failed)}" if failed else ""
    return f"≥ {max(passed)}{upper} so far"
  if entry["message"].startswith("error"):
    return "error"
  found = entry.get("horizon")
  if found is None:
    return f"< {settings['min_length']}"
  if found == settings["max_length"]:
    return f"≥ {found}"
  above = first_fail(found, [e["length"] for e in entry["evaluations"]
                             if not e["passed"]])
  if above is not None and above > found + 1:  # --resolution.
    return f"≥ {found}, < {above}"
  return str(found)


def horizon_table(content: dict) -> str:
  """Markdown: per cell its horizon and every length tried, with the seeds
  that solved it and their median steps to solve."""
  settings = content["settings"]
  seeds = settings["seeds"]
  steps = settings["training"]["train_steps"]
  confirm = settings["training"]["confirm_batches"]
  lines = [
      f"Memory horizon: the largest N that every one of {len(seeds)} "
      f"seed{'s' * (len(seeds) > 1)} solves (a solve check ≥ "
      f"{100 * settings['threshold']:g}% on held-out batches"
      + (f", confirmed on {confirm} more" if confirm else "") + ") within "
      f"{steps} training steps "
      f"(N searched in [{settings['min_length']}, {settings['max_length']}]).",
      "",
      *table(["cell", "horizon",
              "N tried: seeds solved (median steps to solve)"],
             [[cell, horizon_text(entry, settings),
               _tried(entry["evaluations"])]
              for cell, entry in content["cells"].items()])]
  notes = [f"- {cell}: {entry['message']}"
           for cell, entry in content["cells"].items() if "message" in entry]
  return "\n".join(lines + [""] + notes) + "\n"


# The training accuracy that marks a run as having left chance (10%): the
# steps to reach it time how long a run sat on the chance plateau, at the
# log's resolution (--log_every), finer than the solve checks'.
LEFT_CHANCE_ACCURACY = 0.5


def steps_to_accuracy(history: dict,
                      level: float = LEFT_CHANCE_ACCURACY) -> Optional[int]:
  """The first logged step whose training accuracy is at least ``level``
  (a run's ``history``); None if none is."""
  for step, accuracy in zip(history.get("step", []),
                            history.get("accuracy", [])):
    if _number(accuracy) is not None and accuracy >= level:
      return step
  return None


def _left_chance(runs: Sequence[Optional[dict]]) -> tuple[str, str]:
  """Each run's :func:`steps_to_accuracy` ("–" for none, or for no run),
  comma-separated, and the median of those that reached it."""
  steps = [None if r is None else steps_to_accuracy(r["history"])
           for r in runs]
  reached = [x for x in steps if x is not None]
  return (", ".join(MISSING if x is None else str(x) for x in steps),
          number(np.median(reached) if reached else None, "g"))


def left_chance_table(content: dict, runs: Sequence[dict]) -> list[str]:
  """Markdown lines: per cell and length tried, the step at which each
  seed's training accuracy first reached :data:`LEFT_CHANCE_ACCURACY`
  (:func:`steps_to_accuracy`) and their median; none where no run of the
  lengths tried has a history."""
  by_run = {(r["cell"], r["length"], r["seed"]): r for r in runs
            if (r.get("history") or {}).get("step")}
  rows = []
  for cell, entry in content["cells"].items():
    for e in sorted(entry["evaluations"], key=lambda e: e["length"]):
      found = [by_run.get((cell, e["length"], seed)) for seed in e["seeds"]]
      if not any(found):
        continue
      rows.append([cell, e["length"], *_left_chance(found)])
  if not rows:
    return []
  return [f"The step at which each seed's training accuracy first reached "
          f"{100 * LEFT_CHANCE_ACCURACY:g}% (logged every "
          f"{content['settings']['training']['log_every']} steps; \"–\": "
          "never, or not logged): how long it sat at chance.", "",
          *table(["cell", "N", "per seed", "median"], rows, right=1)]


def horizon_report(content: dict,
                   runs: Optional[Sequence[dict]] = None) -> str:
  """``horizon.md``: the table, the figures, when each run left chance
  (from ``runs``' histories), every length tried, and the settings, with
  the provenance of ``runs`` (the runs of the lengths tried) where given."""
  left = left_chance_table(content, runs or [])
  lines = ["# Memory horizon", "", horizon_table(content),
           "![accuracy against N, horizons starred](horizon.png)", "",
           "![steps to solve against N](steps_to_solve.png)", "",
           *(["## Leaving chance", "", *left, ""] if left else []),
           "## Every length tried", ""]
  for cell, entry in content["cells"].items():
    for e in entry["evaluations"]:
      steps = [MISSING if x is None else str(x) for x in e["steps_to_solve"]]
      lines.append(
          f"- {cell} N={e['length']} (seeds "
          f"{', '.join(str(x) for x in e['seeds'])}): test accuracy "
          f"{', '.join(percent(a) for a in e['accuracies'])} %; "
          f"steps to solve {', '.join(steps)}; "
          f"{', '.join(sorted(set(e['statuses'])))}")
  lines += ["", "## Settings", "",
            *_settings_table(content["settings"]["training"]), ""]
  provenance = provenance_table(runs or [])
  if provenance:
    lines += [*provenance, ""]
  return "\n".join(lines)


# Gradient profiles: gradients.json (see palindrome_jax.gradients).


def usable_seeds(per_seed: list[dict]) -> list[dict]:
  """The seeds a gradient profile averages: those that trained ok (all, if
  none did)."""
  return [s for s in per_seed if s["status"] == Status.OK] or per_seed


def mean_test_accuracy(profile: dict) -> float:
  """Mean test accuracy over the seeds whose norms the profile averages."""
  return finite_mean([s["test_accuracy"]
                      for s in usable_seeds(profile["seeds"])])


def summary_part(norms: dict) -> str:
  """The part a figure or a one-number summary shows: the whole carry
  (``"total"`` where the carry has more than ``h``)."""
  return "total" if "total" in norms else "h"


def gradients_table(results: dict) -> str:
  """Markdown: the norm at the first and last step, at init and trained
  (at init only, with the ratio of the two, for ``init_only`` results)."""
  init_only = results.get("init_only", False)
  header = ["cell", "part", "init t=0", "init t=N-1"] + (
      ["t=0 / t=N-1"] if init_only else
      ["trained t=0", "trained t=N-1", "test accuracy"])
  rows = []
  for cell, profile in results["cells"].items():
    for part in sorted(profile["init"]):
      init = profile["init"][part]
      row = [cell, part, scientific(init[0]), scientific(init[-1])]
      if init_only:
        rows.append(row + [scientific(_ratio(init[0], init[-1]))])
        continue
      accuracy = mean_test_accuracy(profile)
      trained = profile["trained"][part]
      rows.append(row + [scientific(trained[0]), scientific(trained[-1]),
                         f"{100 * accuracy:.1f}%" if math.isfinite(accuracy)
                         else MISSING])
  return "\n".join([
      f"Mean ||dl/dcarry_t|| at N={results['length']} (t=0 reads the digit "
      "to remember; the loss is read after t=N-1)"
      + (", at initialisation (nothing trained)" if init_only else ""),
      "", *table(header, rows)]) + "\n"


def _ratio(numerator: float, denominator: float) -> float:
  return numerator / denominator if denominator else math.nan


def gradients_report(content: dict) -> str:
  """``gradients.md``: the table, the figure, each seed, the settings."""
  lines = ["# Vanishing gradients, measured", "",
           f"Measure: {content['measure']}; {content['examples']} examples, "
           f"seeds {content['seeds']}.", "", gradients_table(content),
           "![gradient norms against t](gradients.png)", "", "## Each seed",
           ""]
  for cell, profile in content["cells"].items():
    for s in profile["seeds"]:
      init = s["init"][summary_part(s["init"])]
      measured = (f"init t=0 {scientific(init[0])}, "
                  f"t=N-1 {scientific(init[-1])}")
      if "trained" in s:
        measured += (f"; {s['status']}, test accuracy "
                     f"{percent(s['test_accuracy'])}%, "
                     f"{s.get('train_steps', MISSING)} steps trained")
      lines.append(f"- {cell} seed {s['seed']}: {measured}")
  lines += ["", "## Settings", "",
            *_settings_table(content["training_settings"]), ""]
  return "\n".join(lines)


# Recipes compared (see palindrome_jax.compare).


def flag_value(value: Any) -> str:
  """A setting as its flag spells it: ``0.0003``, ``none``, ``adam``."""
  if isinstance(value, float):
    return f"{value:g}"
  return "none" if value is None else str(value)


def describe(changes: dict[str, Any]) -> str:
  """``a=1, b=adam``: the settings, as the flags that would set them."""
  return ", ".join(f"{k}={flag_value(v)}" for k, v in changes.items())


def compare_table(found: Sequence[Any], checks: dict[str, Any]) -> str:
  """Markdown: per recipe (:class:`palindrome_jax.compare.Recipe`) its
  seeds, horizon and lengths tried, then where its solve checks differed
  from ``checks`` (the defaults')."""
  training = found[0].settings["training"]
  rows = [[r.label, f"{len(r.settings['seeds'])} "
           f"({', '.join(map(str, r.settings['seeds']))})", r.horizon,
           _tried(r.entry["evaluations"])] for r in found]
  lines = [
      f"Memory horizon: the largest N that every seed solves (a solve check "
      f"≥ {100 * training['solved_accuracy']:g}% on held-out batches) "
      f"within {training['train_steps']} training steps. A recipe is named by "
      "its cell and the settings that differ from `experiments.horizon`'s "
      "defaults.", "",
      *table(["recipe", "seeds", "horizon",
              "N tried: seeds solved (median steps to solve)"], rows)]
  notes = [f"- {r.label}: {describe(r.protocol)}" for r in found if r.protocol]
  if notes:
    lines += ["", "Solve checks that differ from the defaults ("
              f"{describe(checks)}):", *notes]
  return "\n".join(lines) + "\n"


def compare_report(found: Sequence[Any], checks: dict[str, Any],
                   verdicts: Sequence[Any] = (),
                   not_searched: Sequence[str] = ()) -> str:
  """``compare.md``: :func:`compare_table`, each grid's best
  (:func:`grid_verdicts`, if ``verdicts``), the figure, and where each
  recipe's search is (and which points of a grid have none yet)."""
  lines = ["# Recipes compared", "", compare_table(found, checks)]
  if verdicts:
    lines += [grid_verdicts(verdicts)]
  lines += ["![seeds solved and steps to solve against N](compare.png)", "",
            "## Sources", "", *[f"- {r.label}: `{r.directory}`"
                                for r in found], ""]
  if not_searched:
    lines += ["Points of a grid not searched yet:",
              *[f"- `{path}`" for path in not_searched], ""]
  return "\n".join(lines)


def grid_verdicts(verdicts: Sequence[Any]) -> str:
  """Markdown: per grid and cell (:class:`palindrome_jax.compare.Verdict`)
  the best point, its horizon and median steps to solve there, and why it
  won."""
  rows = []
  for v in verdicts:
    best = v.best
    rows.append([f"`{v.grid}`", v.cell,
                 describe(best.point.values) if best else MISSING,
                 best.horizon if best else MISSING,
                 _steps(best) if best else MISSING, v.why()])
  lines = ["## Best of each grid", "",
           "Per cell, the point of the grid with the largest horizon; a tie "
           "is broken by the fewest median steps to solve at that horizon.",
           "", *table(["grid", "cell", "best", "horizon",
                       "median steps to solve at it", "won"], rows)]
  unjudged = [f"- `{v.grid}` {v.cell}: {describe(r.point.values)} "
              f"({'error' if r.horizon == 'error' else 'still searching'})"
              for v in verdicts for r in v.unjudged]
  if unjudged:
    lines += ["", "Not judged (the search has not ended):", *unjudged]
  return "\n".join(lines) + "\n"


def _steps(recipe: Any) -> str:
  """The median steps to solve at ``recipe``'s horizon, or "–"."""
  steps = recipe.steps_at_horizon
  return MISSING if steps is None else f"{steps:g}"


def grid_verdict_text(verdict: Any) -> str:
  """Why a grid's best point won (:class:`palindrome_jax.compare.Verdict`):
  ``the largest horizon, 40 (learning_rate=0.001: 30)``; ``horizon 12 as
  learning_rate=0.001, in fewer median steps to solve at N=12: 800 (1500)``;
  or the tie, or that nothing else ended."""
  best = verdict.best
  if best is None and verdict.ranked:
    return (f"none wins: no point's seeds all solve the shortest length, "
            f"N={verdict.ranked[0].settings['min_length']}")
  if best is None:
    return "no search of this cell has ended"
  name = describe(best.point.values)
  if len(verdict.ranked) == 1:
    return f"{name} wins: the only point whose search ended"
  tied = verdict.tied
  if len(tied) > 1:
    return (f"tie: {', '.join(describe(r.point.values) for r in tied)} "
            f"(horizon {best.horizon}, median steps {_steps(best)}); "
            f"{name} listed first")
  after = verdict.ranked[1]
  other = describe(after.point.values)
  if best.entry.get("horizon") != after.entry.get("horizon"):
    return (f"{name} wins: the largest horizon, {best.horizon} ({other}: "
            f"{after.horizon})")
  return (f"{name} wins: horizon {best.horizon} as {other}, in fewer median "
          f"steps to solve at N={best.entry['horizon']}: {_steps(best)} "
          f"({other}: {_steps(after)})")


# Saved parameters evaluated (see palindrome_jax.evaluate).


def evaluate_table(rows: list[dict]) -> str:
  """Markdown: test accuracy (%) per (cell, trained N) x test N, mean ± std
  over the seeds that trained ok; diverged seeds are counted apart, as in
  the sweep's table (:func:`accuracy_entry`)."""
  test_lengths = sorted({r["test_length"] for r in rows
                         if r["test_length"] is not None})
  groups = sorted({(r["cell"], r["trained_length"]) for r in rows})
  body = [[cell, trained] + [accuracy_entry(
      [r for r in rows if r["cell"] == cell and r["trained_length"] == trained
       and r["test_length"] == n and "test_accuracy" in r])
                             for n in test_lengths]
          for cell, trained in groups]
  lines = ["Test accuracy (%) of saved parameters, mean ± std over seeds", "",
           *table(["cell", "trained N"] + [f"test N={n}" for n in test_lengths],
                  body)]
  problems = [f"- {r['cell']} N={r['trained_length']} seed {r['seed']}: "
              f"{r['status']}" for r in rows if r["test_length"] is None]
  if problems:
    lines += ["", "Not evaluated:", *problems]
  return "\n".join(lines) + "\n"


def digit_table(rows: list[dict]) -> str:
  """Markdown: per evaluated run and test N, its accuracy (%) on the
  examples of each target digit (``accuracy_by_digit``), which tells a
  model that remembers part of the first digit (100% on some digits,
  chance on the others) from one that remembers it all, or none of it."""
  done = sorted((r for r in rows if r.get("accuracy_by_digit")),
                key=lambda r: (r["cell"], r["trained_length"], r["seed"],
                               r["test_length"]))
  digits = range(len(done[0]["accuracy_by_digit"])) if done else range(0)
  body = [[r["cell"], r["trained_length"], r["seed"], r["test_length"]]
          + [percent(a, 0) for a in r["accuracy_by_digit"]] for r in done]
  return "\n".join([
      "Accuracy (%) by the target digit (the first), per run", "",
      *table(["cell", "trained N", "seed", "test N"]
             + [str(d) for d in digits], body)]) + "\n"


# The benchmark (see palindrome_jax.benchmark).


def significant(x: Optional[float], digits: int = 3) -> str:
  """A number to about ``digits`` significant figures, with thousands
  separators; "–" if missing or not finite."""
  if _number(x) is None:
    return MISSING
  if x == 0 or abs(x) >= 10 ** (digits - 1):
    return f"{x:,.0f}"
  decimals = digits - 1 - int(math.floor(math.log10(abs(x))))
  return f"{x:,.{decimals}f}"


def device_line(machine: dict[str, Any]) -> str:
  """What the benchmark ran on: ``NVIDIA H200 (JAX 0.10.2, gpu)``."""
  kind = machine["device_kind"]
  if machine["backend"] == "cpu":
    kind = f"{machine['processor'] or 'CPU'}, {machine['cpu_count']} cores"
    usable = machine.get("cpus_usable")
    if usable and usable < machine["cpu_count"]:
      kind += f" ({usable} used: the process was pinned)"
  return f"{kind} (JAX {machine['jax']}, {machine['backend']})"


def benchmark_title(bench: Any) -> str:
  """The title of ``benchmark.png`` for a :class:`benchmark.Report`."""
  train_config = bench.settings["train_config"]
  size = (f"{train_config['num_hidden']} hidden" if "num_hidden" in
          train_config else f"{train_config['num_params']:,} parameters")
  return (f"Training steps per second, batch {train_config['batch_size']}, "
          f"{size}\n"
          f"{device_line(bench.machine)}")


def benchmark_report(bench: Any) -> str:
  """``benchmark.md`` for a :class:`palindrome_jax.benchmark.Report`: one
  long table, a row per (cell, N, method), and what was measured on."""
  machine, settings = bench.machine, bench.settings
  train_config = settings["train_config"]
  lines = [
      "# Training step throughput",
      "",
      f"- device: {device_line(machine)}; devices "
      f"{', '.join(machine['devices'])}",
  ]
  if machine.get("torch"):
    elsewhere = (" (not the JAX device: this torch build has no CUDA)"
                 if machine["torch_device"] == "cpu"
                 and machine["backend"] != "cpu" else "")
    lines.append(f"- torch {machine['torch']} on {machine['torch_device']}"
                 f"{elsewhere}, {machine['torch_threads']} threads")
  lines += [
      f"- batch {train_config['batch_size']}, " + (
          f"{train_config['num_hidden']} hidden" if "num_hidden" in train_config
          else "each cell at the width closest to "
          f"{train_config['num_params']:,} parameters (--num_params; the "
          "widths: the matmul shapes below)")
      + f", {train_config['encoding']} input, {train_config['optimizer']} "
      f"after clipping; median of {settings['repeats']} repeats of "
      f"{settings['steps']} steps ({settings['eager_steps']} for eager), "
      "after a warm-up, the methods of each row group taking turns repeat "
      "by repeat",
      "- fp32 matmul rate: " + "; ".join(
          f"{p['shape']} {significant(p['gflops'])} GFLOP/s"
          + (f" ({', '.join(p['cells'])})" if p["cells"] else "")
          for p in bench.matmul_peaks),
      ""]
  rows, notes = [], []
  for row in bench.rows:
    if row["status"] != "ok":
      note = f"{row['label']}: {row['status']}"
      if note not in notes:
        notes.append(note)
      continue
    speedup = row["speedup_over_eager"]
    rows.append([row["cell"], row["length"], row["label"],
                 significant(row["steps_per_second"]),
                 MISSING if speedup is None else "×" + significant(speedup, 2),
                 significant(row["compile_seconds"], 2),
                 significant(row["gflops"]),
                 significant(row["percent_of_matmul_peak"], 2),
                 significant(row.get("xla_gflops"))])
  lines += [
      *table(["cell", "N", "method", "steps/s", "× eager", "compile (s)",
              "GFLOP/s", "% of matmul rate", "XLA GFLOP/s"], rows, right=6),
      "",
      "GFLOP/s counts the recurrent and readout matmuls only (3x the "
      "forward's); the % is of the chained fp32 matmul rate at the cell's "
      "[B, H] x [H, G*H] shape, the recurrence's own ceiling. XLA GFLOP/s "
      "counts every op of the compiled jitted step (elementwise work "
      "included) as XLA's cost analysis does, at the same steps/s, with its "
      "time loop's body counted once per time step (XLA counts it once in "
      "all: what unrolling it by two adds, N - 1 more times).",
  ]
  if notes:
    lines += ["", "Not measured:", ""] + [f"- {note}" for note in notes]
  return "\n".join(lines) + "\n"


def _first_failure(standing: Any) -> str:
  """Seeds solved at the shortest failed length above the standing's bound
  (``225: 1/3``); a length still training has not failed."""
  found = standing.bound
  failed = sorted((e for e in standing.best.entry["evaluations"]
                   if not e["passed"]
                   and (found is None or e["length"] > found)),
                  key=lambda e: e["length"])
  if not failed:
    return MISSING
  e = failed[0]
  return f"{e['length']}: {sum(e['solved'])}/{len(e['solved'])}"


def _learning_rates(standing: Any) -> str:
  rates = standing.learning_rates
  best = flag_value(standing.learning_rate)
  if len(rates) == 1:
    return best
  return f"{best} (of {', '.join(flag_value(r) for r in rates)})"


def leaderboard_table(standings: Sequence[Any]) -> list[str]:
  """Markdown lines: one row per :class:`palindrome_jax.leaderboard.Standing`
  (in order), its size, horizon, best learning rate and cost."""
  rows = []
  for k, s in enumerate(standings, 1):
    rows.append([
        k, s.label, s.num_layers if s.block == "stack"
        else f"{s.num_layers} (residual)",
        number(s.num_hidden, ".0f"), number(s.num_params, ",.0f"),
        number(s.state_size, ",.0f"),
        f"**{s.horizon_text}**",
        number(s.steps_at_bound, "g"), _first_failure(s),
        _learning_rates(s),
        significant(s.cost)])
  return table(["#", "cell", "layers", "width", "parameters", "state size",
                "horizon", "median steps to solve at it (so far: at the "
                "longest N passed)",
                "first failing N: seeds solved", "learning rate",
                "core-s per 1,000 steps at N=100"], rows)


def leaderboard_report(standings: Sequence[Any],
                       params: Optional[int] = None,
                       within: str = "",
                       commands: Optional[dict[str, Optional[str]]] = None
                       ) -> str:
  """``leaderboard.md``: the table, the figure, what each column means and
  where each row's searches are, with the command that regenerates each
  (``commands``, by directory, where known) and its runs' wall time; with
  ``params``, the table at equal parameters
  (:func:`palindrome_jax.leaderboard.at_params`), its models ``within``
  (:func:`palindrome_jax.leaderboard.within`)."""
  commands = commands or {}
  training = standings[0].best.settings["training"]
  title, sized = "# Memory leaderboard", []
  if params is not None:
    title += f" at {params:,} parameters"
    sized = [f"Every model here has {within}: sized to them "
             "(`--num_params`, the closest width) or that size at its "
             "width.", ""]
  lines = [
      title, "", *sized,
      f"Horizon: the largest N that every seed solves (a solve check ≥ "
      f"{100 * training['solved_accuracy']:g}% on held-out batches) within "
      f"{training['train_steps']} training steps; per row the best of the "
      "learning rates searched (the largest horizon, then the fewest median "
      "steps to solve at it). State size: the floats one example carries "
      "between steps, over all layers. Cost: core-seconds per 1,000 training "
      "steps at N=100 (the sweep's compiled loop, one run per core), where a "
      "benchmark timed the model.", "",
      *leaderboard_table(standings), "",
      "![horizon per cell](leaderboard.png)", "",
      "## Sources", "",
      "Per row, each results directory it reads (the best first), the "
      "command that regenerates it, and the wall time of its runs summed "
      "over the lengths the row reads (runs side by side each count their "
      "own).",
      "",
      *table(["#", "cell", "results directory", "command",
              "runs' wall time"],
             [[k, s.label, f"`{r.directory}`" + (
                 " (a sweep)" if r.settings.get("sweep_lengths") else ""),
               f"`{commands[r.directory]}`" if commands.get(r.directory)
               else MISSING, seconds(r.wall_seconds)]
              for k, s in enumerate(standings, 1) for r in s.tried]),
      ""]
  return "\n".join(lines)
