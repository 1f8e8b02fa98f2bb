"""The test suite; tests/conftest.py holds the settings it runs under."""

# XLA flags of every JAX process the suite starts (why: tests/conftest.py).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(*flags: str) -> str:
  """XLA_FLAGS for a child process that needs `flags` (a device count) besides the suite's."""
  return " ".join((TEST_XLA_FLAGS, *flags))
