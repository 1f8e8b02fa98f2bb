"""`teacher_cache`: a base dataset plus the logits of K trained teachers, computed once.

Why: distillation then costs one student forward/backward per step whatever the number and size
of the teachers — they never run inside the distillation loop. Each example holds the base
features plus `teacher_logits` [K, T_out, C] and `teacher_clip_logits` [K, C] (float16; logits
are saturated to ±`LOGIT_LIMIT` first, so an overconfident teacher becomes a very confident
target instead of an inf).

Identity: the config name fingerprints the base dataset (its own fingerprinted name: version,
feature config, content) and, per teacher, its name, architecture, checkpoint step and a hash of
the checkpoint's files. A retrained teacher therefore means a new cache; `find_stale` tells the
caller which teacher changed when only an older cache exists.

Metadata, per teacher: name, architecture, checkpoint step, parameter count and per-class
validation event-F1 (from the cached validation logits, after the teacher's own post-processing
defaults) — what the `class_weighted` KD strategy weights by.

External teachers (`ExternalTeacher`, `external:<name>=<folder>` in `config.teachers`): models
trained anywhere (PyTorch, ...) whose frame scores were written once as files
(`data/frame_scores.py`). They are read instead of run, put on the student's output frames
(`frame_scores.resample`), turned into logits and cached beside the built-in teachers'; their
identity is a hash of their files, and their validation F1 is computed from their scores like
any teacher's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sed_jax import config_lib
from sed_jax import io_utils
from sed_jax import sharding
from sed_jax import train
from sed_jax.data import builders
from sed_jax.data import features as feat_lib
from sed_jax.data import frame_scores
from sed_jax.data import pipeline
from sed_jax.data.builders import base
from sed_jax.data.builders import object_storage
from sed_jax.evaluation import frame_scoring
from sed_jax.models import crnn

LOGIT_LIMIT = 30.0  # float16 holds it exactly; σ(30) = 1 − 1e-13.


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A trained teacher: its name and the workdir it was trained in."""
  name: str
  workdir: str


@dataclasses.dataclass(frozen=True)
class ExternalTeacher:
  """A teacher given as files of frame scores (`data/frame_scores.py`), one set per split."""
  name: str
  folder: str


EXTERNAL = "external:"


def parse_teacher(spec: str, workdir: epath.PathLike) -> Teacher | ExternalTeacher:
  """A `config.teachers` entry: an architecture (trained in `<workdir>/teachers/<arch>`) or
  `external:<name>=<folder>`."""
  problem = spec_problem(spec)
  if problem:
    raise ValueError(f"teachers entry {spec!r}: {problem}")
  if spec.startswith(EXTERNAL):
    name, folder = spec[len(EXTERNAL):].split("=", 1)
    return ExternalTeacher(name, str(io_utils.absolute(folder)))
  return Teacher(spec, str(epath.Path(workdir) / "teachers" / spec))


def spec_problem(spec: str) -> str | None:
  """What is wrong with an `external:<name>=<folder>` entry (None if nothing, or if it is not
  one): for config checks, before any work."""
  if not spec.startswith(EXTERNAL):
    return None
  name, eq, folder = spec[len(EXTERNAL):].partition("=")
  if not eq or not name or not folder or any(ch in name for ch in ":=/ "):
    return ("write external:<name>=<folder>, a name without ':', '=', '/' or spaces and the "
            "folder of its score files (docs/distillation.md, 'Teachers from anywhere')")
  if not epath.Path(folder).is_dir():
    return (f"the folder {folder} does not exist; write the teacher's scores there first "
            "(python -m sed_jax.export_scores for a run of ours)")
  return None


def teacher_name(spec: str) -> str:
  """The name a `config.teachers` entry goes by (in the cache, strategies, results)."""
  return spec[len(EXTERNAL):].split("=", 1)[0] if spec.startswith(EXTERNAL) else spec


def checkpoint_identity(workdir: epath.PathLike) -> dict[str, Any]:
  """Step and content hash of a run's best checkpoint (what the cache depends on)."""
  best = epath.Path(workdir) / "best"
  steps = sorted((int(p.name) for p in best.glob("[0-9]*") if p.is_dir()), reverse=True)
  if not steps:
    raise FileNotFoundError(f"Teacher run {workdir} has no best checkpoint; train it first.")
  config = json.loads((epath.Path(workdir) / "config.json").read_text())
  return dict(step=steps[0], hash=io_utils.content_hash(best / str(steps[0])),
              arch=config["model"]["arch"], time_pool=config["features"]["time_pool"])


class TeacherCache(base.BuildOnce, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base examples + teacher logits, written once by batched, jit-compiled inference."""

  VERSION = tfds.core.Version(base.VERSION)
  builder_config: base.SedBuilderConfig

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    k, c = len(cfg.params["teachers"]), len(cfg.classes)
    features = base.example_features(cfg.features["n_mels"], c)
    features["teacher_logits"] = base.frame_array((k, None, c), np.float16)
    features["teacher_clip_logits"] = tfds.features.Tensor(shape=(k, c), dtype=np.float16)
    return tfds.core.DatasetInfo(
        builder=self, description=cfg.description,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(
            classes=list(cfg.classes), features=dict(cfg.features), params=dict(cfg.params),
            teachers=[]))

  def _split_generators(self, dl_manager):
    del dl_manager
    p = self.builder_config.params
    self._base = self._base_builder()
    self._teachers = self._load_teachers()
    self._infer, self._batch_size = sharded_inference(
        [t for t in self._teachers if not t["external"]], p["batch_size"])
    # Every clip of every split has its external scores, checked before any inference.
    classes = list(self.builder_config.classes)
    external = [t for t in self._teachers if t["external"]]
    self._scores = {}
    for split in p["splits"]:
      ids = audio_ids(self._base.as_data_source(split)) if external else []
      self._scores[split] = {t["name"]: frame_scores.SplitScores(t["workdir"], split, classes,
                                                                 ids) for t in external}
    self.info.metadata["teachers"] = [
        dict(name=t["name"], arch=t["arch"], step=t["step"], hash=t["hash"],
             params=None if t["external"] else
             int(sum(x.size for x in jax.tree.leaves(t["variables"]["params"]))),
             class_f1=None) for t in self._teachers]
    return {split: self._generate_examples(split) for split in p["splits"]}

  def _base_builder(self):
    p = self.builder_config.params
    return builders.make_builder(_config_dict(p["dataset"]), _config_dict(p["feature_config"]))

  def _load_teachers(self) -> list[dict[str, Any]]:
    out = []
    for t in self.builder_config.params["teachers"]:
      if t["external"]:
        out.append(dict(t))
        continue
      model, variables, _ = train.load_trained(t["workdir"], len(self.builder_config.classes))
      out.append(dict(t, model=model, variables=variables))
    return out

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    p = self.builder_config.params
    source = self._base.as_data_source(split)
    feat, data = _config_dict(p["feature_config"]), _config_dict(p["dataset"])
    hop = feat_lib.output_frame_seconds(feat)
    external = [k for k, t in enumerate(self._teachers) if t["external"]]
    built_in = [k for k, t in enumerate(self._teachers) if not t["external"]]
    val = [] if split == "validation" else None
    for idx, examples, frame_in, clip_in in batched_logits(
        self._infer, self._batch_size, source, data, feat):
      _check_finite(frame_in, clip_in, [p["teachers"][k] for k in built_in],
                    [ex["audio_id"] for ex in examples], split)
      for j, (i, ex) in enumerate(zip(idx, examples)):
        t_out = ex["strong"].shape[0]
        frame = np.zeros((len(self._teachers), t_out, len(self.builder_config.classes)))
        clip = np.zeros((len(self._teachers), frame.shape[-1]))
        frame[built_in], clip[built_in] = frame_in[j, :, :t_out], clip_in[j]
        ex = {k: v for k, v in ex.items()}
        ex["audio_id"] = pipeline.text(ex["audio_id"])
        for k in external:
          frame[k], clip[k] = external_logits(
              self._scores[split][self._teachers[k]["name"]], ex, hop, t_out)
        ex["teacher_logits"] = _f16(frame)
        ex["teacher_clip_logits"] = _f16(clip)
        if val is not None:
          val.append((ex, frame))
        yield f"{split}-{i:08d}", ex
    if val:
      self._record_class_f1(val)

  def _record_class_f1(self, val) -> None:
    """Per-teacher, per-class validation event-F1 from the cached validation logits."""
    p, classes = self.builder_config.params, list(self.builder_config.classes)
    feat = _config_dict(p["feature_config"])
    cfg = config_lib.common().evaluation()
    cfg.psds = False
    ids = [ex["audio_id"] for ex, _ in val]
    durations = [float(ex["duration"]) for ex, _ in val]
    refs = frame_scoring.reference_events(
        [list(zip(ex["event_onsets"].tolist(), ex["event_offsets"].tolist(),
                  ex["event_labels"].tolist())) for ex, _ in val], ids, classes)
    t_max = max(lg.shape[1] for _, lg in val)
    for k, teacher in enumerate(self.info.metadata["teachers"]):
      probs = np.zeros((len(val), t_max, len(classes)), np.float32)
      for i, (_, lg) in enumerate(val):
        probs[i, :lg.shape[1]] = 1 / (1 + np.exp(-lg[k]))
      result = frame_scoring.score_predictions(probs, ids, durations, refs, classes,
                                          feat_lib.output_frame_seconds(feat), cfg)
      teacher["class_f1"] = [result["class_wise"][c]["event"]["f1"] or 0.0 for c in classes]


def audio_ids(source) -> list[str]:
  """The audio ids of a split, in its order."""
  return [pipeline.text(source[i]["audio_id"]) for i in range(len(source))]


def external_logits(scores: frame_scores.SplitScores, ex: dict[str, Any], hop: float,
                    t_out: int) -> tuple[np.ndarray, np.ndarray]:
  """An external teacher's frame logits [t_out, C] and clip logits [C] for one example: its
  scores checked to cover the clip, put on the student's frames, saturated at ±LOGIT_LIMIT.

  Logits recovered from probabilities are rounded to float32 first: that gives back exactly
  the float32 logits our own exported scores were computed from (17 digits hold them), so a
  round trip through files caches the very float16 values of the built-in teacher.
  """
  clip = scores.clip(ex["audio_id"], float(ex["duration"]), hop)
  as32 = lambda x: np.clip(x, -LOGIT_LIMIT, LOGIT_LIMIT).astype(np.float32)
  frame = as32(frame_scores.resample(clip.onsets, clip.offsets, clip.values, clip.kind, hop,
                                     t_out))
  if clip.clip is not None:
    return frame, as32(clip.clip if clip.kind == "logits" else
                       frame_scores.probs_to_logits(clip.clip))
  # No clip scores: the frames pooled by linear softmax (Σp²/Σp), the models' own pooling.
  return frame, as32(np.asarray(crnn.clip_logits_from_frames(frame[None], "linear_softmax"))[0])


def batched_logits(infer, batch_size: int, source, data_cfg, feature_cfg):
  """Runs the compiled teachers `infer` (`sharded_inference`) over a split in full batches of
  fixed-length clips, in its order: yields (indices, examples, frame logits [n, K, T, C],
  clip logits [n, K, C]) per batch, float32. The one inference path of the cache and of
  `export_scores`, so exported scores are the cache's logits exactly."""
  frames = pipeline.clip_frames(data_cfg, feature_cfg)
  fix = pipeline.FixLength(frames, feature_cfg.time_pool, feature_cfg.log_floor)
  for start in range(0, len(source), batch_size):
    idx = list(range(start, min(start + batch_size, len(source))))
    examples = [source[i] for i in idx]
    n = len(examples)
    if not infer:  # External teachers only: nothing to run.
      yield idx, examples, np.zeros((n, 0, 1, 1), np.float32), np.zeros((n, 0, 1), np.float32)
      continue
    fixed = [fix.map(ex) for ex in examples]
    pad = batch_size - n  # Full batches only: one compiled shape per teacher.
    mel = np.stack([f["log_mel"] for f in fixed] + [fixed[0]["log_mel"]] * pad)
    mask = np.stack([f["frame_mask"] for f in fixed] + [fixed[0]["frame_mask"]] * pad)
    outs = [jax.device_get(fn(mel, mask)) for fn in infer]
    yield (idx, examples, np.stack([o[0][:n] for o in outs], 1),
           np.stack([o[1][:n] for o in outs], 1))


def sharded_inference(teachers, batch_size: int):
  """Per teacher, `fn(log_mel, frame_mask)` → (frame, clip) logits, compiled once for every
  split, with the batch split over all local devices and the variables replicated; and the
  batch size, `batch_size` grown to a multiple of the device count."""
  mesh = sharding.make_mesh(jax.local_devices())
  repl, split = sharding.replicated(mesh), sharding.data_sharding(mesh)
  fns = [functools.partial(
      jax.jit(functools.partial(_logits, t["model"]), in_shardings=(repl, split, split),
              out_shardings=(split, split)), jax.device_put(t["variables"], repl))
         for t in teachers]
  return fns, -(-batch_size // mesh.devices.size) * mesh.devices.size


def _logits(model, variables, log_mel, frame_mask):
  frame, clip = model.apply(variables, log_mel, train=False, frame_mask=frame_mask)
  return frame, clip


def _check_finite(frame, clip, teachers, audio_ids, split: str) -> None:
  """NaN/inf logits mean a broken teacher checkpoint: stop the build, naming it and the clip
  (clipping to ±LOGIT_LIMIT would silently turn NaN into a confident target)."""
  for k, t in enumerate(teachers):
    bad = ~(np.isfinite(frame[:, k]).reshape(len(frame), -1).all(1) &
            np.isfinite(clip[:, k]).all(1))
    if bad.any():
      aid = pipeline.text(audio_ids[int(np.argmax(bad))])
      raise base.BuildError(
          f"Teacher {t['name']!r} ({t['workdir']}, step {t['step']}) outputs NaN/inf logits on "
          f"{int(bad.sum())} {split} clip(s), the first {aid!r}: its checkpoint is broken. "
          "Retrain it (remove its run folder and run again) or leave it out of config.teachers.")


def _f16(x: np.ndarray) -> np.ndarray:
  return np.clip(x, -LOGIT_LIMIT, LOGIT_LIMIT).astype(np.float16)


def _config_dict(d: dict[str, Any]):
  return ml_collections.ConfigDict(d)


def make(data_cfg, feature_cfg, teachers: Sequence[Teacher | ExternalTeacher],
         batch_size: int = 32, splits: Sequence[str] | None = None) -> TeacherCache:
  """The cache builder for `teachers` over the dataset of `data_cfg` (not built yet).

  Raises before any work if a teacher has no checkpoint or its output frame rate (time_pool)
  differs from the dataset's targets (every built-in teacher must share the student's frame
  rate; external scores are resampled onto it), or an external teacher's folder is missing.
  """
  base_builder = builders.make_builder(data_cfg, feature_cfg)
  if not base_builder.is_prepared():
    base_builder.download_and_prepare()
  names = [t.name for t in teachers]
  if len(set(names)) != len(names) or not names:
    raise ValueError(f"Teacher names must be unique and non-empty, got {names}.")
  identities = []
  for t in teachers:
    if isinstance(t, ExternalTeacher):
      if not epath.Path(t.folder).is_dir():
        raise FileNotFoundError(f"External teacher {t.name!r}: no folder {t.folder}; write its "
                                "scores there first (docs/distillation.md).")
      identities.append(dict(name=t.name, workdir=str(io_utils.absolute(t.folder)),
                             arch="external", step=None, hash=io_utils.content_hash(t.folder),
                             time_pool=None, external=True))
      continue
    ident = checkpoint_identity(t.workdir)
    if ident["time_pool"] != feature_cfg.time_pool:
      raise ValueError(
          f"Teacher {t.name!r} ({t.workdir}) outputs a frame every {ident['time_pool']} input "
          f"frames, the student every {feature_cfg.time_pool}: all teachers must share the "
          "student's output frame rate (features.time_pool). Retrain it with that time_pool.")
    identities.append(dict(name=t.name, workdir=str(io_utils.absolute(t.workdir)), **ident,
                           external=False))
  splits = list(splits or base_builder.info.splits)
  params = dict(dataset=data_cfg.to_dict(), feature_config=feature_cfg.to_dict(),
                base=f"{base_builder.name}/{base_builder.builder_config.name}",
                teachers=identities, splits=splits, batch_size=batch_size)
  content = [(t["name"], t["arch"], t["step"], t["hash"]) for t in identities]
  # Where the data lives and how it was built (folders, workers) do not change its content.
  fp_params = {k: v for k, v in params.items() if k not in ("batch_size", "teachers")}
  fp_params["dataset"] = {k: v for k, v in fp_params["dataset"].items()
                          if k not in ("data_dir", "num_workers", "on_error")}
  config = base.make_config(
      "cache", feature_cfg.to_dict(), base_builder.builder_config.classes, fp_params,
      content=content, description=f"{params['base']} + logits of {', '.join(names)}")
  config.params = params
  cache = TeacherCache(config=config, data_dir=object_storage.builder_data_dir(data_cfg),
                       file_format="array_record")
  object_storage.pull(cache, data_cfg)  # A data_dir on gs://: fetch a cache built there.
  return cache


def find_stale(cache: TeacherCache) -> list[str]:
  """Teachers whose checkpoint differs from the one an existing older cache of the same base
  dataset was built from: the same teacher names *trained in the same run folders* (empty when
  there is no such cache).

  Another experiment's teachers (other workdirs) sharing the TFDS data_dir are a different
  teacher set, not a stale one: their cache lives beside this one under its own fingerprint.
  """
  want = {t["name"]: t for t in cache.builder_config.params["teachers"]}
  root = epath.Path(cache.data_dir).parents[1]
  changed: set[str] = set()
  for info in root.glob("cache-*/*/metadata.json"):
    meta = json.loads(info.read_text())
    params = meta.get("params", {})
    if params.get("base") != cache.builder_config.params["base"]:
      continue
    old = {t["name"]: t for t in meta.get("teachers", [])}
    runs = {t["name"]: t.get("workdir") for t in params.get("teachers", [])}
    if set(old) != set(want) or any(runs.get(n) != want[n]["workdir"] for n in want):
      continue
    changed |= {n for n in want if (old[n]["step"], old[n]["hash"]) !=
                (want[n]["step"], want[n]["hash"])}
  return sorted(changed)
