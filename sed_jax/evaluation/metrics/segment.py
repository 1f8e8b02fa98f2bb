"""Segment-based metrics: sed_eval 0.2.1 `SegmentBasedMetrics`, vectorised (to 1e-6)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from sed_jax.evaluation.metrics.common import EventArrays
from sed_jax.evaluation.metrics.common import EventsByFile
from sed_jax.evaluation.metrics.common import class_indices
from sed_jax.evaluation.metrics.common import class_wise_rows
from sed_jax.evaluation.metrics.common import evaluated_files
from sed_jax.evaluation.metrics.common import flatten_events
from sed_jax.evaluation.metrics.common import macro_average
from sed_jax.evaluation.metrics.common import overall_rows


# ---------------------------------------------------------------------------------------------
# Segment-based metrics.


def segment_based(reference: EventsByFile, estimated: EventsByFile, classes: Sequence[str],
                  durations: Mapping[str, float] | None = None,
                  segment_s: float = 1.0) -> dict:
  """Segment-based P/R/F1 (micro, macro) and error rate, equal to sed_eval's SegmentBasedMetrics.

  Each file is cut into `ceil(duration / segment_s)` segments; a class is active in a segment
  when an event overlaps it: an event covers segments `floor(onset / segment_s)` up to
  `ceil(offset / segment_s) - 1` (so a zero-length event inside a segment marks it, one on a
  boundary marks nothing), cut at the file's end. Per segment, with Nref/Nsys the active
  reference/estimated classes and Ntp those in both: substitutions min(Nref, Nsys) - Ntp,
  deletions max(0, Nref - Nsys), insertions max(0, Nsys - Nref) (Mesaros et al. 2016); the
  totals over all segments of all files give the micro scores and ER, the per-class segment
  counts the class-wise ones. See the module docstring for empty counts and averaging.

  Args:
    reference: {filename: events}; its keys are the evaluated files.
    estimated: {filename: events}; keys must be reference files.
    classes: the class labels; every event label must be one of them.
    durations: seconds per reference file. Without it a file lasts until its last reference or
      estimated offset (sed_eval's rule); a file with neither then has no segment.
    segment_s: segment length in seconds.

  Returns:
    A flat JSON-serialisable dict: f1_micro, precision_micro, recall_micro, er,
    substitution_rate, deletion_rate, insertion_rate, f1_macro, precision_macro, recall_macro,
    er_macro, n_macro_classes, counts (n_ref, n_sys, n_tp, n_substitutions, n_deletions,
    n_insertions, in class-segments), n_files, n_segments, evaluated_seconds, segment_s and
    class_wise {class: {status, n_ref, n_sys, n_tp, n_fp, n_fn, precision, recall, f1, er,
    deletion_rate, insertion_rate}}.
  """
  if not (isinstance(segment_s, (int, float)) and math.isfinite(segment_s) and segment_s > 0):
    raise ValueError(f"segment_s must be a number of seconds > 0, got {segment_s!r}.")
  segment_s = float(segment_s)
  class_index = class_indices(classes)
  files = evaluated_files(reference, estimated)
  ref = flatten_events(reference, files, class_index, "reference")
  est = flatten_events(estimated, files, class_index, "estimated")
  num_files, num_classes = len(files), len(classes)

  if durations is None:
    length = np.zeros(num_files)
    np.maximum.at(length, ref.file, ref.offset)
    np.maximum.at(length, est.file, est.offset)
  else:
    missing = [f for f in files if f not in durations]
    if missing:
      raise ValueError(f"durations lacks {len(missing)} evaluated file(s), e.g. {missing[0]!r}.")
    length = np.asarray([float(durations[f]) for f in files], dtype=np.float64)
    if np.any(~np.isfinite(length) | (length < 0)):
      raise ValueError("durations must be finite numbers of seconds >= 0.")
  # The same float expression as sed_eval (x * 1 / resolution), so boundaries agree exactly.
  num_segments = np.ceil(length * 1 / segment_s).astype(np.int64)
  first = np.concatenate([[0], np.cumsum(num_segments)])
  total = int(first[-1])

  def roll(ev: EventArrays) -> np.ndarray:
    """[total segments, C] activity of all files, from +1/-1 marks and a cumulative sum."""
    start = np.floor(ev.onset * 1 / segment_s).astype(np.int64)
    end = np.minimum(np.ceil(ev.offset * 1 / segment_s).astype(np.int64),
                     num_segments[ev.file])
    keep = start < end
    base = first[ev.file[keep]]
    cls = ev.cls[keep]
    marks = np.bincount(np.concatenate([(base + start[keep]) * num_classes + cls,
                                        (base + end[keep]) * num_classes + cls]),
                        weights=np.repeat([1.0, -1.0], int(keep.sum())),
                        minlength=(total + 1) * num_classes)
    return np.cumsum(marks.reshape(total + 1, num_classes)[:total], axis=0) > 0.5

  ref_roll, est_roll = roll(ref), roll(est)
  both = ref_roll & est_roll
  ref_count, est_count = ref_roll.sum(1), est_roll.sum(1)
  tp_count = both.sum(1)
  out = overall_rows(int(ref_count.sum()), int(est_count.sum()), int(tp_count.sum()),
                     int((np.minimum(ref_count, est_count) - tp_count).sum()),
                     int(np.maximum(0, ref_count - est_count).sum()),
                     int(np.maximum(0, est_count - ref_count).sum()))
  class_wise = class_wise_rows(classes, ref_roll.sum(0), est_roll.sum(0), both.sum(0))
  out.update(macro_average(class_wise))
  out.update(n_files=num_files, n_segments=total, evaluated_seconds=float(length.sum()),
             segment_s=segment_s, class_wise=class_wise)
  return out
