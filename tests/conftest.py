"""Settings for the whole suite, made before JAX starts.

The suite compiles hundreds of tiny programs, each of which then runs a few steps: compilation,
not execution, is its cost. XLA:CPU's LLVM back end at -O0 compiles them in about half the
time (docs/benchmarks.md, "Test suite time"). Every verdict compares runs made under the same
flags, or results against references within tolerances, so the level decides none; users and
benchmarks run at XLA's default. Child processes inherit the setting; those that set their own
XLA_FLAGS add to it with `tests.xla_flags`.

The suite runs on every core (pytest-xdist, one test file per worker at a time): the files that
hold a `slow` test are collected first, so the longest files start at once and the workers
finish together instead of one of them running the last long file alone.
"""

import os

from tests import TEST_XLA_FLAGS

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def pytest_collection_modifyitems(config, items):
  """The files holding a `slow` test first; a stable sort, so each file keeps its order."""
  del config
  slow = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow)
