r"""Prints a config's sweep as command-line overrides, one run per line.

  python -m sed_jax.sweep --config=configs/student.py [--sweep=large_batch]
  --config.kd.strategy=mean_prob --config.seed=0
  ...

Config files define `get_sweep(name) -> list[dict]` beside `get_config` (keys are config paths);
launchers (launch/tpu_vm.sh sweep, launch/gpu.sh sweep) read these lines, so a sweep is
defined once, in the config file it sweeps.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from sed_jax import config_lib

_CONFIG = flags.DEFINE_string("config", None, "Config file (configs/...py[:arg]).")
_SWEEP = flags.DEFINE_string("sweep", None, "Which of the config's sweeps (get_sweep(name)); "
                             "default: its first.")


def sweep_lines(spec: str, name: str | None = None) -> list[str]:
  """One line of `--config.<key>=<value>` overrides per run of the config's sweep `name`."""
  path = spec.partition(":")[0]
  module = config_lib.load_config_module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(); nothing to sweep.")
  runs = module.get_sweep() if name is None else module.get_sweep(name)
  return [" ".join(f"--config.{k}={v}" for k, v in run.items()) for run in runs]


def main(argv):
  del argv
  try:
    print("\n".join(sweep_lines(_CONFIG.value, _SWEEP.value)))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"sweep: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
