"""Settings for the whole suite, made before JAX starts.

The suite compiles hundreds of tiny programs, each of which then runs a few steps: compilation,
not execution, is its cost. XLA:CPU's LLVM back end at -O0 compiles them in about half the
time (docs/benchmarks.md, "Test suite time"). Every verdict compares runs made under the same
flags, or results against references within tolerances, so the level decides none; users and
benchmarks run at XLA's default. Child processes inherit the setting; those that set their own
XLA_FLAGS add to it with `tests.xla_flags`.
"""

import os

from tests import TEST_XLA_FLAGS

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
