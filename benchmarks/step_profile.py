r"""Where a training step's time goes: XLA's own trace of the compiled step, by part of the model.

  python benchmarks/step_profile.py                          # every model, 5 traced steps each
  python benchmarks/step_profile.py --profile_models=gated --cpu_kernels=off

For each model, the train step of `benchmarks/train_step.py` (same model, optimiser, loss and
batch, `steps_per_call` steps a call as the training loop runs them) runs `--profile_steps`
steps under `jax.profiler.trace`. Every XLA thunk in the trace (a
fusion, a convolution, a matmul, a copy) is attributed to one part of the model through the
compiled HLO's metadata: the `op_name` of the instruction (the JAX name stack that made it, Flax
module names included) and its `source_file`:

- convolutions: the conv layers, forward and gradients (matmuls and im2col of the CPU paths
  included);
- BatchNorm: statistics, normalisation and their gradients;
- pooling: max / average pooling and their gradients;
- GRU: the BiGRU scans, forward and backward;
- dropout: the random masks (threefry bits) and their application;
- heads and loss: the frame and attention heads, clip pooling, the masked BCE;
- optimiser: AdamW, global-norm clipping, the schedule;
- other: what no rule claims (copies and concatenations between parts, the input layout).

Each op's time is its share of the wall time (`xla_trace.py`: a thunk lasts until its `end:`
event, and an instant is split between the thunks running then). The parts then add up to the
step's wall time under the tracer, which the table gives beside the untraced step time and the
kernel (system) time of an untraced step, with its page faults: the cost of the memory XLA
allocates each step, which the thunks that first touch it pay for (`sed_jax/hugepages.py`). The
input is not part of it: the batch is already on the device, as the training loop's prefetch
leaves it (`benchmarks/input_pipeline.py` measures what the pipeline delivers). Writes
benchmarks/results/<--profile_out>.json and .md.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import jax
from absl import app
from absl import flags

sys.path.insert(0, str(Path(__file__).parent))
import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
import xla_trace  # pylint: disable=g-import-not-at-top,wrong-import-position
from sed_jax import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = flags.DEFINE_list("profile_models", ["gated", "resnet", "densenet", "inception",
                                               "xception", "student"],
                            "Architectures to profile, in order.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 4, "Traced steps per model (whole "
                                      "calls of steps_per_call steps).")
_PROFILE_OUT = flags.DEFINE_string("profile_out", "step_profile",
                                   "Results file name in benchmarks/results/ (.json, .md).")

PARTS = ("convolutions", "BatchNorm", "pooling", "GRU", "dropout", "heads and loss", "optimiser",
         "other")
_RULES = (  # (part, pattern on "op_name source_file"), first match wins.
    ("dropout", re.compile(r"Dropout|dropout|bernoulli|threefry|random_bits")),
    ("optimiser", re.compile(r"optax|clip_by_global_norm|apply_updates|make_optimizer")),
    ("GRU", re.compile(r"GRU|gru|/while/|scan")),
    ("BatchNorm", re.compile(r"BatchNorm|_bn\b|normali[sz]e|batch_stats")),
    ("pooling", re.compile(r"pool|select.and.scatter|reduce.window")),
    ("convolutions", re.compile(r"Conv|conv|depthwise|pointwise|im2col|shortcut")),
    ("heads and loss", re.compile(r"frame_head|attention|clip_logits|losses\.py|loss")),
)
def profile(arch: str, batch_size: int, steps: int, cpu_kernels: str) -> dict:
  """One model's step, traced: untraced and traced time per step, wall time by part."""
  side = train_step.JaxSide(arch, train_step.make_batch(batch_size), cpu_kernels)
  side.run(side.steps_per_call)
  # The kernel's share: page faults of the buffers XLA allocates each call (sed_jax.hugepages).
  times, kernel_s, faults = side.run_each(3)
  untraced = min(times)
  hlo = side.step_fn.lower(side.state, side.batches).compile().as_text()
  parts_of = xla_trace.instruction_parts(hlo, _RULES)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      side.run(steps)
    times = xla_trace.thunk_times(tmp)
  by_part = collections.Counter()
  for op, t in times.items():
    by_part[parts_of.get(op, "other")] += t / steps
  total = sum(by_part.values())
  top = sorted(times.items(), key=lambda kv: -kv[1])[:12]
  row = dict(arch=arch, batch_size=batch_size, untraced_s_per_step=untraced,
             kernel_s_per_step=kernel_s, minor_faults_per_step=faults,
             traced_s_per_step=total, parts_s={p: by_part.get(p, 0.0) for p in PARTS},
             parts_share={p: by_part.get(p, 0.0) / total for p in PARTS},
             top_thunks=[dict(op=op, part=parts_of.get(op, "other"), s_per_step=t / steps)
                         for op, t in top])
  print(f"{arch}: {1e3 * untraced:.0f} ms per step ({1e3 * total:.0f} traced; kernel "
        f"{1e3 * kernel_s:.0f} ms, {faults:.0f} page faults); " + ", ".join(
      f"{p} {100 * row['parts_share'][p]:.0f}%" for p in PARTS), flush=True)
  return row


def table(rows: list[dict]) -> str:
  lines = ["| model | batch | ms / step | kernel ms | traced | " + " | ".join(PARTS) + " |",
           "|---|---:|---:|---:|---:|" + "---:|" * len(PARTS)]
  for r in rows:
    lines.append(f"| {r['arch']} | {r['batch_size']} | {1e3 * r['untraced_s_per_step']:.0f} | "
                 f"{1e3 * r['kernel_s_per_step']:.0f} | "
                 f"{1e3 * r['traced_s_per_step']:.0f} | " +
                 " | ".join(f"{100 * r['parts_share'][p]:.0f}%" for p in PARTS) + " |")
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rows = [profile(arch, train_step.batch_size_of(arch), _PROFILE_STEPS.value,
                  train_step._CPU_KERNELS.value) for arch in _MODELS.value]
  out = dict(command=" ".join(["python benchmarks/step_profile.py", *sys.argv[1:]]),
             jax=jax.__version__, glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
             cpu_kernels=train_step._CPU_KERNELS.value, models=rows)
  base = train_step.RESULTS / _PROFILE_OUT.value
  base.parent.mkdir(parents=True, exist_ok=True)
  base.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
  base.with_suffix(".md").write_text(
      f"Share of each training step's wall time (under the tracer) by part of the model "
      f"(`{out['command']}`, jax {jax.__version__}, cpu_kernels={out['cpu_kernels']}).\n\n" +
      table(rows) + "\n")
  print(table(rows))


if __name__ == "__main__":
  hugepages.reexec()  # As `sed_jax.main` runs.
  app.run(main)
