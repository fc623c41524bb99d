"""Shared test configuration and fixtures.

Strict rank promotion (``jax_numpy_rank_promotion="raise"``, as Equinox's test
config) is on for the whole session: an implicit ``[H] + [B, H]`` broadcast is
an error, so shapes in the library are always spelled out.
"""

import contextlib
import importlib.metadata
import os
import tempfile

# Compiled programs are cached on disk for the whole session, and for the
# entrypoints that tests start as subprocesses (they inherit the environment):
# many tests train the same tiny configuration, and compiling dominates them.
# One directory per jaxlib release: an entry another release (a scratch
# environment at the floor versions, say) wrote is never read; reading a
# foreign or damaged entry can crash the process.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "palindrome_jax_test_compilation_cache-jaxlib"
    + importlib.metadata.version("jaxlib")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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
