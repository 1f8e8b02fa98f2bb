"""PSDS from frame scores: sed_scores_eval 0.0.4 `intersection_based.psds` (to 1e-3, in
practice ~1e-12), without choosing thresholds."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence

import numpy as np

from sed_jax.evaluation.metrics.common import EventsByFile
from sed_jax.evaluation.metrics.common import ScoresByFile
from sed_jax.evaluation.metrics.common import class_indices
from sed_jax.evaluation.metrics.common import flatten_events

# sed_scores_eval compares intersection times rounded to this many decimals (its default), so that
# an intersection exactly at a criterion does not fail on floating-point noise.
TIME_DECIMALS = 6
SECONDS_PER_HOUR = 3600.0
# Positions per chunk when finding PSDS detection runs (bounds the range-minimum tables to
# ~50 MB).
_PSDS_CHUNK = 400_000


# ---------------------------------------------------------------------------------------------
# PSDS (intersection-based, threshold-independent).


@dataclasses.dataclass(frozen=True)
class PsdsResult:
  """PSDS and the curves it is computed from.

  Attributes:
    psds: area under the PSD-ROC up to max_efpr, divided by max_efpr.
    class_psds: {class: the same area for that class's ROC alone}.
    efpr: effective false-positive rates (per hour) of the PSD-ROC, ascending, ending at max_efpr.
    etpr: effective true-positive rates at those points (mean - alpha_st * std over classes).
    class_rocs: {class: (tpr, efpr)} per-class ROC staircase corners.
  """
  psds: float
  class_psds: dict[str, float]
  efpr: np.ndarray
  etpr: np.ndarray
  class_rocs: dict[str, tuple[np.ndarray, np.ndarray]]


# The DCASE task 4 scenarios (keyword arguments of `psd_roc`).
PSDS1 = types.MappingProxyType(
    {"dtc": 0.7, "gtc": 0.7, "alpha_ct": 0.0, "alpha_st": 1.0, "max_efpr": 100.0})
PSDS2 = types.MappingProxyType(
    {"dtc": 0.1, "gtc": 0.1, "cttc": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0, "max_efpr": 100.0})


def psds1(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
          classes: Sequence[str]) -> float:
  """DCASE PSDS scenario 1: dtc = gtc = 0.7, no cross-trigger cost, alpha_st = 1, max_efpr 100."""
  return psds(scores, ground_truth, durations, classes, **PSDS1)


def psds2(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
          classes: Sequence[str]) -> float:
  """DCASE PSDS scenario 2: dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1, 100/h."""
  return psds(scores, ground_truth, durations, classes, **PSDS2)


def psds1_and_psds2(scores: ScoresByFile, ground_truth: EventsByFile,
                    durations: Mapping[str, float], classes: Sequence[str]) -> tuple[float, float]:
  """(PSDS1, PSDS2), equal to (`psds1(...)`, `psds2(...)`) for little more than the cost of one.

  Most of the work (detection runs, their intersections with the ground truth, the order of the
  thresholds) is the same for both scenarios; `psd_rocs` does it once.
  """
  first, second = psd_rocs(scores, ground_truth, durations, classes, [PSDS1, PSDS2])
  return first.psds, second.psds


def psds(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
         classes: Sequence[str], *, dtc: float, gtc: float, cttc: float | None = None,
         alpha_ct: float = 0.0, alpha_st: float = 0.0, max_efpr: float = 100.0) -> float:
  """Polyphonic Sound Detection Score (Bilen et al. 2020), as sed_scores_eval computes it.

  See `psd_roc` for the arguments; this returns only the score.
  """
  return psd_roc(scores, ground_truth, durations, classes, dtc=dtc, gtc=gtc, cttc=cttc,
                 alpha_ct=alpha_ct, alpha_st=alpha_st, max_efpr=max_efpr).psds


def psd_roc(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
            classes: Sequence[str], *, dtc: float, gtc: float, cttc: float | None = None,
            alpha_ct: float = 0.0, alpha_st: float = 0.0,
            max_efpr: float = 100.0) -> PsdsResult:
  """PSDS and its PSD-ROC from frame scores, for every decision threshold at once.

  The definition (Bilen et al. 2020) with sed_scores_eval's exact, threshold-free evaluation
  (Ebbers et al., ICASSP 2022): for a threshold θ a class's detections are the maximal runs of
  frames with score >= θ (a run of frames a..b-1 spans timestamps[a]..timestamps[b]). A detection
  is a false positive unless its intersection with the class's ground truth is >= dtc of its
  length; a ground-truth event is detected when its intersection with the non-false-positive
  detections is >= gtc of its length; with cttc, a false positive whose intersection with
  another class's ground truth is >= cttc of its length is a cross-trigger on that class.
  Intersections are compared rounded to microseconds, as sed_scores_eval does. For each class,
  TPR(θ) = detected / ground-truth events and eFPR(θ) = (FP + alpha_ct * mean over other
  classes of CT / their total ground-truth duration) per hour of audio; the class ROC keeps, for
  each eFPR, the best TPR reached at that eFPR or below, up to max_efpr. The PSD-ROC is the mean
  over classes of these staircases minus alpha_st times their standard deviation (clipped at
  0), and PSDS is its area up to max_efpr divided by max_efpr.

  How it is computed: as θ falls, each run of frames appears once, at the lowest score inside
  it, and disappears when it merges into a larger one, at the higher of its two neighbours'
  scores (where that larger run appears). These runs (at most one per frame) are found for all
  series at once with a range-minimum table; a run's intersection with a class's ground truth is
  the difference of that class's covered time at its two ends (one table per series with ground
  truth). Counts and intersections enter as changes at the score where a run appears or
  vanishes; scores are replaced by their rank within the class (one sort per class), so the
  changes of all series add up in dense arrays whose cumulative sums are every statistic at
  every threshold. A series with no ground truth of its class (and, with cttc, none of another
  class in its file) only needs its number of detections: +1 at each local maximum, -1 at each
  local minimum (sed_scores_eval's shortcut as well). To evaluate several settings on the same
  inputs (e.g. PSDS1 and PSDS2) use `psd_rocs`, which shares all this.

  Args:
    scores: {filename: (timestamps [T+1] strictly increasing, scores [T, C] finite)}, columns in
      the order of `classes` (`postprocess.score_series` makes these). Its keys are the
      evaluated files.
    ground_truth: {filename: events}; a scored file missing here has no events. Overlapping or
      touching events of one class are merged first (sed_scores_eval refuses them; their union
      is what a detector can find), so a class's event count is that of the merged events.
    durations: seconds per scored file (the eFPR divides by their sum).
    classes: the classes; each needs at least one ground-truth event (TPR is undefined
      otherwise; sed_scores_eval refuses it too).
    dtc, gtc, cttc: detection tolerance, ground-truth intersection and cross-trigger tolerance
      criteria (fractions); cttc is required exactly when alpha_ct != 0.
    alpha_ct, alpha_st: cross-trigger and class-instability weights.
    max_efpr: eFPR per hour up to which the area is taken.
  """
  setting = dict(dtc=dtc, gtc=gtc, cttc=cttc, alpha_ct=alpha_ct, alpha_st=alpha_st,
                 max_efpr=max_efpr)
  return psd_rocs(scores, ground_truth, durations, classes, [setting])[0]


def psd_rocs(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
             classes: Sequence[str],
             settings: Sequence[Mapping[str, float | None]]) -> list[PsdsResult]:
  """`psd_roc` for several settings of the same scores and ground truth, sharing the work.

  Checking and laying out the scores, merging the ground truth, ranking the scores, finding
  every detection run and intersecting it with the ground truth do not depend on the criteria,
  and they are most of the cost: they are done once, and each setting only applies its criteria
  and accumulates its statistics. Results are those of `psd_roc` with each setting.

  Args:
    scores, ground_truth, durations, classes: as for `psd_roc`.
    settings: one mapping of `psd_roc`'s keyword arguments per setting (dtc and gtc, optionally
      cttc, alpha_ct, alpha_st, max_efpr), e.g. `[PSDS1, PSDS2]`.
  """
  checked = [_psds_setting(**setting) for setting in settings]
  inputs = _psds_inputs(scores, ground_truth, durations, classes,
                        cross_triggers=any(s["cttc"] is not None for s in checked))
  return [_psd_roc(inputs, **setting) for setting in checked]


def _psds_setting(dtc: float, gtc: float, cttc: float | None = None, alpha_ct: float = 0.0,
                  alpha_st: float = 0.0, max_efpr: float = 100.0) -> dict:
  """One setting's criteria, checked; a missing or unknown name raises TypeError."""
  if (alpha_ct == 0) != (cttc is None):
    raise ValueError("cttc must be given exactly when alpha_ct != 0 "
                     f"(got cttc={cttc!r}, alpha_ct={alpha_ct!r}).")
  if not max_efpr > 0:
    raise ValueError(f"max_efpr must be > 0, got {max_efpr!r}.")
  return dict(dtc=dtc, gtc=gtc, cttc=cttc, alpha_ct=alpha_ct, alpha_st=alpha_st,
              max_efpr=max_efpr)


def _staircase_area(y: np.ndarray, x: np.ndarray) -> float:
  """Area under y held constant from each x to the next (x ascending; the last y is unused)."""
  return float(np.sum(y[:-1] * np.diff(x)))


def _roc_staircase(tp: np.ndarray, efpr: np.ndarray, n_ref: int,
                   max_efpr: float) -> tuple[np.ndarray, np.ndarray]:
  """The ROC's corners: for each eFPR the best TPR at or below it; both strictly increasing.

  The corners are the points no other point beats on both axes. TP counts are small integers,
  so no sort is needed: take the lowest eFPR reaching each count; a count is a corner when every
  higher count needs a higher eFPR.
  """
  lowest = np.full(int(tp.max()) + 1, np.inf)
  np.minimum.at(lowest, tp, efpr)
  higher = np.append(np.minimum.accumulate(lowest[::-1])[::-1][1:], np.inf)
  count = np.flatnonzero((lowest < higher) & (lowest <= max_efpr))
  return count / max(n_ref, 1), lowest[count]


def _segment_ranges(first: np.ndarray, count: np.ndarray) -> np.ndarray:
  """first[i], first[i] + 1, ..., first[i] + count[i] - 1 for every i, concatenated."""
  ends = np.cumsum(count)
  return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(first - (ends - count), count)


@dataclasses.dataclass(frozen=True)
class _GroundTruth:
  """Merged ground-truth events in series order: by class, then file, then onset."""
  file: np.ndarray
  cls: np.ndarray
  onset: np.ndarray
  offset: np.ndarray


def _merged_ground_truth(ground_truth: EventsByFile, files: Sequence[str],
                         class_index: dict[str, int]) -> _GroundTruth:
  """Ground truth of the scored files, connected same-class events merged, in series order.

  Events of one class that overlap or touch become their union; comparisons are exact (no float
  tricks), so touching events merge.
  """
  ev = flatten_events(ground_truth, files, class_index, "ground_truth")
  order = np.lexsort((ev.offset, ev.onset, ev.file, ev.cls))
  file, cls, onset, offset = ev.file[order], ev.cls[order], ev.onset[order], ev.offset[order]
  if not len(file):
    return _GroundTruth(file, cls, onset, offset)
  # An event starts a new merged one unless it begins at or before the latest offset of the
  # earlier events of its (class, file). That running maximum, as one cumulative maximum of
  # (group, offset rank) keys: the groups come in ascending order, so it never crosses them.
  group = cls * len(files) + file
  offsets, offset_rank = np.unique(offset, return_inverse=True)
  reach = np.maximum.accumulate(group * len(offsets) + offset_rank)
  before = np.concatenate([[-1], reach[:-1]])
  new = (before // len(offsets) != group) | (onset > offsets[before % len(offsets)])
  starts = np.flatnonzero(new)
  return _GroundTruth(file[starts], cls[starts], onset[starts],
                      np.maximum.reduceat(offset, starts))


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Every score series end to end, class by class then file by file, between -inf sentinels.

  Position 0 is a sentinel; series k = c * num_files + f (class c of file f) holds its frames at
  positions first[k] .. first[k] + frames[k] - 1 and its closing sentinel right after. `stamps`
  holds each frame's start time and, at a sentinel, the end time of the series before it, so a
  run of positions [a, b) spans stamps[a]..stamps[b]. `file_stamps` are all files' timestamps
  end to end, file f's from `stamp_first[f]`.
  """
  values: np.ndarray
  stamps: np.ndarray
  series: np.ndarray  # The series of each position (a sentinel: the one it closes; -1 at 0).
  first: np.ndarray
  frames: np.ndarray
  file_stamps: np.ndarray
  stamp_first: np.ndarray


def _score_layout(scores: ScoresByFile, files: Sequence[str], num_classes: int) -> _Layout:
  """Checks the scores and lays them out (one pass over the files, the rest vectorised)."""
  stamps_of, values_of = [], []
  for name in files:
    stamps, values = scores[name]
    stamps = np.asarray(stamps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != num_classes or values.shape[0] == 0:
      raise ValueError(f"scores of {name!r} must be [T >= 1, {num_classes}], got shape "
                       f"{values.shape}.")
    if stamps.shape != (values.shape[0] + 1,):
      raise ValueError(_stamps_error(name, values.shape[0]))
    stamps_of.append(stamps)
    values_of.append(values)
  frames = np.asarray([len(v) for v in values_of], dtype=np.int64)
  file_stamps = np.concatenate(stamps_of)
  stamp_first = np.concatenate([[0], np.cumsum(frames + 1)[:-1]])
  steps = np.diff(file_stamps)
  steps[stamp_first[1:] - 1] = 1.0  # From one file's last timestamp to the next one's first.
  bad = np.flatnonzero(~(steps > 0))
  if len(bad):
    f = int(np.searchsorted(stamp_first, bad[0], side="right")) - 1
    raise ValueError(_stamps_error(files[f], int(frames[f])))
  all_values = np.concatenate(values_of)
  bad = np.flatnonzero(~np.isfinite(all_values).all(axis=1))
  if len(bad):
    f = int(np.searchsorted(np.cumsum(frames), bad[0], side="right"))
    raise ValueError(f"scores of {files[f]!r} hold non-finite values.")

  num_files = len(files)
  slots = frames + 1  # A series' frames and its closing sentinel.
  block = int(slots.sum())  # Positions of one class.
  values = np.full((num_classes, block), -np.inf)
  values[:, np.arange(len(all_values)) + np.repeat(np.arange(num_files), frames)] = all_values.T
  return _Layout(
      values=np.concatenate([[-np.inf], values.ravel()]),
      stamps=np.concatenate([[0.0], np.tile(file_stamps, num_classes)]),
      series=np.concatenate([[-1], np.repeat(np.arange(num_classes * num_files),
                                             np.tile(slots, num_classes))]),
      first=1 + (np.arange(num_classes)[:, None] * block + stamp_first).ravel(),
      frames=np.tile(frames, num_classes), file_stamps=file_stamps, stamp_first=stamp_first)


def _stamps_error(name: str, num_frames: int) -> str:
  return (f"timestamps of {name!r} must be {num_frames + 1} strictly increasing times (frame j "
          "spans timestamps[j]..timestamps[j+1]).")


def _levels(layout: _Layout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Each frame's threshold level: the rank of its score among its class's distinct scores.

  Statistics change only at scores, so with ranks (descending) as indices the changes of all
  series add up in dense arrays and their cumulative sums run over falling thresholds: no sort per
  setting, one per class in all. Class c's levels are bounds[c] .. bounds[c+1] - 1; sentinels
  get -1.
  """
  level = np.full(len(layout.values), -1, dtype=np.int64)
  block = (len(layout.values) - 1) // num_classes
  bounds = [0]
  for c in range(num_classes):
    lo = 1 + c * block
    values = layout.values[lo:lo + block]
    order = np.argsort(values)
    ranked = values[order]
    dense = np.concatenate([[0], np.cumsum(ranked[1:] != ranked[:-1])])
    level[lo + order] = bounds[-1] + (dense[-1] - dense)
    bounds.append(bounds[-1] + int(dense[-1]) + 1)
  level[layout.first + layout.frames] = -1
  return level, np.asarray(bounds, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _Runs:
  """Every distinct detection run of the selected series over all thresholds, in layout order."""
  series: np.ndarray
  onset: np.ndarray         # seconds
  offset: np.ndarray
  length: np.ndarray
  start: np.ndarray         # first frame, within the series
  stop: np.ndarray          # one past the last frame
  level: np.ndarray         # where the run appears: the level of its lowest score
  parent_level: np.ndarray  # where it vanishes, merged into a larger run; -1: never


def _detection_runs(layout: _Layout, select: np.ndarray, level: np.ndarray) -> _Runs:
  """The runs of the selected series (select [series]), a chunk of series at a time."""
  where = np.flatnonzero(np.concatenate([[True], select[layout.series[1:]]]))
  values = layout.values[where]
  parts = []
  if select.any():
    depth = int(layout.frames[select].max())
    sentinels = np.flatnonzero(values == -np.inf)
    lo = 0
    while lo < len(values) - 1:
      hi = sentinels[np.searchsorted(sentinels, lo + _PSDS_CHUNK, side="right") - 1]
      if hi <= lo:  # One series longer than a chunk.
        hi = sentinels[np.searchsorted(sentinels, lo, side="right")]
      parts.append([where[lo + x] for x in _runs_of_values(values[lo:hi + 1], depth)])
      lo = int(hi)
  if not parts:
    parts = [[np.zeros(0, dtype=np.int64)] * 4]
  left, right, first, merged_into = (np.concatenate(x) for x in zip(*parts))
  series = layout.series[first]
  onset, offset = layout.stamps[left], layout.stamps[right]
  return _Runs(series=series, onset=onset, offset=offset, length=offset - onset,
               start=left - layout.first[series], stop=right - layout.first[series],
               level=level[first], parent_level=level[merged_into])


def _runs_of_values(s: np.ndarray, depth: int) -> tuple[np.ndarray, ...]:
  """Runs of series of at most `depth` frames laid out between -inf sentinels (s[0], s[-1]).

  For each frame, the run of scores >= its own around it: its bounds grow by halving steps over
  a range-minimum table (steps up to the longest series suffice, as runs never cross a
  sentinel). Frames of equal score in one run are one detection, kept at the first of them: the
  one whose leftward growth met no score equal to its own. A run vanishes when the threshold
  reaches the higher of its two neighbours' scores, merging into that neighbour's run (a
  sentinel: never). Returns each run's left and right bound, first frame and that neighbour, as
  positions in s.
  """
  pos = np.flatnonzero(s > -np.inf)
  v = s[pos]
  steps = max(depth.bit_length(), 1)  # 2**steps > depth.
  pad = 1 << steps  # -inf padding: no bound checks.
  mins = [np.concatenate([np.full(pad, -np.inf), s, np.full(pad, -np.inf)])]
  for j in range(1, steps):  # mins[j][i] = min(padded s[i : i + 2**j]).
    prev, half = mins[-1], 1 << (j - 1)
    mins.append(np.minimum(prev[:-half], prev[half:]))
  # Only frames whose neighbour on a side is >= their score grow on that side.
  left, right = pos + pad, pos + pad + 1
  tie = np.zeros(len(pos), dtype=bool)
  grow = np.flatnonzero(s[pos - 1] >= v)
  at, w = left[grow], v[grow]
  reached = np.zeros(len(grow), dtype=bool)
  for j in range(steps - 1, -1, -1):
    cand = at - (1 << j)
    window = mins[j][cand]
    at = np.where(window >= w, cand, at)
    reached |= window == w  # An equal score on the left: the same run, kept there.
  left[grow], tie[grow] = at, reached
  grow = np.flatnonzero(s[pos + 1] >= v)
  at, w = right[grow], v[grow]
  for j in range(steps - 1, -1, -1):
    at = np.where(mins[j][at] >= w, at + (1 << j), at)
  right[grow] = at
  first = ~tie
  left, right = left[first] - pad, right[first] - pad
  return left, right, pos[first], np.where(s[left - 1] >= s[right], left - 1, right)


def _coverage(layout: _Layout, gt: _GroundTruth, gt_row: np.ndarray,
              rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per series with ground truth (`rows`): the time its ground truth covers up to each stamp.

  Merged events of a class are disjoint, so a run's intersection with them (the sum over events,
  as sed_scores_eval takes it) is the difference of two entries, however many events there are.
  Returns the tables end to end and where each row's starts.
  """
  row_len = layout.frames[rows] + 1
  row_first = np.concatenate([[0], np.cumsum(row_len)[:-1]])
  count = row_len[gt_row]
  event = np.repeat(np.arange(len(gt_row)), count)
  at = _segment_ranges(row_first[gt_row], count)
  k = at - row_first[gt_row][event]
  t = layout.file_stamps[layout.stamp_first[gt.file[event]] + k]
  covered = np.minimum(np.maximum(t - gt.onset[event], 0.0), (gt.offset - gt.onset)[event])
  return np.bincount(at, weights=covered, minlength=int(row_len.sum())), row_first


@dataclasses.dataclass(frozen=True)
class _PsdsInputs:
  """What the PSD-ROC of any setting needs from the scores and ground truth (see `psd_rocs`)."""
  classes: list[str]
  total_duration: float
  n_ref: np.ndarray
  t_ref: np.ndarray
  gt: _GroundTruth
  gt_series: np.ndarray     # Each event's series (ascending).
  gt_top: np.ndarray        # The level of its series' highest score.
  level_bounds: np.ndarray  # Class c's levels: level_bounds[c] .. level_bounds[c+1] - 1.
  runs: _Runs
  own: np.ndarray           # The runs whose series has ground truth of its class.
  own_inter: np.ndarray     # Their intersections with it, rounded.
  cross: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (run, other class, rounded > 0
  #                           intersection with that class's ground truth) with cross-triggers.
  counted_fp: np.ndarray    # Per level: FP changes of the series without runs,
  other_fp: np.ndarray      # and of the other runs, all false positives (nothing to hit).
  other_shortest: float     # The shortest of those other runs (inf: none).


def _psds_inputs(scores: ScoresByFile, ground_truth: EventsByFile,
                 durations: Mapping[str, float], classes: Sequence[str],
                 cross_triggers: bool) -> _PsdsInputs:
  """Checks the inputs and computes everything that does not depend on the criteria."""
  class_index = class_indices(classes)
  num_classes = len(classes)
  files = list(scores)
  if not files:
    raise ValueError("scores is empty: nothing to evaluate.")
  extra = [f for f in ground_truth if f not in scores]
  if extra:
    raise ValueError(f"ground_truth has {len(extra)} file(s) without scores, e.g. "
                     f"{extra[0]!r}; score every evaluated file.")
  missing = [f for f in files if f not in durations]
  if missing:
    raise ValueError(f"durations lacks {len(missing)} scored file(s), e.g. {missing[0]!r}.")
  total_duration = float(sum(float(durations[f]) for f in files))
  if not total_duration > 0:
    raise ValueError("the scored files' durations sum to 0; the eFPR is undefined.")

  gt = _merged_ground_truth(ground_truth, files, class_index)
  n_ref = np.bincount(gt.cls, minlength=num_classes)
  if np.any(n_ref == 0):
    absent = [c for c, n in zip(classes, n_ref) if n == 0]
    raise ValueError(f"class(es) {absent} have no ground-truth event; PSDS (mean TPR over "
                     "classes) is undefined for them. Evaluate without them.")
  t_ref = np.bincount(gt.cls, weights=gt.offset - gt.onset, minlength=num_classes)

  layout = _score_layout(scores, files, num_classes)
  level, level_bounds = _levels(layout, num_classes)
  num_files, num_series = len(files), num_classes * len(files)
  gt_series = gt.cls * num_files + gt.file
  rows, gt_row = np.unique(gt_series, return_inverse=True)  # The series with ground truth.
  row_of_series = np.full(num_series, -1)
  row_of_series[rows] = np.arange(len(rows))
  # Series that need their detections' times: those with ground truth of their class and, for
  # cross-triggers, those of files with ground truth of another class. The others only count.
  select = row_of_series >= 0
  if cross_triggers:
    select = np.tile(np.bincount(rows % num_files, minlength=num_files) > 0, num_classes)
  runs = _detection_runs(layout, select, level)

  gt_top = np.minimum.reduceat(
      level, np.stack([layout.first[rows], layout.first[rows] + layout.frames[rows]], 1).ravel()
  )[::2][gt_row]
  coverage, row_first = _coverage(layout, gt, gt_row, rows)
  row = row_of_series[runs.series]
  own = np.flatnonzero(row >= 0)
  at = row_first[row[own]]
  own_inter = coverage[at + runs.stop[own]] - coverage[at + runs.start[own]]
  cross = None
  if cross_triggers:
    cross = _cross_intersections(runs, rows, coverage, row_first, num_files, num_classes)

  # Series without runs: every detection is false; their number rises by one where the
  # threshold reaches a local maximum and falls by one at a local minimum (plateaus counted
  # once), sed_scores_eval's shortcut too.
  unselected = np.flatnonzero(~select)
  at = _segment_ranges(layout.first[unselected], layout.frames[unselected])
  s = layout.values
  change = (s[at] > s[at - 1]).astype(np.float64) - (s[at + 1] > s[at])
  num_levels = int(level_bounds[-1])
  counted_fp = np.bincount(level[at], weights=change, minlength=num_levels)
  # Runs of series without ground truth of their class are all false positives in any setting
  # (up to degenerate sub-microsecond runs, see `_psd_roc`): each enters where it appears and
  # leaves where it vanishes.
  other = np.ones(len(runs.level), dtype=bool)
  other[own] = False
  other = np.flatnonzero(other)
  vanish = other[runs.parent_level[other] >= 0]
  other_fp = np.bincount(np.concatenate([runs.level[other], runs.parent_level[vanish]]),
                         weights=np.repeat([1.0, -1.0], [len(other), len(vanish)]),
                         minlength=num_levels)
  return _PsdsInputs(
      classes=list(classes), total_duration=total_duration, n_ref=n_ref, t_ref=t_ref, gt=gt,
      gt_series=gt_series, gt_top=gt_top, level_bounds=level_bounds, runs=runs, own=own,
      own_inter=np.round(own_inter, TIME_DECIMALS), cross=cross, counted_fp=counted_fp,
      other_fp=other_fp, other_shortest=float(runs.length[other].min(initial=np.inf)))


def _cross_intersections(runs: _Runs, rows: np.ndarray, coverage: np.ndarray,
                         row_first: np.ndarray, num_files: int,
                         num_classes: int) -> tuple[np.ndarray, ...]:
  """(run, other class, rounded intersection) of every run with each other class's ground truth
  in its file that it overlaps (an intersection of 0 never makes a cross-trigger)."""
  row_file, row_cls = rows % num_files, rows // num_files
  # A row (class o of file f) meets the runs of f's series of the other classes: runs are in
  # series order, so those are a few contiguous ranges.
  run_first = np.searchsorted(runs.series, np.arange(num_classes * num_files + 1))
  seg_row = np.repeat(np.arange(len(rows)), num_classes)
  seg_cls = np.tile(np.arange(num_classes), len(rows))
  other = seg_cls != row_cls[seg_row]
  seg_row, seg_series = seg_row[other], seg_cls[other] * num_files + row_file[seg_row[other]]
  lo = run_first[seg_series]
  count = run_first[seg_series + 1] - lo
  run = _segment_ranges(lo, count)
  at = np.repeat(row_first[seg_row], count)
  inter = coverage[at + runs.stop[run]] - coverage[at + runs.start[run]]
  hit = inter > 0
  return (run[hit], np.repeat(row_cls[seg_row], count)[hit],
          np.round(inter[hit], TIME_DECIMALS))


def _detected_changes(inputs: _PsdsInputs, good: np.ndarray, gtc: float,
                      num_levels: int) -> np.ndarray:
  """Changes of the detected ground-truth count per level, from the relevant runs `good`.

  Each event's time covered by relevant runs, as a function of θ, is a cumulative sum of +/-
  intersections; its "detected" state flips where the sum crosses gtc * length. One zero entry at
  the series' top gives the state of an event no run touches.
  """
  runs, gt = inputs.runs, inputs.gt
  lo = np.searchsorted(inputs.gt_series, runs.series[good], side="left")
  count = np.searchsorted(inputs.gt_series, runs.series[good], side="right") - lo
  r, g = np.repeat(good, count), _segment_ranges(lo, count)
  inter = np.maximum(np.minimum(runs.offset[r], gt.offset[g])
                     - np.maximum(runs.onset[r], gt.onset[g]), 0.0)
  use = inter > 0
  r, g, inter = r[use], g[use], inter[use]
  dies = runs.parent_level[r] >= 0
  n_gt = len(gt.file)
  ev_gt = np.concatenate([g, g[dies], np.arange(n_gt)])
  ev_level = np.concatenate([runs.level[r], runs.parent_level[r[dies]], inputs.gt_top])
  ev_value = np.concatenate([inter, -inter[dies], np.zeros(n_gt)])
  order = np.argsort(ev_gt * num_levels + ev_level)  # By event, then falling threshold.
  ev_gt, ev_level, ev_value = ev_gt[order], ev_level[order], ev_value[order]
  new_point = np.r_[True, (ev_gt[1:] != ev_gt[:-1]) | (ev_level[1:] != ev_level[:-1])]
  starts = np.flatnonzero(new_point)
  point_gt, point_level = ev_gt[starts], ev_level[starts]
  point_value = np.add.reduceat(ev_value, starts)
  gt_first = np.flatnonzero(np.r_[True, point_gt[1:] != point_gt[:-1]])
  covered = np.cumsum(point_value)
  covered -= np.repeat(covered[gt_first] - point_value[gt_first],
                       np.diff(np.r_[gt_first, len(point_gt)]))
  gt_len = gt.offset[point_gt] - gt.onset[point_gt]
  state = (np.round(covered, TIME_DECIMALS)
           >= np.round(gtc * gt_len, TIME_DECIMALS)).astype(np.float64)
  before = np.r_[0.0, state[:-1]]
  before[gt_first] = 0.0
  flip = state != before
  return np.bincount(point_level[flip], weights=(state - before)[flip], minlength=num_levels)


def _psd_roc(inputs: _PsdsInputs, dtc: float, gtc: float, cttc: float | None, alpha_ct: float,
             alpha_st: float, max_efpr: float) -> PsdsResult:
  """One setting's PSD-ROC from the shared inputs.

  A run's count enters where it appears and leaves where it vanishes (its parent appears); the
  changes of every statistic are summed per level (bincount), and cumulative sums over the levels
  of a class where anything changes give the statistics at every threshold.
  """
  runs, own = inputs.runs, inputs.own
  num_classes = len(inputs.classes)
  num_levels = int(inputs.level_bounds[-1])
  false_pos = np.ones(len(runs.level), dtype=bool)
  false_pos[own] = inputs.own_inter < np.round(dtc * runs.length[own], TIME_DECIMALS)
  # The other runs intersect nothing of their class: false positives, except (with cttc, where
  # sed_scores_eval applies the criterion to them) runs so short that dtc * length rounds to 0.
  other_fp = inputs.other_fp
  if cttc is not None and np.round(dtc * inputs.other_shortest, TIME_DECIMALS) <= 0:
    degenerate = np.round(dtc * runs.length, TIME_DECIMALS) <= 0
    degenerate[own] = False
    false_pos[degenerate] = False
    d = np.flatnonzero(degenerate)
    vanish = d[runs.parent_level[d] >= 0]
    other_fp = other_fp - np.bincount(
        np.concatenate([runs.level[d], runs.parent_level[vanish]]),
        weights=np.repeat([1.0, -1.0], [len(d), len(vanish)]), minlength=num_levels)
  fp_own = false_pos[own].astype(np.float64)
  vanish = runs.parent_level[own] >= 0
  fp_change = inputs.counted_fp + other_fp + np.bincount(
      np.concatenate([runs.level[own], runs.parent_level[own[vanish]]]),
      weights=np.concatenate([fp_own, -fp_own[vanish]]), minlength=num_levels)
  relevant = own[~false_pos[own]]
  tp_change = _detected_changes(inputs, relevant, gtc, num_levels)
  ct_change = None
  if cttc is not None and num_classes > 1:
    # Cross-triggers: false positives covering >= cttc of their length with another class's
    # ground truth, each weighted by 1 / that class's ground-truth duration (eFPR's CT rate).
    run, other, inter = inputs.cross
    hit = false_pos[run] & (inter >= np.round(cttc * runs.length[run], TIME_DECIMALS))
    run, other = run[hit], other[hit]
    weight = 1.0 / np.maximum(inputs.t_ref[other], 1e-12)
    up = runs.parent_level[run] >= 0
    ct_change = np.bincount(np.concatenate([runs.level[run], runs.parent_level[run[up]]]),
                            weights=np.concatenate([weight, -weight[up]]),
                            minlength=num_levels)

  changes = (tp_change != 0) | (fp_change != 0)
  if ct_change is not None:
    changes |= ct_change != 0
  changed = np.flatnonzero(changes)
  bounds = np.searchsorted(changed, inputs.level_bounds)
  class_rocs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  for c, name in enumerate(inputs.classes):
    at = changed[bounds[c]:bounds[c + 1]]  # Levels of the class where anything changes.
    tp = np.round(np.concatenate([[0.0], np.cumsum(tp_change[at])])).astype(np.int64)
    fp = np.round(np.concatenate([[0.0], np.cumsum(fp_change[at])]))  # Integer counts.
    efpr = fp / inputs.total_duration
    if ct_change is not None:
      ct_rate = np.concatenate([[0.0], np.cumsum(ct_change[at])])
      efpr = efpr + alpha_ct * ct_rate / (num_classes - 1)
    class_rocs[name] = _roc_staircase(tp, efpr * SECONDS_PER_HOUR, int(inputs.n_ref[c]),
                                      max_efpr)

  grid = np.unique(np.concatenate([efpr for _, efpr in class_rocs.values()]))
  on_grid = []
  for tpr, efpr in class_rocs.values():
    k = np.searchsorted(efpr, grid, side="right") - 1
    on_grid.append(np.where(k >= 0, tpr[np.maximum(k, 0)], 0.0))
  etpr = np.maximum(np.mean(on_grid, axis=0) - alpha_st * np.std(on_grid, axis=0), 0.0)
  etpr = np.append(etpr, etpr[-1])
  grid = np.append(grid, max_efpr)
  return PsdsResult(
      psds=_staircase_area(etpr, grid) / max_efpr,
      class_psds={name: _staircase_area(np.append(tpr, tpr[-1]),
                                        np.append(efpr, max_efpr)) / max_efpr
                  for name, (tpr, efpr) in class_rocs.items()},
      efpr=grid, etpr=etpr, class_rocs=class_rocs)
