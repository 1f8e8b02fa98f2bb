"""DCASE annotation files: strong/weak TSVs and URBAN-SED per-file txt.

Formats (tab-separated, UTF-8):
- strong TSV: header `filename<TAB>onset<TAB>offset<TAB>event_label`, one event a row, times in
  seconds. A row whose onset, offset and event_label are all empty (or a row holding only the
  filename) says "this file has no event" (DESED writes such rows). A tab-less row that splits on
  spaces into one part per column is an error, not a filename: it is a space-separated row.
- weak TSV: header `filename<TAB>event_labels`, labels comma-separated, empty for no event.
- URBAN-SED `.txt`: one file per clip, rows `onset offset label`, no header, separated by tabs or
  (when a row has no tab) by whitespace.

Reading rules, the same for every format:
- line numbers in errors are 1-based as an editor shows them (the header is line 1), and every
  error names `file:line`, the problem and the fix;
- a UTF-8 byte-order mark and CRLF (or CR) line endings are accepted; blank lines are skipped;
- fields are separated by tabs only, so labels may contain spaces and any unicode; spaces around
  a field are stripped;
- extra columns in a TSV header are allowed and ignored, and columns may come in any order;
- the same row written twice (same file, times and label) is kept once, silently: annotation
  tools and dataset merges produce such duplicates and they carry no information;
- overlapping events of one class are kept as they are; the frame targets take their union
  (see features.py), so they mark the frames once;
- a zero-length event (onset == offset) is allowed; onset > offset is an error;
- a filename's events are returned sorted by (onset, offset, label), and filenames keep the order
  of their first row.

Writing: atomic (a temporary file in the same folder renamed over the destination, so a reader
never sees half a file). Times are written with at most 6 decimals (trailing zeros dropped, for
example `1.5`, `0.24`, `10.0`), so `read(write(x)) == x` for any time that is a whole number of
microseconds, millisecond-precision times included; finer times are rounded to the nearest
microsecond. Events are written sorted and without duplicates, which is what the readers return.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

from sed_jax import io_utils

PathLike = str | os.PathLike

STRONG_COLUMNS = ("filename", "onset", "offset", "event_label")
WEAK_COLUMNS = ("filename", "event_labels")

# How many missing files `check_audio_present` names before it only counts the rest.
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True, order=True)
class Event:
  """One labelled sound event; times in seconds from the start of its clip."""
  onset: float
  offset: float
  label: str


class AnnotationError(ValueError):
  """A malformed annotation file; the message names the file and line and says what to do."""


def _error(path: PathLike, line: int | None, problem: str, fix: str) -> AnnotationError:
  where = os.fspath(path) if line is None else f"{os.fspath(path)}:{line}"
  return AnnotationError(f"{where}: {problem}. {fix}")


# ---------------------------------------------------------------------------------------------
# Reading.


def _read_lines(path: PathLike) -> list[tuple[int, str]]:
  """Returns the (1-based line number, text) of each non-blank line, line endings removed."""
  p = pathlib.Path(path)
  try:
    data = p.read_bytes()
  except FileNotFoundError:
    raise _error(p, None, "annotation file does not exist", "Check the path.") from None
  except IsADirectoryError:
    raise _error(p, None, "is a directory, not an annotation file",
                 "Pass the path of the .tsv/.txt file.") from None
  except PermissionError:
    raise _error(p, None, "permission denied", "Make the file readable (chmod a+r).") from None
  except OSError as e:
    raise _error(p, None, f"cannot be read ({e.strerror or e})",
                 "Check the file and its storage.") from None
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise _error(p, line, f"is not valid UTF-8 (byte {data[e.start]:#04x})",
                 "Re-save the file as UTF-8.") from None
  # Universal newlines, like open(): CRLF from Windows tools and lone CR from old Mac ones.
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  return [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]


def _parse_header(path: PathLike, lines: list[tuple[int, str]],
                  required: Sequence[str]) -> tuple[dict[str, int], int, list[tuple[int, str]]]:
  """Finds the required columns in the first line; returns (column index, width, data lines)."""
  expected = "\t".join(required)
  if not lines:
    raise _error(path, None, "file is empty",
                 f"A DCASE TSV starts with the header line {expected!r} (tab-separated).")
  line_no, header = lines[0]
  names = [name.strip().lower() for name in header.split("\t")]
  missing = [c for c in required if c not in names]
  if missing:
    if "\t" not in header and set(header.split()) >= set(required):
      fix = "The header is separated by spaces; DCASE TSVs separate columns with tabs."
    elif missing == list(required):
      fix = (f"The file has no header: add {expected!r} (tab-separated) as its first line, or "
             "check that this is the right file.")
    else:
      fix = f"The header must name the columns {expected!r} (tab-separated)."
    raise _error(path, line_no, f"header {header!r} lacks the column(s) {', '.join(missing)}",
                 fix)
  return {c: names.index(c) for c in required}, len(names), lines[1:]


def _split_row(path: PathLike, line_no: int, line: str, width: int) -> list[str] | None:
  """Splits a data row into stripped fields; None for a filename-only row (no events).

  A row without a tab that splits on whitespace into as many parts as the header has columns is
  an error rather than a filename-only row: it is almost surely a space-separated row, and reading
  it as "a file without events" would silently drop its events.
  """
  fields = [f.strip() for f in line.split("\t")]
  looks_space_separated = len(fields) == 1 and len(line.split()) == width
  if len(fields) == 1 and fields[0] and not looks_space_separated:
    return None
  if len(fields) != width:
    hint = " (is it separated by spaces instead of tabs?)" if len(fields) < width else ""
    if looks_space_separated:
      raise _error(path, line_no, f"has no tab but {width} space-separated parts{hint}",
                   "Separate the fields with tabs; a file without events is written "
                   "`filename<TAB><TAB>...` with empty fields.")
    raise _error(path, line_no, f"has {len(fields)} tab-separated field(s) where the header has "
                 f"{width}{hint}", "Give every row one field per header column, separated by tabs.")
  return fields


def _parse_time(path: PathLike, line_no: int, name: str, text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise _error(path, line_no, f"{name} {text!r} is not a number",
                 "Write times in seconds, for example 1.25.") from None
  if not math.isfinite(value):
    raise _error(path, line_no, f"{name} is {text!r}, not a finite number",
                 "Write times in seconds, for example 1.25.")
  if value < 0:
    raise _error(path, line_no, f"{name} {text!r} is negative",
                 "Times count seconds from the start of the clip; fix the row.")
  return value + 0.0  # -0.0 -> 0.0


def _check_label(path: PathLike, line_no: int, label: str,
                 classes: frozenset[str] | None, known: Sequence[str] | None) -> None:
  if not label:
    raise _error(path, line_no, "event label is empty", "Give every event a class label.")
  if classes is not None and label not in classes:
    close = difflib.get_close_matches(label, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise _error(path, line_no, f"label {label!r} is not a known class",
                 f"Known classes: {', '.join(known)}.{hint} Fix the label or the class list.")


def _parse_event(path: PathLike, line_no: int, onset_text: str, offset_text: str, label: str,
                 classes: frozenset[str] | None, known: Sequence[str] | None) -> Event:
  onset = _parse_time(path, line_no, "onset", onset_text)
  offset = _parse_time(path, line_no, "offset", offset_text)
  if onset > offset:
    raise _error(path, line_no, f"onset {onset_text} is after offset {offset_text}",
                 "Swap them or correct the row (onset <= offset).")
  _check_label(path, line_no, label, classes, known)
  return Event(onset, offset, label)


def _class_set(classes: Sequence[str] | None) -> tuple[frozenset[str] | None, list[str] | None]:
  if classes is None:
    return None, None
  if isinstance(classes, str):
    raise TypeError("classes must be a sequence of class names, not a single string.")
  return frozenset(classes), list(classes)


def read_strong_tsv(path: PathLike, classes: Sequence[str] | None = None,
                    bad_rows: dict[str, str] | None = None) -> dict[str, list[Event]]:
  """Reads a DCASE strong TSV into {filename: events sorted by onset}.

  Files listed only with an empty row map to []. See the module docstring for the rules.

  Args:
    path: the TSV file.
    classes: when given, every label must be one of them.
    bad_rows: when given, a bad row does not raise: its message is stored under its filename
      (or `path:line` when the row has none) and that file is left out of the result, since its
      labels are incomplete. Builders use this for `on_error=skip`. Header errors always raise.

  Raises:
    AnnotationError: naming `file:line`, for a missing header or column, a row with the wrong
      number of fields, a non-numeric, non-finite or negative time, onset > offset, an empty
      label or a label not in `classes`.
  """
  class_set, known = _class_set(classes)
  cols, width, rows = _parse_header(path, _read_lines(path), STRONG_COLUMNS)
  found: dict[str, set[Event]] = {}

  def parse_row(line_no: int, line: str) -> None:
    row = _file_row(path, line_no, line, width, cols, found)
    if row is None:
      return
    filename, fields = row
    onset, offset, label = (fields[cols[c]] for c in STRONG_COLUMNS[1:])
    events = found[filename]
    if not (onset or offset or label):
      return  # "no event in this file".
    if not (onset and offset and label):
      empty = [c for c, v in zip(STRONG_COLUMNS[1:], (onset, offset, label)) if not v]
      raise _error(path, line_no, f"{', '.join(empty)} empty while the other event field(s) "
                   "are set", "Fill in onset, offset and event_label, or leave all three empty "
                   "for a file without events.")
    events.add(_parse_event(path, line_no, onset, offset, label, class_set, known))

  _parse_rows(path, rows, parse_row, bad_rows)
  return {name: sorted(events) for name, events in found.items()
          if bad_rows is None or name not in bad_rows}


def _file_row(path: PathLike, line_no: int, line: str, width: int, cols: dict[str, int],
              found: dict[str, set]) -> tuple[str, list[str]] | None:
  """Splits a data row and registers its file in `found`; None for a filename-only row."""
  fields = _split_row(path, line_no, line, width)
  if fields is None:
    found.setdefault(line.strip(), set())
    return None
  filename = fields[cols["filename"]]
  if not filename:
    raise _error(path, line_no, "filename is empty", "Every row starts with the audio file name.")
  found.setdefault(filename, set())
  return filename, fields


def _parse_rows(path: PathLike, rows: list[tuple[int, str]], parse_row,
                bad_rows: dict[str, str] | None) -> None:
  """Runs `parse_row` on each data row; with `bad_rows`, records errors instead of raising."""
  for line_no, line in rows:
    try:
      parse_row(line_no, line)
    except AnnotationError as e:
      if bad_rows is None:
        raise
      filename = line.split("\t", 1)[0].strip() or f"{os.fspath(path)}:{line_no}"
      bad_rows.setdefault(filename, str(e))


def read_weak_tsv(path: PathLike, classes: Sequence[str] | None = None,
                  bad_rows: dict[str, str] | None = None) -> dict[str, list[str]]:
  """Reads a DCASE weak TSV into {filename: sorted unique labels}.

  A file on several rows gets the union of their labels; an empty label field (or a row with
  only the filename) means no event. Empty items in the comma-separated list are ignored.
  `bad_rows` works as in `read_strong_tsv`.

  Raises:
    AnnotationError: naming `file:line`, for a missing header or column, a row with the wrong
      number of fields or a label not in `classes`.
  """
  class_set, known = _class_set(classes)
  cols, width, rows = _parse_header(path, _read_lines(path), WEAK_COLUMNS)
  found: dict[str, set[str]] = {}

  def parse_row(line_no: int, line: str) -> None:
    row = _file_row(path, line_no, line, width, cols, found)
    if row is None:
      return
    filename, fields = row
    labels = found[filename]
    for label in fields[cols["event_labels"]].split(","):
      label = label.strip()
      if label:
        _check_label(path, line_no, label, class_set, known)
        labels.add(label)

  _parse_rows(path, rows, parse_row, bad_rows)
  return {name: sorted(labels) for name, labels in found.items()
          if bad_rows is None or name not in bad_rows}


def read_urbansed_txt(path: PathLike, classes: Sequence[str] | None = None) -> list[Event]:
  """Reads one URBAN-SED annotation `.txt` (rows `onset offset label`, no header).

  A row with a tab is split on tabs (so labels may contain spaces); a row without one is split on
  the first two runs of whitespace. Returns the events sorted by onset, duplicates removed.

  Raises:
    AnnotationError: naming `file:line`, for a row without exactly three fields, a bad time,
      onset > offset or a label not in `classes`.
  """
  class_set, known = _class_set(classes)
  events: set[Event] = set()
  for line_no, line in _read_lines(path):
    fields = line.split("\t") if "\t" in line else line.split(None, 2)
    fields = [f.strip() for f in fields]
    if len(fields) != 3:
      raise _error(path, line_no, f"has {len(fields)} field(s), expected 3 (onset, offset, "
                   "label)", "URBAN-SED .txt rows are `onset<TAB>offset<TAB>label`, no header.")
    events.add(_parse_event(path, line_no, *fields, class_set, known))
  return sorted(events)


# ---------------------------------------------------------------------------------------------
# Writing.


def _format_time(value: float) -> str:
  """Seconds with at most 6 decimals, trailing zeros dropped (see the module docstring)."""
  text = f"{value + 0.0:.6f}".rstrip("0")
  return text + "0" if text.endswith(".") else text


def _check_text(path: PathLike, what: str, text: str, forbidden: str = "\t\n\r") -> None:
  if not isinstance(text, str) or not text or text != text.strip() or any(
      c in text for c in forbidden):
    raise _error(path, None, f"cannot write {what} {text!r}",
                 "Names and labels must be non-empty strings without tabs, line breaks or "
                 "surrounding spaces" + (" or commas" if "," in forbidden else "") +
                 " (they would not read back the same).")


def _atomic_write_text(path: PathLike, text: str) -> None:
  """Writes UTF-8 text through a temporary file in the same folder and a rename."""
  p = pathlib.Path(path)
  try:
    with io_utils.atomic_write(p, "w", encoding="utf-8", newline="") as f:
      f.write(text)
  except OSError as e:
    raise _error(p, None, f"writing failed ({e.strerror or e})",
                 "Check the free disk space and the folder's permissions.") from e


def write_strong_tsv(path: PathLike, events_by_file: Mapping[str, Iterable[Event]]) -> None:
  """Writes {filename: [Event, ...]} as a DCASE strong TSV (files with no event get an empty row).

  Files keep the mapping's order; each file's events are written sorted and without duplicates.

  Raises:
    AnnotationError: an event that would not read back (non-finite or negative time,
      onset > offset, a name or label with a tab or line break).
  """
  out = ["\t".join(STRONG_COLUMNS)]
  for filename, events in events_by_file.items():
    _check_text(path, "filename", filename)
    events = sorted(set(events))
    if not events:
      out.append(f"{filename}\t\t\t")
    for e in events:
      _check_text(path, f"label of {filename}", e.label)
      if not (math.isfinite(e.onset) and math.isfinite(e.offset) and 0 <= e.onset <= e.offset):
        raise _error(path, None, f"cannot write event {e} of {filename}",
                     "Times must be finite with 0 <= onset <= offset.")
      out.append(f"{filename}\t{_format_time(e.onset)}\t{_format_time(e.offset)}\t{e.label}")
  _atomic_write_text(path, "\n".join(out) + "\n")


def write_weak_tsv(path: PathLike, labels_by_file: Mapping[str, Iterable[str]]) -> None:
  """Writes {filename: labels} as a DCASE weak TSV (labels sorted, unique, comma-separated).

  Raises:
    AnnotationError: a name or label that would not read back (tab, line break, or a comma in a
      label).
  """
  out = ["\t".join(WEAK_COLUMNS)]
  for filename, labels in labels_by_file.items():
    _check_text(path, "filename", filename)
    labels = sorted(set(labels))
    for label in labels:
      _check_text(path, f"label of {filename}", label, forbidden="\t\n\r,")
    out.append(f"{filename}\t{','.join(labels)}")
  _atomic_write_text(path, "\n".join(out) + "\n")


# ---------------------------------------------------------------------------------------------
# Helpers for dataset builders.


def clip_events(events: Iterable[Event], duration: float) -> tuple[list[Event], int]:
  """Fits events into a clip of `duration` seconds.

  Events that end after the clip are cut at `duration`; events that start at or after it are
  dropped (they describe audio that is not there). Order is kept.

  Returns:
    (the events that remain, how many were cut or dropped), so builders can report the count.
  """
  if not math.isfinite(duration) or duration < 0:
    raise ValueError(f"duration must be a finite number >= 0, got {duration!r}.")
  kept: list[Event] = []
  changed = 0
  for e in events:
    if e.onset >= duration:
      changed += 1
    elif e.offset > duration:
      kept.append(dataclasses.replace(e, offset=float(duration)))
      changed += 1
    else:
      kept.append(e)
  return kept, changed


def check_audio_present(filenames: Iterable[str], audio_dir: PathLike,
                        tsv_path: PathLike | None = None) -> None:
  """Checks that every annotated file has its audio in `audio_dir`.

  Collects ALL missing files before raising, so that one run shows the whole problem instead of
  one file per attempt.

  Args:
    filenames: annotated file names, relative to `audio_dir`.
    audio_dir: the folder that should hold them.
    tsv_path: the annotation file they come from, named in the message when given.

  Raises:
    AnnotationError: listing the first 20 missing files in order, plus how many more.
  """
  d = pathlib.Path(audio_dir)
  source = f" listed in {os.fspath(tsv_path)}" if tsv_path is not None else ""
  if not d.is_dir():
    raise _error(d, None, f"audio folder of the files{source} does not exist",
                 "Check the dataset layout: each split has its audio in an audio/ folder.")
  missing = list(dict.fromkeys(f for f in filenames if not (d / f).is_file()))
  if missing:
    listed = ", ".join(f + _not_a_file(d / f) for f in missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    raise _error(d, None, f"{len(missing)} annotated file(s){source} have no audio in "
                 f"this folder: {listed}{more}",
                 "Restore the audio files, or remove their rows from the annotations.")


def _not_a_file(path: pathlib.Path) -> str:
  """Why a path that is not a regular file still shows up in a folder listing, if it does."""
  if path.is_dir():
    return " (a directory, not a file)"
  if path.is_symlink():
    return " (a symlink to no file: broken, or a loop)"
  return ""


def events_to_weak(events: Iterable[Event]) -> list[str]:
  """The clip-level labels of a clip's events: sorted and unique."""
  return sorted({e.label for e in events})


def labels_in(annotations: Mapping[str, Iterable[Event | str]]) -> list[str]:
  """Sorted union of the labels in a strong ({file: [Event]}) or weak ({file: [label]}) mapping."""
  labels: set[str] = set()
  for items in annotations.values():
    labels.update(item.label if isinstance(item, Event) else item for item in items)
  return sorted(labels)
