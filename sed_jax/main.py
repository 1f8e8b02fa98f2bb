r"""Entry point: flags only.

  python -m sed_jax.main --config=configs/student.py --workdir=runs/student
  python -m sed_jax.main --config=configs/teacher.py:arch=resnet --workdir=runs/resnet
  python -m sed_jax.main --config=configs/teacher.py:arch=resnet,smoke --config.seed=1

Re-running the same command resumes from the workdir; a finished run is not redone.
"""

from __future__ import annotations

from absl import app
from absl import flags
from ml_collections import config_flags

from sed_jax import metric_writers
from sed_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go "
                               "(default: runs/<job>).")

JOBS = {"train": train.train_and_evaluate}

def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  config = _CONFIG.value
  if config.job not in JOBS:
    raise app.UsageError(f"Config key job={config.job!r} is not one of {sorted(JOBS)}.")
  JOBS[config.job](config, _WORKDIR.value or f"runs/{config.job}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
