"""What every sed_jax TFDS builder shares: features, config fingerprints, parallel extraction.

A builder only has to say, per split, which clips exist (`Item`s: where the audio comes from and
which labels it has). This module turns items into examples — audio → log-mel → frame/clip
targets — over a pool of worker processes, applies the `on_error` policy, and records a build
summary (clips, duration, events per class, clipped events, skipped files and why) in the
dataset's metadata.

Datasets are written as `array_record` and read with `tfds.data_source`: TensorFlow is never
imported. The builder config name is `<preset>-<fingerprint>`, where the fingerprint hashes the
feature config, the class list and the builder's own parameters (for folders on disk, also the
annotation files' bytes and the audio files' names and sizes): a changed setting or edited data
is a different dataset, never a silently reused one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from sed_jax import io_utils
from sed_jax import processes
from sed_jax.data import annotations as ann_lib
from sed_jax.data import audio as audio_lib
from sed_jax.data import features as feat_lib

# Bump on any change to what an example holds or how it is computed: the version is part of every
# dataset name, so a changed builder never reads a dataset written by the old one.
VERSION = "1.1.0"  # 1.1.0: frame-level arrays stored as raw bytes (same values).
ON_ERROR = ("raise", "skip")


class BuildError(RuntimeError):
  """A dataset could not be built; the message names the file (and line) and what to do."""


@dataclasses.dataclass(frozen=True)
class FileAudio:
  """Audio read from a file on disk."""
  path: str

  def load(self, sample_rate: int) -> tuple[np.ndarray, list[ann_lib.Event] | None]:
    return audio_lib.load_audio(self.path, sample_rate), None


@dataclasses.dataclass(frozen=True)
class Item:
  """One clip to turn into an example.

  `source.load(sample_rate)` returns the audio and, for generated audio, its events. `strong`
  and `weak` are the labels read from annotation files (None = that label kind is absent);
  `labelled=False` withholds every label (the `unlabeled` splits). An `error` goes through the
  same `on_error` policy as a file that fails to load.
  """
  key: str
  audio_id: str
  source: Any
  strong: tuple[ann_lib.Event, ...] | None = None
  weak: tuple[str, ...] | None = None
  labelled: bool = True
  error: str | None = None  # Known bad before loading (e.g. audio missing): raise or skip.


@dataclasses.dataclass
class SedBuilderConfig(tfds.core.BuilderConfig):
  """A builder config that carries everything that determines the dataset's content."""
  features: dict[str, Any] = dataclasses.field(default_factory=dict)
  classes: tuple[str, ...] = ()
  params: dict[str, Any] = dataclasses.field(default_factory=dict)
  on_error: str = "raise"
  num_workers: int = 0


def fingerprint(*parts: Any) -> str:
  """A short stable hash of JSON-able parts (dict keys sorted)."""
  blob = json.dumps(parts, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:10]


def make_config(preset: str, features: Mapping[str, Any], classes: Sequence[str],
                params: Mapping[str, Any], content: Any = None, on_error: str = "raise",
                num_workers: int = 0, description: str = "") -> SedBuilderConfig:
  """Builder config named `<preset>-<fingerprint>` (content: e.g. a hash of the files on disk)."""
  if on_error not in ON_ERROR:
    raise ValueError(f"dataset.on_error must be one of {ON_ERROR}, got {on_error!r}.")
  features, params = dict(features), dict(params)
  fp = fingerprint(VERSION, features, list(classes), params, content)
  return SedBuilderConfig(
      name=f"{preset}-{fp}", version=VERSION, description=description or preset,
      features=features, classes=tuple(classes), params=params, on_error=on_error,
      num_workers=num_workers)


def frame_array(shape, dtype) -> tfds.features.Tensor:
  """A frame-level array feature, stored as its raw bytes.

  Why bytes: TFDS's default encoding writes a float array as a protobuf list of numbers, which
  cost 6.3 ms per 10-s log-mel to serialise, more than the main process of a dataset build (or a
  teacher-cache build, which rewrites every clip's features) can keep up with; raw bytes take
  0.05 ms and read back bit-identical.
  """
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


def example_features(n_mels: int, n_classes: int) -> dict[str, tfds.features.FeatureConnector]:
  """The features of every sed_jax example (DESIGN.md), as TFDS connectors."""
  return {
      "log_mel": frame_array((None, n_mels), np.float32),
      "strong": frame_array((None, n_classes), np.uint8),
      "weak": tfds.features.Tensor(shape=(n_classes,), dtype=np.uint8),
      "has_strong": tfds.features.Scalar(dtype=np.bool_),
      "has_weak": tfds.features.Scalar(dtype=np.bool_),
      "audio_id": tfds.features.Text(),
      "duration": tfds.features.Scalar(dtype=np.float32),
      # The annotated events themselves (after clipping to the clip), so evaluation scores
      # against exact reference times, not the 80-ms frame targets.
      "event_onsets": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      "event_offsets": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      "event_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
  }


class BuildOnce:
  """TFDS builder mixin: a dataset is built once, whatever the number of jobs asking for it.

  Builds that share a data_dir take turns on a lock beside the dataset: a second job waits, then
  reuses what the first wrote (and never deletes the first's `incomplete.*` folder as if it were
  the leftover of a killed build).
  """

  def download_and_prepare(self, *args, **kwargs):
    config_dir = epath.Path(self.data_dir).parent
    with io_utils.exclusive(config_dir / f".{self.version}.build.lock",
                            f"the build of {self.name}/{self.builder_config.name}", wait=True):
      if self.is_prepared():  # Built by another job while this one waited.
        self.info.read_from_directory(self.data_dir)
        return None
      _remove_stale_incomplete(config_dir)
      return super().download_and_prepare(*args, **kwargs)


class SedBuilder(BuildOnce, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class: subclasses implement `_split_items()`."""

  VERSION = tfds.core.Version(VERSION)
  builder_config: SedBuilderConfig

  def _split_items(self) -> dict[str, list[Item]]:
    raise NotImplementedError

  # --- TFDS hooks -------------------------------------------------------------------------

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    n_mels, n_classes = cfg.features["n_mels"], len(cfg.classes)
    return tfds.core.DatasetInfo(
        builder=self,
        description=cfg.description,
        features=tfds.features.FeaturesDict(example_features(n_mels, n_classes)),
        metadata=tfds.core.MetadataDict(
            classes=list(cfg.classes), features=dict(cfg.features), params=dict(cfg.params),
            summary={}),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is ever downloaded.
    items = self._split_items()
    if not items:
      raise BuildError(f"{self.name}: no split found to build ({self.builder_config.params}).")
    return {split: self._generate_examples(split, split_items)
            for split, split_items in items.items()}

  def _generate_examples(self, split: str, items: list[Item]) -> Iterator[tuple[str, dict]]:
    cfg = self.builder_config
    summary = _Summary(cfg.classes)
    for item, result in self._map(items):
      if isinstance(result, Exception):
        if item.audio_id not in str(result):  # Say which clip, whatever failed.
          result = BuildError(f"{item.audio_id}: {type(result).__name__}: {result}")
        if cfg.on_error == "raise":
          raise BuildError(
              f"{result}\n(split {split!r}; rerun with --on_error=skip to build without the "
              "files that fail, listing them in the dataset's metadata)") from result
        summary.skip(item.audio_id, str(result))
        continue
      example, stats = result
      summary.add(example, stats)
      yield item.key, example
    if not summary.clips:
      raise BuildError(f"{self.name}: split {split!r} has no usable clip "
                       f"(skipped: {summary.skipped[:5]}).")
    self.info.metadata["summary"][split] = summary.as_dict()

  def _map(self, items: list[Item]) -> Iterator[tuple[Item, Any]]:
    """(item, example or exception) in item order, over `num_workers` processes (0 = all cores)."""
    cfg = self.builder_config
    args = [(item, cfg.features, cfg.classes) for item in items]
    pool = self._pool() if len(items) >= 8 else None
    if pool is None:
      yield from ((a[0], _make_example_safe(a)) for a in args)
      return
    chunk = max(1, min(16, len(items) // (4 * self._num_workers())))
    yield from zip(items, pool.map(_make_example_safe, args, chunksize=chunk))

  def _num_workers(self) -> int:
    return self.builder_config.num_workers or os.cpu_count() or 1

  def _pool(self) -> concurrent.futures.ProcessPoolExecutor | None:
    """One worker pool for the whole build (started once, not per split); None = in-process."""
    workers = self._num_workers()
    if workers == 1:
      return None
    if getattr(self, "_workers", None) is None:
      # 'spawn': forking a process that already holds JAX's threads can deadlock.
      self._workers = processes.spawn_pool(workers)  # Killed with the build, no orphans.
    return self._workers

  def download_and_prepare(self, *args, **kwargs):
    try:
      return super().download_and_prepare(*args, **kwargs)
    finally:
      if getattr(self, "_workers", None) is not None:
        self._workers.shutdown(cancel_futures=True)
        self._workers = None


def _remove_stale_incomplete(config_dir: epath.Path) -> None:
  """Deletes `incomplete.*` folders that a killed build left; they are never read as data."""
  if config_dir.is_dir():
    for p in config_dir.glob("incomplete.*"):
      logging.info("Removing the leftovers of an interrupted build: %s", p)
      shutil.rmtree(p, ignore_errors=True)


def _make_example_safe(args) -> Any:
  """Worker entry point: an example, or the exception that names the bad file."""
  item = args[0]
  if item.error:
    return BuildError(f"{item.audio_id}: {item.error}")
  try:
    return make_example(*args)
  except (audio_lib.AudioError, ann_lib.AnnotationError, ValueError, OSError) as e:
    return e


def make_example(item: Item, features: Mapping[str, Any], classes: Sequence[str]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Item → (TFDS example, stats: events per class and events clipped at the clip end)."""
  cfg = _Attr(features)
  audio, generated = item.source.load(cfg.sample_rate)
  duration = audio.shape[0] / cfg.sample_rate
  log_mel = feat_lib.log_mel(audio, cfg)
  t_out = log_mel.shape[0] // cfg.time_pool
  strong_events = generated if generated is not None else item.strong
  has_strong = item.labelled and strong_events is not None
  n_clipped, counts, events = 0, np.zeros(len(classes), np.int64), []
  strong = np.zeros((t_out, len(classes)), np.uint8)
  weak = np.zeros(len(classes), np.uint8)
  if has_strong:
    events, n_clipped = ann_lib.clip_events(list(strong_events), duration)
    try:
      strong = feat_lib.frame_targets(events, classes, t_out, feat_lib.output_frame_seconds(cfg))
      weak = feat_lib.weak_targets(events, classes)
      np.add.at(counts, [classes.index(e.label) for e in events], 1)
    except ValueError as e:
      raise ann_lib.AnnotationError(f"{item.audio_id}: {e}") from e
  has_weak = item.labelled and (has_strong or item.weak is not None)
  if item.labelled and item.weak is not None:
    try:
      weak = np.maximum(weak, feat_lib.weak_targets(item.weak, classes))
    except ValueError as e:
      raise ann_lib.AnnotationError(f"{item.audio_id}: {e}") from e
  index = {c: i for i, c in enumerate(classes)}
  example = dict(log_mel=log_mel, strong=strong, weak=weak, has_strong=has_strong,
                 has_weak=has_weak, audio_id=item.audio_id, duration=np.float32(duration),
                 event_onsets=np.array([e.onset for e in events], np.float32),
                 event_offsets=np.array([e.offset for e in events], np.float32),
                 event_labels=np.array([index[e.label] for e in events], np.int32))
  return example, dict(clipped=n_clipped, events=counts)


class _Attr(dict):
  """Attribute access to a plain dict (feature configs travel to workers as dicts)."""
  __getattr__ = dict.__getitem__


class _Summary:
  """Per-split build statistics, stored in the dataset metadata and printed by `build`."""

  def __init__(self, classes: Sequence[str]):
    self.classes = list(classes)
    self.clips = 0
    self.duration = 0.0
    self.labelled = 0
    self.events = np.zeros(len(classes), np.int64)
    self.clips_with = np.zeros(len(classes), np.int64)
    self.events_clipped = 0
    self.skipped: list[dict[str, str]] = []

  def add(self, example: dict[str, Any], stats: dict[str, Any]) -> None:
    self.clips += 1
    self.duration += float(example["duration"])
    self.labelled += bool(example["has_strong"] or example["has_weak"])
    self.clips_with += example["weak"].astype(np.int64)
    self.events += stats["events"]
    self.events_clipped += stats["clipped"]

  def skip(self, audio_id: str, reason: str) -> None:
    self.skipped.append({"file": audio_id, "reason": reason})

  def as_dict(self) -> dict[str, Any]:
    return dict(
        clips=self.clips, hours=round(self.duration / 3600, 4), labelled_clips=self.labelled,
        events_per_class=dict(zip(self.classes, self.events.tolist())),
        clips_per_class=dict(zip(self.classes, self.clips_with.tolist())),
        events_clipped_at_clip_end=self.events_clipped, skipped=self.skipped)

