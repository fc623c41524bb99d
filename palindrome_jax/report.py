"""The pages a person reads: markdown reports with their figures, and the
formatters every table uses (a value that is missing or not finite prints
as "–", everywhere).

``results.md`` (a sweep), ``horizon.md`` and ``gradients.md`` embed their
figures with relative links, so they read well on GitHub and in an editor's
preview.
"""

import collections
import math
from typing import Any, Optional, Sequence

import numpy as np

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
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  """Markdown table lines."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
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
        if r["status"] == "ok" and _number(r.get("test_accuracy")) is not None]
  diverged = sum(r["status"].startswith("diverged") for r in runs)
  failed = sum(r["status"].startswith("error") for r in runs)
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
  runs = [r for r in runs if not r["status"].startswith("error")]
  if not runs:
    return MISSING
  steps = [r["steps_to_solve"] for r in runs
           if r.get("steps_to_solve") is not None and r["status"] == "ok"]
  text = f"{len(steps)}/{len(runs)}"
  if steps:
    text += f" ({int(np.median(steps))})"
  return text


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
  machines = collections.Counter(_machine(r["trained_on"]) for r in rows
                                 if isinstance(r.get("trained_on"), dict))
  devices = f"{len(config.get('devices', []))} device(s)"
  if not machines:  # Records from before runs said where they trained.
    return (f"JAX {config.get('jax_version', '?')} on "
            f"{config.get('backend', '?')} ({devices}).")
  if len(machines) == 1:
    return f"{next(iter(machines))}, {devices}."
  return ("Trained on several machines, whose float32 rounding differs: "
          + "; ".join(f"{m}: {n} run{'s' if n > 1 else ''}"
                      for m, n in sorted(machines.items())) + ".")


def sweep_report(rows: list[dict], config: dict[str, Any]) -> str:
  """``results.md``: settings, tables, figures, every run, what went wrong."""
  settings = config.get("training_settings", {})
  budget = settings.get("train_steps")
  lines = ["# Palindrome sweep", ""]
  lines += [f"{len(rows)} runs: cells {', '.join(sorted({r['cell'] for r in rows}))}"
            f"; N = {', '.join(str(n) for n in sorted({r['length'] for r in rows}))}"
            f"; seeds {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}."
            f" {_where_trained(rows, config)}", ""]
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
  problems = [r for r in rows if r["status"] != "ok"]
  if problems:
    lines += ["## Diverged or failed", ""]
    lines += [f"- {r['cell']} N={r['length']} seed {r['seed']}: {r['status']}"
              for r in problems]
    lines.append("")
  lines += ["## Settings", "",
            *table(["setting", "value"],
                   [[k, v] for k, v in sorted(settings.items())]), ""]
  return "\n".join(lines)
