"""Frame scores on disk: what external teachers bring in and what `export_scores` writes out.

Two formats, either per split (docs/distillation.md, "Teachers from anywhere"):

- **sed_scores_eval TSV**, one file per clip: `<folder>/<split>/<audio id>.tsv` (the audio id
  without its audio extension: `train_000001.tsv` for `train_000001.wav`). A header `onset`,
  `offset`, one column per class (any order), then one row per frame holding probabilities;
  rows tile the clip (the first onset 0, each onset the previous offset, within `GRID_TOL`).
  `sed_scores_eval.base_modules.io.read_sed_scores` reads these files, and `tsv_text` writes
  them. Optional clip-level probabilities: `<folder>/clip_scores/<split>.tsv`, columns
  `audio_id` then one per class.
- **Compact `.npz`**, one file per split: `<folder>/<split>.npz` with `audio_id` [N] (str),
  `classes` [C] (str), `hop_s` (the frame length in seconds, frames start at 0), `lengths` [N]
  (frames per clip) and `frame_probs` or `frame_logits` [sum(lengths), C], the clips one after
  another in `audio_id` order; optionally `clip_probs` or `clip_logits` [N, C]. Logits make
  the round trip exact at any confidence (a float32 probability is 1.0 beyond a logit of 17).

Every malformed file is refused with a `ScoresError` naming the file (and line or key) and the
fix, before anything is cached: a missing file, a class missing, extra or misspelt, a score that
is not a finite probability, rows that do not tile the clip, scores that end before the clip.

Scores on another time grid are put on the student's output frames by `resample`. Without
clip scores, the cache pools the frames by linear softmax (`kd/teacher_cache.external_logits`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed_jax.data import audio as audio_lib

# Frame boundaries closer than this (s) are the same boundary: TSVs round times (ours to the
# microsecond, many tools to the millisecond).
GRID_TOL = 1e-3
CLIP_FOLDER = "clip_scores"


class ScoresError(ValueError):
  """A malformed scores file; the message names the file (and line or key) and what to do."""


def _error(path, line: int | None, problem: str, fix: str) -> ScoresError:
  where = os.fspath(path) if line is None else f"{os.fspath(path)}:{line}"
  return ScoresError(f"{where}: {problem}. {fix}")


def file_stem(audio_id: str) -> str:
  """The file name (without .tsv) of a clip's scores: its audio id without an audio extension."""
  stem, ext = os.path.splitext(audio_id)
  return stem if ext.lower() in audio_lib.AUDIO_EXTENSIONS else audio_id


@dataclasses.dataclass(frozen=True)
class ClipScores:
  """One clip's scores as read. `kind` says whether `values` and `clip` hold 'probs' or
  'logits'; `clip` is None when the teacher gave no clip-level scores."""
  onsets: np.ndarray    # [S] seconds
  offsets: np.ndarray   # [S]
  values: np.ndarray    # [S, C] float64, columns in the dataset's class order
  kind: str
  clip: np.ndarray | None
  source: str           # the file (and key), for messages


# ---------------------------------------------------------------------------------------------
# Writing.


def _digits(probs: np.ndarray) -> int:
  """Significant digits that give `probs` back exactly: 9 for float32, 17 for float64."""
  return 9 if probs.dtype == np.float32 else 17


def tsv_text(probs: np.ndarray, classes: Sequence[str], hop: float) -> str:
  """One clip's frame probabilities [T, C] in sed_scores_eval's format: onset, offset (6
  decimals), one column per class with all the digits of the probabilities' dtype, so what is
  read back is the very value written."""
  lines = ["onset\toffset\t" + "\t".join(classes)]
  for j, row in enumerate(probs):
    lines.append(f"{j * hop:.6f}\t{(j + 1) * hop:.6f}\t" +
                 "\t".join(f"{p:.{_digits(probs)}g}" for p in row))
  return "\n".join(lines) + "\n"


def clip_tsv_text(audio_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> str:
  """Clip-level probabilities [N, C] of a split: `audio_id`, then one column per class."""
  lines = ["audio_id\t" + "\t".join(classes)]
  lines += [f"{file_stem(a)}\t" + "\t".join(f"{p:.{_digits(probs)}g}" for p in row)
            for a, row in zip(audio_ids, probs)]
  return "\n".join(lines) + "\n"


class FolderWriter:
  """Writes a teacher folder from a model's logits, in either format, all or nothing.

      with FolderWriter(out, classes, frame_seconds, "tsv") as writer:
        writer.split("train", audio_ids, frame_logits, clip_logits)  # per split
        writer.info = {...}  # source.json: where the scores come from

  Everything goes to a hidden sibling of `out`, moved onto `out` when the block ends without
  error (an existing `out` only with `overwrite`); an error or a kill leaves `out` as it was.
  TSVs hold float64 probabilities of the float32 logits (17 digits: the logits come back
  exactly below |logit| ≈ 16, where float64 still resolves 1 − p); the .npz the logits.
  """

  def __init__(self, out: os.PathLike | str, classes: Sequence[str], frame_seconds: float,
               fmt: str = "tsv", overwrite: bool = False):
    if fmt not in ("tsv", "npz"):
      raise ValueError(f"format {fmt!r}: use tsv or npz.")
    self.out, self.classes, self.hop, self.fmt = Path(out), list(classes), frame_seconds, fmt
    if self.out.exists() and not overwrite:
      raise FileExistsError(f"{self.out} exists; pass --overwrite to replace it.")
    self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
    self.info: dict = {}

  def __enter__(self) -> FolderWriter:
    # A killed writer's leftovers (one writer per folder).
    for leftover in self.out.parent.glob(f".{self.out.name}.partial-*"):
      shutil.rmtree(leftover, ignore_errors=True)
    self.tmp.mkdir(parents=True)
    return self

  def split(self, name: str, audio_ids: Sequence[str], frame_logits: Sequence[np.ndarray],
            clip_logits: np.ndarray) -> None:
    """One split: each clip's frame logits [T_i, C] (its own frames only) and clip logits
    [N, C], in `audio_ids` order."""
    stems = [file_stem(a) for a in audio_ids]
    if self.fmt == "npz":
      with open(self.tmp / f"{name}.npz", "wb") as f:
        np.savez(f, audio_id=np.asarray(stems), classes=np.asarray(self.classes),
                 hop_s=np.float64(self.hop),
                 lengths=np.asarray([len(x) for x in frame_logits], np.int64),
                 frame_logits=np.concatenate(frame_logits).astype(np.float32),
                 clip_logits=np.asarray(clip_logits, np.float32))
      return
    # Plain writes: the whole folder is already written aside and moved into place at the end.
    (self.tmp / name).mkdir()
    for stem, logits in zip(stems, frame_logits):
      (self.tmp / name / f"{stem}.tsv").write_text(
          tsv_text(logits_to_probs(logits), self.classes, self.hop))
    (self.tmp / CLIP_FOLDER).mkdir(exist_ok=True)
    (self.tmp / CLIP_FOLDER / f"{name}.tsv").write_text(
        clip_tsv_text(stems, logits_to_probs(clip_logits), self.classes))

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is not None:
      shutil.rmtree(self.tmp, ignore_errors=True)
      return
    with open(self.tmp / "source.json", "w") as f:
      json.dump(dict(self.info, classes=self.classes, frame_seconds=self.hop, format=self.fmt),
                f, indent=2)
    old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
    if self.out.exists():
      self.out.rename(old)
    self.tmp.rename(self.out)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading and checking.


def _columns(path, header: list[str], first: Sequence[str], classes: Sequence[str],
             line: int | None = 1) -> list[int]:
  """Indices of `classes` in `header` (after the `first` columns), or an error naming the
  classes that are missing, extra or misspelt (at `line`, the header's)."""
  if header[:len(first)] != list(first):
    raise _error(path, line, f"the header starts with {header[:len(first)]}, not "
                 f"{list(first)}", f"The first columns are {', '.join(first)}, then one per "
                 "class.")
  names = header[len(first):]
  missing = [c for c in classes if c not in names]
  extra = [c for c in names if c not in classes]
  duplicated = sorted({c for c in names if names.count(c) > 1})
  if missing or extra or duplicated:
    parts = []
    for c in extra:
      close = difflib.get_close_matches(c, missing, n=1)
      parts.append(f"{c!r} is not a class of the dataset" +
                   (f" (misspelt {close[0]!r}?)" if close else ""))
    parts += [f"class {c!r} is missing" for c in missing]
    parts += [f"class {c!r} appears twice" for c in duplicated]
    raise _error(path, line, "; ".join(parts),
                 f"Give one column per class of the dataset: {', '.join(classes)}.")
  return [names.index(c) + len(first) for c in classes]


def _number_rows(path, lines: list[str], columns: int, first_line: int,
                 key_columns: int = 0) -> tuple[list[str], np.ndarray]:
  """Rows of tab-separated numbers [R, columns] (the first `key_columns` kept as text)."""
  keys, rows = [], []
  for i, line in enumerate(lines):
    cells = line.split("\t")
    if len(cells) != columns:
      raise _error(path, first_line + i, f"{len(cells)} columns where the header has {columns}",
                   "Separate columns with tabs, one value per column.")
    keys.append("\t".join(cells[:key_columns]))
    try:
      rows.append([float(c) for c in cells[key_columns:]])
    except ValueError:
      bad = next(c for c in cells[key_columns:] if not _is_float(c))
      raise _error(path, first_line + i, f"{bad!r} is not a number",
                   "Every score is a probability in [0, 1].") from None
  return keys, np.asarray(rows, np.float64).reshape(len(rows), columns - key_columns)


def _is_float(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def _check_probs(path, values: np.ndarray, line_of_row, header: Sequence[str]) -> None:
  bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
  if bad.any():
    r, c = map(int, np.argwhere(bad)[0])
    raise _error(path, line_of_row(r), f"{header[c]} = {float(values[r, c])!r} is not a "
                 "probability in [0, 1]", "Scores are probabilities (after the sigmoid), "
                 "finite and in [0, 1]; the .npz format also takes frame_logits.")


def _check_tiling(path, onsets: np.ndarray, offsets: np.ndarray, line_of_row) -> None:
  if not len(onsets):
    raise _error(path, None, "no score rows", "Write one row per frame after the header.")
  fix = ("Rows tile the clip: the first onset is 0, each onset equals the previous row's "
         "offset and each offset is after its onset.")
  if abs(onsets[0]) > GRID_TOL:
    raise _error(path, line_of_row(0), f"the first onset is {onsets[0]:g} s, not 0", fix)
  shorter = np.flatnonzero(offsets <= onsets)
  if len(shorter):
    r = int(shorter[0])
    raise _error(path, line_of_row(r), f"offset {offsets[r]:g} is not after onset "
                 f"{onsets[r]:g}", fix)
  gaps = np.flatnonzero(np.abs(onsets[1:] - offsets[:-1]) > GRID_TOL)
  if len(gaps):
    r = int(gaps[0]) + 1
    raise _error(path, line_of_row(r), f"onset {onsets[r]:g} does not continue the previous "
                 f"row's offset {offsets[r - 1]:g}", fix)


def read_tsv(path: os.PathLike | str, classes: Sequence[str]) -> ClipScores:
  """One clip's sed_scores_eval TSV, checked (header, numbers, probabilities, tiling)."""
  path = Path(path)
  lines = path.read_text().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise _error(path, None, "the file is empty", "Write a header (onset, offset, one column "
                 "per class), then one row per frame.")
  header = lines[0].split("\t")
  idx = _columns(path, header, ("onset", "offset"), classes)
  _, table = _number_rows(path, lines[1:], len(header), first_line=2)
  line_of_row = lambda r: r + 2
  _check_probs(path, table[:, 2:], line_of_row, header[2:])
  _check_tiling(path, table[:, 0], table[:, 1], line_of_row)
  return ClipScores(table[:, 0], table[:, 1], table[:, idx], "probs", None, str(path))


def read_clip_tsv(path: os.PathLike | str, classes: Sequence[str]) -> dict[str, np.ndarray]:
  """A split's clip-level probabilities: file stem → [C] in the dataset's class order."""
  path = Path(path)
  lines = [l for l in path.read_text().splitlines() if l.strip()]
  if not lines:
    raise _error(path, None, "the file is empty", "Write a header (audio_id, one column per "
                 "class), then one row per clip.")
  header = lines[0].split("\t")
  idx = _columns(path, header, ("audio_id",), classes)
  keys, table = _number_rows(path, lines[1:], len(header), first_line=2, key_columns=1)
  _check_probs(path, table, lambda r: r + 2, header[1:])
  return {k: table[i, [j - 1 for j in idx]] for i, k in enumerate(keys)}


def read_npz(path: os.PathLike | str, classes: Sequence[str]) -> dict[str, ClipScores]:
  """A split's compact scores: audio id (file stem) → ClipScores, checked like the TSVs."""
  path = Path(path)
  try:
    data = dict(np.load(path, allow_pickle=False))
  except Exception as e:  # A truncated or foreign file: zipfile, pickle or value errors.
    raise _error(path, None, f"not a readable .npz ({type(e).__name__}: {e})",
                 "Write it with numpy.savez (module docstring of sed_jax/data/frame_scores.py)."
                 ) from e
  fix = ("It holds audio_id, classes, hop_s, lengths and frame_probs or frame_logits "
         "(optionally clip_probs or clip_logits).")
  frame_keys = [k for k in ("frame_probs", "frame_logits") if k in data]
  clip_keys = [k for k in ("clip_probs", "clip_logits") if k in data]
  missing = [k for k in ("audio_id", "classes", "hop_s", "lengths") if k not in data]
  if missing or len(frame_keys) != 1 or len(clip_keys) > 1:
    raise _error(path, None, f"keys {sorted(data)}" + (f": {', '.join(missing)} missing"
                                                       if missing else ""), fix)
  names = [str(c) for c in data["classes"]]
  idx = [i - 2 for i in _columns(f"{path} [classes]", ["onset", "offset"] + names,
                                 ("onset", "offset"), classes, line=None)]
  ids = [file_stem(str(a)) for a in data["audio_id"]]
  lengths = np.asarray(data["lengths"], np.int64)
  hop = float(data["hop_s"])
  values = np.asarray(data[frame_keys[0]], np.float64)
  n = len(ids)
  if (lengths.shape != (n,) or (lengths < 1).any() or not hop > 0 or
      values.shape != (int(lengths.sum()), len(names))):
    raise _error(path, None, f"{n} audio ids, lengths of shape {lengths.shape} summing to "
                 f"{int(lengths.sum())}, hop_s {hop}, {frame_keys[0]} of shape {values.shape}",
                 f"lengths has one entry >= 1 per audio id, hop_s is > 0 and {frame_keys[0]} "
                 "is [sum(lengths), number of classes].")
  if len(set(ids)) != n:
    raise _error(path, None, f"audio id {next(a for a in ids if ids.count(a) > 1)!r} appears "
                 "twice", "Give each clip once.")
  kind = frame_keys[0].split("_")[1]
  clip = None
  if clip_keys:
    clip = np.asarray(data[clip_keys[0]], np.float64)
    if clip.shape != (n, len(names)):
      raise _error(path, None, f"{clip_keys[0]} has shape {clip.shape}, not {(n, len(names))}",
                   fix)
  for key, arr in ((frame_keys[0], values), *((clip_keys[0], clip) for _ in clip_keys)):
    where = f"{path} [{key}]"
    if key.endswith("probs"):
      _check_probs(where, arr, lambda r: None, names)
    elif not np.isfinite(arr).all():
      raise _error(where, None, "holds NaN or inf", "Logits are finite.")
  if clip_keys and not clip_keys[0].endswith(kind):  # One kind per clip: the frames'.
    clip = probs_to_logits(clip) if kind == "logits" else logits_to_probs(clip)
  starts = np.concatenate([[0], np.cumsum(lengths)])
  out = {}
  for i, a in enumerate(ids):
    t = np.arange(lengths[i], dtype=np.float64)
    out[a] = ClipScores(t * hop, (t + 1) * hop, values[starts[i]:starts[i + 1]][:, idx], kind,
                        None if clip is None else clip[i, idx], f"{path} [{a}]")
  return out


class SplitScores:
  """One external teacher's scores for one split, found in either format and checked.

  Construction checks that every clip of the split has its scores (naming the missing files);
  `clip(audio_id, duration)` reads (or looks up) one clip's scores and checks they cover it.
  """

  def __init__(self, folder: os.PathLike | str, split: str, classes: Sequence[str],
               audio_ids: Sequence[str]):
    self.folder, self.split, self.classes = Path(folder), split, list(classes)
    tsv_dir, npz = self.folder / split, self.folder / f"{split}.npz"
    if tsv_dir.is_dir() and npz.exists():
      raise _error(self.folder, None, f"split {split!r} has both {split}/ and {split}.npz",
                   "Keep one of them.")
    self._npz = read_npz(npz, classes) if npz.exists() else None
    stems = [file_stem(a) for a in audio_ids]
    if self._npz is not None:
      missing = [s for s in stems if s not in self._npz]
      where, fix = npz, f"Every clip of split {split!r} has its scores in {npz.name}."
    elif tsv_dir.is_dir():
      present = {p.stem for p in tsv_dir.glob("*.tsv")}
      missing = [f"{s}.tsv" for s in stems if s not in present]
      where, fix = tsv_dir, (f"Every clip of split {split!r} has a file <audio id>.tsv "
                             "(the audio id without its extension).")
    else:
      raise _error(self.folder, None, f"no scores for split {split!r}: neither {split}/ nor "
                   f"{split}.npz", "Give one folder of TSVs or one .npz per split of the "
                   "dataset (sed_jax.export_scores writes them).")
    if missing:
      raise _error(where, None, f"no scores for {len(missing)} of {len(stems)} clips of split "
                   f"{split!r} (first: {', '.join(missing[:3])})", fix)
    self._clip = None
    clip_file = self.folder / CLIP_FOLDER / f"{split}.tsv"
    if clip_file.exists():
      self._clip = read_clip_tsv(clip_file, classes)
      lacking = [s for s in stems if s not in self._clip]
      if lacking:
        raise _error(clip_file, None, f"no row for {len(lacking)} of {len(stems)} clips "
                     f"(first: {', '.join(lacking[:3])})", "Give one row per clip, or remove "
                     "the file to pool clip scores from the frames.")

  def clip(self, audio_id: str, duration: float, frame_seconds: float) -> ClipScores:
    """A clip's scores, checked to cover its `duration` (to half a student frame)."""
    stem = file_stem(audio_id)
    if self._npz is not None:
      scores = self._npz[stem]
    else:
      scores = read_tsv(self.folder / self.split / f"{stem}.tsv", self.classes)
      if self._clip is not None:
        scores = dataclasses.replace(scores, clip=self._clip[stem])
    end = float(scores.offsets[-1])
    if end < duration - frame_seconds / 2:
      line = len(scores.onsets) + 1 if self._npz is None else None
      raise _error(scores.source, line, f"the scores end at {end:g} s, the clip lasts "
                   f"{duration:g} s: they cover only part of it",
                   "Score the whole clip (pad the model's input, not its output).")
    return scores


# ---------------------------------------------------------------------------------------------
# Onto the student's frames.


def probs_to_logits(p: np.ndarray) -> np.ndarray:
  """logit(p) in float64, ±inf at 0 and 1 (the caller saturates)."""
  p = np.asarray(p, np.float64)
  with np.errstate(divide="ignore"):
    return np.log(p) - np.log1p(-p)


def logits_to_probs(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return np.exp(-np.logaddexp(0.0, -x))


def resample(onsets: np.ndarray, offsets: np.ndarray, values: np.ndarray, kind: str,
             frame_seconds: float, n_frames: int) -> np.ndarray:
  """Scores on any frame grid → logits on the student's `n_frames` output frames
  [j·frame_seconds, (j+1)·frame_seconds), float64 [n_frames, C].

  The rule (docs/distillation.md): the scores are a step function of time, and each student
  frame takes its probability averaged over the frame (each source frame weighted by how long
  it overlaps the student frame). A coarser source is thus held, a finer one averaged, and one
  whose frames match the student's (within `GRID_TOL`) passes through untouched, logits
  included, so our own exported scores come back bit for bit. Student frames past the last
  source frame (the tail of a clip shorter than the student's frames) repeat it.
  """
  values = np.asarray(values, np.float64)
  j = np.arange(n_frames + 1, dtype=np.float64) * frame_seconds
  starts, ends = j[:-1], j[1:]
  if (len(onsets) >= n_frames and np.abs(onsets[:n_frames] - starts).max() <= GRID_TOL and
      np.abs(offsets[:n_frames] - ends).max() <= GRID_TOL):
    v = values[:n_frames]
    return v if kind == "logits" else probs_to_logits(v)
  probs = values if kind == "probs" else logits_to_probs(values)
  end = float(offsets[-1])
  ends = np.minimum(ends, end)
  # Source frames overlapping each student frame: rows first..last (a band, not a dense matrix).
  first = np.searchsorted(offsets, starts, side="right")
  last = np.searchsorted(onsets, ends, side="left")
  width = max(int((last - first).max()), 1)
  rows = np.minimum(first[:, None] + np.arange(width)[None], len(onsets) - 1)   # [n, W]
  overlap = np.clip(np.minimum(ends[:, None], offsets[rows]) -
                    np.maximum(starts[:, None], onsets[rows]), 0.0, None)
  overlap[np.arange(width)[None] >= (last - first)[:, None]] = 0.0
  total = overlap.sum(1, keepdims=True)
  out = np.einsum("nw,nwc->nc", overlap, probs[rows]) / np.where(total > 0, total, 1.0)
  out[total[:, 0] <= 0] = probs[-1]  # Past the last source frame: hold it.
  return probs_to_logits(out)
