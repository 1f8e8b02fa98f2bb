"""Segment- and event-based metrics of estimated events against reference events, as tables.

The library behind `python -m sed_jax.score` (DCASE strong TSVs in, tables or JSON out) and the
metric dicts every evaluation returns: keys segment_* and event_* (segment_f1_micro,
segment_f1_macro, segment_er, event_f1_macro, event_f1_micro, event_er) and a class_wise map
{class: {"segment": {...}, "event": {...}}}. Undefined values (for example the recall of a class
with no reference event) are None, never NaN; macro averages are over the classes that have
reference events (metrics/). The numbers equal sed_eval's with DCASE task 4 settings (1 s
segments; 200 ms onset collar, offset collar max(200 ms, 20 %)).
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence

from sed_jax.data import annotations
from sed_jax.data.annotations import Event
from sed_jax.evaluation import metrics


def read_durations_tsv(path: str | os.PathLike) -> dict[str, float]:
  """Reads a DCASE durations TSV (tab-separated, header naming `filename` and `duration`).

  Extra columns are ignored; a UTF-8 byte-order mark, CRLF line ends and blank lines are fine.

  Raises:
    annotations.AnnotationError: naming `file:line` for a missing file or column, a row without
      enough fields, a duration that is not a number of seconds >= 0, or a file listed twice
      with different durations.
  """
  where = os.fspath(path)

  def error(line_no: int | None, problem: str) -> annotations.AnnotationError:
    at = where if line_no is None else f"{where}:{line_no}"
    return annotations.AnnotationError(f"{at}: {problem}")

  try:
    text = pathlib.Path(path).read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as e:
    raise error(None, f"cannot be read as UTF-8 text ({e}). Check the path.") from None
  lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
  if not lines:
    raise error(None, "file is empty. It starts with the header `filename<TAB>duration`.")
  names = [c.strip().lower() for c in lines[0][1].split("\t")]
  if "filename" not in names or "duration" not in names:
    raise error(lines[0][0], f"header {lines[0][1]!r} lacks the columns filename and duration "
                "(tab-separated). Fix the header.")
  name_col, dur_col = names.index("filename"), names.index("duration")
  out: dict[str, float] = {}
  for line_no, line in lines[1:]:
    fields = [f.strip() for f in line.split("\t")]
    if len(fields) <= max(name_col, dur_col):
      raise error(line_no, f"has {len(fields)} tab-separated field(s). Write "
                  "`filename<TAB>duration`.")
    name, value_text = fields[name_col], fields[dur_col]
    try:
      value = float(value_text)
    except ValueError:
      value = math.nan
    if not name or not math.isfinite(value) or value < 0:
      raise error(line_no, f"duration {value_text!r} of {name!r} is not a number of seconds "
                  ">= 0. Fix the row.")
    if name in out and out[name] != value:
      raise error(line_no, f"{name!r} is listed twice with different durations ({out[name]} "
                  f"and {value}). Keep one row.")
    out[name] = value
  return out


def score(reference: Mapping[str, Sequence[Event]], estimated: Mapping[str, Sequence[Event]],
          durations: Mapping[str, float] | None = None, classes: Sequence[str] | None = None,
          segment_s: float = 1.0, t_collar: float = 0.2,
          percentage_of_length: float = 0.2) -> dict:
  """Segment- and event-based metrics of two event maps, as one flat JSON-serialisable dict.

  Files and durations follow the module docstring's rules. Keys are the metrics' keys prefixed
  with `segment_` or `event_`, plus `classes`, `n_files` and `class_wise`
  {class: {"segment": row, "event": row}}.
  """
  reference = dict(reference)
  if durations is not None:
    lacking = [f for f in reference if f not in durations]
    if lacking:
      raise ValueError(f"the durations lack {len(lacking)} reference file(s), e.g. "
                       f"{lacking[0]!r}; give a duration for every evaluated file.")
    for name in durations:
      reference.setdefault(name, [])
  if classes is None:
    classes = sorted({e.label for events in (*reference.values(), *estimated.values())
                      for e in events})
  segment = metrics.segment_based(reference, estimated, classes, durations, segment_s)
  event = metrics.event_based(reference, estimated, classes, t_collar, percentage_of_length)
  out: dict = {"classes": list(classes), "n_files": len(reference)}
  for prefix, result in (("segment", segment), ("event", event)):
    out.update({f"{prefix}_{k}": v for k, v in result.items() if k != "class_wise"})
  out["class_wise"] = {c: {"segment": segment["class_wise"][c], "event": event["class_wise"][c]}
                       for c in classes}
  return out


def _fmt(value, percent: bool = True) -> str:
  if value is None:
    return "-"
  return f"{100 * value:.2f}" if percent else f"{value:.3f}"


def format_table(result: Mapping) -> str:
  """Human-readable overall and class-wise tables of a `score` result (F1 in %, ER as a ratio)."""
  lines = [f"Files: {result['n_files']}   classes: {len(result['classes'])}   segments: "
           f"{result['segment_segment_s']:g} s   event collar: {result['event_t_collar']:g} s / "
           f"{100 * result['event_percentage_of_length']:g} % of length", ""]
  header = f"{'':14}{'F1 micro':>10}{'F1 macro':>10}{'P micro':>9}{'R micro':>9}{'ER':>8}"
  lines.append(header)
  for prefix, name in (("segment", "segment-based"), ("event", "event-based")):
    r = {k[len(prefix) + 1:]: v for k, v in result.items() if k.startswith(prefix + "_")}
    lines.append(f"{name:14}{_fmt(r['f1_micro']):>10}{_fmt(r['f1_macro']):>10}"
                 f"{_fmt(r['precision_micro']):>9}{_fmt(r['recall_micro']):>9}"
                 f"{_fmt(r['er'], False):>8}")
  n_macro = result["segment_n_macro_classes"]
  lines += ["", f"Macro averages are over the {n_macro} class(es) with reference events.", ""]
  width = max([len("class")] + [len(c) for c in result["classes"]]) + 2
  lines.append(f"{'class':{width}}{'status':>14}{'ref ev':>8}{'est ev':>8}{'seg F1':>9}"
               f"{'seg ER':>8}{'ev F1':>9}{'ev ER':>8}")
  for c, rows in result["class_wise"].items():
    seg, ev = rows["segment"], rows["event"]
    lines.append(f"{c:{width}}{ev['status']:>14}{ev['n_ref']:>8}{ev['n_sys']:>8}"
                 f"{_fmt(seg['f1']):>9}{_fmt(seg['er'], False):>8}{_fmt(ev['f1']):>9}"
                 f"{_fmt(ev['er'], False):>8}")
  return "\n".join(lines)
