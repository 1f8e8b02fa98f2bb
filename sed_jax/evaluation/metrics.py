"""SED metrics that give the reference tools' numbers: segment-based, event-based and PSDS.

Every comparison this project reports rests on these functions, and the SED community trusts
only numbers that match its reference tools, so each function reproduces one reference exactly
(the tests check it on hundreds of random sets, tricky cases included) while being vectorised
numpy instead of per-segment / per-event Python loops:

- `segment_based`: sed_eval 0.2.1 `SegmentBasedMetrics` (Mesaros et al., "Metrics for polyphonic
  sound event detection", 2016), to 1e-6;
- `event_based`: sed_eval 0.2.1 `EventBasedMetrics` with its default optimal matching, to 1e-6;
- `psds` / `psds1` / `psds2`: sed_scores_eval 0.0.4 `intersection_based.psds`, computed from
  frame scores without choosing thresholds, to 1e-3 (in practice ~1e-12).

Inputs. Events are `annotations.Event` (onset, offset, label; seconds) in
`{filename: [Event, ...]}` maps, as `annotations.read_strong_tsv` returns. The reference defines
the evaluated files: a file without events must be present with `[]` (a DCASE TSV says so with an
empty row). An estimated file missing from the reference is an error (a misspelt or prefixed name
would otherwise silently vanish from the scores); a reference file missing from the estimates
has no detections. Events of a file are used in their list order, which matters only for
sed_eval's greedy substitution count (see `event_based`); `read_strong_tsv` sorts them.

Undefined values and the averaging rule. sed_eval returns NaN for a precision with no estimate,
a recall with no reference and the F1 built from them, and its class-wise averages are
`nanmean`s, so absent classes silently change which classes a mean is over. Here:
  - recall, F1 and error rates of a class with no reference event are undefined: `None`
    (null in JSON), never NaN; its precision is 0.0 when it has estimates (all false) and
    `None` when it has none either. Each class says which case it is in `status`:
    "ok" (has reference events), "no_reference" (only estimates: false positives) or
    "absent" (neither);
  - a class with reference events but no estimate has precision 0, recall 0, F1 0 (as sed_eval
    with `empty_system_output_handling='zero_score'`, the setting DESED_task uses);
  - macro (class-wise) averages are plain means over the classes with status "ok", the classes
    with reference events; the others are reported in `class_wise` but left out of the means.
    `n_macro_classes` says how many classes a mean is over. When every class has reference
    events (any DCASE evaluation set), every macro value equals sed_eval's `class_wise_average`
    with `empty_system_output_handling='zero_score'`; with absent classes sed_eval's own
    averages differ (its precision mean counts them as 0, its ER mean as 0, or ~1e15 when they
    have insertions, because it divides by Nref + eps).
  - micro (overall) values follow the same rules on the totals.
Rates divide by Nref exactly; sed_eval divides by Nref + 2.2e-16, a difference below 1e-15.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from sed_jax.data.annotations import Event

EventsByFile = Mapping[str, Sequence[Event]]
ScoresByFile = Mapping[str, tuple[np.ndarray, np.ndarray]]

# sed_scores_eval compares intersection times rounded to this many decimals (its default), so that
# an intersection exactly at a criterion does not fail on floating-point noise.
TIME_DECIMALS = 6
SECONDS_PER_HOUR = 3600.0
# Positions per chunk of the vectorised PSDS detection tree (bounds its memory to ~50 MB).
_PSDS_CHUNK = 400_000


# ---------------------------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass(frozen=True)
class _Events:
  """Events of many files flattened into arrays, in file order then list order."""
  file: np.ndarray    # int64 index into the evaluated files
  onset: np.ndarray   # float64 seconds
  offset: np.ndarray
  cls: np.ndarray     # int64 index into classes

  def __len__(self) -> int:
    return len(self.file)


def _class_index(classes: Sequence[str]) -> dict[str, int]:
  if isinstance(classes, str):
    raise TypeError("classes must be a sequence of class names, not a single string.")
  index = {c: i for i, c in enumerate(classes)}
  if len(index) != len(classes):
    raise ValueError(f"classes has duplicates: {list(classes)}.")
  return index


def _evaluated_files(reference: EventsByFile, estimated: EventsByFile) -> list[str]:
  """The reference's files; an estimated file outside them is an error."""
  extra = [f for f in estimated if f not in reference]
  if extra:
    shown = ", ".join(map(repr, extra[:5])) + (f" and {len(extra) - 5} more" if len(extra) > 5
                                                else "")
    raise ValueError(
        f"{len(extra)} estimated file(s) are not in the reference: {shown}. The reference "
        "lists every evaluated file (a file without events as an empty row); check that both "
        "use the same file names (folders, extensions).")
  return list(reference)


def _flatten(events_by_file: EventsByFile, files: Sequence[str], class_index: dict[str, int],
             what: str) -> _Events:
  """Flattens {file: events} over `files`, checking labels and times."""
  file_ids, onsets, offsets, labels = [], [], [], []
  for i, name in enumerate(files):
    events = events_by_file.get(name, ())
    file_ids.append(np.full(len(events), i, dtype=np.int64))
    onsets.extend(e.onset for e in events)
    offsets.extend(e.offset for e in events)
    labels.extend(e.label for e in events)
  onset = np.asarray(onsets, dtype=np.float64)
  offset = np.asarray(offsets, dtype=np.float64)
  file = np.concatenate(file_ids) if file_ids else np.zeros(0, dtype=np.int64)
  try:
    cls = np.fromiter((class_index[label] for label in labels), dtype=np.int64,
                      count=len(labels))
  except KeyError:
    unknown = sorted({label for label in labels if label not in class_index})
    where = files[int(file[labels.index(unknown[0])])]
    raise ValueError(f"{what} has label(s) {unknown} (e.g. in {where!r}) that are not in the "
                     f"classes {list(class_index)}; add them to the classes or fix the labels."
                     ) from None
  bad = ~(np.isfinite(onset) & np.isfinite(offset) & (onset >= 0) & (onset <= offset))
  if np.any(bad):
    k = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{what} event ({onsets[k]}, {offsets[k]}, {labels[k]!r}) of "
                     f"{files[int(file[k])]!r} is invalid: times must be finite with "
                     "0 <= onset <= offset.")
  return _Events(file, onset, offset, cls)


def _block_pairs(group_a: np.ndarray, group_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All (i, j) with group_a[i] == group_b[j], vectorised.

  Pairs come ordered by group, then i, then j (each side keeps its input order within a group),
  i.e. row-major over each group's (a, b) block: the order sed_eval scans its hit matrices.
  """
  order_a = np.argsort(group_a, kind="stable")
  order_b = np.argsort(group_b, kind="stable")
  sorted_b = group_b[order_b]
  ga = group_a[order_a]
  lo = np.searchsorted(sorted_b, ga, side="left")
  count = np.searchsorted(sorted_b, ga, side="right") - lo
  total = int(count.sum())
  first = np.cumsum(count) - count
  within = np.arange(total) - np.repeat(first, count)
  return np.repeat(order_a, count), order_b[np.repeat(lo, count) + within]


# ---------------------------------------------------------------------------------------------
# Shared scoring rules (see the module docstring).


def _ratio(num: float, den: float) -> float | None:
  return float(num) / float(den) if den > 0 else None


def _prf(n_tp: int, n_ref: int, n_sys: int) -> tuple[float | None, float | None, float | None]:
  """(precision, recall, F1) under the module's rules for empty counts."""
  precision = n_tp / n_sys if n_sys > 0 else (0.0 if n_ref > 0 else None)
  recall = _ratio(n_tp, n_ref)
  if recall is None:
    f1 = None
  elif n_tp == 0:
    f1 = 0.0
  else:
    f1 = 2.0 * precision * recall / (precision + recall)
  return precision, recall, f1


def _status(n_ref: int, n_sys: int) -> str:
  return "ok" if n_ref > 0 else ("no_reference" if n_sys > 0 else "absent")


def _class_wise(classes: Sequence[str], n_ref: np.ndarray, n_sys: np.ndarray,
                n_tp: np.ndarray) -> dict[str, dict]:
  """Per-class table: counts, P/R/F1 and the error rate (deletions + insertions) / Nref."""
  table = {}
  for i, name in enumerate(classes):
    ref, sys, tp = int(n_ref[i]), int(n_sys[i]), int(n_tp[i])
    fn, fp = ref - tp, sys - tp
    precision, recall, f1 = _prf(tp, ref, sys)
    deletion, insertion = _ratio(fn, ref), _ratio(fp, ref)
    table[name] = {
        "status": _status(ref, sys), "n_ref": ref, "n_sys": sys, "n_tp": tp, "n_fp": fp,
        "n_fn": fn, "precision": precision, "recall": recall, "f1": f1,
        "er": None if deletion is None else deletion + insertion,
        "deletion_rate": deletion, "insertion_rate": insertion,
    }
  return table


def _macro(class_wise: dict[str, dict]) -> dict:
  """Means over the classes with reference events (status "ok"); None when there are none."""
  rows = [row for row in class_wise.values() if row["status"] == "ok"]

  def mean(key):
    return float(np.mean([row[key] for row in rows])) if rows else None

  return {"f1_macro": mean("f1"), "precision_macro": mean("precision"),
          "recall_macro": mean("recall"), "er_macro": mean("er"), "n_macro_classes": len(rows)}


def _overall(n_ref: int, n_sys: int, n_tp: int, n_sub: int, n_del: int, n_ins: int) -> dict:
  precision, recall, f1 = _prf(n_tp, n_ref, n_sys)
  rates = [_ratio(x, n_ref) for x in (n_sub, n_del, n_ins)]
  return {
      "f1_micro": f1, "precision_micro": precision, "recall_micro": recall,
      "er": None if rates[0] is None else rates[0] + rates[1] + rates[2],
      "substitution_rate": rates[0], "deletion_rate": rates[1], "insertion_rate": rates[2],
      "n_ref": n_ref, "n_sys": n_sys, "n_tp": n_tp, "n_substitutions": n_sub,
      "n_deletions": n_del, "n_insertions": n_ins,
  }


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
  class_index = _class_index(classes)
  files = _evaluated_files(reference, estimated)
  ref = _flatten(reference, files, class_index, "reference")
  est = _flatten(estimated, files, class_index, "estimated")
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

  def roll(ev: _Events) -> np.ndarray:
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
  out = _overall(int(ref_count.sum()), int(est_count.sum()), int(tp_count.sum()),
                 int((np.minimum(ref_count, est_count) - tp_count).sum()),
                 int(np.maximum(0, ref_count - est_count).sum()),
                 int(np.maximum(0, est_count - ref_count).sum()))
  class_wise = _class_wise(classes, ref_roll.sum(0), est_roll.sum(0), both.sum(0))
  out.update(_macro(class_wise))
  out.update(n_files=num_files, n_segments=total, evaluated_seconds=float(length.sum()),
             segment_s=segment_s, class_wise=class_wise)
  return out


# ---------------------------------------------------------------------------------------------
# Event-based metrics.


_FIRST_LAYER = object()


def _maximum_matching(pairs: list[tuple[int, int]]) -> dict[int, int]:
  """A maximum matching reference → estimate of the hit pairs, the one sed_eval finds.

  Several maximum matchings may exist and they leave different events unmatched, which changes
  sed_eval's substitution count; to give its numbers exactly this is Hopcroft-Karp with the same
  visiting order as sed_eval's `bipartite_match` (estimates are the left side, taken in order of
  their first hit in a row-major scan; each one's references ascending; a greedy start; then
  phases of a layered search from the free estimates and depth-first augmentation from the free
  references reached in the last layer).

  Args:
    pairs: (reference, estimate) hits in row-major order.
  """
  neighbours: dict[int, list[int]] = {}
  for r, e in pairs:
    neighbours.setdefault(e, []).append(r)
  match: dict[int, int] = {}  # reference -> estimate
  for e, refs in neighbours.items():
    for r in refs:
      if r not in match:
        match[r] = e
        break
  while True:
    taken = set(match.values())
    came_from: dict[int, object] = {e: _FIRST_LAYER for e in neighbours if e not in taken}
    reached: dict[int, list[int]] = {}  # reference -> estimates of the previous layer
    free_refs: list[int] = []
    frontier = list(came_from)
    while frontier and not free_refs:
      layer: dict[int, list[int]] = {}
      for e in frontier:
        for r in neighbours[e]:
          if r not in reached:
            layer.setdefault(r, []).append(e)
      frontier = []
      for r, via in layer.items():
        reached[r] = via
        if r in match:
          frontier.append(match[r])
          came_from[match[r]] = r
        else:
          free_refs.append(r)
    if not free_refs:
      return match

    def augment(r: int) -> bool:
      via = reached.pop(r, None)
      for e in via or ():
        if e in came_from:
          prev = came_from.pop(e)
          if prev is _FIRST_LAYER or augment(prev):
            match[r] = e
            return True
      return False

    for r in free_refs:
      augment(r)


def _collar_ok(ref: _Events, est: _Events, ri: np.ndarray, ei: np.ndarray, t_collar: float,
               percentage_of_length: float, evaluate_onset: bool,
               evaluate_offset: bool) -> np.ndarray:
  """sed_eval's onset/offset conditions for pairs (ri, ei), with its exact float expressions."""
  ok = np.ones(len(ri), dtype=bool)
  if evaluate_onset:
    ok &= np.abs(ref.onset[ri] - est.onset[ei]) <= t_collar
  if evaluate_offset:
    ref_len = ref.offset[ri] - ref.onset[ri]
    ok &= np.abs(ref.offset[ri] - est.offset[ei]) <= np.maximum(
        t_collar, percentage_of_length * ref_len)
  return ok


def event_based(reference: EventsByFile, estimated: EventsByFile, classes: Sequence[str],
                t_collar: float = 0.2, percentage_of_length: float = 0.2,
                evaluate_onset: bool = True, evaluate_offset: bool = True) -> dict:
  """Event-based P/R/F1 (micro, class-wise macro) and error rate, equal to sed_eval's.

  An estimated event matches a reference event of its file with the same label when
  |onset difference| <= t_collar and |offset difference| <= max(t_collar,
  percentage_of_length * reference length) (either check can be switched off). Each reference
  and estimate is used at most once: the true positives of a class in a file are a maximum
  matching of its hits, so overlapping events of one class are matched one to one, never twice.
  Substitutions (for ER only): the remaining references, in list order, each take the first
  remaining estimate in list order that meets the time conditions whatever its label (sed_eval's
  greedy rule, which is why the list order and the choice among maximum matchings matter:
  see `_maximum_matching`). Deletions = Nref - TP - S, insertions = Nsys - TP - S. The class-wise
  ER is (FN + FP) / Nref. Files are independent; totals sum over them.

  Defaults are DCASE task 4's: 200 ms onset collar, offset collar max(200 ms, 20 % of the
  reference length). sed_eval's own default `percentage_of_length` is 0.5: pass 0.5 to get its
  default numbers (the tests check both).

  Returns:
    A flat JSON-serialisable dict with the keys of `segment_based` (counts in events), plus
    t_collar, percentage_of_length, evaluate_onset, evaluate_offset, without n_segments,
    evaluated_seconds and segment_s.
  """
  if not evaluate_onset and not evaluate_offset:
    raise ValueError("evaluate_onset and evaluate_offset cannot both be False.")
  for name, value in (("t_collar", t_collar), ("percentage_of_length", percentage_of_length)):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
      raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
  class_index = _class_index(classes)
  files = _evaluated_files(reference, estimated)
  ref = _flatten(reference, files, class_index, "reference")
  est = _flatten(estimated, files, class_index, "estimated")
  num_classes = len(classes)
  conditions = dict(t_collar=float(t_collar), percentage_of_length=float(percentage_of_length),
                    evaluate_onset=evaluate_onset, evaluate_offset=evaluate_offset)

  # Hits: same file, same class, time conditions met; row-major within each (file, class).
  ref_group = ref.file * num_classes + ref.cls
  ri, ei = _block_pairs(ref_group, est.file * num_classes + est.cls)
  hit = _collar_ok(ref, est, ri, ei, **conditions)
  ri, ei = ri[hit], ei[hit]

  # Maximum matching per (file, class). Where no event has two hits it is the hits themselves;
  # only the other groups need the (Python) Hopcroft-Karp search.
  ref_matched = np.zeros(len(ref), dtype=bool)
  est_matched = np.zeros(len(est), dtype=bool)
  tangled = (np.bincount(ri, minlength=len(ref))[ri] > 1) | (
      np.bincount(ei, minlength=len(est))[ei] > 1)
  tangled_group = np.zeros(len(files) * num_classes + 1, dtype=bool)
  tangled_group[ref_group[ri[tangled]]] = True
  simple = ~tangled_group[ref_group[ri]]
  ref_matched[ri[simple]] = True
  est_matched[ei[simple]] = True
  for g in np.flatnonzero(tangled_group):
    in_group = ref_group[ri] == g
    matching = _maximum_matching(list(zip(ri[in_group].tolist(), ei[in_group].tolist())))
    ref_matched[list(matching)] = True
    est_matched[list(matching.values())] = True

  n_ref_c = np.bincount(ref.cls, minlength=num_classes)
  n_sys_c = np.bincount(est.cls, minlength=num_classes)
  n_tp_c = np.bincount(ref.cls[ref_matched], minlength=num_classes)
  n_sub = _substitutions(ref, est, ~ref_matched, ~est_matched, conditions)
  n_ref, n_sys, n_tp = len(ref), len(est), int(ref_matched.sum())
  out = _overall(n_ref, n_sys, n_tp, n_sub, n_ref - n_tp - n_sub, n_sys - n_tp - n_sub)
  class_wise = _class_wise(classes, n_ref_c, n_sys_c, n_tp_c)
  out.update(_macro(class_wise))
  out.update(n_files=len(files), **conditions, class_wise=class_wise)
  return out


def _substitutions(ref: _Events, est: _Events, ref_left: np.ndarray, est_left: np.ndarray,
                   conditions: dict) -> int:
  """sed_eval's greedy substitution count over the unmatched events of each file.

  Unmatched pairs of one class never meet the time conditions (they would extend the maximum
  matching), so testing all unmatched pairs of a file is testing pairs of different labels.
  """
  lr, le = np.flatnonzero(ref_left), np.flatnonzero(est_left)
  a, b = _block_pairs(ref.file[lr], est.file[le])
  ri, ei = lr[a], le[b]
  ok = _collar_ok(ref, est, ri, ei, **conditions)
  ri, ei = ri[ok], ei[ok]  # Row-major per file: by reference, then estimate, in list order.
  if len(ri) == 0:
    return 0
  # Each reference's first candidate. If no two references of a file share it, the greedy scan
  # gives every reference with a candidate that candidate; otherwise replay the scan.
  refs, first_pos = np.unique(ri, return_index=True)
  first_est = ei[first_pos]
  _, est_first_count = np.unique(first_est, return_counts=True)
  if np.all(est_first_count == 1):
    return len(refs)
  file_of_pair = ref.file[ri]
  contested = np.zeros(int(ref.file.max()) + 1, dtype=bool)
  uniq, counts = np.unique(first_est, return_counts=True)
  contested[est.file[uniq[counts > 1]]] = True
  count = int(np.sum(~contested[ref.file[refs]]))
  replay = contested[file_of_pair]
  used: set[int] = set()
  done = -1
  for r, e in zip(ri[replay].tolist(), ei[replay].tolist()):
    if r != done and e not in used:
      used.add(e)
      done = r
      count += 1
  return count


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


def psds1(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
          classes: Sequence[str]) -> float:
  """DCASE PSDS scenario 1: dtc = gtc = 0.7, no cross-trigger cost, alpha_st = 1, max_efpr 100."""
  return psds(scores, ground_truth, durations, classes, dtc=0.7, gtc=0.7, alpha_ct=0.0,
              alpha_st=1.0, max_efpr=100.0)


def psds2(scores: ScoresByFile, ground_truth: EventsByFile, durations: Mapping[str, float],
          classes: Sequence[str]) -> float:
  """DCASE PSDS scenario 2: dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1, 100/h."""
  return psds(scores, ground_truth, durations, classes, dtc=0.1, gtc=0.1, cttc=0.3,
              alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)


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
  series at once with a range-minimum table; their counts and intersections enter as changes at
  those scores, and cumulative sums over the sorted scores give every statistic at every
  threshold. A series with no ground truth of its class (and, with cttc, none of another class
  in its file) only needs its number of detections: +1 at each local maximum, -1 at each local
  minimum (sed_scores_eval's shortcut as well). Memory is bounded by building runs a few files
  at a time.

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
  if (alpha_ct == 0) != (cttc is None):
    raise ValueError("cttc must be given exactly when alpha_ct != 0 "
                     f"(got cttc={cttc!r}, alpha_ct={alpha_ct!r}).")
  if not max_efpr > 0:
    raise ValueError(f"max_efpr must be > 0, got {max_efpr!r}.")
  class_index = _class_index(classes)
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

  arrays = _checked_scores(scores, files, num_classes)
  # Series that need their detections' times: those with ground truth of their class and, for
  # cross-triggers, those of files with ground truth of another class. The others only count.
  has_gt = np.zeros((len(files), num_classes), dtype=bool)
  has_gt[gt.file, gt.cls] = True
  needs_runs = has_gt.copy()
  if cttc is not None:
    needs_runs |= (has_gt.sum(1, keepdims=True) - has_gt) > 0
  runs = _detection_runs(_layouts(arrays, needs_runs))
  counted = [_detection_count_deltas(layout) for layout in _layouts(arrays, ~needs_runs)]
  deltas = _statistic_deltas(runs, gt, num_classes, dtc, gtc, cttc, counted)

  class_rocs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  per_class = _statistics(deltas, num_classes, 2 + num_classes if cttc is not None else 2)
  for c, name in enumerate(classes):
    stats = np.round(per_class[c])  # Integer counts summed as floats.
    tpr = stats[:, 0] / max(int(n_ref[c]), 1)
    efpr = stats[:, 1] / total_duration
    if alpha_ct != 0:
      others = [o for o in range(num_classes) if o != c]
      ct_rates = [stats[:, 2 + o] / max(float(t_ref[o]), 1e-12) for o in others]
      efpr = efpr + alpha_ct * np.mean(ct_rates, axis=0)
    efpr = efpr * SECONDS_PER_HOUR
    class_rocs[name] = _roc_staircase(tpr, efpr, max_efpr)

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


def _staircase_area(y: np.ndarray, x: np.ndarray) -> float:
  """Area under y held constant from each x to the next (x ascending; the last y is unused)."""
  return float(np.sum(y[:-1] * np.diff(x)))


def _roc_staircase(tpr: np.ndarray, efpr: np.ndarray,
                   max_efpr: float) -> tuple[np.ndarray, np.ndarray]:
  """The ROC's corners: for each eFPR the best TPR at or below it; both strictly increasing."""
  order = np.lexsort((tpr, efpr))
  x, y = efpr[order], tpr[order]
  best_before = np.maximum.accumulate(np.concatenate([[-np.inf], y[:-1]]))
  keep = y > best_before
  x, y = x[keep], y[keep]
  last = np.append(x[1:] != x[:-1], True)
  x, y = x[last], y[last]
  inside = x <= max_efpr
  return y[inside], x[inside]


@dataclasses.dataclass(frozen=True)
class _GroundTruth:
  file: np.ndarray
  cls: np.ndarray
  onset: np.ndarray
  offset: np.ndarray


def _merged_ground_truth(ground_truth: EventsByFile, files: Sequence[str],
                         class_index: dict[str, int]) -> _GroundTruth:
  """Ground truth of the scored files, connected same-class events merged, sorted.

  Events of one class that overlap or touch become their union. The loop is over ground-truth
  events (few), not frames; comparisons are exact (no float tricks), so touching events merge.
  """
  ev = _flatten(ground_truth, files, class_index, "ground_truth")
  order = np.lexsort((ev.offset, ev.onset, ev.cls, ev.file))
  merged: list[tuple[int, int, float, float]] = []
  for f, c, on, off in zip(ev.file[order].tolist(), ev.cls[order].tolist(),
                           ev.onset[order].tolist(), ev.offset[order].tolist()):
    if merged and merged[-1][:2] == (f, c) and on <= merged[-1][3]:
      last = merged[-1]
      merged[-1] = (f, c, last[2], max(last[3], off))
    else:
      merged.append((f, c, on, off))
  cols = list(zip(*merged)) if merged else [(), (), (), ()]
  return _GroundTruth(np.asarray(cols[0], dtype=np.int64), np.asarray(cols[1], dtype=np.int64),
                      np.asarray(cols[2], dtype=np.float64), np.asarray(cols[3], dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class _Runs:
  """Every distinct detection run of the evaluated (file, class) series, over all thresholds."""
  file: np.ndarray
  cls: np.ndarray
  onset: np.ndarray   # seconds
  offset: np.ndarray
  born: np.ndarray    # the threshold at (and below) which the run exists
  parent: np.ndarray  # the run it merges into, born where this one vanishes; -1: never merges
  top: np.ndarray     # the series' maximum score (the highest threshold at which it detects)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Series laid end to end after a leading -inf sentinel, each followed by a -inf sentinel.

  `stamps` holds each frame's start time and, at a sentinel, the end time of the series before
  it, so a run of positions [a, b) spans stamps[a]..stamps[b]. `file` and `cls` name each
  position's series (-1 at the leading sentinel).
  """
  values: np.ndarray
  stamps: np.ndarray
  file: np.ndarray
  cls: np.ndarray
  max_len: int


def _checked_scores(scores: ScoresByFile, files: Sequence[str],
                    num_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
  out = []
  for name in files:
    stamps, values = scores[name]
    stamps = np.asarray(stamps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != num_classes or values.shape[0] == 0:
      raise ValueError(f"scores of {name!r} must be [T >= 1, {num_classes}], got shape "
                       f"{values.shape}.")
    if stamps.shape != (values.shape[0] + 1,) or np.any(np.diff(stamps) <= 0):
      raise ValueError(f"timestamps of {name!r} must be {values.shape[0] + 1} strictly "
                       "increasing times (frame j spans timestamps[j]..timestamps[j+1]).")
    if not np.all(np.isfinite(values)):
      raise ValueError(f"scores of {name!r} hold non-finite values.")
    out.append((stamps, values))
  return out


def _layouts(arrays: list[tuple[np.ndarray, np.ndarray]], select: np.ndarray):
  """Yields `_Layout`s of the selected series (select [files, C]), a few files at a time."""
  chunk, size = [], 0
  for f, (stamps, values) in enumerate(arrays):
    cols = np.flatnonzero(select[f])
    if len(cols):
      chunk.append((f, cols, stamps, values))
      size += len(cols) * len(stamps)
    if chunk and (size >= _PSDS_CHUNK or f == len(arrays) - 1):
      parts = [(np.array([-np.inf]), np.array([0.0]), np.array([-1]), np.array([-1]))]
      for i, cols, ts, vs in chunk:
        block = np.concatenate([vs[:, cols].T, np.full((len(cols), 1), -np.inf)], axis=1)
        parts.append((block.ravel(), np.tile(ts, len(cols)), np.full(block.size, i),
                      np.repeat(cols, len(ts))))
      yield _Layout(*(np.concatenate(x) for x in zip(*parts)),
                    max_len=max(len(vs) for _, _, _, vs in chunk))
      chunk, size = [], 0


def _detection_runs(layouts) -> _Runs:
  """The runs of every series of the layouts, with parents indexed across layouts."""
  parts = [_runs_of_layout(layout) for layout in layouts]
  if not parts:
    empty = np.zeros(0)
    return _Runs(empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty,
                 empty.astype(np.int64), empty)
  first = np.cumsum([0] + [len(p.born) for p in parts])
  parts = [dataclasses.replace(p, parent=np.where(p.parent >= 0, p.parent + k, -1))
           for p, k in zip(parts, first)]
  return _Runs(*(np.concatenate([getattr(p, k.name) for p in parts])
                 for k in dataclasses.fields(_Runs)))


def _runs_of_layout(layout: _Layout) -> _Runs:
  """The runs of a layout's series: for each frame, the run of scores >= its own around it."""
  s = layout.values
  n = len(s)
  pos = np.flatnonzero(np.isfinite(s))
  v = s[pos]
  # Range-minimum table: mins[j][i] = min(s[i : i + 2**j]); runs never cross a sentinel, so
  # steps up to the longest series suffice.
  mins = [s]
  while (1 << len(mins)) <= min(n, layout.max_len + 1):
    prev, half = mins[-1], 1 << (len(mins) - 1)
    mins.append(np.minimum(prev[:-half], prev[half:]))
  # Extend each frame's run left and right over scores >= its own, largest steps first.
  left, right = pos.copy(), pos + 1
  for j in range(len(mins) - 1, -1, -1):
    step, table = 1 << j, mins[j]
    cand = left - step
    ok = cand >= 0
    ok[ok] = table[cand[ok]] >= v[ok]
    left = np.where(ok, cand, left)
    ok = right + step <= n
    ok[ok] = table[right[ok]] >= v[ok]
    right = np.where(ok, right + step, right)
  # Frames in the same run (same bounds) at the same level are one detection.
  key = left.astype(np.int64) * (n + 1) + right
  _, first, run_of_frame = np.unique(key, return_index=True, return_inverse=True)
  run_of = np.full(n, -1)
  run_of[pos] = run_of_frame
  left, right, born = left[first], right[first], v[first]
  # A run vanishes when the threshold reaches its higher neighbour's score: it then belongs to
  # that neighbour's run (-1 at the sentinels: the whole series, which never vanishes).
  parent = run_of[np.where(s[left - 1] >= s[right], left - 1, right)]
  series = np.cumsum(~np.isfinite(s)) - 1  # Series k's frames (and the sentinel before) hold k.
  frame_series = series[pos]
  starts = np.flatnonzero(np.r_[True, frame_series[1:] != frame_series[:-1]])
  top = np.full(int(series[-1]) + 1, -np.inf)
  top[frame_series[starts]] = np.maximum.reduceat(v, starts)
  return _Runs(file=layout.file[left], cls=layout.cls[left], onset=layout.stamps[left],
               offset=layout.stamps[right], born=born, parent=parent, top=top[series[left]])


def _detection_count_deltas(layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(class, level, change) of the number of detections of series without ground truth.

  Without ground truth (and no cross-trigger to count) every detection is a false positive and
  only their number matters: it rises by one where the threshold reaches a local maximum and
  falls by one at a local minimum (plateaus counted once), sed_scores_eval's shortcut too.
  """
  s = layout.values
  cur = s[1:-1]
  change = (cur > s[:-2]).astype(np.int64) - (s[2:] > cur)
  at = np.flatnonzero(np.isfinite(cur) & (change != 0))
  return layout.cls[at + 1], cur[at], change[at].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class _Deltas:
  """Changes of the statistics as the threshold falls to `level`, for class `cls`.

  `column` 0 is true positives, 1 false positives, 2 + o cross-triggers on class o.
  """
  cls: np.ndarray
  level: np.ndarray
  column: np.ndarray
  value: np.ndarray


def _statistic_deltas(runs: _Runs, gt: _GroundTruth, num_classes: int, dtc: float, gtc: float,
                      cttc: float | None, counted: list[tuple[np.ndarray, ...]]) -> _Deltas:
  """The changes of TP, FP and CT counts over all thresholds, as flat arrays.

  A run's count enters at its birth and leaves at its parent's birth, so each run carries one
  net entry at its birth level: its own count minus its children's. Along a run that merely
  grows as the threshold falls these cancel, which leaves few entries.
  """
  num_runs = len(runs.born)
  length = runs.offset - runs.onset
  merges = runs.parent >= 0

  def overlap(ri: np.ndarray, gi: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(runs.offset[ri], gt.offset[gi])
                      - np.maximum(runs.onset[ri], gt.onset[gi]), 0.0)

  def round_t(x: np.ndarray) -> np.ndarray:
    return np.round(x, TIME_DECIMALS)

  # Detection tolerance: the run's intersection with its class's ground truth.
  ri, gi = _block_pairs(runs.file * num_classes + runs.cls, gt.file * num_classes + gt.cls)
  inter = overlap(ri, gi)
  on_target = np.bincount(ri, weights=inter, minlength=num_runs)
  false_pos = round_t(on_target) < round_t(dtc * length)

  parts = [(c, level, np.ones(len(c), np.int64), value) for c, level, value in counted]
  fp = false_pos.astype(np.float64)
  net = fp - np.bincount(runs.parent[merges], weights=fp[merges], minlength=num_runs)
  changed = np.flatnonzero(net)
  parts.append((runs.cls[changed], runs.born[changed], np.ones(len(changed), np.int64),
                net[changed]))

  # Ground-truth intersection: each event's time covered by relevant runs, as a function of θ,
  # is a cumulative sum of +/- intersections; its "detected" state flips where the sum crosses
  # gtc * length. One zero entry at the series' top gives the state of an event no run touches.
  use = ~false_pos[ri] & (inter > 0)
  r_use, g_use, w_use = ri[use], gi[use], inter[use]
  dies = merges[r_use]
  top_of_gt = np.full(len(gt.file), -np.inf)
  top_of_gt[gi] = runs.top[ri]
  ev_gt = np.concatenate([g_use, g_use[dies], np.arange(len(gt.file))])
  ev_level = np.concatenate([runs.born[r_use], runs.born[runs.parent[r_use[dies]]], top_of_gt])
  ev_value = np.concatenate([w_use, -w_use[dies], np.zeros(len(gt.file))])
  order = np.lexsort((-ev_level, ev_gt))
  ev_gt, ev_level, ev_value = ev_gt[order], ev_level[order], ev_value[order]
  if len(ev_gt):
    new_point = np.r_[True, (ev_gt[1:] != ev_gt[:-1]) | (ev_level[1:] != ev_level[:-1])]
    starts = np.flatnonzero(new_point)
    point_gt, point_level = ev_gt[starts], ev_level[starts]
    point_value = np.add.reduceat(ev_value, starts)
    gt_first = np.flatnonzero(np.r_[True, point_gt[1:] != point_gt[:-1]])
    covered = np.cumsum(point_value)
    covered -= np.repeat(covered[gt_first] - point_value[gt_first],
                         np.diff(np.r_[gt_first, len(point_gt)]))
    gt_len = gt.offset[point_gt] - gt.onset[point_gt]
    state = (round_t(covered) >= round_t(gtc * gt_len)).astype(np.float64)
    before = np.r_[0.0, state[:-1]]
    before[gt_first] = 0.0
    flip = state != before
    parts.append((gt.cls[point_gt[flip]], point_level[flip],
                  np.zeros(int(flip.sum()), np.int64), (state - before)[flip]))

  if cttc is not None:
    # Cross-triggers: false-positive runs covering >= cttc of their length with another class's
    # ground truth (an intersection of 0 never qualifies).
    fp_runs = np.flatnonzero(false_pos)
    a, gi = _block_pairs(runs.file[fp_runs], gt.file)
    ri = fp_runs[a]
    inter = overlap(ri, gi)
    keep = (gt.cls[gi] != runs.cls[ri]) & (inter > 0)
    key, total = _sum_by_key(ri[keep] * num_classes + gt.cls[gi[keep]], inter[keep],
                             is_sorted=True)
    r_ct = key // num_classes
    cross = round_t(total) >= round_t(cttc * length[r_ct])
    r_ct, o_ct = r_ct[cross], key[cross] % num_classes
    up = merges[r_ct]
    key, net = _sum_by_key(
        np.concatenate([r_ct * num_classes + o_ct, runs.parent[r_ct[up]] * num_classes + o_ct[up]]),
        np.concatenate([np.ones(len(r_ct)), -np.ones(int(up.sum()))]))
    key, net = key[net != 0], net[net != 0]
    run = key // num_classes
    parts.append((runs.cls[run], runs.born[run], 2 + key % num_classes, net))

  return _Deltas(*(np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(4)))


def _sum_by_key(keys: np.ndarray, values: np.ndarray,
                is_sorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(sorted unique keys, sum of the values of each), vectorised; no sort if keys are sorted."""
  if is_sorted and np.all(keys[1:] >= keys[:-1]):
    if not len(keys):
      return keys, values
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(values, starts)
  unique, inverse = np.unique(keys, return_inverse=True)
  return unique, np.bincount(inverse, weights=values, minlength=len(unique))


def _statistics(deltas: _Deltas, num_classes: int,
                num_columns: int) -> list[np.ndarray]:
  """Each class's statistics at every threshold where they change, and at θ = inf (all zero).

  Returns one array [levels + 1, num_columns] per class (row order is irrelevant to the ROC):
  sums of the deltas at or above each level, from one sort of all entries.
  """
  order = np.argsort(-deltas.level)
  order = order[np.argsort(deltas.cls[order].astype(np.int32), kind="stable")]
  cls, level = deltas.cls[order], deltas.level[order]
  new = np.r_[True, (cls[1:] != cls[:-1]) | (level[1:] != level[:-1])]
  group = np.cumsum(new) - 1
  num_groups = int(group[-1]) + 1 if len(group) else 0
  change = np.bincount(group * num_columns + deltas.column[order],
                       weights=deltas.value[order], minlength=num_groups * num_columns)
  change = change.reshape(num_groups, num_columns)
  group_cls = cls[new]
  stats = np.cumsum(change, axis=0)
  bounds = np.searchsorted(group_cls, np.arange(num_classes + 1))
  out = []
  for c in range(num_classes):
    lo, hi = bounds[c], bounds[c + 1]
    before = stats[lo - 1] if lo > 0 else np.zeros(num_columns)
    out.append(np.concatenate([np.zeros((1, num_columns)), stats[lo:hi] - before]))
  return out
