r"""Train one teacher CRNN (or any architecture) with the shared training loop.

  python -m sed_jax.main --config=configs/teacher.py:arch=resnet        # runs/teacher_resnet
  python -m sed_jax.main --config=configs/teacher.py:arch=gated,smoke --workdir=/tmp/smoke

Arguments (comma-separated): arch=gated|resnet|densenet|inception|xception|student,
dataset=<name> (see sed_jax/data/builders), smoke (tiny data and steps: the whole job in about
two minutes on 2 CPU cores). Any field can be overridden: --config.optim.lr=3e-4.
"""

from __future__ import annotations

import ml_collections

from sed_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, arch="resnet", dataset="synth_sed", smoke=False)
  common = config_lib.common()  # configs/common.py: the shared default blocks.
  c = common.training(smoke=arg.smoke)
  c.job = "train"
  c.seed = 0
  c.dataset = common.dataset(arg.dataset, smoke=arg.smoke)
  c.features = common.features()
  c.model = dict(arch=arg.arch, dtype="float32", overrides={},
                 # auto: XLA:CPU fast-path kernels on CPU, native ops elsewhere; off: stock ops.
                 cpu_kernels="auto")
  return c


def get_sweep(name: str = "arch") -> list[dict]:
  """The teacher family: one run per architecture (overrides of this config)."""
  if name != "arch":
    raise ValueError(f"Unknown sweep {name!r}; configs/teacher.py has 'arch'.")
  return [{"model.arch": a} for a in ("gated", "resnet", "densenet", "inception", "xception")]
