r"""Inference speed on one CPU thread: the student vs the teacher ensemble, and real-time factor.

  python benchmarks/inference.py [--config=configs/student.py:scale=full] [--batch_size=8]

Both run jitted forward passes on 10-s clips ([B, 500, 64] log-mel) with XLA restricted to one
thread (set before JAX starts). The student and the teachers are the config's; the ensemble is
its four teachers (resnet, densenet, inception, xception; by default at their full size:
`scale=cpu` gives the small teachers of the 2-core default run), run one after the other as the
teacher ensemble of results.json is. The
real-time factor is seconds of audio processed per second of compute (features excluded: log-mel
costs ~3 ms per 10-s clip, see README). Last line: `result: student_over_ensemble <x> x`; full
output in benchmarks/results/inference.json.
"""

from __future__ import annotations

import os

# One thread, before JAX (and its thread pools) start.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import platform  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from sed_jax import config_lib  # pylint: disable=wrong-import-position
from sed_jax.kd import experiment  # pylint: disable=wrong-import-position
from sed_jax import train  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string("config", "configs/student.py:scale=full",
                              "Student experiment config (its student and teachers).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Clips per call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating timed repetitions per side.")

RESULTS = Path(__file__).parent / "results" / "inference.json"
T, F, C, CLIP_S = 500, 64, 10, 10.0


def forward(model_config):
  model = train.model_from_config(model_config, C)
  variables = model.init(jax.random.key(0), jnp.zeros((1, T, F)), train=False)
  fn = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  return lambda x: fn(variables, x)


def main(argv):
  del argv
  x = np.random.default_rng(0).standard_normal((_BATCH.value, T, F)).astype(np.float32)
  cfg = config_lib.load_config(_CONFIG.value)
  student = forward(cfg)
  teachers = [forward(experiment.teacher_config(cfg, a)) for a in cfg.teachers]
  sides = {
      "student": lambda: jax.block_until_ready(student(x)),
      "ensemble": lambda: jax.block_until_ready([t(x) for t in teachers]),
  }
  for fn in sides.values():
    fn()  # Compile.
  times = {k: [] for k in sides}
  for _ in range(_REPEATS.value):
    for name, fn in sides.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  med = {k: float(np.median(v)) for k, v in times.items()}
  clips_per_s = {k: _BATCH.value / v for k, v in med.items()}
  rtf = {k: c * CLIP_S for k, c in clips_per_s.items()}
  ratio = med["ensemble"] / med["student"]
  out = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(), threads=1,
                          xla_flags=os.environ["XLA_FLAGS"]),
             batch_size=_BATCH.value, clip_seconds=CLIP_S, config=_CONFIG.value, teachers=list(cfg.teachers),
             seconds_per_batch=med, clips_per_s=clips_per_s, real_time_factor=rtf,
             student_over_ensemble=ratio, all_times=times)
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n")
  print(f"student: {clips_per_s['student']:.1f} clips/s ({rtf['student']:.0f}x real time); "
        f"teacher ensemble: {clips_per_s['ensemble']:.2f} clips/s "
        f"({rtf['ensemble']:.0f}x real time), 1 thread")
  print(f"result: student_real_time_factor {rtf['student']:.0f} x")
  print(f"result: student_over_ensemble {ratio:.1f} x")


if __name__ == "__main__":
  app.run(main)
