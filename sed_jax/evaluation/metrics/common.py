"""What the three metric families share: events as arrays, the evaluated files, per-class and
averaged rows with the undefined-value rules of the package docstring (`metrics/__init__.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from sed_jax.data.annotations import Event

EventsByFile = Mapping[str, Sequence[Event]]
ScoresByFile = Mapping[str, tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass(frozen=True)
class EventArrays:
  """Events of many files flattened into arrays, in file order then list order."""
  file: np.ndarray    # int64 index into the evaluated files
  onset: np.ndarray   # float64 seconds
  offset: np.ndarray
  cls: np.ndarray     # int64 index into classes

  def __len__(self) -> int:
    return len(self.file)


def class_indices(classes: Sequence[str]) -> dict[str, int]:
  if isinstance(classes, str):
    raise TypeError("classes must be a sequence of class names, not a single string.")
  index = {c: i for i, c in enumerate(classes)}
  if len(index) != len(classes):
    raise ValueError(f"classes has duplicates: {list(classes)}.")
  return index


def evaluated_files(reference: EventsByFile, estimated: EventsByFile) -> list[str]:
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


def flatten_events(events_by_file: EventsByFile, files: Sequence[str],
                   class_index: dict[str, int], what: str) -> EventArrays:
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
  return EventArrays(file, onset, offset, cls)


def block_pairs(group_a: np.ndarray, group_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def class_wise_rows(classes: Sequence[str], n_ref: np.ndarray, n_sys: np.ndarray,
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


def macro_average(class_wise: dict[str, dict]) -> dict:
  """Means over the classes with reference events (status "ok"); None when there are none."""
  rows = [row for row in class_wise.values() if row["status"] == "ok"]

  def mean(key):
    return float(np.mean([row[key] for row in rows])) if rows else None

  return {"f1_macro": mean("f1"), "precision_macro": mean("precision"),
          "recall_macro": mean("recall"), "er_macro": mean("er"), "n_macro_classes": len(rows)}


def overall_rows(n_ref: int, n_sys: int, n_tp: int, n_sub: int, n_del: int, n_ins: int) -> dict:
  precision, recall, f1 = _prf(n_tp, n_ref, n_sys)
  rates = [_ratio(x, n_ref) for x in (n_sub, n_del, n_ins)]
  return {
      "f1_micro": f1, "precision_micro": precision, "recall_micro": recall,
      "er": None if rates[0] is None else rates[0] + rates[1] + rates[2],
      "substitution_rate": rates[0], "deletion_rate": rates[1], "insertion_rate": rates[2],
      "n_ref": n_ref, "n_sys": n_sys, "n_tp": n_tp, "n_substitutions": n_sub,
      "n_deletions": n_del, "n_insertions": n_ins,
  }
