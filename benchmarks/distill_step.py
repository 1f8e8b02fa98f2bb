r"""Distillation step with cached teacher logits vs the same step running the teachers online.

  python benchmarks/distill_step.py [--config=configs/student.py:scale=full] [--batch_size=16]

Both sides run our real `train.train_step` (jit, donated state, multi-teacher KD loss) on the
config's student. "Cached" reads `teacher_logits` from the batch, as the teacher cache provides
them; "online" first runs the config's K = 4 teachers (resnet, densenet, inception, xception;
by default at their full, accelerator size: `scale=cpu` gives the small teachers of the 2-core
default run) forward, jitted, to produce those logits, then the same step. Alternating repetitions, median
time per step. Last line: `result: cached_over_online <x> x`; full output in
benchmarks/results/distill_step.json.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from sed_jax import config_lib
from sed_jax import train
from sed_jax.kd import experiment
from sed_jax.kd import losses as kd_losses

_CONFIG = flags.DEFINE_string("config", "configs/student.py:scale=full",
                              "Student experiment config (its student, teachers and KD loss).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed repetition.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating repetitions per side.")

RESULTS = Path(__file__).parent / "results" / "distill_step.json"
T, F, C = 500, 64, 10


def main(argv):
  del argv
  b = _BATCH.value
  rng = np.random.default_rng(0)
  strong = (rng.random((b, T // 4, C)) < 0.1).astype(np.float32)
  batch = dict(log_mel=rng.standard_normal((b, T, F)).astype(np.float32), strong=strong,
               weak=strong.max(1), has_strong=np.ones(b, bool), has_weak=np.ones(b, bool),
               frame_mask=np.ones((b, T // 4), bool))
  cfg = config_lib.load_config(_CONFIG.value)
  names = list(cfg.teachers)
  student = train.model_from_config(cfg, C)
  tx, _ = train.make_optimizer(cfg.optim, 1000)
  state = train.init_state(student, tx, jax.random.key(0), (1, T, F))
  cfg.kd.strategy = "mean_prob"
  kd = kd_losses.distillation(cfg.kd, names, C)
  step = jax.jit(functools.partial(train.train_step, model=student, tx=tx, loss_cfg=cfg.loss,
                                   kd=kd), donate_argnums=(0,))
  teachers = []
  for arch in names:
    model = train.model_from_config(experiment.teacher_config(cfg, arch), C)
    variables = model.init(jax.random.key(1), jnp.zeros((1, T, F)), train=False)
    teachers.append((model, variables))

  @jax.jit
  def teacher_logits(log_mel, frame_mask):
    outs = [m.apply(v, log_mel, train=False, frame_mask=frame_mask) for m, v in teachers]
    return (jnp.stack([o[0] for o in outs], 1).astype(jnp.float16),
            jnp.stack([o[1] for o in outs], 1).astype(jnp.float16))

  frame, clip = teacher_logits(batch["log_mel"], batch["frame_mask"])
  cached = dict(batch, teacher_logits=np.asarray(frame), teacher_clip_logits=np.asarray(clip))

  def run_cached(state):
    for _ in range(_STEPS.value):
      state, m = step(state, cached)
    jax.block_until_ready(m["loss"])
    return state

  def run_online(state):
    for _ in range(_STEPS.value):
      f, c = teacher_logits(batch["log_mel"], batch["frame_mask"])
      state, m = step(state, dict(batch, teacher_logits=f, teacher_clip_logits=c))
    jax.block_until_ready(m["loss"])
    return state

  state = run_online(run_cached(state))  # Compile both.
  times = {"cached": [], "online": []}
  for _ in range(_REPEATS.value):
    for name, fn in (("cached", run_cached), ("online", run_online)):
      start = time.perf_counter()
      state = fn(state)
      times[name].append((time.perf_counter() - start) / _STEPS.value)
  med = {k: float(np.median(v)) for k, v in times.items()}
  ratio = med["online"] / med["cached"]
  out = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                          backend=jax.default_backend()),
             config=_CONFIG.value, batch_size=b, teachers=names, steps=_STEPS.value, repeats=_REPEATS.value,
             seconds_per_step=med, examples_per_s={k: b / v for k, v in med.items()},
             cached_over_online=ratio, all_times=times)
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n")
  print(f"cached logits: {b / med['cached']:.1f} examples/s; online teachers: "
        f"{b / med['online']:.1f} examples/s (batch {b}, {jax.default_backend()})")
  print(f"result: cached_over_online {ratio:.1f} x")


if __name__ == "__main__":
  app.run(main)
