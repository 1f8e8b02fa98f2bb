r"""What the huge-page restart (`sed_jax/hugepages.py`) buys our training step, in one run.

  python benchmarks/hugepages.py                         # student, resnet, inception
  python benchmarks/hugepages.py --hp_models=gated --hp_rounds=3

For each model, the JAX train step of `benchmarks/train_step.py` (same model, optimiser, loss
and batch) runs in fresh child processes, alternately with glibc's default allocator
(`SED_JAX_MALLOC_DEFAULTS=1`) and with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, `--hp_rounds`
times each; each child times `--hp_steps` steps after one warm-up step and reports the median
examples/s, the kernel (system) time and the minor page faults per step (getrusage). The
ratio is the median over rounds with huge pages / without (> 1: the restart pays). Writes
benchmarks/results/hugepages.json; the last line is `result: hugepages_speedup_slowest <x> x`,
the smallest ratio of all models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, str(Path(__file__).parent))
import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from sed_jax import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = flags.DEFINE_list("hp_models", ["student", "resnet", "inception"], "Architectures.")
_ROUNDS = flags.DEFINE_integer("hp_rounds", 2, "Child processes per model and setting.")
_STEPS = flags.DEFINE_integer("hp_steps", 5, "Timed steps per child.")
_CHILD = flags.DEFINE_string("hp_child", "", "Internal: the architecture a child measures.")
_ROW_OUT = flags.DEFINE_string("hp_row_out", "", "Internal: where a child writes its row.")


def measure(arch: str, steps: int) -> dict:
  """This process's step: median examples/s, kernel seconds and page faults per step."""
  sizes = dict(item.partition("=")[::2] for item in train_step._BATCH.value)
  batch_size = int(sizes.get(arch, 16))
  side = train_step.JaxSide(arch, train_step.make_batch(batch_size))
  side.run(1)
  times, kernel_s, faults = side.run_each(steps)
  return dict(examples_per_s=float(np.median([batch_size / t for t in times])),
              kernel_s_per_step=kernel_s, faults_per_step=faults,
              glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))


def in_child(arch: str, huge: bool) -> dict:
  """`measure(arch)` in a fresh process, with or without the tunable."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", hugepages.KEEP_DEFAULTS_ENV)}
  if huge:
    env["GLIBC_TUNABLES"] = hugepages.TUNABLE
  else:
    env[hugepages.KEEP_DEFAULTS_ENV] = "1"
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "row.json"
    subprocess.run([sys.executable, __file__, f"--hp_child={arch}", f"--hp_steps={_STEPS.value}",
                    f"--hp_row_out={out}"], env=env, check=True)
    return json.loads(out.read_text())


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CHILD.value:
    Path(_ROW_OUT.value).write_text(json.dumps(measure(_CHILD.value, _STEPS.value)))
    return
  rows = []
  for arch in _MODELS.value:
    runs = {"default": [], "hugepages": []}
    for _ in range(_ROUNDS.value):
      for name, huge in (("default", False), ("hugepages", True)):
        runs[name].append(in_child(arch, huge))
    med = {k: {m: float(np.median([r[m] for r in v])) for m in
               ("examples_per_s", "kernel_s_per_step", "faults_per_step")}
           for k, v in runs.items()}
    row = dict(arch=arch, runs=runs, median=med,
               speedup=med["hugepages"]["examples_per_s"] / med["default"]["examples_per_s"])
    rows.append(row)
    print(f"{arch}: {med['default']['examples_per_s']:.2f} -> "
          f"{med['hugepages']['examples_per_s']:.2f} ex/s, {row['speedup']:.2f}x; kernel "
          f"{1e3 * med['default']['kernel_s_per_step']:.0f} -> "
          f"{1e3 * med['hugepages']['kernel_s_per_step']:.0f} ms/step, page faults "
          f"{med['default']['faults_per_step']:.0f} -> {med['hugepages']['faults_per_step']:.0f}",
          flush=True)
  path = train_step.RESULTS / "hugepages.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(
      command=" ".join(["python benchmarks/hugepages.py", *sys.argv[1:]]), jax=jax.__version__,
      thp_mode=hugepages.thp_mode(), rounds=_ROUNDS.value, steps=_STEPS.value, models=rows),
      indent=2) + "\n")
  for row in rows:
    print(f"result: hugepages_speedup_{row['arch']} {row['speedup']:.2f} x")
  slowest = min(rows, key=lambda r: r["speedup"])
  print(f"result: hugepages_speedup_slowest {slowest['speedup']:.2f} x ({slowest['arch']})")


if __name__ == "__main__":
  app.run(main)
