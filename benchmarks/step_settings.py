r"""What a process-wide setting does to our training step, in one run: the huge-page restart
that the training commands make (`sed_jax/hugepages.py`), or an XLA:CPU flag on top of the ones
`import sed_jax` sets (`sed_jax/xla_cpu_flags.py`).

  python benchmarks/step_settings.py                  # huge pages: student, resnet, inception
  python benchmarks/step_settings.py --setting=fusion_emitters --ab_models=student,gated
  taskset -c 0 python benchmarks/step_settings.py --setting=fusion_emitters \
      --ab_out=fusion_emitters_1thread

For each model, the JAX train step of `benchmarks/train_step.py` (same model, optimiser, loss
and batch) runs in fresh child processes, alternately on the setting's baseline side and on its
candidate side, `--ab_rounds` times each; each child times `--ab_steps` steps after one warm-up
call and reports the median examples/s, the kernel (system) time and the minor page faults per
step (getrusage); steps are timed in whole calls of the training loop's `steps_per_call`. The
settings (SETTINGS):

- `hugepages`: glibc's default allocator against `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, what
  `python -m sed_jax.main` restarts itself with;
- `fusion_emitters`: sed_jax's XLA flags against those plus
  `--xla_cpu_use_fusion_emitters=false` (XLA:CPU's older emitter of loop and reduction
  fusions) for the whole process. sed_jax sets it per computation, for the front-ends where
  it pays (`crnn.compiler_options`: xception and the student, whose two sides therefore
  compile alike since then); `results/fusion_emitters.json` is the run that chose them.

Children run under huge pages but for the baseline of `hugepages`. The ratio is the median over
rounds of the candidate / the baseline (> 1: the candidate is faster). Writes
benchmarks/results/<--ab_out, default: the setting>.json; the last line is
`result: <setting>_speedup_slowest <x> x`, the smallest ratio of all models.
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

# setting -> environment changes of its (baseline, candidate) sides; None removes a variable.
SETTINGS = {
    "hugepages": ({"GLIBC_TUNABLES": None, hugepages.KEEP_DEFAULTS_ENV: "1"},
                  {"GLIBC_TUNABLES": hugepages.TUNABLE}),
    "fusion_emitters": ({"XLA_FLAGS": None},
                        {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}),
}
_MEASURED = ("examples_per_s", "kernel_s_per_step", "faults_per_step")

_SETTING = flags.DEFINE_enum("setting", "hugepages", list(SETTINGS), "What to compare.")
_MODELS = flags.DEFINE_list("ab_models", ["student", "resnet", "inception"], "Architectures.")
_ROUNDS = flags.DEFINE_integer("ab_rounds", 2, "Child processes per model and side.")
_STEPS = flags.DEFINE_integer("ab_steps", 5, "Timed steps per child.")
_OUT = flags.DEFINE_string("ab_out", "", "Results file name in benchmarks/results/; default: "
                           "the setting's name.")
_CHILD = flags.DEFINE_string("ab_child", "", "Internal: the architecture a child measures.")
_ROW_OUT = flags.DEFINE_string("ab_row_out", "", "Internal: where a child writes its row.")


def measure(arch: str, steps: int) -> dict:
  """This process's step: median examples/s, kernel seconds and page faults per step."""
  batch_size = train_step.batch_size_of(arch)
  side = train_step.JaxSide(arch, train_step.make_batch(batch_size))
  side.run(side.steps_per_call)
  times, kernel_s, faults = side.run_each(-(-steps // side.steps_per_call))  # Whole calls.
  return dict(examples_per_s=float(np.median([batch_size / t for t in times])),
              kernel_s_per_step=kernel_s, faults_per_step=faults,
              glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
              xla_flags=os.environ.get("XLA_FLAGS", ""))


def in_child(arch: str, changes: dict[str, str | None]) -> dict:
  """`measure(arch)` in a fresh process whose environment is this one's with `changes`."""
  env = {**os.environ, "GLIBC_TUNABLES": hugepages.TUNABLE, **changes}
  env = {k: v for k, v in env.items() if v is not None}
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "row.json"
    subprocess.run([sys.executable, __file__, f"--ab_child={arch}", f"--ab_steps={_STEPS.value}",
                    f"--ab_row_out={out}"], env=env, check=True)
    return json.loads(out.read_text())


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CHILD.value:
    Path(_ROW_OUT.value).write_text(json.dumps(measure(_CHILD.value, _STEPS.value)))
    return
  setting = _SETTING.value
  rows = []
  for arch in _MODELS.value:
    runs = {"baseline": [], setting: []}
    for _ in range(_ROUNDS.value):
      for name, changes in zip(runs, SETTINGS[setting]):
        runs[name].append(in_child(arch, changes))
    med = {k: {m: float(np.median([r[m] for r in v])) for m in _MEASURED}
           for k, v in runs.items()}
    row = dict(arch=arch, runs=runs, median=med,
               speedup=med[setting]["examples_per_s"] / med["baseline"]["examples_per_s"])
    rows.append(row)
    print(f"{arch}: {med['baseline']['examples_per_s']:.2f} -> "
          f"{med[setting]['examples_per_s']:.2f} ex/s, {row['speedup']:.2f}x; kernel "
          f"{1e3 * med['baseline']['kernel_s_per_step']:.0f} -> "
          f"{1e3 * med[setting]['kernel_s_per_step']:.0f} ms/step, page faults "
          f"{med['baseline']['faults_per_step']:.0f} -> {med[setting]['faults_per_step']:.0f}",
          flush=True)
  path = train_step.RESULTS / f"{_OUT.value or setting}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(
      command=" ".join(["python benchmarks/step_settings.py", *sys.argv[1:]]),
      jax=jax.__version__, setting=setting, thp_mode=hugepages.thp_mode(),
      cpus=len(os.sched_getaffinity(0)), rounds=_ROUNDS.value, steps=_STEPS.value, models=rows),
      indent=2) + "\n")
  for row in rows:
    print(f"result: {setting}_speedup_{row['arch']} {row['speedup']:.2f} x")
  slowest = min(rows, key=lambda r: r["speedup"])
  print(f"result: {setting}_speedup_slowest {slowest['speedup']:.2f} x ({slowest['arch']})")


if __name__ == "__main__":
  app.run(main)
