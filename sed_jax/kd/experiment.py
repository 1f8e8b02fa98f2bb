"""The experiment: teachers (trained if missing) → teacher cache → students → results.

One command, one workdir:
  <workdir>/teachers/<name>/        one teacher run each (the shared training loop);
  <workdir>/students/no_kd/         the student trained on labels alone (the baseline);
  <workdir>/students/kd_<strategy>/ the same student, same steps and seed, distilled from the
                                    cached logits of all teachers;
  <workdir>/students/<run>_seed<s>/ both students again at each further seed of
                                    `config.student_seeds` (config.seed + 1, + 2, ...);
  <workdir>/results.json            every model's test metrics, parameters and FLOPs (one row
                                    per student seed), and a `summary` over seeds;
  <workdir>/report.md, plots/       the same as tables, training curves, event rolls.
Every stage is skipped when its output is complete, so re-running the command resumes, and a
finished workdir only rewrites its results.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from sed_jax import checkpoint as ckpt_lib
from sed_jax import inference
from sed_jax import io_utils
from sed_jax import losses
from sed_jax import machine
from sed_jax import metric_writers
from sed_jax import preemption
from sed_jax import processes
from sed_jax import train
from sed_jax.data import builders
from sed_jax.data import pipeline
from sed_jax.data.builders import object_storage
from sed_jax.data import features as feat_lib
from sed_jax.evaluation import frame_scoring
from sed_jax.evaluation import report
from sed_jax.evaluation import tuning
from sed_jax.kd import losses as kd_losses
from sed_jax.kd import teacher_cache
from sed_jax.models import cost


class StaleCacheError(RuntimeError):
  """A teacher changed since the cache was built; the message names it and the way out."""


def teacher_config(config: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
  """A teacher's training config: the student config's data, `config.teacher`'s knobs, `arch`."""
  c = copy.deepcopy(config.teacher)
  with c.unlocked():
    c.job = "train"
    c.seed = config.seed
    c.dataset = copy.deepcopy(config.dataset)
    c.features = copy.deepcopy(config.features)
    c.model.arch = arch
    c.model.overrides.update(c.arch_overrides.get(arch, {}))
    del c.arch_overrides
  return c


def student_config(config: ml_collections.ConfigDict, distil: bool) -> ml_collections.ConfigDict:
  """The student's training config; the KD student's keeps the `kd` block, as a record in its
  run's config.json (the loop itself gets the objective from `objective`)."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.job = "train"
    del c.teacher
    del c.teachers
    for key in ("parallel_runs", "student_seeds"):
      if key in c:
        del c[key]
    if not distil:
      del c.kd
    del c.report_clips
  return c


def train_teachers(config, workdir: epath.Path
                   ) -> list[teacher_cache.Teacher | teacher_cache.ExternalTeacher]:
  """Every teacher of `config.teachers`, in order: the architectures trained (finished runs are
  kept), `parallel_runs` at a time (see `in_parallel`); `external:<name>=<folder>` entries
  taken as they are (their scores are read when the cache is built)."""
  teachers = [teacher_cache.parse_teacher(spec, workdir) for spec in config.teachers]
  todo = [t for t in teachers if isinstance(t, teacher_cache.Teacher)
          and not (epath.Path(t.workdir) / "test_metrics.json").exists()]
  in_parallel(config, _train_teacher, [(teacher_config(config, t.name), epath.Path(t.workdir))
                                       for t in todo], [t.name for t in todo])
  return teachers


def teacher_metrics(config, teachers, cache, classes) -> list[dict[str, Any]]:
  """Each teacher's test metrics: its run's test_metrics.json, or for an external teacher its
  cached scores on the cache's test split, scored like every model."""
  names = [t["name"] for t in cache.info.metadata["teachers"]]
  out = []
  for t in teachers:
    if isinstance(t, teacher_cache.Teacher):
      out.append(json.loads((epath.Path(t.workdir) / "test_metrics.json").read_text()))
    else:
      k = names.index(t.name)
      out.append(cached_metrics(config, cache.as_data_source("test"), classes,
                                lambda b, k=k: teacher_probs(b)[:, k])[0])
  return out


def in_parallel(config, fn, jobs: list[tuple], names: list[str]) -> list[Any]:
  """`[fn(*job) for job in jobs]`, `config.parallel_runs` at a time in worker processes on a
  single-process job (processes.py says why), each told its log level and progress-bar line."""
  workers = config.parallel_runs if jax.process_count() == 1 else 1
  if workers > 1 and len(jobs) > 1:
    builders.prepare(config.dataset, config.features)  # Once, before the workers read it.
  jobs = [job + (n % workers, logging.get_verbosity()) for n, job in enumerate(jobs)]
  return processes.run_parallel(fn, jobs, names, workers)


def _in_worker(position: int, verbosity: int) -> None:
  logging.use_absl_handler()  # A worker's lines look like the parent's (no app.run there).
  logging.set_verbosity(verbosity)
  metric_writers.quiet_library_logs()
  metric_writers.set_bar_position(position)
  preemption.install()  # A spawned worker starts with Python's default: die at once.


def _train_teacher(config, run: epath.Path, position: int = 0,
                   verbosity: int = logging.INFO) -> None:
  _in_worker(position, verbosity)
  logging.info("Teacher %s → %s", config.model.arch, run)
  train.train_and_evaluate(config, run)
  run_cost(config, run)  # Here, beside the other worker's run, not later in the report.


def build_cache(config, teachers) -> teacher_cache.TeacherCache:
  """The teacher cache, built once; an older cache from other checkpoints is an error that
  names the teachers that changed (or is replaced when `kd.rebuild_stale_cache` is set)."""
  cache = teacher_cache.make(config.dataset, config.features, teachers,
                             batch_size=config.kd.cache_batch_size)
  if not cache.is_prepared():
    stale = teacher_cache.find_stale(cache)
    if stale and not config.kd.rebuild_stale_cache:
      raise StaleCacheError(
          f"Teacher(s) {', '.join(stale)} changed since the teacher cache in "
          f"{epath.Path(cache.data_dir).parents[1]} was built. Rerun with "
          "--config.kd.rebuild_stale_cache=True to cache the new logits (the student then "
          "learns from the current teachers), or restore the old checkpoints.")
    cache.download_and_prepare()
  # A data_dir on gs://: share the cache (or finish an upload that was cut short).
  object_storage.push(cache, config.dataset)
  return cache


def objective(config, cache) -> kd_losses.Distillation:
  """The KD term of `config.kd` (loss, strategy, α, T) for the teachers of `cache`."""
  meta = cache.info.metadata["teachers"]
  return kd_losses.distillation(config.kd, [t["name"] for t in meta],
                                len(cache.info.metadata["classes"]),
                                class_f1=[t["class_f1"] for t in meta])


def student_name(strategy: str | None) -> str:
  """Run name of a student: `no_kd`, or `kd_<strategy>` (':' of single:<t> made '_')."""
  return "no_kd" if strategy is None else "kd_" + strategy.replace(":", "_")


def seeded_name(name: str, seed: int, base_seed: int) -> str:
  """`name` for the config's own seed (the main job's students keep their plain names, so
  older workdirs and tools find them), `<name>_seed<s>` for any other seed."""
  return name if seed == base_seed else f"{name}_seed{seed}"


def student_seeds(config) -> list[int]:
  """The seeds every student is trained at: `config.seed` and the `student_seeds - 1` after it.

  Why several by default: the KD gain is a difference of two noisy numbers, so one seed can
  show a gain that is not there, or hide one; and a machine of another kind moves every figure
  by about a seed's spread (docs/reproducibility.md).
  """
  return [config.seed + i for i in range(config.student_seeds)]


def train_student(config, run_dir: epath.Path, cache=None) -> dict[str, Any]:
  """One student run: the no-KD baseline without a `cache`, else distilled from it with
  `config.kd` (strategy, α, T, unlabeled data). Returns its test metrics; a finished run is not
  trained again (the ablation benchmark reuses the main job's students this way)."""
  if cache is None:
    return train.train_and_evaluate(student_config(config, distil=False), run_dir)
  scfg = student_config(config, distil=True)
  sources = [cache.as_data_source("train")]
  if config.kd.use_unlabeled and "unlabeled" in cache.info.splits:
    unlabeled = cache.as_data_source("unlabeled")
    sources *= labelled_repeats(len(sources[0]), len(unlabeled), config.kd.unlabeled_ratio)
    sources.append(unlabeled)
    scfg.batch_size = batch_with_unlabeled(config.batch_size, len(sources[0]) * (len(sources) - 1),
                                           len(unlabeled), jax.device_count())
  return train.train_and_evaluate(scfg, run_dir, train_source=pipeline.ConcatSource(sources),
                                  kd=objective(config, cache))


def labelled_repeats(labelled: int, unlabeled: int, ratio: float) -> int:
  """How many times the labelled split enters the KD student's sampling pool, so that a batch
  holds about `ratio` unlabeled clips per labelled clip (0: the splits' own share, once each).

  Why: a large unlabeled pool is a large transfer set (many soundscapes the student sees only
  through the teachers) without a larger batch: each step costs what it did with a small pool,
  and each unlabeled clip is seen fewer times.
  """
  if ratio <= 0 or labelled == 0:
    return 1
  return max(1, round(unlabeled / (ratio * labelled)))


def batch_with_unlabeled(batch_size: int, labelled: int, unlabeled: int, devices: int) -> int:
  """The KD student's global batch when unlabeled clips join the labelled ones.

  It grows by their share, so that each step still sees `batch_size` labelled clips on average
  (as many as the no-KD student at the same step) plus unlabeled ones that teach through the KD
  term only. Mixed into the same batch instead, unlabeled clips took slots from labelled ones
  and cost more than they taught (docs/distillation.md). Rounded up to a multiple of
  `devices`.
  """
  grown = batch_size * (labelled + unlabeled) / max(labelled, 1)
  return int(-(-round(grown) // devices) * devices)


def split_sizes(config) -> dict[str, int]:
  """Clips per split: from the built dataset when it is there, else from the sizes the config
  asks the embedded or mixed datasets for (empty for a folder dataset not built yet)."""
  try:
    builder = builders.make_builder(config.dataset, config.features)
    if builder.is_prepared():
      return {s: info.num_examples for s, info in builder.info.splits.items()}
  except (ValueError, OSError, builders.base.BuildError):
    pass  # Not buildable here (no root, a folder missing): the declared sizes still say it.
  d = config.dataset
  declared = (d.synth if d.name == "synth_sed" else d.soundscapes.clips
              if d.name in ("soundscapes", "urbansed_mini") else {})
  return {s: declared[s] for s in ("train", "validation", "test", "unlabeled") if s in declared}


def derived(config) -> dict[str, Any]:
  """What an experiment config implies that no single key states (`--print_config`): each
  teacher's and each student's batch, steps and learning rate, and the KD student's batch with
  its unlabeled clips (`batch_with_unlabeled`, `labelled_repeats`)."""
  out = {"teachers": {t: train.derived(teacher_config(config, t)) for t in config.teachers
                      if not t.startswith(teacher_cache.EXTERNAL)},
         "student_no_kd": train.derived(student_config(config, distil=False)),
         "student_seeds": student_seeds(config)}
  kd_cfg = student_config(config, distil=True)
  sizes = split_sizes(config)
  if config.kd.use_unlabeled and sizes.get("unlabeled") and sizes.get("train"):
    repeats = labelled_repeats(sizes["train"], sizes["unlabeled"], config.kd.unlabeled_ratio)
    kd_cfg.batch_size = batch_with_unlabeled(config.batch_size, sizes["train"] * repeats,
                                             sizes["unlabeled"], jax.device_count())
    out["kd_batch"] = dict(labelled_clips=sizes["train"], labelled_repeats=repeats,
                           unlabeled_clips=sizes["unlabeled"], batch=kd_cfg.batch_size,
                           unlabeled_per_batch=round(kd_cfg.batch_size * sizes["unlabeled"] / (
                               sizes["train"] * repeats + sizes["unlabeled"]), 2))
  elif config.kd.use_unlabeled and not sizes:
    out["kd_batch"] = "known once the dataset is built (its split sizes set it)"
  out["student_kd"] = train.derived(kd_cfg)
  out["split_sizes"] = sizes
  return out


def train_students(config, workdir: epath.Path, teachers) -> list[dict[str, Any]]:
  """The no-KD baseline and the KD student (same architecture and steps) at every seed of
  `student_seeds`: one {strategy, seed, run, metrics} per run, no-KD runs first."""
  plan = [(strategy, seed) for strategy in (None, config.kd.strategy)
          for seed in student_seeds(config)]
  names = [seeded_name(student_name(strategy), seed, config.seed) for strategy, seed in plan]
  jobs = [(with_seed(config, seed), workdir / "students" / name, teachers if strategy else None)
          for (strategy, seed), name in zip(plan, names)]
  return [dict(strategy=strategy, seed=seed, run=name, metrics=metrics)
          for (strategy, seed), name, metrics in zip(plan, names,
                                                     run_students(config, jobs, names))]


def with_seed(config, seed: int) -> ml_collections.ConfigDict:
  """`config` with another seed (the student's initialisation, dropout and data order)."""
  c = copy.deepcopy(config)
  c.seed = seed
  return c


def run_students(config, jobs: list[tuple], names: list[str]) -> list[dict[str, Any]]:
  """Student runs `(config, run_dir, teachers or None for no KD)`, `config.parallel_runs` at a
  time; their test metrics in job order."""
  return in_parallel(config, _train_student, jobs, names)


def _train_student(config, run: epath.Path, teachers, position: int = 0,
                   verbosity: int = logging.INFO) -> dict[str, Any]:
  _in_worker(position, verbosity)
  logging.info("Student %s → %s", student_name(config.kd.strategy if teachers else None), run)
  metrics = train_student(config, run, build_cache(config, teachers) if teachers else None)
  run_cost(config, run)
  return metrics


def run_cost(model_config, run: epath.Path) -> tuple[int, float]:
  """(parameters, FLOPs per clip) of the model `model_config` trained in `run`.

  Counting FLOPs compiles the model and each of its scans (models/cost.py: seconds per
  model), so the result is kept in `<run>/cost.json`, keyed on the model block and the clip's
  input shape: it is computed once, by the worker that trained the run, and a report rewritten
  on a finished workdir reads it back.
  """
  classes = json.loads((epath.Path(run) / "classes.json").read_text())
  shape = [1, pipeline.clip_frames(model_config.dataset, model_config.features),
           model_config.features.n_mels]
  key = dict(model=model_config.model.to_dict(), input_shape=shape, num_classes=len(classes))
  path = epath.Path(run) / "cost.json"
  if path.exists():
    kept = json.loads(path.read_text())
    if kept.get("key") == key:
      return kept["params"], kept["flops_per_clip"]
  model = train.model_from_config(model_config, len(classes))
  variables = cost.abstract_variables(model, shape)
  params = cost.count_params(variables["params"])
  flops = cost.model_flops(model, variables, shape)
  if jax.process_index() == 0:
    with io_utils.atomic_write(path) as f:
      json.dump(dict(key=key, params=params, flops_per_clip=flops), f, indent=2)
  return params, flops


def split_probs(probs_fn, source, config) -> tuple[np.ndarray, dict]:
  """`probs_fn(batch)` → frame probabilities [B, T_out, C] over a whole split, in its order, with
  the split's audio ids, durations and reference events (single process; padding dropped)."""
  frames, meta = [], {"audio_id": [], "duration": [], "events": []}
  for batch in pipeline.eval_batches(source, batch_size=config.eval.batch_size,
                                     data_cfg=config.dataset, feature_cfg=config.features,
                                     process_index=0, process_count=1):
    frames.append(np.asarray(probs_fn(batch))[batch["mask"]])
    for k in meta:
      meta[k].extend(v for v, m in zip(batch[k], batch["mask"]) if m)
  return np.concatenate(frames), meta


def predict_run(run_dir: epath.PathLike, classes, source, config) -> tuple[np.ndarray, dict]:
  """Frame probabilities of a trained run's best checkpoint over a split (`split_probs`)."""
  model, variables, _ = train.load_trained(run_dir, len(classes))
  apply = jax.jit(lambda v, b: jax.nn.sigmoid(model.apply(v, b["log_mel"], train=False,
                                                          frame_mask=b["frame_mask"])[0]))
  return split_probs(lambda b: apply(variables, pipeline.device_batch(b)), source, config)


def teacher_probs(batch) -> np.ndarray:
  """Every teacher's frame probabilities [B, K, T, C] from a cache batch's logits."""
  return 1.0 / (1.0 + np.exp(-batch["teacher_logits"].astype(np.float32)))


def ensemble_metrics(config, test_source, classes) -> tuple[dict[str, Any], np.ndarray, dict]:
  """Test metrics of the teacher ensemble (mean of the teachers' frame probabilities), and the
  ensemble's probabilities and the split's metadata (`cached_metrics`)."""
  return cached_metrics(config, test_source, classes, lambda b: teacher_probs(b).mean(axis=1))


def cached_metrics(config, test_source, classes, probs_fn) -> tuple[dict[str, Any], np.ndarray,
                                                                    dict]:
  """Test metrics of `probs_fn(cache batch)` → [B, T, C] (a teacher, the ensemble), and those
  probabilities and the split's metadata.

  `test_source` is the cache's test split: the probabilities come from the logits every teacher
  already computed there (float16, the very numbers the students learn from), so scoring a
  teacher or the ensemble costs no teacher inference.
  """
  probs, meta = split_probs(probs_fn, test_source, config)
  refs = frame_scoring.reference_events(meta["events"], meta["audio_id"], classes)
  metrics = frame_scoring.score_predictions(probs, meta["audio_id"], meta["duration"], refs, classes,
                                       feat_lib.output_frame_seconds(config.features),
                                       config.eval)
  return metrics, probs, meta


def tuned_metrics(config, cache, student_runs: dict[str, epath.Path]) -> dict[str, dict]:
  """Test metrics with the median window and threshold tuned per class on the validation split
  (`evaluation/tuning.py`), for every teacher and the ensemble (from their cached logits: no
  teacher inference) and each of `student_runs` (name → run folder).

  Each model gets its own values, chosen on its own validation predictions, so the comparison
  between models stays fair and the test split chooses nothing. A student's choice is kept in
  `<run>/tuned_postprocessing.json` (values, validation and test metrics).
  """
  classes = list(cache.info.metadata["classes"])
  hop = feat_lib.output_frame_seconds(config.features)
  names = [t["name"] for t in cache.info.metadata["teachers"]]
  models = {f"teacher {n}": (lambda k: lambda s: split_probs(
      lambda b: teacher_probs(b)[:, k], s, config))(k) for k, n in enumerate(names)}
  models["ensemble"] = lambda s: split_probs(lambda b: teacher_probs(b).mean(axis=1), s, config)
  models |= {n: (lambda r: lambda s: predict_run(r, classes, s, config))(r)
             for n, r in student_runs.items()}
  splits = {s: cache.as_data_source(s) for s in ("validation", "test")}
  out = {}
  for name, predict in models.items():
    scored = {}
    for split, source in splits.items():
      probs, meta = predict(source)
      refs = frame_scoring.reference_events(meta["events"], meta["audio_id"], classes)
      scored[split] = (probs, meta["audio_id"], meta["duration"], refs)
    tuned = tuning.tune(*scored["validation"], classes, hop)
    test = tuning.score_tuned(*scored["test"], classes, hop, config.eval, tuned)
    out[name] = dict(tuned, test={k: v for k, v in test.items() if k != "class_wise"})
    if name in student_runs and jax.process_index() == 0:
      with io_utils.atomic_write(epath.Path(student_runs[name]) / inference.TUNED_FILE) as f:
        json.dump(out[name], f, indent=2)
  return out


def teacher_fit(config, cache) -> dict[str, dict[str, dict[str, float]]]:
  """How closely each teacher's cached frame outputs follow the strong labels on the labelled
  splits: {split: {teacher: {frame_f1, frame_bce}}} for train and validation (frame F1 at
  threshold 0.5, micro over valid frames and classes), from the cache alone.

  Why: a KD target on a clip teaches what the teacher's output there adds to the label. A
  teacher that memorised its training clips (frame F1 near 1 on train, far lower on validation)
  gives targets there that are close to the labels, so distillation can teach mostly through
  the clips it never trained on (the unlabeled split). On urbansed_mini's frame-labelled
  teachers that gap is large: experiments/urbansed_mini/urbansed_regularised.md, last table.
  """
  names = [t["name"] for t in cache.info.metadata["teachers"]]
  fit = {}
  for split in ("train", "validation"):
    if split not in cache.info.splits:
      continue
    bce, tp, fp, fn = (np.zeros(len(names)) for _ in range(4))
    count = 0
    for batch in pipeline.eval_batches(cache.as_data_source(split),
                                       batch_size=config.eval.batch_size,
                                       data_cfg=config.dataset, feature_cfg=config.features,
                                       process_index=0, process_count=1):
      has_strong = batch["has_strong"] & batch["mask"]
      valid = (has_strong[:, None] & batch["frame_mask"])[:, :, None]  # [B, T, 1]
      truth = (batch["strong"] > 0.5) & valid
      count += int(valid.sum()) * batch["strong"].shape[-1]
      for k in range(len(names)):
        logits = batch["teacher_logits"][:, k].astype(np.float32)
        bce[k] += float(losses.strong_bce(logits, batch["strong"], has_strong,
                                          batch["frame_mask"], denom=1.0))
        pred = (logits > 0) & valid
        tp[k] += (pred & truth).sum()
        fp[k] += (pred & ~truth).sum()
        fn[k] += (~pred & truth).sum()
    if count:
      fit[split] = {n: dict(frame_f1=float(2 * tp[k] / max(2 * tp[k] + fp[k] + fn[k], 1)),
                            frame_bce=float(bce[k] / count)) for k, n in enumerate(names)}
  return fit


def write_report(config, workdir: epath.Path, results, runs: dict[str, epath.Path], source,
                 ensemble_probs, meta, classes) -> epath.Path:
  """report.md with the tables, training curves and event rolls of a few test clips (`source`:
  the test split that `ensemble_probs` and `meta` follow, in its order; the students of the
  config's own seed are drawn, one per strategy)."""
  plots = workdir / "plots"
  curves = report.plot_training_curves(runs, config.eval.metric, plots / "training_curves.png")
  drawn = [r["name"] for r in results["models"]
           if r["role"] == "student" and r["seed"] == config.seed]
  students = {name: predict_run(runs[name], classes, source, config)[0] for name in drawn}
  refs = frame_scoring.reference_events(meta["events"], meta["audio_id"], classes)
  hop = feat_lib.output_frame_seconds(config.features)
  rolls = []
  for i, audio_id in enumerate(meta["audio_id"][:config.report_clips]):
    probs = {"teacher ensemble": ensemble_probs[i]} | {n: p[i] for n, p in students.items()}
    rolls.append(report.plot_event_roll(audio_id, refs[audio_id], probs, classes, hop,
                                        plots / f"event_roll_{i}.png", config.eval.threshold))
  return report.write_report(workdir, results, curves, rolls)


# results.json metric → test_metrics.json key.
ROW_METRICS = dict(segment_f1="segment_f1_macro", segment_er="segment_er",
                   event_f1="event_f1_macro", psds1="psds1", psds2="psds2")


def _row(name, role, kd, metrics, params, flops, seed=None):
  return dict(name=name, role=role, kd=kd, seed=seed, params=params, flops_per_clip=flops,
              **{k: metrics.get(v) for k, v in ROW_METRICS.items()})


def stats(values: list[float]) -> dict[str, Any]:
  """mean, sample std (0 for one value) and the values themselves, of the non-None ones."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return dict(mean=None, std=None, n=0, values=[])
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return dict(mean=float(np.mean(values)), std=std, n=len(values), values=values)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean ± sample std over seeds of every student metric, and the KD gain with its spread.

  Students are grouped by their `kd`; each KD student's gain is paired by seed with the no-KD
  student of the same seed (KD − no KD per seed, then mean ± std of those differences), which
  is the comparison the experiment makes: same initialisation and data order, with and without
  the teachers. `positive_seeds` counts the seeds whose event-F1 gain is above zero.
  """
  groups: dict[str, list[dict]] = {}
  for r in rows:
    if r["role"] == "student":
      groups.setdefault(r["kd"], []).append(r)
  students = [dict(name=g[0]["name"], role="student", kd=kd, seeds=[r["seed"] for r in g],
                   **{m: stats([r[m] for r in g]) for m in ROW_METRICS})
              for kd, g in groups.items()]
  base = {r["seed"]: r for r in groups.get("none", [])}
  gains = []
  for kd, g in groups.items():
    paired = [r for r in g if kd != "none" and r["seed"] in base]
    if not paired:
      continue
    diff = {m: stats([None if r[m] is None or base[r["seed"]][m] is None
                      else r[m] - base[r["seed"]][m] for r in paired]) for m in ROW_METRICS}
    gains.append(dict(name=g[0]["name"], kd=kd, against=base[paired[0]["seed"]]["name"],
                      seeds=[r["seed"] for r in paired],
                      positive_seeds=sum(v > 0 for v in diff["event_f1"]["values"]), **diff))
  return dict(students=students, kd_gain=gains)


def _note_other_machine(previous: epath.Path, now: dict[str, Any]) -> None:
  """Logs where an earlier results.json of this workdir came from another kind of machine: its
  finished runs were kept, and their figures need not be what this machine would compute."""
  if not previous.exists():
    return
  before = json.loads(previous.read_text()).get("machine")
  differ = machine.same_bits_expected(before, now) if before else []
  if differ:
    logging.warning("This workdir's earlier results were computed on another machine (%s "
                    "differ: %s); runs finished there are kept as they are, so their figures may "
                    "differ in the last digits from a fresh run here (docs/reproducibility.md).",
                    ", ".join(differ), {k: before.get(k) for k in differ})


def run(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> dict[str, Any]:
  """The whole experiment (module docstring); returns and writes results.json."""
  workdir = epath.Path(workdir)
  with ckpt_lib.run_lock(workdir):
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: epath.Path) -> dict[str, Any]:
  teachers = train_teachers(config, workdir)
  cache = build_cache(config, teachers)
  students = train_students(config, workdir, teachers)
  classes = list(builders.make_builder(config.dataset, config.features).info.metadata["classes"])
  rows = []
  for t, metrics in zip(teachers, teacher_metrics(config, teachers, cache, classes)):
    external = isinstance(t, teacher_cache.ExternalTeacher)
    rows.append(_row(t.name, "teacher", "external" if external else "none", metrics,
                     *((None, None) if external else run_cost(teacher_config(config, t.name),
                                                              epath.Path(t.workdir))),
                     seed=None if external else config.seed))
  # An external teacher's size is unknown here, so is then the ensemble's.
  known = all(r["params"] is not None for r in rows)
  params = sum(r["params"] for r in rows) if known else None
  flops = sum(r["flops_per_clip"] for r in rows) if known else None
  test = cache.as_data_source("test")
  ensemble, ensemble_probs, meta = ensemble_metrics(config, test, classes)
  rows.append(_row("ensemble", "ensemble", "none", ensemble, params, flops))
  student_cost = run_cost(student_config(config, distil=False), workdir / "students" / "no_kd")
  for s in students:
    kd = ("none" if s["strategy"] is None else s["strategy"]
          if s["strategy"].startswith("single:") else f"multi:{s['strategy']}")
    rows.append(_row(f"student_{s['run']}", "student", kd, s["metrics"], *student_cost,
                     seed=s["seed"]))
  fit = teacher_fit(config, cache)
  for split, teachers_fit in fit.items():
    logging.info("Teachers' frame F1 on %s (cached outputs vs labels): %s", split,
                 ", ".join(f"{n} {f['frame_f1']:.3f}" for n, f in teachers_fit.items()))
  results = {"dataset": config.dataset.name, "split": "test", "models": rows,
             "summary": summarize(rows), "teacher_fit": fit, "machine": machine.fingerprint()}
  _note_other_machine(workdir / "results.json", results["machine"])
  if jax.process_index() == 0:
    with io_utils.atomic_write(workdir / "results.json") as f:
      json.dump(results, f, indent=2)
    runs = {t.name: epath.Path(t.workdir) for t in teachers  # External ones have no run.
            if isinstance(t, teacher_cache.Teacher)}
    runs |= {f"student_{s['run']}": workdir / "students" / s["run"] for s in students}
    write_report(config, workdir, results, runs, test, ensemble_probs, meta, classes)
  return results
