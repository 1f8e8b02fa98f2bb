r"""Wall time of the teacher phase: teachers one after the other vs `parallel_runs` at a time.

  python benchmarks/parallel_runs.py [--teachers=resnet,xception] [--steps=80] [--workers=2]

Both sides run `experiment.train_teachers` on the default config's CPU teachers (configs/student.py,
`scale=cpu`), with `--steps` training steps each at the config's batch size, one validation pass
and the test pass, on a small synth_sed (train 256 clips, validation and test 32) built before
timing. Every teacher run starts from nothing (a fresh workdir per side), compilation included,
as in the first run of the experiment. The sides run one after the other (sequential first) on
an otherwise idle machine; the ratio is sequential time / parallel time (> 1: workers pay off).

Writes benchmarks/results/parallel_runs.json; last line `result: parallel_runs_speedup <x> x`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags
from absl import logging

from sed_jax import config_lib
from sed_jax.kd import experiment
from sed_jax.data import builders

_TEACHERS = flags.DEFINE_list("teachers", ["resnet", "xception"], "Teachers trained per side.")
_STEPS = flags.DEFINE_integer("steps", 80, "Training steps per teacher.")
_WORKERS = flags.DEFINE_integer("workers", 2, "parallel_runs of the parallel side.")
_OUT = flags.DEFINE_string("out", str(Path(__file__).parent / "results" / "parallel_runs.json"),
                           "Where the JSON result goes.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  root = Path(tempfile.mkdtemp(prefix="parallel_runs_"))
  config = config_lib.load_config(str(Path(__file__).parents[1] / "configs" / "student.py"))
  config.teachers = list(_TEACHERS.value)
  config.dataset.data_dir = str(root / "tfds")
  config.dataset.synth.update(dict(train=256, validation=32, test=32, unlabeled=0))
  config.teacher.update(dict(total_steps=_STEPS.value, eval_every=_STEPS.value,
                             checkpoint_every=_STEPS.value, log_every=_STEPS.value))
  builders.prepare(config.dataset, config.features)

  seconds = {}
  for workers in (1, _WORKERS.value):
    config.parallel_runs = workers
    t0 = time.perf_counter()
    experiment.train_teachers(config, root / f"workers_{workers}")
    seconds[workers] = time.perf_counter() - t0
    print(f"parallel_runs={workers}: {len(config.teachers)} teachers x {_STEPS.value} steps "
          f"in {seconds[workers]:.1f} s", flush=True)
  speedup = seconds[1] / seconds[_WORKERS.value]
  # Same work on both sides: every teacher's test metrics agree.
  same = all(json.loads((root / "workers_1" / "teachers" / t / "test_metrics.json").read_text()) ==
             json.loads((root / f"workers_{_WORKERS.value}" / "teachers" / t /
                         "test_metrics.json").read_text()) for t in config.teachers)
  print(f"same test metrics on both sides: {same}")
  out = dict(teachers=config.teachers, steps=_STEPS.value, batch_size=config.teacher.batch_size,
             workers=_WORKERS.value, seconds={str(k): v for k, v in seconds.items()},
             speedup=speedup, same_test_metrics=same, cpu_count=os.cpu_count(), machine=platform.platform())
  Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
  Path(_OUT.value).write_text(json.dumps(out, indent=2) + "\n")
  print(f"result: parallel_runs_speedup {speedup:.2f} x")


if __name__ == "__main__":
  app.run(main)
