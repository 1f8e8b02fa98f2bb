"""Event-based metrics: sed_eval 0.2.1 `EventBasedMetrics` with optimal matching (to 1e-6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sed_jax.evaluation.metrics.common import EventArrays
from sed_jax.evaluation.metrics.common import EventsByFile
from sed_jax.evaluation.metrics.common import block_pairs
from sed_jax.evaluation.metrics.common import class_indices
from sed_jax.evaluation.metrics.common import class_wise_rows
from sed_jax.evaluation.metrics.common import evaluated_files
from sed_jax.evaluation.metrics.common import flatten_events
from sed_jax.evaluation.metrics.common import macro_average
from sed_jax.evaluation.metrics.common import overall_rows


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


def _collar_ok(ref: EventArrays, est: EventArrays, ri: np.ndarray, ei: np.ndarray, t_collar: float,
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
  class_index = class_indices(classes)
  files = evaluated_files(reference, estimated)
  ref = flatten_events(reference, files, class_index, "reference")
  est = flatten_events(estimated, files, class_index, "estimated")
  num_classes = len(classes)
  conditions = dict(t_collar=float(t_collar), percentage_of_length=float(percentage_of_length),
                    evaluate_onset=evaluate_onset, evaluate_offset=evaluate_offset)

  # Hits: same file, same class, time conditions met; row-major within each (file, class).
  ref_group = ref.file * num_classes + ref.cls
  ri, ei = block_pairs(ref_group, est.file * num_classes + est.cls)
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
  out = overall_rows(n_ref, n_sys, n_tp, n_sub, n_ref - n_tp - n_sub, n_sys - n_tp - n_sub)
  class_wise = class_wise_rows(classes, n_ref_c, n_sys_c, n_tp_c)
  out.update(macro_average(class_wise))
  out.update(n_files=len(files), **conditions, class_wise=class_wise)
  return out


def _substitutions(ref: EventArrays, est: EventArrays, ref_left: np.ndarray, est_left: np.ndarray,
                   conditions: dict) -> int:
  """sed_eval's greedy substitution count over the unmatched events of each file.

  Unmatched pairs of one class never meet the time conditions (they would extend the maximum
  matching), so testing all unmatched pairs of a file is testing pairs of different labels.
  """
  lr, le = np.flatnonzero(ref_left), np.flatnonzero(est_left)
  a, b = block_pairs(ref.file[lr], est.file[le])
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
