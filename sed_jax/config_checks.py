"""Every config value checked before any work starts, with the key and the fix in the message.

Why up front: a wrong value found late (an α of 1.5 after an hour of teacher training, a batch
that does not split over the devices after the dataset build) costs the user the work before it.
`check(config)` gathers every problem at once, so one edit fixes the command.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections

from sed_jax import train
from sed_jax.data import builders
from sed_jax.evaluation import frame_scoring
from sed_jax.kd import losses as kd_losses
from sed_jax.kd import strategies
from sed_jax.kd import teacher_cache
from sed_jax.models import crnn


class ConfigError(ValueError):
  """One or more config values are impossible; the message lists each key and its fix."""


def check(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ConfigError naming every impossible value of a `train` or `distill` config.

  `device_count`: the global batch sizes must split evenly over this many devices.
  """
  problems = list(_training(config, "", device_count))
  if config.get("job") == "distill":
    problems += list(_distill(config, device_count))
  if problems:
    raise ConfigError("Invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def _training(c, prefix: str, device_count: int | None) -> Iterator[str]:
  """The keys of one training run (a teacher's under `teacher.`, the student's at the top)."""
  for key in ("batch_size", "total_steps", "log_every", "eval_every", "checkpoint_every"):
    if key in c and not (isinstance(c[key], int) and c[key] > 0):
      yield f"{prefix}{key}={c[key]!r} must be a positive integer."
  for key in ("batch_size", "eval.batch_size"):
    value = c.eval.batch_size if key == "eval.batch_size" else c.get("batch_size")
    if device_count and isinstance(value, int) and value > 0 and value % device_count:
      yield (f"{prefix}{key}={value} does not split over the {device_count} devices: use a "
             f"multiple of {device_count}.")
  k = c.grad_accum_steps
  if not (isinstance(k, int) and k > 0):
    yield f"{prefix}grad_accum_steps={k!r} must be a positive integer (1 = no accumulation)."
  elif k > 1 and isinstance(c.get("batch_size"), int) and c.batch_size % (k * (device_count or 1)):
    yield (f"{prefix}batch_size={c.batch_size} does not split into grad_accum_steps={k} "
           f"micro-batches over {device_count or 1} device(s): use a multiple of "
           f"{k * (device_count or 1)}.")
  n = c.steps_per_call
  if not (isinstance(n, int) and n > 0):
    yield f"{prefix}steps_per_call={n!r} must be a positive integer (1 = one step a call)."
  o = c.optim
  if o.name not in train.OPTIMIZERS:
    yield f"{prefix}optim.name={o.name!r} is not one of {train.OPTIMIZERS}."
  if not o.lr > 0:
    yield f"{prefix}optim.lr={o.lr!r} must be > 0."
  if o.lr_scaling not in train.LR_SCALING:
    yield f"{prefix}optim.lr_scaling={o.lr_scaling!r} is not one of {train.LR_SCALING}."
  if o.base_batch_size <= 0:
    yield f"{prefix}optim.base_batch_size={o.base_batch_size!r} must be > 0."
  if o.warmup_steps < 0 or o.warmup_examples < 0:
    yield f"{prefix}optim.warmup_steps / warmup_examples must be >= 0."
  if not 0 <= o.final_lr_ratio <= 1:
    yield f"{prefix}optim.final_lr_ratio={o.final_lr_ratio!r} must be in [0, 1]."
  if c.loss.weak_weight < 0:
    yield f"{prefix}loss.weak_weight={c.loss.weak_weight!r} must be >= 0."
  arch = c.model.arch
  if arch and arch not in crnn.ARCHS:
    yield f"{prefix}model.arch={arch!r} is not one of {sorted(crnn.ARCHS)}."
  elif arch:
    problem = crnn.override_problem(arch, c.model.overrides)
    if problem:
      yield f"{prefix}model.overrides: {problem}."
  if c.model.dtype not in ("float32", "bfloat16"):
    yield f"{prefix}model.dtype={c.model.dtype!r} must be float32 or bfloat16."
  cpu_kernels = c.model.get("cpu_kernels", "auto")  # Absent from older saved run configs.
  if cpu_kernels not in crnn.CPU_KERNELS:
    yield (f"{prefix}model.cpu_kernels={cpu_kernels!r} is not one of {crnn.CPU_KERNELS} "
           "('auto': XLA:CPU fast paths on CPU, native ops elsewhere; 'off': stock ops).")
  e = c.eval
  if e.metric not in frame_scoring.METRICS:
    yield f"{prefix}eval.metric={e.metric!r} is not one of {sorted(frame_scoring.METRICS)}."
  if not 0 < e.threshold < 1:
    yield f"{prefix}eval.threshold={e.threshold!r} must be in (0, 1)."
  if e.median_window_s < 0:
    yield f"{prefix}eval.median_window_s={e.median_window_s!r} must be >= 0 (0 = off)."
  if prefix:
    return
  d = c.dataset
  if d.name not in builders.DATASETS:
    yield f"dataset.name={d.name!r} is not one of {sorted(builders.DATASETS)}."
  if not d.clip_seconds > 0:
    yield f"dataset.clip_seconds={d.clip_seconds!r} must be > 0."
  if not 0 <= d.strong_fraction <= 1:
    yield (f"dataset.strong_fraction={d.strong_fraction!r} must be in [0, 1] (the share of "
           "training clips that keep frame labels; 0 = weak labels only).")
  if d.on_error not in ("raise", "skip"):
    yield f"dataset.on_error={d.on_error!r} must be 'raise' or 'skip'."


def _distill(c, device_count: int | None) -> Iterator[str]:
  specs = list(c.teachers)
  teachers = [teacher_cache.teacher_name(t) for t in specs]  # What strategies call them.
  unknown = [t for t in specs if not t.startswith(teacher_cache.EXTERNAL) and
             (t not in crnn.ARCHS or t == "student")]
  if not teachers or unknown or len(set(teachers)) != len(teachers):
    yield (f"teachers={tuple(specs)!r} must be distinct teacher architectures from "
           f"{sorted(set(crnn.ARCHS) - {'student'})} or external:<name>=<folder> entries" +
           (f" ({', '.join(map(repr, unknown))} is not one)" if unknown else "") + ".")
  for spec in specs:
    problem = teacher_cache.spec_problem(spec)
    if problem:
      yield f"teachers entry {spec!r}: {problem}."
  kd = c.kd
  if not 0 <= kd.alpha <= 1:
    yield f"kd.alpha={kd.alpha!r} must be in [0, 1] (L = (1 − α)·BCE + α·T²·KD)."
  if not kd.temperature > 0:
    yield f"kd.temperature={kd.temperature!r} must be > 0 (1 = the teachers' own outputs)."
  if kd.loss not in kd_losses.KD_LOSSES:
    yield f"kd.loss={kd.loss!r} is not one of {', '.join(kd_losses.KD_LOSSES)}."
  if kd.clip_weight < 0:
    yield f"kd.clip_weight={kd.clip_weight!r} must be >= 0 (clip-level KD next to frame-level)."
  strategy = kd.strategy
  problem = strategies.problem(strategy, teachers)
  if problem:
    yield f"kd.strategy={strategy!r} {problem}."
  if strategy == "weighted" and len(kd.weights) != len(teachers):
    yield (f"kd.weights has {len(kd.weights)} values for {len(teachers)} teachers: "
           "strategy=weighted needs one per teacher.")
  if any(w < 0 for w in kd.weights):
    yield "kd.weights must be >= 0."
  if kd.unlabeled_ratio < 0:
    yield (f"kd.unlabeled_ratio={kd.unlabeled_ratio!r} must be >= 0 (unlabeled clips per "
           "labelled clip in a KD batch; 0 = the splits' own share).")
  if not (isinstance(kd.cache_batch_size, int) and kd.cache_batch_size > 0):
    yield f"kd.cache_batch_size={kd.cache_batch_size!r} must be a positive integer."
  if c.parallel_runs < 1:
    yield f"parallel_runs={c.parallel_runs!r} must be >= 1."
  seeds = c.student_seeds
  if not (isinstance(seeds, int) and seeds >= 1):
    yield f"student_seeds={seeds!r} must be a positive integer (students trained per strategy)."
  yield from _training(c.teacher, "teacher.", device_count)
  for arch in teachers:  # A teacher's model: the shared overrides, then its arch's own.
    if arch in crnn.ARCHS:
      overrides = {**c.teacher.model.overrides, **c.teacher.arch_overrides.get(arch, {})}
      problem = crnn.override_problem(arch, overrides)
      if problem:
        yield (f"teacher.model.overrides / teacher.arch_overrides.{arch}: {problem}.")
