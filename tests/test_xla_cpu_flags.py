"""sed_jax sets its one XLA:CPU flag at import, before JAX starts, and never overrides a user's
choice (`sed_jax/xla_cpu_flags.py`). Each case imports sed_jax in a fresh interpreter: the flag
only matters before JAX's backends start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sed_jax import xla_cpu_flags

_PRINT_FLAGS = "import os, sed_jax; print(os.environ.get('XLA_FLAGS', '<unset>'))"


def _xla_flags_after_import(env_changes: dict[str, str | None], code: str = _PRINT_FLAGS) -> str:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", xla_cpu_flags.KEEP_DEFAULTS_ENV)}
  env.update({k: v for k, v in env_changes.items() if v is not None})
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
  return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("before,after", [
    (None, f"{xla_cpu_flags.FLAG}="),
    ("--xla_force_host_platform_device_count=2",
     f"--xla_force_host_platform_device_count=2 {xla_cpu_flags.FLAG}="),
    (f"{xla_cpu_flags.FLAG}=individual_dot", f"{xla_cpu_flags.FLAG}=individual_dot"),
])
def test_import_adds_the_flag_and_keeps_a_users_value(before, after):
  assert _xla_flags_after_import({"XLA_FLAGS": before}) == after


def test_opting_out_keeps_jaxlibs_default():
  assert _xla_flags_after_import({xla_cpu_flags.KEEP_DEFAULTS_ENV: "1"}) == "<unset>"


def test_not_set_once_jax_has_started():
  """Too late to take effect, so not set: the CPU kernels' rule then reads the truth."""
  code = ("import os, jax; jax.devices(); import sed_jax; "
          "from sed_jax import xla_cpu_flags as f; "
          "print(os.environ.get('XLA_FLAGS', '<unset>'), f.fusions_set())")
  assert _xla_flags_after_import({}, code) == "<unset> False"
