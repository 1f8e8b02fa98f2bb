r"""A digest of three real training steps of the student, to compare bits across machines.

  python experiments/reproducibility/train_step_digest.py             # prints: digest <hex> ...
  taskset -c 0 python experiments/reproducibility/train_step_digest.py  # one XLA thread

Same digest = same parameters to the last bit after the same steps (model init, forward,
backward, AdamW update, BatchNorm statistics). docs/reproducibility.md lists what it printed on
this project's machine, alone, on one core, and under `qemu-x86_64 -cpu Haswell` (another
instruction set and cache hierarchy on the same host), with and without XLA's cross-CPU flags.
"""

from __future__ import annotations

import functools
import hashlib
import time

import jax
import ml_collections
import numpy as np

from sed_jax import config_lib
from sed_jax import machine
from sed_jax import train
from sed_jax.models import crnn


def main() -> None:
  start = time.time()
  batch_size, frames, mels, classes = 4, 64, 64, 10
  model = crnn.make_model("student", classes, time_pool=4)
  optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-2, warmup_steps=2, final_lr_ratio=0.01, weight_decay=1e-4,
      lr_scaling="none", base_batch_size=64, warmup_examples=0, grad_clip=5.0, momentum=0.9,
      b2=0.999))
  tx, _ = train.make_optimizer(optim, 10)
  rng = np.random.default_rng(0)
  t_out = frames // 4
  batch = dict(log_mel=rng.normal(size=(batch_size, frames, mels)).astype(np.float32),
               strong=(rng.random((batch_size, t_out, classes)) < 0.2).astype(np.float32),
               weak=(rng.random((batch_size, classes)) < 0.3).astype(np.float32),
               has_strong=np.ones(batch_size, bool), has_weak=np.ones(batch_size, bool),
               frame_mask=np.ones((batch_size, t_out), bool), mask=np.ones(batch_size, bool))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx,
                                   loss_cfg=config_lib.common().loss()))
  state = jax.jit(functools.partial(train.init_state, model, tx,
                                    input_shape=(1, frames, mels)))(jax.random.key(0))
  for _ in range(3):
    state, metrics = step(state, batch)
  leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
  digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()[:16]
  fp = machine.fingerprint()
  print(f"digest {digest} loss {float(metrics['loss']).hex()} ({time.time() - start:.0f} s; "
        f"{fp['cpu']}, {fp['usable_cores']} cores, xla_flags={fp['xla_flags']!r})", flush=True)


if __name__ == "__main__":
  main()
