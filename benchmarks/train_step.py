r"""Train-step throughput of our JAX step against an equivalent PyTorch CRNN, in one run, and
how close each step runs to the machine's matmul limit.

  python benchmarks/train_step.py                       # every model, 2 threads on 2 cores
  taskset -c 0 python benchmarks/train_step.py --threads=1 --out=train_step_1thread
  python benchmarks/train_step.py --cpu_kernels=off --out=train_step_stock_xla

For each model (default: the five teacher architectures at their default size at batch 16,
then the `student` at batch 64, the student config's batch size), on the CPU:
- ours: `sed_jax.train.train_step` compiled as `train_and_evaluate` compiles it (jit, the state
  donated), with the real optimiser (`train.make_optimizer(config_lib.common().optimizer())`:
  AdamW, global-norm clipping, warmup-cosine schedule) and the real loss
  (`config_lib.common().loss()`), on a batch laid out like `pipeline.device_batch`;
  `--cpu_kernels=off` builds the models with stock XLA ops (what a GPU or TPU user runs);
- PyTorch: the twin of the same model (`benchmarks/torch_crnn.py`: same layers, same parameter
  count, checked here) with AdamW, the same clipping, schedule and masked BCE.
The run first restarts itself with huge pages, as `python -m sed_jax.main` does
(`sed_jax/hugepages.py`; `SED_JAX_MALLOC_DEFAULTS=1` keeps glibc's default), so both sides run
under the same allocator.
Both sides use `--threads` threads (default: every core; `torch.set_num_threads`, and XLA's CPU
client runs one intra-op thread per core it may use, so pin a 1-thread run with `taskset`).

Protocol (`--protocol=processes`, the default): each side of each model runs in fresh child
processes of its own, `--rounds` per side, JAX and PyTorch processes alternating (which goes
first alternates too), so that load from other processes hits both alike in time; each process
takes `--warmup` untimed steps, then `--repeats` timed repetitions of `--steps` steps. A side's
throughput is the median over all its repetitions; the ratio is ours / PyTorch's (> 1: ours is
faster). Why not both sides in one process: right after one framework's steps, the other's next
step ran up to twice as slow, its kernel time tripled (the memory the first left behind), a
penalty that a user, who trains with one of them, never pays and that did not hit both alike
(docs/benchmarks.md). `--protocol=interleaved` is that earlier protocol, kept to reproduce the
results measured with it: both sides of a model in one fresh process, alternating repetition by
repetition. Load does not hit both alike in effect either way: PyTorch's OpenMP threads
synchronise after every op and stall while another process holds a core, XLA's thread pool
degrades more gently; the 1-thread pinned run compares them without that.

Distance to the limit: the same run first measures the attainable fp32 matmul rate (the best
of XLA's and PyTorch's square matmuls, N = 256 ... 2048). Each step's achieved rate counts the
model's FLOPs (`models/cost.py`: the forward pass, scans included) times 3 for a training step
(forward, and a backward of about twice its cost), per example, at the measured throughput.

Writes benchmarks/results/<--out>.json; prints one `result: train_step_jax_over_torch_<model>
<ratio> x` line per model and, last, `result: train_step_jax_over_torch_slowest <ratio> x`
(the lowest ratio of all models).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import torch

from sed_jax import config_lib
from sed_jax import hugepages
from sed_jax import train
from sed_jax.models import crnn
from sed_jax.models import cost

sys.path.insert(0, str(Path(__file__).parent))
import torch_crnn  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = flags.DEFINE_list("models", ["gated", "resnet", "densenet", "inception", "xception",
                                        "student"], "Architectures to measure, in order.")
_BATCH = flags.DEFINE_list("batch_sizes", ["student=64"], "arch=batch size; other archs use 16.")
_CPU_KERNELS = flags.DEFINE_enum("cpu_kernels", "auto", ["auto", "off"],
                                 "model.cpu_kernels of our models: off = stock XLA ops.")
_OUT = flags.DEFINE_string("out", "train_step", "Results file name in benchmarks/results/.")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "processes", ["processes", "interleaved"],
    "processes: each side of a model in fresh processes of its own, --rounds per side, "
    "alternating; interleaved: both sides of a model in one fresh process, alternating "
    "repetition by repetition (the protocol of the results before it was replaced).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Fresh processes per side and model (processes).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions per side and process.")
_STEPS = flags.DEFINE_integer("steps", 2, "Train steps per timed repetition.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per side and process before timing.")
_THREADS = flags.DEFINE_integer("threads", 0, "PyTorch intra-op threads; 0 = os.cpu_count().")
_SIDE = flags.DEFINE_enum("side", "both", ["both", "jax", "torch"],
                          "Internal: the side(s) a child measures.")
_ROW_OUT = flags.DEFINE_string("row_out", "", "Internal: where a child writes its row.")

RESULTS = Path(__file__).parent / "results"
NUM_CLASSES, FRAMES, MELS, TOTAL_STEPS = 10, 500, 64, 3000


def batch_size_of(arch: str) -> int:
  """`arch`'s batch size under `--batch_sizes` (16 for an architecture it does not name); the
  step benchmarks built on this one (step_profile, step_settings) read the same flag."""
  sizes = dict(item.partition("=")[::2] for item in _BATCH.value)
  return int(sizes.get(arch, 16))


def make_batch(batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch like `pipeline.device_batch` gives: 10-s clips, some strongly and some weakly
  labelled, no padding."""
  rng = np.random.default_rng(seed)
  t_out = FRAMES // config_lib.common().features().time_pool
  has_strong = rng.random(batch_size) < 0.5
  return dict(
      log_mel=(rng.normal(size=(batch_size, FRAMES, MELS)) * 3 - 5).astype(np.float32),
      strong=(rng.random((batch_size, t_out, NUM_CLASSES)) < 0.1).astype(np.float32),
      weak=(rng.random((batch_size, NUM_CLASSES)) < 0.3).astype(np.float32),
      has_strong=has_strong, has_weak=np.ones(batch_size, bool),
      frame_mask=np.ones((batch_size, t_out), bool))


class JaxSide:
  """Our step, compiled as `train.train_and_evaluate` compiles it (single device): the
  training loop's call of `steps_per_call` steps (`config_lib.common().training()`)."""

  def __init__(self, arch: str, batch: dict[str, np.ndarray], cpu_kernels: str = "auto"):
    self.model = crnn.make_model(arch, NUM_CLASSES, cpu_kernels=cpu_kernels)
    self.tx, _ = train.make_optimizer(config_lib.common().optimizer(), TOTAL_STEPS)
    self.steps_per_call = config_lib.common().training().steps_per_call
    self.state = jax.jit(functools.partial(train.init_state, self.model, self.tx,
                                           input_shape=(1, FRAMES, MELS)))(jax.random.key(0))
    self.params = cost.count_params(self.state.params)
    self.step_fn = jax.jit(functools.partial(train.train_steps, model=self.model, tx=self.tx,
                                             loss_cfg=config_lib.common().loss()),
                           donate_argnums=(0,),
                           compiler_options=crnn.compiler_options(self.model))
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()})
    self.batches = (batch,) * self.steps_per_call  # The same batch each step, as PyTorch's.
    start = time.perf_counter()
    self.run(self.steps_per_call)
    self.first_step_s = time.perf_counter() - start  # Mostly compilation.

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps, a multiple of `steps_per_call` (dispatch is asynchronous:
    wait for the last call's output)."""
    if steps % self.steps_per_call:
      raise ValueError(f"{steps} steps are not whole calls of {self.steps_per_call} steps "
                       "(configs/common.py steps_per_call); time a multiple of it")
    start = time.perf_counter()
    for _ in range(steps // self.steps_per_call):
      self.state, metrics = self.step_fn(self.state, self.batches)
    jax.block_until_ready((self.state, metrics))
    if not all(bool(m["finite"]) for m in metrics):
      raise FloatingPointError("JAX step produced a non-finite loss")
    return time.perf_counter() - start

  def run_each(self, calls: int) -> tuple[list[float], float, float]:
    """Seconds per step of each of `calls` calls, and the kernel (system) seconds and minor
    page faults per step over them (getrusage): the cost of the memory XLA maps each call."""
    times, (kernel_s, faults) = with_usage(
        lambda: [self.run(self.steps_per_call) / self.steps_per_call for _ in range(calls)])
    steps = calls * self.steps_per_call
    return times, kernel_s / steps, faults / steps


def with_usage(fn):
  """fn() and the kernel (system) seconds and minor page faults of this process while it ran
  (getrusage)."""
  before = resource.getrusage(resource.RUSAGE_SELF)
  out = fn()
  after = resource.getrusage(resource.RUSAGE_SELF)
  return out, (after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt)


class TorchSide:
  """The PyTorch twin and its step."""

  def __init__(self, model: crnn.CRNN, batch: dict[str, np.ndarray]):
    torch.manual_seed(0)
    self.model = torch_crnn.from_flax(model, MELS)
    self.params = torch_crnn.count_params(self.model)
    self.step_fn = torch_crnn.TrainStep(self.model, config_lib.common().optimizer(),
                                        config_lib.common().loss(), TOTAL_STEPS)
    self.batch = {k: torch.from_numpy(v) for k, v in batch.items()}

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      metrics = self.step_fn(self.batch)
    if not metrics["finite"]:
      raise FloatingPointError("PyTorch step produced a non-finite loss")
    return time.perf_counter() - start


def matmul_peak(sizes=(256, 512, 1024, 2048), repeats: int = 5) -> dict:
  """The attainable fp32 rate of this machine at this thread count: the best GFLOP/s of XLA's
  and PyTorch's square matmuls (each size timed `repeats` times after a warm-up)."""
  out = {}
  for n in sizes:
    a = np.random.default_rng(n).standard_normal((n, n), dtype=np.float32)
    xa = jax.device_put(a)
    dot = jax.jit(lambda x, y: x @ y)
    ta = torch.from_numpy(a)
    for name, fn in (("xla", lambda: dot(xa, xa).block_until_ready()),
                     ("torch", lambda: torch.mm(ta, ta))):
      fn()
      best = min(_timed(fn) for _ in range(repeats))
      out[f"{name}_{n}"] = 2 * n ** 3 / best / 1e9
  return dict(gflops=max(out.values()), best=max(out, key=out.get), per_size=out)


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


SIDES = ("jax", "torch")


def measure_sides(arch: str, batch_size: int, sides: tuple[str, ...]) -> dict:
  """`sides` of one model in this process: each built and warmed up, then `--repeats` timed
  repetitions of `--steps` steps, the sides alternating (which goes first alternates too) when
  both are here. Per side: parameter count, examples/s of each repetition, and the kernel
  (system) seconds and minor page faults per step over its repetitions (getrusage: the whole
  process, so with both sides here each is charged what happened during its own steps)."""
  batch = make_batch(batch_size)
  runners, out = {}, {}
  if "jax" in sides:
    runners["jax"] = JaxSide(arch, batch, _CPU_KERNELS.value)
    out["jax"] = dict(params=runners["jax"].params, first_step_s=runners["jax"].first_step_s)
  if "torch" in sides:
    model = crnn.make_model(arch, NUM_CLASSES, cpu_kernels=_CPU_KERNELS.value)
    runners["torch"] = TorchSide(model, batch)
    out["torch"] = dict(params=runners["torch"].params)
  for side in runners.values():
    side.run(_WARMUP.value)
  usage = {name: [0.0, 0.0] for name in runners}
  rates = {name: [] for name in runners}
  for r in range(_REPEATS.value):
    order = list(runners) if r % 2 == 0 else list(reversed(runners))
    for name in order:
      seconds, (kernel_s, faults) = with_usage(lambda: runners[name].run(_STEPS.value))
      rates[name].append(_STEPS.value * batch_size / seconds)
      usage[name][0] += kernel_s
      usage[name][1] += faults
  steps = _REPEATS.value * _STEPS.value
  for name in runners:
    out[name].update(rates=rates[name], kernel_s_per_step=usage[name][0] / steps,
                     faults_per_step=usage[name][1] / steps)
  return out


def in_child(arch: str, side: str) -> dict:
  """`measure_sides(arch)` of `side` ("jax", "torch" or "both") in a fresh process with this
  run's flags. Why fresh: what ran before in a process changes the next step's speed (PyTorch's
  student ran 50% faster after the teachers in one process than alone; right after the other
  framework's steps either side's first step runs far slower, docs/benchmarks.md), so each
  measurement starts from scratch."""
  with tempfile.TemporaryDirectory() as tmp:
    row_path = Path(tmp) / "row.json"
    forwarded = [f"--{f.name}={f.serialize().split('=', 1)[-1]}" for f in
                 (_BATCH, _CPU_KERNELS, _REPEATS, _STEPS, _WARMUP, _THREADS)]
    subprocess.run([sys.executable, __file__, *forwarded, f"--models={arch}", f"--side={side}",
                    f"--row_out={row_path}"], check=True)
    return json.loads(row_path.read_text())


def measure(arch: str, batch_size: int, peak_gflops: float) -> dict:
  """Both sides of one model under `--protocol`: their throughputs (the median over every
  timed repetition of the side), the ratio, and each side's rate against the matmul peak."""
  if _PROTOCOL.value == "interleaved":
    runs = [in_child(arch, "both")]
  else:  # Processes of one side at a time, alternating, so that load drifts hit both alike.
    runs = [in_child(arch, side) for r in range(_ROUNDS.value)
            for side in (SIDES if r % 2 == 0 else SIDES[::-1])]
  per_side = {side: [run[side] for run in runs if side in run] for side in SIDES}
  params = {side: per_side[side][0]["params"] for side in SIDES}
  if params["jax"] != params["torch"]:
    raise AssertionError(f"{arch}: parameter counts differ ({params['jax']} vs "
                         f"{params['torch']})")
  rates = {side: [x for run in per_side[side] for x in run["rates"]] for side in SIDES}
  jax_rate, torch_rate = (float(np.median(rates[k])) for k in SIDES)
  # Training FLOPs per example: the forward pass counted by models/cost.py on the stock ops
  # (the model's own arithmetic, whatever path computes it), times 3.
  stock = crnn.make_model(arch, NUM_CLASSES, cpu_kernels="off")
  step_flops = 3 * cost.model_flops(stock, cost.abstract_variables(stock, (1, FRAMES, MELS)),
                                    (1, FRAMES, MELS))
  row = dict(arch=arch, batch_size=batch_size, params_jax=params["jax"],
             params_torch=params["torch"],
             jax_first_step_s=float(np.median([r["first_step_s"] for r in per_side["jax"]])),
             jax_examples_per_s=jax_rate, torch_examples_per_s=torch_rate,
             ratio=jax_rate / torch_rate, jax_rates=rates["jax"], torch_rates=rates["torch"],
             train_flops_per_example=step_flops,
             jax_gflops=step_flops * jax_rate / 1e9, torch_gflops=step_flops * torch_rate / 1e9)
  for side in SIDES:
    row[f"{side}_process_medians"] = [float(np.median(r["rates"])) for r in per_side[side]]
    row[f"{side}_kernel_s_per_step"] = float(np.median([r["kernel_s_per_step"]
                                                        for r in per_side[side]]))
    row[f"{side}_faults_per_step"] = float(np.median([r["faults_per_step"]
                                                      for r in per_side[side]]))
  row["jax_fraction_of_peak"] = row["jax_gflops"] / peak_gflops
  row["torch_fraction_of_peak"] = row["torch_gflops"] / peak_gflops
  print(f"{arch}: JAX {jax_rate:.1f} ex/s, PyTorch {torch_rate:.1f} ex/s, "
        f"JAX/PyTorch {row['ratio']:.2f}x; JAX {row['jax_gflops']:.1f} GFLOP/s = "
        f"{100 * row['jax_fraction_of_peak']:.0f}% of the matmul peak (PyTorch "
        f"{100 * row['torch_fraction_of_peak']:.0f}%); kernel ms/step JAX "
        f"{1e3 * row['jax_kernel_s_per_step']:.0f}, PyTorch "
        f"{1e3 * row['torch_kernel_s_per_step']:.0f}  (per process: JAX "
        f"{', '.join(f'{x:.1f}' for x in row['jax_process_medians'])}; PyTorch "
        f"{', '.join(f'{x:.1f}' for x in row['torch_process_medians'])})", flush=True)
  return row


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  threads = _THREADS.value or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  if _ROW_OUT.value:  # A child: one model, the side(s) it was given.
    sides = SIDES if _SIDE.value == "both" else (_SIDE.value,)
    row = measure_sides(_MODELS.value[0], batch_size_of(_MODELS.value[0]), sides)
    Path(_ROW_OUT.value).write_text(json.dumps(row))
    return
  peak = matmul_peak()
  print(f"matmul peak: {peak['gflops']:.1f} GFLOP/s fp32 ({peak['best']}) at {threads} "
        "thread(s)", flush=True)
  rows = [measure(arch, batch_size_of(arch), peak["gflops"]) for arch in _MODELS.value]
  out = dict(
      command=" ".join(["python benchmarks/train_step.py", *sys.argv[1:]]),
      machine=dict(platform=platform.platform(), python=platform.python_version(),
                   cpu_count=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)),
                   jax=jax.__version__, torch=torch.__version__,
                   jax_devices=[str(d) for d in jax.devices()], torch_threads=threads,
                   jax_threads="XLA CPU client default: one intra-op thread per usable core",
                   xla_flags=os.environ.get("XLA_FLAGS", ""),
                   glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
                   transparent_hugepages=hugepages.thp_mode()),
      cpu_kernels=_CPU_KERNELS.value, matmul_peak=peak, protocol=_PROTOCOL.value,
      rounds=_ROUNDS.value if _PROTOCOL.value == "processes" else 1, repeats=_REPEATS.value,
      steps_per_repeat=_STEPS.value, warmup_steps=_WARMUP.value,
      models=rows)
  path = RESULTS / f"{_OUT.value}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=2) + "\n")
  for row in rows:
    print(f"result: train_step_jax_over_torch_{row['arch']} {row['ratio']:.2f} x")
  slowest = min(rows, key=lambda r: r["ratio"])
  print(f"result: train_step_jax_over_torch_slowest {slowest['ratio']:.2f} x "
        f"({slowest['arch']})")


if __name__ == "__main__":
  hugepages.reexec()  # As `sed_jax.main` runs; both sides of the comparison share it.
  app.run(main)
