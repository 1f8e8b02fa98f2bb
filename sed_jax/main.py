r"""Entry point: flags only.

  python -m sed_jax.main --config=configs/student.py
  python -m sed_jax.main --config=configs/teacher.py:arch=resnet --workdir=runs/resnet
  python -m sed_jax.main --config=configs/teacher.py:arch=resnet,smoke --config.seed=1

Without --workdir, runs/<config name>_<arguments> is used (and printed). Re-running the same
command resumes from the workdir; a finished run is not redone.
"""

from __future__ import annotations

import json
import os
import sys

from sed_jax import hugepages

if __name__ == "__main__":  # Restart with huge pages before the imports below (why: hugepages).
  hugepages.reexec()

import jax  # pylint: disable=wrong-import-position
import yaml
from absl import app
from absl import flags
from ml_collections import config_flags

from sed_jax import config_checks
from sed_jax import config_lib
from sed_jax.kd import experiment
from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax import preemption
from sed_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go "
                               "(default: runs/<config name>_<arguments>).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for "
                                   "hand-started multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in that run.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", os.environ.get("SED_JAX_COMPILATION_CACHE", ""),
    "Persistent XLA compilation cache (a local folder or gs://...; default "
    "$SED_JAX_COMPILATION_CACHE): later runs of the same shapes skip compiling.")

_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the resolved config (every key, after the overrides) and the "
    "values it implies (global and KD batches, steps, learning rate after scaling), then exit.")

JOBS = {"train": train.train_and_evaluate, "distill": experiment.run}
DERIVED = {"train": train.derived, "distill": experiment.derived}


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a readable error for an unknown --config.<key> override."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, flags.IllegalFlagValueError) as e:
    config = flags.FLAGS["config"]
    if not config.present and not any(a.startswith("--config=") for a in argv):
      raise
    spec = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    base = config_lib.load_config(spec)
    sys.exit(config_lib.unknown_override(base, argv) or f"Bad --config override: {e}")


def initialize_distributed() -> None:
  """JAX's multi-controller runtime, when the launcher asks for it (SED_JAX_DISTRIBUTED=1, as
  launch/tpu_vm.sh sets on every TPU worker, or the explicit coordinator flags)."""
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif os.environ.get("SED_JAX_DISTRIBUTED") == "1":
    jax.distributed.initialize()  # Cluster details from the environment (TPU VMs, SLURM).


def use_compilation_cache(path: str) -> None:
  """Compiled programs are kept in `path` and reused by every later run (and by this run's
  teacher worker processes, which read it from the environment)."""
  if path:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    jax.config.update("jax_compilation_cache_dir", path)


def resolved_config(config) -> str:
  """The config as YAML, then `derived:` with what its values imply (`DERIVED`)."""
  plain = json.loads(config.to_json())  # Tuples as lists: plain YAML that any tool reads back.
  return yaml.safe_dump(plain) + yaml.safe_dump({"derived": DERIVED[config.job](config)},
                                                sort_keys=False)


def main(argv):
  del argv
  use_compilation_cache(_COMPILATION_CACHE.value)
  initialize_distributed()
  metric_writers.quiet_library_logs()
  config = _CONFIG.value
  if config.job not in JOBS:
    raise app.UsageError(f"Config key job={config.job!r} is not one of {sorted(JOBS)}.")
  workdir = _WORKDIR.value or config_lib.default_workdir(
      config_flags.get_config_filename(flags.FLAGS["config"]))
  try:
    config_checks.check(config, jax.device_count())
  except config_checks.ConfigError as e:
    sys.exit(f"sed_jax: {e}")
  if _PRINT_CONFIG.value:
    print(resolved_config(config), flush=True)
    return
  print(f"workdir: {workdir}", flush=True)
  with preemption.exit_on_preemption():
    try:
      JOBS[config.job](config, workdir)
    except (io_utils.BusyError, experiment.StaleCacheError) as e:
      sys.exit(f"sed_jax: {e}")  # A situation to act on, explained; not a bug's traceback.


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=parse_flags)
