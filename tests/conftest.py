"""Shared test configuration and fixtures.

Strict rank promotion (``jax_numpy_rank_promotion="raise"``, as Equinox's test
config) is on for the whole session: an implicit ``[H] + [B, H]`` broadcast is
an error, so shapes in the library are always spelled out.
"""

import contextlib
import os

# No persistent compilation cache anywhere in the suite: not in this process
# (the entrypoints run in it through Command.execute would otherwise turn on
# their default --compilation_cache_dir, ~/.cache/palindrome_jax/xla) and not
# in the entrypoints it starts (they inherit the environment). With jaxlib
# 0.10.2 on a CPU, reading an entry back in the suite's process crashed it
# (CI: a segfault in compilation_cache.get_executable_and_time) and writing
# one aborted it. Programs compiled in a process are still reused from
# memory; cache_test.py covers the cache itself, in processes of its own.
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from palindrome_jax import cells

STRICT_RANK_PROMOTION = True

if STRICT_RANK_PROMOTION:
  jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_report_header(config):
  del config
  mode = jax.config.jax_numpy_rank_promotion
  return (f"jax {jax.__version__}, rank promotion {mode!r}, "
          f"devices {jax.devices()}")


@contextlib.contextmanager
def registry_restored():
  """Cells registered inside are gone afterwards; the registry is as before."""
  saved = [(table, dict(table)) for table in (
      cells._REGISTRY, cells._KEYS_OF)]  # pylint: disable=protected-access
  try:
    yield
  finally:
    for table, contents in saved:
      table.clear()
      table.update(contents)
    cells._build.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def restore_cell_registry():
  """Lets a test register cells; the registry is as before afterwards."""
  with registry_restored():
    yield


# Test files that run in a process of their own (tests/isolated_test.py
# starts them): in the full suite's process, compiling train_test's resumed
# run crashed XLA (three CI rehearsals, after profiling_test had traced with
# jax.profiler in that process); alone, each passes.
ISOLATED = ("profiling_test.py", "train_test.py")
CHILD_ENV = "PALINDROME_ISOLATED_TEST"


def pytest_ignore_collect(collection_path, config):
  del config
  if collection_path.name in ISOLATED and not os.environ.get(CHILD_ENV):
    return True
  return None
