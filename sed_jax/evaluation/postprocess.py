"""Frame probabilities → events: median filter, thresholds, decoding, DCASE rows, PSDS scores.

The chain every SED system reports through (DESED_task does the same):

  probs [N, T, C] ──median_filter──► smoothed ──binarize (prob > threshold)──► active [N, T, C]
        ──decode──► {filename: [Event(onset_s, offset_s, label), ...]} ──► DCASE strong TSV rows

The frame-to-time rule (stated once, used everywhere here): model output frame `j` covers the
half-open interval `[j * frame_hop_s, (j + 1) * frame_hop_s)`. A run of active frames `a..b-1`
therefore becomes the event `[a * hop, b * hop)`: onset = first active frame's start, offset =
the end of the last active frame. Times are rounded to the microsecond, the precision of a DCASE
TSV written by `annotations.write_strong_tsv`, so events read back from a written file compare
equal to the ones decoded here.

Everything is vectorised over files, frames and classes (numpy only): the only Python loop is the
one that builds the `Event` objects of the output, one iteration per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sed_jax.data.annotations import Event

# Decimals kept in event times: microseconds, what a DCASE TSV written by this project holds.
TIME_DECIMALS = 6


def _per_class(value, num_classes: int, name: str) -> np.ndarray:
  """Broadcasts a scalar or a per-class sequence to a float array of shape [C]."""
  arr = np.asarray(value, dtype=np.float64)
  if arr.ndim == 0:
    return np.full(num_classes, float(arr))
  if arr.shape != (num_classes,):
    raise ValueError(f"{name} must be one number or one per class ({num_classes}), got shape "
                     f"{arr.shape}.")
  return arr


def window_frames(median_window_s, frame_hop_s: float, num_classes: int) -> np.ndarray:
  """Median-filter windows in frames, one per class, from windows in seconds.

  `round(window_s / frame_hop_s)`, at least 1 (1 = no filtering). None means no filtering.
  """
  if median_window_s is None:
    return np.ones(num_classes, dtype=np.int64)
  seconds = _per_class(median_window_s, num_classes, "median_window_s")
  if np.any(~np.isfinite(seconds)) or np.any(seconds < 0):
    raise ValueError(f"median_window_s must be >= 0 seconds, got {median_window_s!r}.")
  return np.maximum(1, np.round(seconds / frame_hop_s)).astype(np.int64)


def _reflect(index: np.ndarray, length: np.ndarray) -> np.ndarray:
  """Maps any integer index into [0, length) by half-sample symmetric reflection.

  This is scipy.ndimage's mode='reflect' (d c b a | a b c d | d c b a), extended periodically so
  that windows longer than the sequence still work.
  """
  period = 2 * length
  m = np.mod(index, period)
  return np.where(m >= length, period - 1 - m, m)


def median_filter(probs: np.ndarray, window: int | Sequence[int],
                  lengths: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
  """Per-class median filter along time, the same as DESED's scipy.ndimage.median_filter.

  For each class `c` with window `w = window[c]`, output frame `t` is the median of input frames
  `t - w//2 .. t - w//2 + w - 1`, reflected at the sequence ends (scipy's mode='reflect'); for
  an even `w` it is the upper of the two middle values (scipy's rank-filter definition), so that
  results match the DCASE baseline bit for bit.

  Args:
    probs: [T, C] or [N, T, C] frame probabilities.
    window: frames, one for all classes or one per class (1 = unchanged).
    lengths: for [N, T, C] input padded at the end, the valid frames of each file; the filter
      reflects at each file's own end and padded frames are returned unchanged.

  Returns:
    An array of the shape and dtype of `probs`.
  """
  x = np.asarray(probs)
  squeeze = x.ndim == 2
  if squeeze:
    x = x[None]
  if x.ndim != 3:
    raise ValueError(f"probs must be [T, C] or [N, T, C], got shape {x.shape}.")
  n, t, c = x.shape
  w = np.asarray(window, dtype=np.int64)
  w = np.full(c, int(w)) if w.ndim == 0 else w
  if w.shape != (c,) or np.any(w < 1):
    raise ValueError(f"window must be >= 1 frames, one or one per class ({c}); got {window!r}.")
  lens = _lengths(lengths, n, t)
  out = x.copy()
  if t == 0:
    return out[0] if squeeze else out
  frames = np.arange(t)
  for size in np.unique(w):
    if size == 1:
      continue
    cls = np.flatnonzero(w == size)
    # Window positions [T, size]; reflected per file ([N, T, size]) to honour each length.
    pos = frames[:, None] - size // 2 + np.arange(size)[None, :]
    idx = _reflect(pos[None], np.maximum(lens, 1)[:, None, None])
    gathered = x[..., cls][np.arange(n)[:, None, None], idx]  # [N, T, size, len(cls)]
    med = np.partition(gathered, size // 2, axis=2)[:, :, size // 2]
    valid = frames[None, :] < lens[:, None]
    out[..., cls] = np.where(valid[..., None], med, x[..., cls])
  return out[0] if squeeze else out


def _lengths(lengths, n: int, t: int) -> np.ndarray:
  if lengths is None:
    return np.full(n, t, dtype=np.int64)
  lens = np.asarray(lengths, dtype=np.int64)
  if lens.shape != (n,) or np.any(lens < 0) or np.any(lens > t):
    raise ValueError(f"lengths must give 0..{t} valid frames for each of the {n} files, got "
                     f"{lengths!r}.")
  return lens


def binarize(probs: np.ndarray, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
  """Active frames: `prob > threshold` (strict, as DESED and sed_scores_eval decode).

  `threshold` is one number or one per class (last axis).
  """
  x = np.asarray(probs)
  return x > _per_class(threshold, x.shape[-1], "threshold")


def _runs(active: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
  """(file, class, start, end) of every run of active frames in active [N, T, C], vectorised."""
  n, t, c = active.shape
  act = active & (np.arange(t)[None, :, None] < lengths[:, None, None])
  pad = np.zeros((n, 1, c), dtype=bool)
  edges = np.diff(np.concatenate([pad, act, pad], axis=1).astype(np.int8), axis=1)
  # Transpose to [N, C, T+1] so that nonzero() lists runs file by file, class by class, in time
  # order; starts and ends then pair up one to one.
  f_on, c_on, starts = np.nonzero(np.transpose(edges, (0, 2, 1)) > 0)
  ends = np.nonzero(np.transpose(edges, (0, 2, 1)) < 0)[2]
  return f_on, c_on, starts, ends


def decode_events(active: np.ndarray, frame_hop_s: float, classes: Sequence[str],
                  length: int | None = None) -> list[Event]:
  """Events of one file from active frames [T, C] (see the module docstring for the time rule).

  Consecutive active frames of a class make one event; events are sorted (onset, offset, label).
  `length` limits decoding to the first `length` frames (padding after it is ignored).
  """
  act = np.asarray(active, dtype=bool)
  if act.ndim != 2 or act.shape[1] != len(classes):
    raise ValueError(f"active must be [T, {len(classes)}], got shape {act.shape}.")
  lens = None if length is None else [length]
  return batch_decode_events(act[None], ["_"], frame_hop_s, classes, lens)["_"]


def batch_decode_events(active: np.ndarray, filenames: Sequence[str], frame_hop_s: float,
                        classes: Sequence[str],
                        lengths: Sequence[int] | np.ndarray | None = None
                        ) -> dict[str, list[Event]]:
  """`decode_events` for a batch: active [N, T, C] → {filename: sorted events}.

  Every filename gets an entry, [] when nothing is active, so files without detections are
  written to the TSV as such.
  """
  act = np.asarray(active, dtype=bool)
  if act.ndim != 3 or act.shape[2] != len(classes) or act.shape[0] != len(filenames):
    raise ValueError(f"active must be [N={len(filenames)}, T, C={len(classes)}], got shape "
                     f"{act.shape}.")
  if not frame_hop_s > 0:
    raise ValueError(f"frame_hop_s must be > 0, got {frame_hop_s!r}.")
  lens = _lengths(lengths, act.shape[0], act.shape[1])
  f_idx, c_idx, starts, ends = _runs(act, lens)
  onsets = np.round(starts * frame_hop_s, TIME_DECIMALS)
  offsets = np.round(ends * frame_hop_s, TIME_DECIMALS)
  out: dict[str, list[Event]] = {name: [] for name in filenames}
  names = list(filenames)
  labels = list(classes)
  for f, on, off, ci in zip(f_idx.tolist(), onsets.tolist(), offsets.tolist(), c_idx.tolist()):
    out[names[f]].append(Event(on, off, labels[ci]))
  for events in out.values():
    events.sort()
  return out


def probs_to_events(probs: np.ndarray, frame_hop_s: float, classes: Sequence[str],
                    threshold: float | Sequence[float] = 0.5,
                    median_window_s: float | Sequence[float] | None = None) -> list[Event]:
  """One file's frame probabilities [T, C] → events: median filter, threshold, decode."""
  x = np.asarray(probs)
  if x.ndim != 2:
    raise ValueError(f"probs must be [T, C], got shape {x.shape}.")
  return batch_probs_to_events(x[None], ["_"], frame_hop_s, classes, threshold,
                               median_window_s)["_"]


def batch_probs_to_events(probs: np.ndarray, filenames: Sequence[str], frame_hop_s: float,
                          classes: Sequence[str], threshold: float | Sequence[float] = 0.5,
                          median_window_s: float | Sequence[float] | None = None,
                          lengths: Sequence[int] | np.ndarray | None = None
                          ) -> dict[str, list[Event]]:
  """Batched `probs_to_events`: probs [N, T, C] → {filename: sorted events}.

  Args:
    probs: frame probabilities, padded at the end when files differ in length.
    filenames: one per row of `probs`.
    frame_hop_s: seconds per output frame.
    classes: the label of each column.
    threshold: decision threshold, one or one per class; a frame is active if prob > threshold.
    median_window_s: median window in seconds, one or one per class (None: no filter); turned
      into `round(window / hop)` frames.
    lengths: valid frames per file (default: all T).
  """
  x = np.asarray(probs)
  if x.ndim != 3 or x.shape[2] != len(classes):
    raise ValueError(f"probs must be [N, T, C={len(classes)}], got shape {x.shape}.")
  w = window_frames(median_window_s, frame_hop_s, len(classes))
  if np.any(w > 1):
    x = median_filter(x, w, lengths)
  return batch_decode_events(binarize(x, threshold), filenames, frame_hop_s, classes, lengths)


def to_strong_rows(events_by_file: Mapping[str, Sequence[Event]]
                   ) -> list[tuple[str, float | None, float | None, str | None]]:
  """DCASE strong TSV rows (filename, onset, offset, event_label), file order kept.

  A file without events gets one row (filename, None, None, None), which
  `annotations.write_strong_tsv` writes as the empty row DESED uses; write files with that
  function (it is atomic), this is for callers that want rows (e.g. pandas).
  """
  rows: list[tuple[str, float | None, float | None, str | None]] = []
  for name, events in events_by_file.items():
    events = sorted(events)
    if not events:
      rows.append((name, None, None, None))
    rows.extend((name, e.onset, e.offset, e.label) for e in events)
  return rows


def score_series(probs: np.ndarray, filenames: Sequence[str], frame_hop_s: float,
                 lengths: Sequence[int] | np.ndarray | None = None,
                 median_window_s: float | Sequence[float] | None = None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Frame scores for threshold-independent metrics (PSDS): {filename: (timestamps, scores)}.

  `timestamps` has T+1 entries (frame j spans timestamps[j]..timestamps[j+1], the rule of the
  module docstring) and `scores` is [T, C], the format `metrics.psds` and sed_scores_eval take.
  An optional median filter is applied first, as DESED does before computing PSDS.
  """
  x = np.asarray(probs, dtype=np.float64)
  if x.ndim != 3 or x.shape[0] != len(filenames):
    raise ValueError(f"probs must be [N={len(filenames)}, T, C], got shape {x.shape}.")
  lens = _lengths(lengths, x.shape[0], x.shape[1])
  w = window_frames(median_window_s, frame_hop_s, x.shape[2])
  if np.any(w > 1):
    x = median_filter(x, w, lens)
  stamps = np.round(np.arange(x.shape[1] + 1) * frame_hop_s, TIME_DECIMALS)
  return {name: (stamps[:n + 1].copy(), x[i, :n].copy())
          for i, (name, n) in enumerate(zip(filenames, lens.tolist()))}
