"""Tests for sed_jax.data.annotations: DCASE formats, round trips and file:line errors."""

from __future__ import annotations

import pathlib

import pytest

from sed_jax.data import annotations as ann
from sed_jax.data.annotations import AnnotationError, Event

CLASSES = ["Alarm_bell_ringing", "Dog", "Speech", "Vacuum cleaner", "Café ambiance"]
STRONG_HEADER = "filename\tonset\toffset\tevent_label\n"
WEAK_HEADER = "filename\tevent_labels\n"


def _write(tmp_path: pathlib.Path, text: str, name: str = "a.tsv",
           encoding: str = "utf-8") -> pathlib.Path:
  path = tmp_path / name
  path.write_bytes(text.encode(encoding))
  return path


def _raises_at(path: pathlib.Path, line: int | None, phrase: str, fn, *args, **kwargs) -> str:
  """Calls fn, expects an AnnotationError at `path:line` holding `phrase`; returns the message."""
  with pytest.raises(AnnotationError) as err:
    fn(*args, **kwargs)
  message = str(err.value)
  where = str(path) if line is None else f"{path}:{line}:"
  assert message.startswith(where), message
  assert phrase in message, message
  return message


# ----------------------------------------------------------------------------- strong TSV


def test_read_strong_tsv(tmp_path):
  path = _write(tmp_path, STRONG_HEADER + (
      "b.wav\t3.5\t4.25\tDog\n"
      "b.wav\t0.0\t10.0\tSpeech\n"
      "a.wav\t\t\t\n"
      "c.wav\t1\t2\tDog\n"
      "b.wav\t1.0\t2.0\tDog\n"))
  got = ann.read_strong_tsv(path, CLASSES)
  assert list(got) == ["b.wav", "a.wav", "c.wav"]  # Order of first appearance.
  assert got["b.wav"] == [Event(0.0, 10.0, "Speech"), Event(1.0, 2.0, "Dog"),
                          Event(3.5, 4.25, "Dog")]  # Sorted by onset.
  assert got["a.wav"] == []
  assert got["c.wav"] == [Event(1.0, 2.0, "Dog")]
  assert isinstance(got["c.wav"][0].onset, float)


def test_strong_empty_rows_forms(tmp_path):
  path = _write(tmp_path, STRONG_HEADER + "a.wav\t\t\t\nb.wav\nc.wav\t \t \t \nd.wav\t\t\t\n"
                "d.wav\t1\t2\tDog\n")
  assert ann.read_strong_tsv(path) == {
      "a.wav": [], "b.wav": [], "c.wav": [], "d.wav": [Event(1.0, 2.0, "Dog")]}


def test_strong_crlf_bom_blank_lines_and_unicode(tmp_path):
  text = ("\n" + STRONG_HEADER + "\n\n" + "a.wav\t0.5\t1.5\tVacuum cleaner\n"
          + "\n" + "b.wav\t 2 \t3\t Café ambiance \n\n").replace("\n", "\r\n")
  path = _write(tmp_path, "\ufeff" + text)
  assert ann.read_strong_tsv(path, CLASSES) == {
      "a.wav": [Event(0.5, 1.5, "Vacuum cleaner")], "b.wav": [Event(2.0, 3.0, "Café ambiance")]}
  # Line numbers count the blank lines, like an editor: b.wav's row is line 7.
  bad = _write(tmp_path, "\ufeff" + text.replace("\t3\t", "\tx\t"), "bad.tsv")
  _raises_at(bad, 7, "offset 'x' is not a number", ann.read_strong_tsv, bad)


def test_strong_old_mac_line_endings(tmp_path):
  path = _write(tmp_path, (STRONG_HEADER + "a.wav\t0\t1\tDog\n").replace("\n", "\r"))
  assert ann.read_strong_tsv(path) == {"a.wav": [Event(0.0, 1.0, "Dog")]}


def test_strong_duplicates_and_overlaps(tmp_path):
  path = _write(tmp_path, STRONG_HEADER + (
      "a.wav\t1.0\t2.0\tDog\n"
      "a.wav\t1\t2.000\tDog\n"      # The same event written differently: kept once.
      "a.wav\t1.5\t3.0\tDog\n"      # Overlaps the first: kept as it is.
      "a.wav\t1.0\t2.0\tSpeech\n"))
  assert ann.read_strong_tsv(path)["a.wav"] == [
      Event(1.0, 2.0, "Dog"), Event(1.0, 2.0, "Speech"), Event(1.5, 3.0, "Dog")]


def test_strong_extra_and_reordered_columns(tmp_path):
  path = _write(tmp_path, "event_label\tfilename\tconfidence\toffset\tonset\n"
                "Dog\ta.wav\t0.9\t2.5\t1.5\n")
  assert ann.read_strong_tsv(path) == {"a.wav": [Event(1.5, 2.5, "Dog")]}


def test_strong_zero_length_event_is_allowed(tmp_path):
  path = _write(tmp_path, STRONG_HEADER + "a.wav\t1.5\t1.5\tDog\n")
  assert ann.read_strong_tsv(path) == {"a.wav": [Event(1.5, 1.5, "Dog")]}


@pytest.mark.parametrize("row,line,phrase", [
    ("a.wav\tx\t2\tDog", 3, "onset 'x' is not a number"),
    ("a.wav\t1\t2,5\tDog", 3, "offset '2,5' is not a number"),
    ("a.wav\t-0.5\t2\tDog", 3, "onset '-0.5' is negative"),
    ("a.wav\t1\t-2\tDog", 3, "offset '-2' is negative"),
    ("a.wav\t3\t2\tDog", 3, "onset 3 is after offset 2"),
    ("a.wav\tnan\t2\tDog", 3, "onset is 'nan', not a finite number"),
    ("a.wav\t1\tinf\tDog", 3, "offset is 'inf', not a finite number"),
    ("a.wav\t1\t-Infinity\tDog", 3, "offset is '-Infinity', not a finite number"),
    ("a.wav\t1\t2", 3, "has 3 tab-separated field(s) where the header has 4"),
    ("a.wav\t1\t2\tDog\textra", 3, "has 5 tab-separated field(s)"),
    ("a.wav 1 2 Dog", 3, "separated by spaces instead of tabs"),
    ("a.wav 1 2 Dog barking", 3, None),  # Not 4 parts: a filename-only row (no events).
    ("a.wav\t1\t\tDog", 3, "offset empty while the other event field(s) are set"),
    ("a.wav\t\t\tDog", 3, "onset, offset empty"),
    ("\t1\t2\tDog", 3, "filename is empty"),
    ("a.wav\t1\t2\tCat", 3, "label 'Cat' is not a known class"),
    ("a.wav\t1\t2\tdog", 3, "Did you mean 'Dog'?"),
])
def test_strong_row_errors(tmp_path, row, line, phrase):
  path = _write(tmp_path, STRONG_HEADER + "ok.wav\t0\t1\tDog\n" + row + "\nz.wav\t0\t1\tDog\n")
  if phrase is None:
    assert ann.read_strong_tsv(path, CLASSES)[row] == []
    return
  message = _raises_at(path, line, phrase, ann.read_strong_tsv, path, CLASSES)
  if "known class" in message:
    assert ("Known classes: Alarm_bell_ringing, Dog, Speech, Vacuum cleaner, Café ambiance"
            in message)


def test_strong_unknown_labels_are_fine_without_classes(tmp_path):
  path = _write(tmp_path, STRONG_HEADER + "a.wav\t1\t2\tCat\n")
  assert ann.read_strong_tsv(path) == {"a.wav": [Event(1.0, 2.0, "Cat")]}


@pytest.mark.parametrize("text,line,phrase", [
    ("", None, "file is empty"),
    ("\n\r\n  \n", None, "file is empty"),
    ("a.wav\t1\t2\tDog\n", 1, "The file has no header"),
    ("filename\tonset\toffset\n", 1, "lacks the column(s) event_label"),
    ("filename\tstart\tend\tevent_label\n", 1, "lacks the column(s) onset, offset"),
    ("filename onset offset event_label\n", 1, "separated by spaces"),
    ("\n\nfile\tonset\toffset\tevent_label\n", 3, "lacks the column(s) filename"),
])
def test_strong_header_errors(tmp_path, text, line, phrase):
  path = _write(tmp_path, text)
  _raises_at(path, line, phrase, ann.read_strong_tsv, path)


def test_file_errors(tmp_path):
  missing = tmp_path / "missing.tsv"
  _raises_at(missing, None, "does not exist", ann.read_strong_tsv, missing)
  _raises_at(tmp_path, None, "is a directory", ann.read_weak_tsv, tmp_path)
  bad = _write(tmp_path, STRONG_HEADER + "a.wav\t1\t2\tDog\n", encoding="latin-1")
  bad.write_bytes(bad.read_bytes() + "b.wav\t1\t2\tCafé\n".encode("latin-1"))
  _raises_at(bad, 3, "is not valid UTF-8", ann.read_strong_tsv, bad)


# ----------------------------------------------------------------------------- weak TSV


def test_read_weak_tsv(tmp_path):
  path = _write(tmp_path, "\ufeff" + (WEAK_HEADER + (
      "b.wav\tSpeech,Dog\n"
      "a.wav\t\n"
      "c.wav\n"
      "d.wav\t Vacuum cleaner , Dog,,Dog\n"
      "b.wav\tAlarm_bell_ringing\n")).replace("\n", "\r\n"))
  assert ann.read_weak_tsv(path, CLASSES) == {
      "b.wav": ["Alarm_bell_ringing", "Dog", "Speech"], "a.wav": [], "c.wav": [],
      "d.wav": ["Dog", "Vacuum cleaner"]}


@pytest.mark.parametrize("text,line,phrase", [
    ("filename\tevent_label\n", 1, "lacks the column(s) event_labels"),
    (WEAK_HEADER + "a.wav\tDog\n\nb.wav\tDog\tSpeech\n", 4, "has 3 tab-separated field(s)"),
    (WEAK_HEADER + "a.wav\tDog,Cat\n", 2, "label 'Cat' is not a known class"),
    (WEAK_HEADER + "\tDog\n", 2, "filename is empty"),
    (WEAK_HEADER + "a.wav\tDog\nb.wav Dog\n", 3, "separated by spaces instead of tabs"),
])
def test_weak_errors(tmp_path, text, line, phrase):
  path = _write(tmp_path, text)
  _raises_at(path, line, phrase, ann.read_weak_tsv, path, CLASSES)


# ----------------------------------------------------------------------------- URBAN-SED


def test_read_urbansed_txt(tmp_path):
  path = _write(tmp_path, "\ufeff2.5\t4.0\tcar_horn\r\n0.0 1.25  dog_bark\r\n\r\n"
                "5\t6\tvacuum cleaner\n6 7  street music\n0.0\t1.25\tdog_bark\n", "s.txt")
  assert ann.read_urbansed_txt(path) == [
      Event(0.0, 1.25, "dog_bark"), Event(2.5, 4.0, "car_horn"),
      Event(5.0, 6.0, "vacuum cleaner"), Event(6.0, 7.0, "street music")]
  assert ann.read_urbansed_txt(_write(tmp_path, "", "empty.txt")) == []


@pytest.mark.parametrize("text,line,phrase", [
    ("0\t1\tdog_bark\n\n0\t1\n", 3, "has 2 field(s), expected 3"),
    ("0\t1\tdog_bark\textra\n", 1, "has 4 field(s)"),
    ("onset\toffset\tlabel\n", 1, "onset 'onset' is not a number"),
    ("0\t1\tdog_bark\n2 1 dog_bark\n", 2, "onset 2 is after offset 1"),
    ("0\tnan\tdog_bark\n", 1, "not a finite number"),
    ("0\t1\tsiren\n", 1, "label 'siren' is not a known class"),
])
def test_urbansed_errors(tmp_path, text, line, phrase):
  path = _write(tmp_path, text, "s.txt")
  _raises_at(path, line, phrase, ann.read_urbansed_txt, path, ["dog_bark", "car_horn"])


# ----------------------------------------------------------------------------- writing


def test_strong_round_trip(tmp_path):
  events = {
      "b.wav": [Event(0.123, 1.5, "Dog"), Event(0.1 + 0.2, 9.999, "Café ambiance"),
                Event(2.0, 2.0, "Vacuum cleaner")],
      "a.wav": [],
      "ü/c.wav": [Event(0.0, 10.0, "Speech"), Event(1e-3, 0.24000000000000002, "Dog")],
  }
  path = tmp_path / "out" / "strong.tsv"  # Parent folders are created.
  ann.write_strong_tsv(path, events)
  assert path.read_text(encoding="utf-8").splitlines()[:4] == [
      "filename\tonset\toffset\tevent_label", "b.wav\t0.123\t1.5\tDog",
      "b.wav\t0.3\t9.999\tCafé ambiance", "b.wav\t2.0\t2.0\tVacuum cleaner"]
  assert "a.wav\t\t\t" in path.read_text(encoding="utf-8").splitlines()
  assert ann.read_strong_tsv(path, CLASSES) == {
      "b.wav": [Event(0.123, 1.5, "Dog"), Event(0.3, 9.999, "Café ambiance"),
                Event(2.0, 2.0, "Vacuum cleaner")],
      "a.wav": [],
      "ü/c.wav": [Event(0.0, 10.0, "Speech"), Event(0.001, 0.24, "Dog")]}
  assert [p.name for p in path.parent.iterdir()] == ["strong.tsv"]  # No temporary file left.


def test_strong_round_trip_is_exact_for_millisecond_times(tmp_path):
  events = {f"f{i}.wav": [Event(i / 1000, (i + j) / 1000, "Dog") for j in range(0, 4000, 7)]
            for i in range(0, 60000, 997)}
  ann.write_strong_tsv(tmp_path / "s.tsv", events)
  assert ann.read_strong_tsv(tmp_path / "s.tsv") == {k: sorted(set(v)) for k, v in events.items()}


def test_strong_write_sorts_dedups_and_replaces(tmp_path):
  path = tmp_path / "s.tsv"
  path.write_text("old content")
  ann.write_strong_tsv(path, {"a.wav": [Event(2, 3, "Dog"), Event(1, 2, "Dog"),
                                        Event(2, 3, "Dog")]})
  assert path.read_text() == STRONG_HEADER + "a.wav\t1.0\t2.0\tDog\na.wav\t2.0\t3.0\tDog\n"
  assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("events_by_file,phrase", [
    ({"a.wav": [Event(-1.0, 2.0, "Dog")]}, "cannot write event"),
    ({"a.wav": [Event(3.0, 2.0, "Dog")]}, "cannot write event"),
    ({"a.wav": [Event(0.0, float("nan"), "Dog")]}, "cannot write event"),
    ({"a.wav": [Event(0.0, 1.0, "Do\tg")]}, "cannot write label"),
    ({"a.wav": [Event(0.0, 1.0, "")]}, "cannot write label"),
    ({"a\nb.wav": []}, "cannot write filename"),
    ({" a.wav": []}, "cannot write filename"),
])
def test_strong_write_refuses_what_would_not_read_back(tmp_path, events_by_file, phrase):
  path = tmp_path / "s.tsv"
  _raises_at(path, None, phrase, ann.write_strong_tsv, path, events_by_file)
  assert not path.exists() and not list(tmp_path.iterdir())


def test_weak_round_trip(tmp_path):
  labels = {"b.wav": ["Speech", "Dog", "Dog"], "a.wav": [], "c.wav": ("Vacuum cleaner",)}
  path = tmp_path / "w.tsv"
  ann.write_weak_tsv(path, labels)
  assert path.read_text(encoding="utf-8") == (
      WEAK_HEADER + "b.wav\tDog,Speech\na.wav\t\nc.wav\tVacuum cleaner\n")
  assert ann.read_weak_tsv(path) == {
      "b.wav": ["Dog", "Speech"], "a.wav": [], "c.wav": ["Vacuum cleaner"]}
  _raises_at(path, None, "cannot write label", ann.write_weak_tsv, path, {"a.wav": ["Dog,Cat"]})


# ----------------------------------------------------------------------------- helpers


def test_clip_events():
  events = [
      Event(0.0, 2.0, "Dog"),       # Inside: kept.
      Event(8.0, 10.0, "Dog"),      # Ends exactly at the end: kept.
      Event(9.0, 12.5, "Speech"),   # Runs past the end: clipped.
      Event(10.0, 11.0, "Dog"),     # Starts at the end: dropped.
      Event(10.0, 10.0, "Dog"),     # Zero-length at the end: dropped.
      Event(15.0, 16.0, "Dog"),     # Starts after the end: dropped.
      Event(3.0, 4.0, "Speech"),    # Order is kept.
  ]
  kept, changed = ann.clip_events(events, 10.0)
  assert kept == [Event(0.0, 2.0, "Dog"), Event(8.0, 10.0, "Dog"), Event(9.0, 10.0, "Speech"),
                  Event(3.0, 4.0, "Speech")]
  assert changed == 4
  assert ann.clip_events([], 10.0) == ([], 0)
  assert ann.clip_events(events[:2], 10.0) == (events[:2], 0)
  assert ann.clip_events(events, 0.0) == ([], len(events))
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="duration"):
      ann.clip_events(events, bad)


def test_check_audio_present(tmp_path):
  audio_dir = tmp_path / "audio"
  audio_dir.mkdir()
  present = [f"p{i}.wav" for i in range(3)]
  for name in present:
    (audio_dir / name).write_bytes(b"x")
  (audio_dir / "dir.wav").mkdir()  # A folder is not audio.
  ann.check_audio_present(present, audio_dir)
  ann.check_audio_present([], audio_dir)

  missing = [f"m{i:02d}.wav" for i in range(25)]
  names = present + missing[:10] + ["dir.wav"] + present + missing[10:] + missing[:3]
  message = _raises_at(audio_dir, None, "26 annotated file(s) listed in strong.tsv have no audio",
                       ann.check_audio_present, names, audio_dir, tsv_path="strong.tsv")
  listed = missing[:10] + ["dir.wav (a directory, not a file)"] + missing[10:19]
  assert ", ".join(listed) + " and 6 more." in message
  assert "m19.wav" not in message

  few = _raises_at(audio_dir, None, "1 annotated file(s) have no audio",
                   ann.check_audio_present, ["p0.wav", "gone.wav"], audio_dir)
  assert "gone.wav" in few and "more" not in few
  _raises_at(tmp_path / "nope", None, "does not exist",
             ann.check_audio_present, ["a.wav"], tmp_path / "nope", tsv_path="s.tsv")


def test_labels_in_and_events_to_weak():
  strong = {"a.wav": [Event(0, 1, "Speech"), Event(1, 2, "Dog")], "b.wav": [],
            "c.wav": [Event(0, 1, "Dog"), Event(0, 1, "Café ambiance")]}
  weak = {"a.wav": ["Speech"], "b.wav": [], "c.wav": ["Alarm_bell_ringing", "Dog"]}
  assert ann.labels_in(strong) == ["Café ambiance", "Dog", "Speech"]
  assert ann.labels_in(weak) == ["Alarm_bell_ringing", "Dog", "Speech"]
  assert ann.labels_in({}) == []
  assert ann.events_to_weak(strong["c.wav"] + strong["a.wav"]) == ["Café ambiance", "Dog",
                                                                    "Speech"]
  assert ann.events_to_weak([]) == []


def test_classes_must_be_a_sequence(tmp_path):
  path = _write(tmp_path, STRONG_HEADER)
  assert ann.read_strong_tsv(path) == {}
  with pytest.raises(TypeError, match="sequence of class names"):
    ann.read_strong_tsv(path, "Dog")


def test_write_os_failure_is_an_annotation_error(tmp_path):
  (tmp_path / "file").write_bytes(b"x")
  path = tmp_path / "file" / "s.tsv"  # Its parent is a file, so the folder cannot be made.
  _raises_at(path, None, "writing failed", ann.write_weak_tsv, path, {"a.wav": []})


def test_bad_rows_are_collected_per_file_instead_of_raised(tmp_path):
  path = _write(tmp_path, "filename\tonset\toffset\tevent_label\n"
                "a.wav\t0\t1\tdog\n"
                "b.wav\t0\tx\tdog\n"          # Line 3: b.wav's labels are incomplete.
                "b.wav\t1\t2\tcat\n"
                "c.wav\t2\t1\tdog\n"          # Line 5: reversed.
                "\t1\t2\tdog\n")              # Line 6: no filename.
  bad = {}
  got = ann.read_strong_tsv(path, bad_rows=bad)
  assert got == {"a.wav": [Event(0.0, 1.0, "dog")]}
  assert set(bad) == {"b.wav", "c.wav", f"{path}:6"}
  assert f"{path}:3" in bad["b.wav"] and f"{path}:5" in bad["c.wav"]
  weak = _write(tmp_path, "filename\tevent_labels\na.wav\tdog\nb.wav\tbird\n", name="w.tsv")
  bad = {}
  assert ann.read_weak_tsv(weak, classes=["dog"], bad_rows=bad) == {"a.wav": ["dog"]}
  assert f"{weak}:3" in bad["b.wav"]
