r"""Prints a config's sweep as command-line overrides, one run per line.

  python -m sed_jax.sweep --config=configs/student.py
  --config.kd.strategy=mean_prob --config.seed=0
  ...

Config files define `get_sweep() -> list[dict]` beside `get_config` (keys are config paths);
launchers (launch/tpu_vm.sh sweep, launch/gpu.sh sweep) read these lines, so a sweep is
defined once, in the config file it sweeps.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string("config", None, "Config file (configs/...py[:arg]).")


def sweep_lines(spec: str) -> list[str]:
  path, _, _ = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_sed_jax_sweep_config", path)
  if module_spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path} not found.")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
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
