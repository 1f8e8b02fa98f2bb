r"""What training S student seeds at once costs against one seed, per step.

  python benchmarks/student_seeds.py [--config=configs/student.py] [--seeds=3]

Three ways to take one optimiser step for each of S seeds of the config's KD student (real
`train.train_step`: multi-teacher KD loss on cached logits, the KD batch with its unlabeled
clips, donated state), each seed on its own batch:
- one seed alone (the reference);
- S seeds one after the other in one process (what S separate runs cost on these cores);
- S seeds as a vmapped leading axis of one jit program (state and batch stacked).
Mean time per step of each repetition, median over alternating repetitions. On an
accelerator a 32 k student leaves the device mostly idle, so a vmapped program should cost
far less than S steps; on a CPU the question is whether per-op overhead (the GRU's 125
sequential steps each way) is large enough to amortise.
Last line: `result: vmapped_seeds_over_one_seed <x> x` (the vmapped step's time / one seed's;
S would mean no saving). Full output in benchmarks/results/student_seeds.json.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from sed_jax import config_lib
from sed_jax.kd import experiment
from sed_jax.kd import losses as kd_losses
from sed_jax import machine
from sed_jax import train

_CONFIG = flags.DEFINE_string("config", "configs/student.py", "Student experiment config.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds trained together.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed repetition.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating repetitions per way.")

RESULTS = Path(__file__).parent / "results" / "student_seeds.json"
T, F, C, K = 500, 64, 10, 4


def _batch(rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
  strong = (rng.random((b, T // 4, C)) < 0.1).astype(np.float32)
  labelled = np.arange(b) < b * 2 // 3  # The KD batch: 2 labelled clips per unlabeled one.
  return dict(log_mel=rng.standard_normal((b, T, F)).astype(np.float32), strong=strong,
              weak=strong.max(1), has_strong=labelled, has_weak=labelled,
              frame_mask=np.ones((b, T // 4), bool), mask=np.ones(b, bool),
              teacher_logits=rng.standard_normal((b, K, T // 4, C)).astype(np.float16),
              teacher_clip_logits=rng.standard_normal((b, K, C)).astype(np.float16))


def _time_steps(fn, state, batches, steps: int) -> tuple[float, object]:
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = fn(state, batches[i % len(batches)])
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, state


def main(argv):
  del argv
  cfg = config_lib.load_config(_CONFIG.value)
  s = _SEEDS.value
  b = experiment.batch_with_unlabeled(cfg.batch_size, 2, 1, 1)  # 16 labelled → 24 with unlabeled.
  student = train.model_from_config(cfg, C)
  tx, _ = train.make_optimizer(cfg.optim, cfg.total_steps)
  cfg.kd.strategy = "mean_prob"
  kd = kd_losses.distillation(cfg.kd, [str(k) for k in range(K)], C)
  step = functools.partial(train.train_step, model=student, tx=tx, loss_cfg=cfg.loss,
                           kd=kd)
  init = functools.partial(train.init_state, student, tx, input_shape=(1, T, F))
  rng = np.random.default_rng(0)
  single = [_batch(rng, b) for _ in range(s)]
  stacked = [jax.tree.map(lambda *x: np.stack(x), *single)]
  one = jax.jit(step, donate_argnums=(0,))
  many = jax.jit(jax.vmap(step), donate_argnums=(0,))
  states = [jax.jit(init)(jax.random.key(i)) for i in range(s)]
  vstate = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), s))
  compile_s = {}
  for name, fn, st, bs in (("one", one, states[0], single[:1]), ("vmapped", many, vstate, stacked)):
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.tree.map(jnp.copy, st), bs[0]))
    compile_s[name] = time.perf_counter() - start
  times = {"one": [], "sequential": [], "vmapped": []}
  for _ in range(_REPEATS.value):
    t, states[0] = _time_steps(one, states[0], single[:1], _STEPS.value)
    times["one"].append(t)
    start = time.perf_counter()
    for i in range(s):
      _, states[i] = _time_steps(one, states[i], single[i:i + 1], _STEPS.value)
    times["sequential"].append((time.perf_counter() - start) / _STEPS.value)
    t, vstate = _time_steps(many, vstate, stacked, _STEPS.value)
    times["vmapped"].append(t)
  med = {k: float(np.median(v)) for k, v in times.items()}
  out = dict(config=_CONFIG.value, seeds=s, batch_per_seed=b, step_s=med, all_step_s=times,
             first_call_s=compile_s, sequential_over_one=med["sequential"] / med["one"],
             vmapped_over_one=med["vmapped"] / med["one"], machine=machine.fingerprint())
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n")
  print(f"{s} seeds, batch {b} each: one seed {1e3 * med['one']:.0f} ms/step, {s} in turn "
        f"{1e3 * med['sequential']:.0f} ms, {s} vmapped {1e3 * med['vmapped']:.0f} ms "
        f"(first calls: {compile_s['one']:.1f} s / {compile_s['vmapped']:.1f} s)")
  print(f"result: vmapped_seeds_over_one_seed {out['vmapped_over_one']:.2f} x")


if __name__ == "__main__":
  app.run(main)
