"""The benchmark's files: ``benchmark.json``, ``benchmark.md`` (one long
table, :func:`palindrome_jax.report.benchmark_report`) and ``benchmark.png``
(steps/s per method, log scale), written beside the entrypoint that needs
them, from :class:`benchmark.Report`."""

import os

from palindrome_jax import files as io
from palindrome_jax import plots
from palindrome_jax import report as report_lib
from palindrome_jax.benchmark import Report


def write(report: Report, results_dir: str) -> None:
  report.table = report_lib.benchmark_report(report)
  io.write_json(os.path.join(results_dir, "benchmark.json"), report.to_json())
  io.atomic_write_text(os.path.join(results_dir, "benchmark.md"), report.table)
  plots.benchmark(report.rows, os.path.join(results_dir, "benchmark.png"),
                  title=report_lib.benchmark_title(report))
