r"""The paper's experiment: distil four CRNN teachers into a 1/60-size CRNN student.

  python -m sed_jax.main --config=configs/student.py                  # workdir runs/student
  python -m sed_jax.main --config=configs/student.py:smoke            # the whole job, tiny
  python -m sed_jax.main --config=configs/student.py --config.kd.strategy=single:resnet

Arguments: dataset=<name>, smoke, scale=cpu|full, labels=weak|strong (synth_sed and
urbansed_mini on CPU: weak, the default, trains every model on clip labels only; strong, on
frame labels). Students use this
config's batch_size/total_steps/optim; teachers use `config.teacher` (shared by all teachers:
--config.teacher.total_steps=...).
"""

from __future__ import annotations

import ml_collections

from sed_jax import config_lib

# The mixed datasets whose training clips all carry frame labels: `labels=weak` (the CPU
# default) trains on their clip labels only. Datasets with weak labels of their own keep them.
WEAK_LABEL_DATASETS = ("synth_sed", "urbansed_mini")


# Teachers sized for the default run on a 2-core CPU (`scale=cpu`): they keep their parameters
# (1.8 M each, most in a 2 x 256 BiGRU) but run narrow convolutions after pooling time and
# frequency by 2 behind the stem, where a CPU spends most of a step (full-resolution memory
# traffic, not FLOPs). `scale=full` uses every architecture's default (accelerator) size.
_CPU = dict(stem_pool=[2, 2], gru_features=256)
CPU_TEACHERS = dict(
    resnet=dict(widths=[8, 16, 32, 64], stem_width=8, blocks_per_stage=1, **_CPU),
    densenet=dict(widths=[16, 32, 64, 96], layers_per_block=[1, 1, 2, 2], growth=[8, 16, 24, 32],
                  **_CPU),
    inception=dict(widths=[8, 16, 32, 64, 96], stem_width=8, **_CPU),
    xception=dict(widths=[8, 16, 32, 64, 128], stem_width=8, convs_per_block=1, **_CPU),
    gated=dict(widths=[8, 16, 32, 64, 128, 128, 128], **_CPU),
)
SMOKE_TEACHERS = dict(
    resnet=dict(widths=[8, 16, 16, 16], stem_width=8, gru_features=16),
    densenet=dict(widths=[16, 16, 16, 16], growth=8, stem_width=8, gru_features=16),
    inception=dict(widths=[16, 16, 16, 16, 16], stem_width=8, gru_features=16),
    xception=dict(widths=[16, 16, 16, 16, 16], stem_width=8, gru_features=16),
    gated=dict(widths=[8, 16, 16, 16, 16, 16, 16], gru_features=16),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, dataset="synth_sed", smoke=False, scale="cpu", labels="weak")
  if arg.scale not in ("cpu", "full"):
    raise ValueError(f"scale={arg.scale!r}: use scale=cpu (the default: sized for a 2-core "
                     "CPU) or scale=full (every architecture at its default size).")
  if arg.labels not in ("weak", "strong"):
    raise ValueError(f"labels={arg.labels!r}: use labels=weak (the CPU default on synth_sed: "
                     "train on clip labels) or labels=strong (frame labels on every clip).")
  cpu = arg.scale == "cpu" and not arg.smoke
  common = config_lib.common()  # configs/common.py: the shared default blocks.
  c = common.training(smoke=arg.smoke)
  c.job = "distill"
  c.seed = 0
  c.dataset = common.dataset(arg.dataset, smoke=arg.smoke)
  c.features = common.features()
  c.model = dict(arch="student", dtype="float32", overrides={},
                 # auto: XLA:CPU fast-path kernels on CPU, native ops elsewhere; off: stock ops.
                 cpu_kernels="auto")
  c.optim.lr = 3e-3
  if cpu:
    # Updates, not examples, limit these short CPU schedules: batch 16 with a high learning
    # rate (experiments/README.md, "CPU schedules").
    c.update(dict(batch_size=16, total_steps=600, eval_every=300, checkpoint_every=200,
                  log_every=50))
    c.optim.update(dict(lr=1e-2, warmup_steps=60))
    _short_schedule(c)

  c.report_clips = 3             # Test clips shown as event rolls in report.md.
  # Both students (no KD, KD) are trained at seeds seed, seed + 1, ...: results.json and
  # report.md give every seed and the mean ± std, and the KD gain paired by seed. Two in the
  # smoke variant: the per-seed machinery at the least cost.
  c.student_seeds = 2 if arg.smoke else 3
  # The teacher set, any of models/crnn.py's TEACHER_ARCHS. A tuple, so
  # --config.teachers="('resnet', 'gated')" overrides it.
  c.teachers = ("resnet", "densenet", "inception", "xception")
  # Teacher (and student) runs trained at once, each in its own process (sed_jax/processes.py):
  # on a CPU host two at a time finish sooner; accelerator hosts (scale=full) train one at a
  # time on every device.
  c.parallel_runs = 1 if arg.scale == "full" and not arg.smoke else 2
  # Distillation, every knob of it (sed_jax/kd/):
  # L = (1 − α)·(strong BCE + loss.weak_weight·weak BCE) + α·T²·(frame KD + clip_weight·clip KD).
  c.kd = dict(
      loss="bce",                  # KD term (kd/losses.py): bce | mse_prob | mse_logit.
      strategy="class_weighted",   # kd/strategies.py: mean_prob | mean_logit | weighted |
                                   # class_weighted | single:<teacher>.
      alpha=0.75 if cpu else 0.5,  # α.
      temperature=1.0,             # T, the one temperature.
      clip_weight=0.5,             # Clip-level KD relative to frame-level KD.
      weights=[],                  # Per-teacher scalars for strategy=weighted.
      # Distil on the unlabeled split too (KD term only). Its clips are added to each batch,
      # which grows by their share (kd.experiment.batch_with_unlabeled: 16 → 24 on synth_sed)
      # so that a step sees as many labelled clips as the no-KD student's; mixed into the same
      # batch they took labelled slots and cost more than they taught (experiments/README.md).
      use_unlabeled=True,
      # Unlabeled clips per labelled clip in a KD batch; 0 = the splits' own share. With a
      # fixed ratio a larger unlabeled pool (--config.dataset.soundscapes.clips.unlabeled) is
      # a larger transfer set at the same cost per step (kd.experiment.labelled_repeats).
      unlabeled_ratio=0.0,
      cache_batch_size=8 if arg.smoke else 32,
      rebuild_stale_cache=False,
  )

  # Shared by every teacher (each gets its arch from c.teachers).
  c.teacher = common.training(smoke=arg.smoke)
  c.teacher.model = dict(arch="", dtype="float32", overrides={},
                         cpu_kernels="auto")  # As model.cpu_kernels: auto | off.
  c.teacher.arch_overrides = {}  # arch → model overrides for that teacher only.
  if arg.smoke:
    c.teacher.arch_overrides = SMOKE_TEACHERS
    # Teachers are only evaluated at the end (for their validation F1 and test row): one eval
    # pass fewer each, where compiling dominates.
    c.teacher.eval_every = c.teacher.total_steps
    # Like the CPU default, without dropout and SpecAugment: their random masks are most of
    # what it takes to compile a small model's train step (docs/benchmarks.md, smoke run).
    _short_schedule(c)
    _short_schedule(c.teacher)
  elif cpu:
    c.teacher.arch_overrides = CPU_TEACHERS
    # Updates, not examples, limit these short schedules: batch 8 with more steps beats batch 16
    # with fewer at the same wall time (experiments/README.md, "CPU schedules").
    c.teacher.update(dict(batch_size=8, total_steps=480, eval_every=480, checkpoint_every=160,
                          log_every=80))
    c.teacher.optim.update(dict(lr=5e-3, warmup_steps=60))
    _short_schedule(c.teacher)
    if arg.labels == "weak" and arg.dataset in WEAK_LABEL_DATASETS:
      c.dataset.strong_fraction = 0.0
    if arg.dataset == "synth_sed" and arg.labels == "weak":
      _weak_label_setting(c)
    if arg.dataset == "urbansed_mini":
      _real_audio_schedule(c)
  return c


def _weak_label_setting(c: ml_collections.ConfigDict) -> None:
  """The CPU default on synth_sed: shorter schedules for weak-label (clip-label) training.

  Why weak labels (`WEAK_LABEL_DATASETS`): with frame labels on every training clip the 32 k student learns nearly all
  that the 1.8 M teachers know, and the KD gain was within what the machine's XLA:CPU bits
  move (experiments/weak_labels/). Trained on clip labels only, as in DCASE 2018 task 4 (weak
  labels plus unlabeled in-domain clips), a model has to find *when* events happen by itself;
  the teachers' frame outputs on every clip, labelled or not, are what the student lacks.
  Validation and test keep their frame labels (checkpoint choice, thresholds, metrics).
  Why shorter: three student seeds and four teachers in about 20 minutes on 2 cores.
  """
  c.update(dict(total_steps=300, eval_every=300, checkpoint_every=100))
  c.teacher.update(dict(total_steps=400, eval_every=400, checkpoint_every=200))


def _real_audio_schedule(c: ml_collections.ConfigDict) -> None:
  """Longer CPU schedules for soundscapes of real recordings (`dataset=urbansed_mini`).

  Why: the synth_sed schedule left every model at the start of learning real, overlapping,
  noisy events, the teachers below the no-KD student, so there was nothing to distil. Teachers
  and students now see 12.8 passes (1200 steps at batch 16); the best validation checkpoint
  guards against over-fitting (experiments/README.md, "CPU schedules").
  """
  c.teacher.update(dict(batch_size=16, total_steps=1200, eval_every=300, checkpoint_every=100,
                        log_every=50))
  c.teacher.optim.warmup_steps = 100
  c.update(dict(total_steps=1200, eval_every=300, checkpoint_every=100))
  c.optim.warmup_steps = 100


def _short_schedule(c: ml_collections.ConfigDict) -> None:
  """No SpecAugment and no dropout, for the few-epoch CPU schedules (`scale=cpu`, smoke).

  Why: with 2-3 passes over the data nothing overfits yet, and regularisers only slowed fitting
  (experiments/README.md, "CPU schedules"). Accelerator-length schedules (`scale=full`) keep
  them.
  """
  c.augment.update(dict(time_masks=0, freq_masks=0))
  c.model.overrides.update(dict(dropout=0.0, conv_dropout=0.0))


def get_sweep(name: str = "kd") -> list[dict]:
  """A named ablation grid (overrides of this config), for `python -m sed_jax.sweep`.

  kd: every combination strategy, then the T / α / unlabeled-data grid of the KD benchmark
      around the default KD student (sed_jax.ablation.grid: one definition), 3 seeds each.
  large_batch: the student from global batch 64 to 4096 at a fixed number of training examples,
      the peak LR scaled by the square root of the batch from 64 and the warmup fixed in
      examples (on an accelerator: pair it with scale=full).
  """
  if name == "large_batch":
    base = get_config("scale=full")
    examples = base.batch_size * base.total_steps
    return [{"batch_size": b, "total_steps": examples // b, "eval_every": examples // b,
             "checkpoint_every": examples // b, "log_every": max(1, examples // b // 20),
             "optim.lr_scaling": "sqrt", "optim.base_batch_size": 64,
             "optim.warmup_examples": 64 * 200} for b in (64, 128, 256, 512, 1024, 2048, 4096)]
  if name != "kd":
    raise ValueError(f"Unknown sweep {name!r}; configs/student.py has 'kd' and 'large_batch'.")
  from sed_jax.kd import ablation  # pylint: disable=g-import-not-at-top
  grid = [{"kd.strategy": s} for s in ("mean_prob", "mean_logit", "class_weighted",
                                       "single:resnet")]
  grid += [{"kd.strategy": strategy} | {f"kd.{k}": v for k, v in overrides.items()}
           for _, strategy, overrides in ablation.grid(get_config())]
  return [dict(g, seed=s) for g in grid for s in (0, 1, 2)]
