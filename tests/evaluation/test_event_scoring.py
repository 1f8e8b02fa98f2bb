"""Tests for the scoring command (python -m sed_jax.score) on DCASE-style TSVs."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sed_jax.data import annotations
from sed_jax.data.annotations import Event
from sed_jax.evaluation import references
from sed_jax.evaluation import event_scoring

sed_eval = pytest.importorskip("sed_eval", reason="differential tests need the `test` extra")

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A reference with the oddities of real DCASE files: a byte-order mark and CRLF line ends, a
# file with no events (empty row), the same row twice, a label with a space, a zero-length
# event, events touching 0 s and 10 s, overlapping events of one class, 6-decimal times.
REFERENCE = (
    "\ufefffilename\tonset\toffset\tevent_label\r\n"
    "a.wav\t0.0\t1.5\tDog\r\n"
    "a.wav\t0.0\t1.5\tDog\r\n"
    "a.wav\t1.2\t3.0\tDog\r\n"
    "a.wav\t2.000004\t10.0\tVacuum cleaner\r\n"
    "b.wav\t\t\t\r\n"
    "c.wav\t4.5\t4.5\tSpeech\r\n"
    "c.wav\t5.0\t7.25\tSpeech\r\n"
)
ESTIMATED = (
    "filename\tonset\toffset\tevent_label\n"
    "a.wav\t0.1\t1.6\tDog\n"
    "a.wav\t2.1\t9.9\tVacuum cleaner\n"
    "b.wav\t3.0\t3.5\tSpeech\n"
    "c.wav\t5.1\t7.5\tDog\n"
)
DURATIONS = "filename\tduration\na.wav\t10.0\nb.wav\t10\nc.wav\t7.25\nd.wav\t10.0\n"


@pytest.fixture(name="tsvs")
def _tsvs(tmp_path):
  paths = {}
  for name, text in (("ref", REFERENCE), ("est", ESTIMATED), ("dur", DURATIONS)):
    paths[name] = tmp_path / f"{name}.tsv"
    paths[name].write_bytes(text.encode("utf-8"))
  return paths


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "sed_jax.score", *args],
                        capture_output=True, text=True, cwd=ROOT, check=False)


def _sed_eval(reference, estimated, classes, durations=None, percentage_of_length=0.2):
  return references.run_sed_eval(reference, estimated, classes, durations, percentage_of_length)


def _close(a, b):
  if a is None or (isinstance(b, float) and math.isnan(b)):
    return a is None and (b is None or math.isnan(b))
  return abs(a - b) <= 1e-6


def test_score_of_dcase_files_equals_sed_eval(tsvs):
  reference = annotations.read_strong_tsv(tsvs["ref"])
  estimated = annotations.read_strong_tsv(tsvs["est"])
  durations = event_scoring.read_durations_tsv(tsvs["dur"])
  result = event_scoring.score(reference, estimated, durations)
  assert result["classes"] == ["Dog", "Speech", "Vacuum cleaner"]
  assert result["n_files"] == 4  # d.wav comes from the durations: no events there.
  seg, ev = _sed_eval({**reference, "d.wav": []}, estimated, result["classes"], durations)
  for prefix, ref in (("segment", seg), ("event", ev)):
    overall = ref.results_overall_metrics()
    assert _close(result[f"{prefix}_f1_micro"], overall["f_measure"]["f_measure"])
    assert _close(result[f"{prefix}_er"], overall["error_rate"]["error_rate"])
    average = ref.results_class_wise_average_metrics()
    assert _close(result[f"{prefix}_f1_macro"], average["f_measure"]["f_measure"])
    for c, row in ref.results_class_wise_metrics().items():
      assert _close(result["class_wise"][c][prefix]["f1"], row["f_measure"]["f_measure"])
  assert result["event_n_ref"] == 5  # The duplicated row counts once.


def test_duration_rule_without_durations(tsvs):
  reference = annotations.read_strong_tsv(tsvs["ref"])
  estimated = annotations.read_strong_tsv(tsvs["est"])
  result = event_scoring.score(reference, estimated)
  # a: last offset 10.0; b: 3.5 (its estimate); c: 7.5 (estimate past the reference).
  assert result["segment_evaluated_seconds"] == 10.0 + 3.5 + 7.5
  assert result["n_files"] == 3
  seg, _ = _sed_eval(reference, estimated, result["classes"])
  assert _close(result["segment_er"], seg.results_overall_metrics()["error_rate"]["error_rate"])


def test_random_sets_through_tsv_files_equal_sed_eval(tmp_path):
  """Random sets written and read back as TSVs: the command's path end to end."""
  rng = np.random.default_rng(0)
  for i in range(30):
    classes = ["Dog", "Speech", "Alarm"]
    reference, estimated = {}, {}
    for f in range(int(rng.integers(1, 5))):
      name = f"clip{f}.wav"
      reference[name] = []
      estimated[name] = []
      for target in (reference[name], estimated[name]):
        for _ in range(int(rng.integers(0, 5))):
          onset = float(np.round(rng.uniform(0, 9), 3))
          target.append(Event(onset, float(np.round(onset + rng.uniform(0, 2), 3)),
                              classes[int(rng.integers(3))]))
    annotations.write_strong_tsv(tmp_path / "r.tsv", reference)
    annotations.write_strong_tsv(tmp_path / "e.tsv", estimated)
    ref_read = annotations.read_strong_tsv(tmp_path / "r.tsv")
    est_read = annotations.read_strong_tsv(tmp_path / "e.tsv")
    result = event_scoring.score(ref_read, est_read, classes=classes, percentage_of_length=0.5)
    seg, ev = _sed_eval(ref_read, est_read, classes, percentage_of_length=0.5)
    for prefix, ref in (("segment", seg), ("event", ev)):
      overall = ref.results_overall_metrics()
      assert _close(result[f"{prefix}_f1_micro"], overall["f_measure"]["f_measure"]), i
      if ref.overall["Nref"] > 0:
        assert _close(result[f"{prefix}_er"], overall["error_rate"]["error_rate"]), i


def test_cli_json(tsvs):
  done = _cli(f"--reference={tsvs['ref']}", f"--estimated={tsvs['est']}",
              f"--audio_durations={tsvs['dur']}", "--json")
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout)
  for key in ("segment_f1_micro", "segment_f1_macro", "segment_er", "event_f1_macro",
              "event_f1_micro", "event_er", "class_wise"):
    assert key in out
  expected = event_scoring.score(annotations.read_strong_tsv(tsvs["ref"]),
                         annotations.read_strong_tsv(tsvs["est"]),
                         event_scoring.read_durations_tsv(tsvs["dur"]))
  assert out == json.loads(json.dumps(expected))
  assert set(out["class_wise"]["Dog"]) == {"segment", "event"}


def test_cli_table_and_help(tsvs):
  done = _cli(f"--reference={tsvs['ref']}", f"--estimated={tsvs['est']}")
  assert done.returncode == 0, done.stderr
  for text in ("segment-based", "event-based", "Vacuum cleaner", "F1 macro"):
    assert text in done.stdout
  shown = _cli("--help").stdout
  assert "last reference or estimated offset" in shown
  assert "--audio_durations" in shown


def test_cli_errors_for_people(tsvs, tmp_path):
  other = tmp_path / "other.tsv"
  other.write_text("filename\tonset\toffset\tevent_label\nz.wav\t1\t2\tDog\n", encoding="utf-8")
  done = _cli(f"--reference={tsvs['ref']}", f"--estimated={other}")
  assert done.returncode == 1
  assert "'z.wav'" in done.stderr and "not in the reference" in done.stderr
  assert "Traceback" not in done.stderr
  short = tmp_path / "short.tsv"
  short.write_text("filename\tduration\na.wav\t10\n", encoding="utf-8")
  done = _cli(f"--reference={tsvs['ref']}", f"--estimated={tsvs['est']}",
              f"--audio_durations={short}")
  assert done.returncode == 1 and "durations lack" in done.stderr


def test_read_durations_errors(tmp_path):
  bad = tmp_path / "d.tsv"
  bad.write_text("filename\tduration\na.wav\tten\n", encoding="utf-8")
  with pytest.raises(annotations.AnnotationError, match=r"d\.tsv:2: duration 'ten'"):
    event_scoring.read_durations_tsv(bad)
  bad.write_text("name\tlength\na.wav\t10\n", encoding="utf-8")
  with pytest.raises(annotations.AnnotationError, match=r"d\.tsv:1: header"):
    event_scoring.read_durations_tsv(bad)
  bad.write_text("filename\tduration\na.wav\t10\na.wav\t9\n", encoding="utf-8")
  with pytest.raises(annotations.AnnotationError, match="listed twice"):
    event_scoring.read_durations_tsv(bad)
