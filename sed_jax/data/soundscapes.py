"""Strongly labelled soundscapes mixed from real isolated clips onto backgrounds (URBAN-SED style).

Why: real recordings with exact event boundaries are rare; mixing isolated, labelled clips onto
ambient recordings (as URBAN-SED did with Scaper and UrbanSound8K) gives real-sounding audio whose
onsets and offsets are known by construction.

Inputs, Scaper-style: `<source_dir>/<label>/*.{wav,flac,ogg}` (the folder name is the label) and
a folder of background recordings. Output: a DCASE split folder, `audio/*.wav` + `strong.tsv`,
plus `soundscapes.json` recording how it was made (its fingerprint makes re-runs free and stale
folders loud).

Mixing rules (`mix_soundscape`), all drawn from one `np.random.default_rng(seed)`:
- a background file, a random excerpt of it (looped with a short crossfade when shorter than the
  clip), set to a random RMS level in `background_dbfs`;
- `min_events..max_events` events: a label uniformly among the labels, then a file uniformly
  within it (so rare classes are not drowned by common ones, as in URBAN-SED); leading and
  trailing near-silence (below -40 dB re the file's peak) is trimmed so the annotation starts
  where the sound does; a file longer than `max_event_seconds` (or the clip) contributes a random
  excerpt;
- an onset uniform over the positions where the event fits in the clip and the number of
  simultaneously active events stays <= `max_polyphony` (20 tries, then the event is dropped);
- a gain that puts the event's *active* RMS (over its 20-ms frames within 30 dB of its loudest
  frame, so a gunshot's silent tail does not make it louder) at an SNR uniform in `snr_db` above
  the background RMS;
- the sum is scaled down to `peak` only when it would exceed it.
Annotated onset = placement, offset = onset + the event's duration in the clip, in seconds,
rounded to 1 ms.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import socket
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tqdm
from absl import logging

from sed_jax import io_utils
from sed_jax.data import annotations as ann_lib
from sed_jax.data import audio as audio_lib
from sed_jax.data import synth

PathLike = str | os.PathLike
Sources = Mapping[str, Sequence[Path]]
FileFilter = Callable[[Path], bool]

MARKER = "soundscapes.json"
# Bump when the mixing algorithm changes, so that folders made by the old one are not reused.
_ALGORITHM_VERSION = 1
# Leading/trailing samples below this level re the file's peak are trimmed from event sources.
_TRIM_DB = 40.0
# Active RMS: frames of this length within this many dB of the loudest frame.
_ACTIVE_FRAME_S = 0.02
_ACTIVE_DB = 30.0
# Onset draws per event before giving up on it (polyphony limit).
_PLACEMENT_TRIES = 20
# Crossfade when a background shorter than the clip is looped.
_LOOP_FADE_S = 0.05

URBANSED_MINI_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark",
                         "drilling", "engine_idling", "gun_shot", "jackhammer", "siren",
                         "street_music")
# Share of the Freesound recordings of folds 1-2 that go to validation (stratified by label).
VALIDATION_FRACTION = 0.2


class SoundscapeError(ValueError):
  """Soundscapes cannot be made; the message names the folder or file and what to do."""


@dataclasses.dataclass(frozen=True)
class SoundscapeConfig:
  """How soundscapes are mixed. Every field is part of the output folder's fingerprint.

  Attributes:
    duration: clip length in seconds.
    sample_rate: output rate in Hz (sources and backgrounds are resampled to it).
    min_events: fewest events drawn per clip (placement may drop some at the polyphony limit).
    max_events: most events per clip. URBAN-SED uses 1..9 on 10-s clips; our sources are shorter
      and fewer, so 1..6 keeps clips busy without making most of them wall-to-wall sound.
    snr_db: (low, high) event SNR in dB relative to the background RMS, drawn uniformly. 6..30
      dB as in URBAN-SED: every event audible, the quiet ones not trivially so.
    max_polyphony: most events active at the same instant.
    background_dbfs: (low, high) background RMS level in dBFS, drawn uniformly per clip.
    max_event_seconds: longer sources contribute a random excerpt of this length; None = the clip
      duration.
    peak: the mix is scaled down to this peak only when it would exceed it.
    seed: base seed; with the split seed it determines every clip.
  """
  duration: float = 10.0
  sample_rate: int = 16000
  min_events: int = 1
  max_events: int = 6
  snr_db: tuple[float, float] = (6.0, 30.0)
  max_polyphony: int = 3
  background_dbfs: tuple[float, float] = (-40.0, -25.0)
  max_event_seconds: float | None = None
  peak: float = 0.95
  seed: int = 0

  def __post_init__(self):
    # Config systems hand over lists; the fingerprint must not depend on that.
    object.__setattr__(self, "snr_db", tuple(float(v) for v in self.snr_db))
    object.__setattr__(self, "background_dbfs", tuple(float(v) for v in self.background_dbfs))
    problems = []
    if not (self.duration > 0 and math.isfinite(self.duration)):
      problems.append(f"duration must be > 0 seconds (got {self.duration})")
    if self.sample_rate <= 0:
      problems.append(f"sample_rate must be > 0 (got {self.sample_rate})")
    if not 0 <= self.min_events <= self.max_events:
      problems.append(f"need 0 <= min_events <= max_events (got {self.min_events}, "
                      f"{self.max_events})")
    if self.max_polyphony < 1:
      problems.append(f"max_polyphony must be >= 1 (got {self.max_polyphony})")
    for name in ("snr_db", "background_dbfs"):
      lo_hi = getattr(self, name)
      if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
        problems.append(f"{name} must be (low, high) with low <= high (got {lo_hi})")
    if self.max_event_seconds is not None and not self.max_event_seconds > 0:
      problems.append(f"max_event_seconds must be > 0 or None (got {self.max_event_seconds})")
    if not 0 < self.peak <= 1:
      problems.append(f"peak must be in (0, 1] (got {self.peak})")
    if problems:
      raise ValueError("Bad SoundscapeConfig: " + "; ".join(problems) + ".")

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["snr_db"], d["background_dbfs"] = list(self.snr_db), list(self.background_dbfs)
    return d


# ---------------------------------------------------------------------------------------------
# Sources.


def collect_sources(source_dirs: Sequence[PathLike], classes: Sequence[str] | None = None,
                    file_filter: FileFilter | None = None) -> dict[str, list[Path]]:
  """Finds the labelled isolated clips under Scaper-style source folders.

  Args:
    source_dirs: folders holding one subfolder per label (for example UrbanSound8K folds); the
      same label in several folders is merged.
    classes: when given, only these labels are kept (in this order); other label folders are
      ignored, and a class with no file is logged as a warning (a partial fold may lack one).
    file_filter: when given, only files for which it returns True are kept (for example a
      recording-level train/validation split).

  Returns:
    {label: sorted files}, labels sorted by name (or in `classes` order), empty labels left out.

  Raises:
    SoundscapeError: a folder is missing, has no label folders, or no file is left at all.
  """
  if isinstance(source_dirs, (str, os.PathLike, LabelledFiles)):
    source_dirs = [source_dirs]
  found: dict[str, list[Path]] = collections.defaultdict(list)
  for d in source_dirs:
    for label, f in labelled_files(d):
      if (classes is None or label in classes) and (file_filter is None or file_filter(f)):
        found[label].append(f)
  order = list(classes) if classes is not None else sorted(found)
  missing = [c for c in order if not found.get(c)]
  if classes is not None and missing:
    logging.warning("No source clip for class(es) %s under %s.", ", ".join(missing),
                    ", ".join(map(str, source_dirs)))
  out = {label: sorted(found[label]) for label in order if found.get(label)}
  if not out:
    what = f" of the classes {', '.join(classes)}" if classes is not None else ""
    raise SoundscapeError(
        f"No source audio file{what} found under {', '.join(map(str, source_dirs))}"
        f"{' (after filtering)' if file_filter else ''}. Check the folders and class names.")
  return out


@dataclasses.dataclass(frozen=True)
class LabelledFiles:
  """Isolated clips whose labels come from a list instead of folder names: a fold of the
  official UrbanSound8K download (flat `audio/foldN/`, labels in `metadata/UrbanSound8K.csv`)."""
  name: str                          # For messages: the CSV and the fold.
  files: tuple[tuple[str, Path], ...]  # (label, file)

  def __str__(self) -> str:
    return self.name


def labelled_files(source: PathLike | LabelledFiles) -> list[tuple[str, Path]]:
  """(label, file) of every clip of a source: a Scaper-style folder (`<dir>/<label>/*`) or a
  `LabelledFiles` list, sorted by label then file."""
  if isinstance(source, LabelledFiles):
    return sorted(source.files)
  d = Path(source)
  if not d.is_dir():
    raise SoundscapeError(
        f"{d}: source folder does not exist. Sources are Scaper-style folders "
        "<dir>/<label>/*.wav|flac|ogg; check the path.")
  label_dirs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
  if not label_dirs:
    raise SoundscapeError(
        f"{d}: has no label folders. Put each class's isolated clips in a subfolder named "
        "after the class: <dir>/<label>/*.wav|flac|ogg.")
  return [(label_dir.name, f) for label_dir in label_dirs
          for f in audio_lib.find_audio_files(label_dir)]


class AudioCache:
  """Loads audio at one sample rate, keeping recently used files (up to `max_samples` in all).

  Soundscapes reuse the same few thousand short sources and few long backgrounds; decoding Ogg
  again for every use would dominate the mixing time.
  """

  def __init__(self, sample_rate: int, max_samples: int = 32_000_000):
    self.sample_rate = sample_rate
    self.max_samples = max_samples
    self._items: collections.OrderedDict[Path, np.ndarray] = collections.OrderedDict()
    self._size = 0

  def __call__(self, path: PathLike) -> np.ndarray:
    path = Path(path)
    if path in self._items:
      self._items.move_to_end(path)
      return self._items[path]
    x = audio_lib.load_audio(path, self.sample_rate)
    x.setflags(write=False)
    self._items[path] = x
    self._size += x.size
    while self._size > self.max_samples and len(self._items) > 1:
      _, old = self._items.popitem(last=False)
      self._size -= old.size
    return x


# ---------------------------------------------------------------------------------------------
# Mixing.


def _rms(x: np.ndarray) -> float:
  return math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def active_rms(x: np.ndarray, sample_rate: int) -> float:
  """RMS over the 20-ms frames within 30 dB of the loudest: the level of the sound itself."""
  frame = max(1, int(_ACTIVE_FRAME_S * sample_rate))
  k = x.shape[0] // frame
  if k < 2:
    return _rms(x)
  power = np.mean(np.square(x[:k * frame].reshape(k, frame), dtype=np.float64), axis=1)
  active = power >= power.max() * 10.0 ** (-_ACTIVE_DB / 10)
  return math.sqrt(float(power[active].mean()))


def _trim(x: np.ndarray) -> np.ndarray:
  """Drops leading/trailing samples below -40 dB re the peak (an all-zero file becomes empty)."""
  loud = np.flatnonzero(np.abs(x) > np.abs(x).max(initial=0.0) * 10.0 ** (-_TRIM_DB / 20))
  return x[loud[0]:loud[-1] + 1] if loud.size else x[:0]


def _background_excerpt(rng: np.random.Generator, x: np.ndarray, n: int, sr: int) -> np.ndarray:
  """A random n-sample excerpt; a shorter recording is looped from a random point, crossfaded."""
  if x.shape[0] >= n:
    start = int(rng.integers(0, x.shape[0] - n + 1))
    return x[start:start + n].astype(np.float64)
  x = np.roll(x.astype(np.float64), -int(rng.integers(0, x.shape[0])))
  fade = min(int(_LOOP_FADE_S * sr), x.shape[0] // 4)
  ramp = (np.arange(fade) + 0.5) / max(fade, 1)
  out = x
  while out.shape[0] < n:
    if fade:
      joint = out[-fade:] * (1 - ramp) + x[:fade] * ramp
      out = np.concatenate([out[:-fade], joint, x[fade:]])
    else:
      out = np.concatenate([out, x])
  return out[:n]


def _max_active(intervals: list[tuple[int, int]], start: int, end: int) -> int:
  """The most intervals active at one instant of [start, end)."""
  points = [start] + [s for s, _ in intervals if start < s < end]
  return max((sum(s <= p < e for s, e in intervals) for p in points), default=0)


def mix_soundscape(rng_seed: int, sources: Sources, backgrounds: Sequence[PathLike],
                   config: SoundscapeConfig,
                   load: Callable[[Path], np.ndarray] | None = None
                   ) -> tuple[np.ndarray, list[ann_lib.Event]]:
  """Mixes one soundscape (see the module docstring for the rules).

  Args:
    rng_seed: the clip's seed; the same seed, sources (in the same order) and config give the
      same audio and events.
    sources: {label: files}, as from `collect_sources`.
    backgrounds: background recordings (any length; looped when shorter than the clip).
    config: the mixing settings.
    load: path -> float32 mono samples at `config.sample_rate`; default `audio.load_audio`.
      Pass an `AudioCache` when mixing many clips.

  Returns:
    (float32 audio [round(duration * sample_rate)] with peak <= config.peak, events sorted by
    onset, times in seconds).

  Raises:
    SoundscapeError: no source, no background, or a silent background.
    audio.AudioError: a file that cannot be decoded (names the file).
  """
  sr = config.sample_rate
  if load is None:
    load = lambda p: audio_lib.load_audio(p, sr)  # pylint: disable=unnecessary-lambda-assignment
  labels = [label for label, files in sources.items() if files]
  if not labels:
    raise SoundscapeError("No source files to mix; collect_sources() returned no files.")
  if not backgrounds:
    raise SoundscapeError("No background file to mix onto; give a folder of background audio.")
  rng = np.random.default_rng(rng_seed)
  n = int(round(config.duration * sr))

  bg_path = Path(backgrounds[int(rng.integers(len(backgrounds)))])
  bg = _background_excerpt(rng, load(bg_path), n, sr)
  bg_rms = _rms(bg)
  if bg_rms < 1e-7:
    raise SoundscapeError(f"{bg_path}: the background excerpt is silent, so event SNRs are "
                          "undefined. Remove the file from the backgrounds folder.")
  target_rms = 10.0 ** (rng.uniform(*config.background_dbfs) / 20)
  mix = bg * (target_rms / bg_rms)

  max_len = n if config.max_event_seconds is None else min(
      n, max(1, int(round(config.max_event_seconds * sr))))
  placed: list[tuple[int, int]] = []
  events = []
  for _ in range(int(rng.integers(config.min_events, config.max_events + 1))):
    label = labels[int(rng.integers(len(labels)))]
    files = sources[label]
    path = Path(files[int(rng.integers(len(files)))])
    snr = rng.uniform(*config.snr_db)
    x = _trim(load(path))
    if x.shape[0] == 0:
      logging.warning("Skipping silent source %s.", path)
      continue
    if x.shape[0] > max_len:
      cut = int(rng.integers(0, x.shape[0] - max_len + 1))
      x = x[cut:cut + max_len]
    length = x.shape[0]
    for _ in range(_PLACEMENT_TRIES):
      start = int(rng.integers(0, n - length + 1))
      if _max_active(placed, start, start + length) < config.max_polyphony:
        break
    else:
      continue  # No room under the polyphony limit: drop this event.
    level = active_rms(x, sr)
    if level <= 0:
      continue
    mix[start:start + length] += x * (target_rms * 10.0 ** (snr / 20) / level)
    placed.append((start, start + length))
    events.append(ann_lib.Event(round(start / sr, 3),
                                min(round((start + length) / sr, 3), float(config.duration)),
                                label))
  peak = float(np.abs(mix).max())
  if peak > config.peak:
    mix *= config.peak / peak
  return mix.astype(np.float32), sorted(events)


# ---------------------------------------------------------------------------------------------
# Writing a split.


def _files_digest(files: Sequence[PathLike]) -> list:
  """(name, size) of each file: cheap, and changes when a file is replaced or edited."""
  out = []
  for f in map(Path, files):
    try:
      out.append([f.name, f.stat().st_size])
    except OSError as e:
      raise SoundscapeError(f"{f}: cannot be read ({e.strerror or e}).") from None
  return out


def _params(n_clips: int, sources: Sources, backgrounds: Sequence[PathLike],
            config: SoundscapeConfig, split_seed: int | str) -> dict:
  """What determines a split's content; hashed into its fingerprint and stored in its marker."""
  source_digest = hashlib.sha256(json.dumps(
      {label: _files_digest(files) for label, files in sources.items()}).encode()).hexdigest()
  return dict(
      algorithm_version=_ALGORITHM_VERSION,
      n_clips=int(n_clips),
      split_seed=split_seed,
      config=config.to_dict(),
      sources={label: len(files) for label, files in sources.items()},
      sources_sha256=source_digest,
      backgrounds=[name for name, _ in _files_digest(backgrounds)],
      backgrounds_sha256=hashlib.sha256(
          json.dumps(_files_digest(backgrounds)).encode()).hexdigest(),
  )


def _fingerprint(params: dict) -> str:
  return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _read_marker(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None


def _check_existing(out: Path, fingerprint: str, params: dict) -> bool:
  """True if `out` is a complete folder with this fingerprint; raises if it is anything else."""
  if not out.exists():
    return False
  marker = _read_marker(out / MARKER)
  if marker is None:
    raise SoundscapeError(
        f"{out} exists but holds no {MARKER}, so it was not written (completely) by "
        "write_soundscapes. Delete it or choose another output path.")
  if marker.get("fingerprint") == fingerprint:
    return True
  old = marker.get("params", {})
  changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
  raise SoundscapeError(
      f"{out} holds soundscapes generated with different settings (changed: "
      f"{', '.join(changed) or 'unknown'}; fingerprint {marker.get('fingerprint')} != "
      f"{fingerprint}). Delete the folder to regenerate it, or change the output path.")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale_tmp(out: Path) -> None:
  """Removes temporary folders of killed runs on this host (their process no longer exists)."""
  host = socket.gethostname()
  for tmp in out.parent.glob(f".{out.name}.incomplete-*"):
    rest = tmp.name[len(f".{out.name}.incomplete-"):]
    tmp_host, _, pid = rest.rpartition("-")
    if tmp_host == host and pid.isdigit() and not _pid_alive(int(pid)):
      shutil.rmtree(tmp, ignore_errors=True)


def clip_name(index: int) -> str:
  return f"soundscape_{index:05d}.wav"


def write_soundscapes(out_dir: PathLike, n_clips: int, sources: Sources,
                      backgrounds: Sequence[PathLike], config: SoundscapeConfig,
                      split_seed: int | str, progress: bool = True) -> Path:
  """Writes a DCASE split folder of `n_clips` soundscapes, or reuses a complete one.

  Layout: `out_dir/audio/soundscape_00000.wav ...`, `out_dir/strong.tsv` (clips without events
  get an empty row) and `out_dir/soundscapes.json` (fingerprint, settings, event counts).
  Clip i is `mix_soundscape(synth.clip_seed(f"soundscapes/{split_seed}", i, config.seed), ...)`,
  so splits with different `split_seed`s never share a clip.

  Kill-safe: everything is written into a hidden sibling `.<name>.incomplete-<host>-<pid>` that is
  renamed to `out_dir` only when complete; leftovers of killed runs on this host are removed.

  Returns:
    `out_dir` as a Path.

  Raises:
    SoundscapeError: `out_dir` exists with a different fingerprint (settings, sources, seeds),
      or exists without the marker; the message says to delete it or change the output path.
  """
  out = Path(out_dir)
  params = _params(n_clips, sources, backgrounds, config, split_seed)
  fingerprint = _fingerprint(params)
  if _check_existing(out, fingerprint, params):
    logging.info("Reusing soundscapes in %s (fingerprint %s).", out, fingerprint)
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  _remove_stale_tmp(out)
  tmp = out.parent / f".{out.name}.incomplete-{socket.gethostname()}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  (tmp / "audio").mkdir(parents=True)
  try:
    load = AudioCache(config.sample_rate)
    events: dict[str, list[ann_lib.Event]] = {}
    for i in tqdm.tqdm(range(n_clips), desc=f"soundscapes {out.name}", disable=not progress,
                       unit="clip"):
      seed = synth.clip_seed(f"soundscapes/{split_seed}", i, config.seed)
      audio, clip_events = mix_soundscape(seed, sources, backgrounds, config, load=load)
      audio_lib.write_audio(tmp / "audio" / clip_name(i), audio, config.sample_rate)
      events[clip_name(i)] = clip_events
    ann_lib.write_strong_tsv(tmp / "strong.tsv", events)
    counts = collections.Counter(e.label for evs in events.values() for e in evs)
    with io_utils.atomic_write(tmp / MARKER, "w", encoding="utf-8") as f:
      json.dump(dict(fingerprint=fingerprint, params=params,
                     events_per_class=dict(sorted(counts.items()))), f, indent=2)
    try:
      os.rename(tmp, out)
    except OSError:
      # Another process finished the same folder first: use it if it is the same.
      if _check_existing(out, fingerprint, params):
        shutil.rmtree(tmp, ignore_errors=True)
        return out
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("Wrote %d soundscapes to %s.", n_clips, out)
  return out


# ---------------------------------------------------------------------------------------------
# The urbansed_mini preset: UrbanSound8K folds 1-3 mixed onto ambient backgrounds.


def fs_id(path: PathLike) -> str:
  """The Freesound recording id of an UrbanSound8K slice: `123688-8-1-1.ogg` -> '123688'."""
  return Path(path).name.split("-", 1)[0]


@dataclasses.dataclass(frozen=True)
class RecordingFilter:
  """Keeps the files whose recording (fsID) is (or is not) in `validation_ids`. Picklable."""
  validation_ids: frozenset[str]
  validation: bool

  def __call__(self, path: Path) -> bool:
    return (fs_id(path) in self.validation_ids) == self.validation


def _validation_recordings(fold_dirs: Sequence[Path | LabelledFiles]) -> frozenset[str]:
  """Picks ~VALIDATION_FRACTION of each label's recordings for validation, by a stable hash.

  A recording belongs to the label it has most slices of, so it is never split between train and
  validation even when it holds several classes. Stratifying by label (rather than a bare
  `hash % 5`) gives every class with at least two recordings at least one validation recording;
  the rank order comes from crc32, so the choice is the same on every machine.
  """
  per_recording: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for d in fold_dirs:
    for label, f in labelled_files(d):
      per_recording[fs_id(f)][label] += 1
  by_label: dict[str, list[str]] = collections.defaultdict(list)
  for rec, labels in per_recording.items():
    primary = min(labels, key=lambda label: (-labels[label], label))
    by_label[primary].append(rec)
  chosen = set()
  for recs in by_label.values():
    if len(recs) < 2:
      continue
    recs.sort(key=lambda r: (zlib.crc32(r.encode()), r))
    chosen.update(recs[:max(1, round(VALIDATION_FRACTION * len(recs)))])
  return frozenset(chosen)


US8K_CSV = Path("UrbanSound8K/metadata/UrbanSound8K.csv")  # The official download, unpacked.
US8K_DOWNLOAD = ("UrbanSound8K (https://urbansounddataset.weebly.com/urbansound8k.html, "
                 "UrbanSound8K.tar.gz, 6 GB; CC BY-NC 3.0)")


def _missing_data_error(root: Path, missing: Sequence[Path]) -> SoundscapeError:
  return SoundscapeError(
      f"urbansed_mini data not found under {root} (missing: {', '.join(map(str, missing))}). "
      f"It expects, beside {root}/backgrounds (ambient recordings), either the official "
      f"{US8K_DOWNLOAD} as unpacked ({root}/UrbanSound8K/audio/fold1..., {root}/{US8K_CSV}) "
      f"or Scaper-style folds {root}/urbansound8k/fold1, fold2, fold3 (<label>/*.ogg, one "
      "folder per class). Set the config key dataset.root (--root on the build command) to the "
      "folder that holds them.")


def urbansound8k_folds(us8k: PathLike, folds: Sequence[int]) -> list[LabelledFiles]:
  """The clips of `folds` of the official UrbanSound8K download at `us8k` (the unpacked
  `UrbanSound8K/` folder), labels and folds from `metadata/UrbanSound8K.csv`.

  Raises:
    SoundscapeError: naming the CSV (and line) for a missing column, a bad fold or a listed
      file that is not in `audio/fold<N>/`.
  """
  us8k = Path(us8k)
  csv_path = us8k / "metadata" / "UrbanSound8K.csv"
  with open(csv_path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  need = ("slice_file_name", "fsID", "fold", "class")
  header = rows[0] if rows else []
  if any(c not in header for c in need):
    raise SoundscapeError(f"{csv_path}:1: the header {header} lacks "
                          f"{[c for c in need if c not in header]}; this is not UrbanSound8K's "
                          "metadata file (columns slice_file_name, fsID, start, end, salience, "
                          "fold, classID, class).")
  col = {c: header.index(c) for c in need}
  per_fold: dict[int, list[tuple[str, Path]]] = {k: [] for k in folds}
  missing = []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      fold = int(row[col["fold"]])
      name, label = row[col["slice_file_name"]], row[col["class"]]
    except (IndexError, ValueError):
      raise SoundscapeError(f"{csv_path}:{line}: malformed row {row}; restore the file from "
                            "the UrbanSound8K archive.") from None
    if fold not in per_fold:
      continue
    path = us8k / "audio" / f"fold{fold}" / name
    if not path.is_file():
      missing.append(f"{path} (line {line})")
    per_fold[fold].append((label, path))
  if missing:
    raise SoundscapeError(f"{csv_path} lists {len(missing)} file(s) that are not on disk, the "
                          f"first: {', '.join(missing[:3])}. Unpack the whole archive, or point "
                          "dataset.root elsewhere.")
  empty = [k for k, files in per_fold.items() if not files]
  if empty:
    raise SoundscapeError(f"{csv_path}: no row for fold(s) {empty}; UrbanSound8K has folds 1-10.")
  return [LabelledFiles(f"{csv_path} fold {k}", tuple(per_fold[k])) for k in folds]


def as_source(folder: PathLike) -> Path | LabelledFiles:
  """A source folder as configured (`dataset.soundscapes.sources`): a fold of the official
  UrbanSound8K download (`.../UrbanSound8K/audio/foldN`, labels from its CSV) or a Scaper-style
  folder (`<dir>/<label>/*`)."""
  p = Path(folder)
  fold = re.fullmatch(r"fold(\d+)", p.name)
  if fold and p.parent.name == "audio" and (p.parents[1] / "metadata" / "UrbanSound8K.csv"
                                            ).is_file():
    return urbansound8k_folds(p.parents[1], [int(fold.group(1))])[0]
  return p


def urbansed_mini_splits(data_root: PathLike
                         ) -> dict[str, tuple[list[Path | LabelledFiles], FileFilter | None]]:
  """Split name -> (sources, file filter) for `collect_sources`.

  The sources are UrbanSound8K folds 1-3, from the official download under `data_root`
  (`UrbanSound8K/`, labels from its CSV) or from Scaper-style folds (`urbansound8k/foldN/
  <label>/`); the official layout wins when both are there.
  train and validation share folds 1-2 but not a single Freesound recording (see
  `_validation_recordings`); unlabeled reuses the train sources (its soundscapes differ by seed);
  test is fold 3, whose recordings appear in no other fold.

  Raises:
    SoundscapeError: the data is not there; says what to download, where it is expected and
      that `dataset.root` is the config key to change.
  """
  root = Path(data_root)
  if (root / US8K_CSV).is_file():
    folds = urbansound8k_folds(root / US8K_CSV.parts[0], (1, 2, 3))
    if not (root / "backgrounds").is_dir():
      raise _missing_data_error(root, [root / "backgrounds"])
  else:
    us8k = root / "urbansound8k"
    folds = [us8k / f"fold{i}" for i in (1, 2, 3)]
    missing = [p for p in [*folds, root / "backgrounds"] if not p.is_dir()]
    if missing:
      raise _missing_data_error(root, missing)
  train_dirs = folds[:2]
  val_ids = _validation_recordings(train_dirs)
  train = (train_dirs, RecordingFilter(val_ids, validation=False))
  return {
      "train": train,
      "validation": (train_dirs, RecordingFilter(val_ids, validation=True)),
      "unlabeled": train,
      "test": ([folds[2]], None),
  }


def urbansed_mini_backgrounds(data_root: PathLike) -> list[Path]:
  """The background recordings of the urbansed_mini preset (`<root>/backgrounds/*`)."""
  root = Path(data_root)
  d = root / "backgrounds"
  if not d.is_dir():
    raise _missing_data_error(root, [d])
  files = audio_lib.find_audio_files(d)
  if not files:
    raise SoundscapeError(f"{d}: holds no audio file ({', '.join(audio_lib.AUDIO_EXTENSIONS)}). "
                          "Put ambient recordings there, or set dataset.root to the right folder.")
  return files
