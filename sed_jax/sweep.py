r"""Prints a config's sweep as command-line overrides, one run per line.

  python -m sed_jax.sweep --config=configs/student.py
  --config.kd.strategy=mean_prob --config.seed=0
  ...

Config files define `get_sweep() -> list[dict]` beside `get_config` (keys are config paths);
launchers (launch/tpu_vm.sh sweep, launch/gpu.sh sweep) read these lines, so a sweep is
defined once, in the config file it sweeps.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from sed_jax import config_lib

_CONFIG = flags.DEFINE_string("config", None, "Config file (configs/...py[:arg]).")


def sweep_lines(spec: str) -> list[str]:
  """One line of `--config.<key>=<value>` overrides per run of the config's sweep."""
  path = spec.partition(":")[0]
  module = config_lib.load_config_module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(); nothing to sweep.")
  return [" ".join(f"--config.{k}={v}" for k, v in run.items()) for run in module.get_sweep()]


def main(argv):
  del argv
  try:
    print("\n".join(sweep_lines(_CONFIG.value)))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"sweep: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
