"""Differential tests of sed_jax.evaluation.metrics against sed_eval and sed_scores_eval.

Hundreds of small random reference/estimate sets (seeded), built to hold the cases that break
naive implementations: overlapping events of one class, duplicated estimates, files without
events, events touching the clip start and end, zero-length and very short events, classes
that never occur, estimates past the clip end, times with 2 to 6 decimals, events in
shuffled order. Each must give sed_eval's numbers to 1e-6 (PSDS: sed_scores_eval's to 1e-3).

How the references are driven, and why:
- sed_eval is run file by file, as DESED_task does, with `empty_system_output_handling=
  'zero_score'` (DESED's setting; our rule for a class without estimates). Its segment-based
  class ignores that constructor argument, so the attribute is set after construction.
- Our macro averages are over classes with reference events; sed_eval's `nanmean`s are over
  other sets when some class is absent, so there we compare against the mean of sed_eval's
  class-wise values over our classes (see the metrics package docstring).
- sed_eval's `percentage_of_length` defaults to 0.5, DCASE's (and ours) is 0.2: both tested.
- sed_scores_eval refuses overlapping same-class ground truth; we merge it, so it is given the
  merged events. With pandas >= 3 its Cython detector receives read-only arrays and fails, so it
  is given copies (a shim that changes no number).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sed_jax.data.annotations import Event
from sed_jax.evaluation import metrics
from sed_jax.evaluation.metrics import psd

sed_eval = pytest.importorskip("sed_eval", reason="differential tests need the `test` extra")
sed_scores_eval = pytest.importorskip("sed_scores_eval",
                                      reason="differential tests need the `test` extra")
# pylint: disable=g-import-not-at-top
from sed_scores_eval import intersection_based
from sed_scores_eval.base_modules import statistics as sse_statistics
from sed_scores_eval.base_modules.scores import create_score_dataframe
# pylint: enable=g-import-not-at-top

POOL = ["Speech", "Dog", "Alarm_bell_ringing", "Vacuum cleaner", "Café"]
NUM_SETS = 240


# ---------------------------------------------------------------------------------------------
# Random sets with the tricky cases.


def _time(rng: np.random.Generator, x: float) -> float:
  return float(np.round(x, int(rng.choice([2, 3, 3, 6]))))


def _reference_events(rng: np.random.Generator, duration: float,
                      labels: list[str]) -> list[Event]:
  events = []
  for _ in range(int(rng.integers(0, 7))):
    label = labels[int(rng.integers(len(labels)))]
    onset = 0.0 if rng.random() < 0.15 else _time(rng, rng.uniform(0, duration))
    kind = rng.random()
    if kind < 0.15:  # Zero-length and very short events.
      length = float(rng.choice([0.0, 0.001, 0.01, 0.05]))
    elif kind < 0.8:
      length = _time(rng, rng.uniform(0.1, 3.0))
    else:
      length = _time(rng, rng.uniform(3.0, duration))
    offset = duration if rng.random() < 0.15 else min(duration, round(onset + length, 6))
    events.append(Event(min(onset, offset), offset, label))
    if rng.random() < 0.2:  # An overlapping event of the same class.
      shift = _time(rng, rng.uniform(-0.3, 0.3))
      on = max(0.0, round(onset + shift, 6))
      events.append(Event(on, max(on, min(duration, round(offset + 2 * shift, 6))), label))
  return events


def _estimated_events(rng: np.random.Generator, duration: float, reference: list[Event],
                      classes: list[str]) -> list[Event]:
  events = []
  for e in reference:
    if rng.random() < 0.15:
      continue  # Deletion.
    label = e.label if rng.random() < 0.8 else classes[int(rng.integers(len(classes)))]
    # Shifts at and around the collars (0.2 s, 20 % / 50 % of the length).
    onset = max(0.0, round(e.onset + float(rng.choice(
        [0.0, 0.2, -0.2, 0.1, 0.25, rng.normal(0, 0.2)])), 3))
    offset = max(onset, round(e.offset + float(rng.choice(
        [0.0, 0.2, -0.2, 0.2 * (e.offset - e.onset), 0.5 * (e.offset - e.onset),
         rng.normal(0, 0.4)])), 3))
    offset = min(offset, duration + 0.5)  # Sometimes past the clip end.
    events.append(Event(onset, offset, label))
    if rng.random() < 0.1:
      events.append(Event(onset, offset, label))  # Duplicate.
  for _ in range(int(rng.integers(0, 3))):  # Insertions, any class.
    onset = _time(rng, rng.uniform(0, duration))
    events.append(Event(onset, min(duration, round(onset + rng.uniform(0, 2), 3)),
                        classes[int(rng.integers(len(classes)))]))
  return events


def random_set(rng: np.random.Generator):
  """(classes, reference, estimated, durations): 3-5 files of <= 10 s, 3-4 classes."""
  classes = [str(c) for c in rng.choice(POOL, int(rng.integers(3, 5)), replace=False)]
  present = classes[:-1] if rng.random() < 0.5 else classes  # A class never in the reference.
  reference, estimated, durations = {}, {}, {}
  for i in range(int(rng.integers(3, 6))):
    duration = float(rng.choice([10.0, 10.0, 9.5, 7.25]))
    name = f"clip_{i}.wav"
    ref = [] if rng.random() < 0.15 else _reference_events(rng, duration, present)
    est = [] if rng.random() < 0.1 else _estimated_events(rng, duration, ref, classes)
    if rng.random() < 0.5:
      rng.shuffle(ref)
      rng.shuffle(est)
    reference[name], durations[name] = ref, duration
    if rng.random() > 0.1:  # Else the system wrote nothing for this file.
      estimated[name] = est
  return classes, reference, estimated, durations


def _dicts(name: str, events: list[Event]) -> list[dict]:
  return [{"filename": name, "event_onset": e.onset, "event_offset": e.offset,
           "event_label": e.label} for e in events]


def _same(ours, theirs, tol: float = 1e-6) -> bool:
  if ours is None or theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
    return ours is None and (theirs is None or math.isnan(theirs))
  return abs(ours - theirs) <= tol


def _compare(ours: dict, ref, classes: list[str], segment: bool) -> list[str]:
  """Differences between our result dict and a sed_eval metrics object."""
  errors = []

  def check(what, a, b):
    if not _same(a, b):
      errors.append(f"{what}: ours {a} sed_eval {b}")

  overall = ref.results_overall_metrics()
  f, er = overall["f_measure"], overall["error_rate"]
  check("f1_micro", ours["f1_micro"], f["f_measure"])
  check("precision_micro", ours["precision_micro"], f["precision"])
  check("recall_micro", ours["recall_micro"], f["recall"])
  if ref.overall["Nref"] > 0:
    check("er", ours["er"], er["error_rate"])
    check("substitution_rate", ours["substitution_rate"], er["substitution_rate"])
    check("deletion_rate", ours["deletion_rate"], er["deletion_rate"])
    check("insertion_rate", ours["insertion_rate"], er["insertion_rate"])
  else:  # sed_eval divides by Nref + 2.2e-16 (~1e16 per insertion); undefined here.
    assert ours["er"] is None and ours["insertion_rate"] is None
  counts = ref.overall
  check("n_ref", ours["n_ref"], counts["Nref"])
  check("n_sys", ours["n_sys"], counts["Nsys"])
  check("n_tp", ours["n_tp"], counts["Ntp"])
  check("n_substitutions", ours["n_substitutions"], counts["S" if segment else "Nsubs"])
  class_wise = ref.results_class_wise_metrics()
  ok = []
  for c in classes:
    row, theirs = ours["class_wise"][c], class_wise[c]
    check(f"{c} n_ref", row["n_ref"], theirs["count"]["Nref"])
    check(f"{c} n_sys", row["n_sys"], theirs["count"]["Nsys"])
    check(f"{c} n_tp", row["n_tp"], ref.class_wise[c]["Ntp"])
    if row["status"] == "ok":
      ok.append(c)
      for key, (group, name) in {"f1": ("f_measure", "f_measure"),
                                 "precision": ("f_measure", "precision"),
                                 "recall": ("f_measure", "recall"),
                                 "er": ("error_rate", "error_rate"),
                                 "deletion_rate": ("error_rate", "deletion_rate"),
                                 "insertion_rate": ("error_rate", "insertion_rate")}.items():
        check(f"{c} {key}", row[key], theirs[group][name])
    else:
      assert row["recall"] is None and row["f1"] is None and row["er"] is None
      assert row["precision"] == (0.0 if row["n_sys"] else None)
  if ok == list(classes):  # Every class present: sed_eval's own averages.
    average = ref.results_class_wise_average_metrics()
    check("f1_macro", ours["f1_macro"], average["f_measure"]["f_measure"])
    check("precision_macro", ours["precision_macro"], average["f_measure"]["precision"])
    check("recall_macro", ours["recall_macro"], average["f_measure"]["recall"])
    check("er_macro", ours["er_macro"], average["error_rate"]["error_rate"])
  else:  # The documented rule: means over the classes with reference events.
    for key, (group, name) in {"f1_macro": ("f_measure", "f_measure"),
                               "precision_macro": ("f_measure", "precision"),
                               "recall_macro": ("f_measure", "recall"),
                               "er_macro": ("error_rate", "error_rate")}.items():
      expected = float(np.mean([class_wise[c][group][name] for c in ok])) if ok else None
      check(key, ours[key], expected)
  assert ours["n_macro_classes"] == len(ok)
  return errors


def _sets(seed: int, n: int = NUM_SETS):
  rng = np.random.default_rng(seed)
  return [random_set(rng) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Segment-based.


@pytest.mark.parametrize("segment_s,with_durations", [(1.0, True), (1.0, False), (0.5, True)])
def test_segment_based_equals_sed_eval(segment_s, with_durations):
  failures = []
  for i, (classes, reference, estimated, durations) in enumerate(_sets(1)):
    ref = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=segment_s)
    ref.empty_system_output_handling = "zero_score"
    for name in reference:
      ref.evaluate(_dicts(name, reference[name]), _dicts(name, estimated.get(name, [])),
                   evaluated_length_seconds=durations[name] if with_durations else None)
    ours = metrics.segment_based(reference, estimated, classes,
                                 durations if with_durations else None, segment_s)
    errors = _compare(ours, ref, classes, segment=True)
    if not _same(ours["n_deletions"], ref.overall["D"]) or not _same(
        ours["n_insertions"], ref.overall["I"]):
      errors.append("deletion/insertion counts")
    if errors:
      failures.append((i, errors))
  assert not failures, failures[:3]


def test_segment_based_default_sed_eval_when_every_class_is_output():
  """sed_eval's default (NaN) empty-output handling agrees where no class lacks estimates."""
  compared = 0
  for classes, reference, estimated, durations in _sets(2, 120):
    ours = metrics.segment_based(reference, estimated, classes, durations)
    if any(row["n_sys"] == 0 for row in ours["class_wise"].values()):
      continue
    ref = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=1.0)
    for name in reference:
      ref.evaluate(_dicts(name, reference[name]), _dicts(name, estimated.get(name, [])),
                   evaluated_length_seconds=durations[name])
    assert not _compare(ours, ref, classes, segment=True)
    compared += 1
  assert compared >= 10


# ---------------------------------------------------------------------------------------------
# Event-based.


@pytest.mark.parametrize("percentage_of_length,onset,offset", [
    (0.2, True, True),   # DCASE task 4 (our default).
    (0.5, True, True),   # sed_eval's default.
    (0.2, True, False),  # Onset only.
    (0.5, False, True),  # Offset only.
])
def test_event_based_equals_sed_eval(percentage_of_length, onset, offset):
  failures = []
  sets = _sets(3, NUM_SETS if onset and offset else NUM_SETS // 4)
  for i, (classes, reference, estimated, _) in enumerate(sets):
    ref = sed_eval.sound_event.EventBasedMetrics(
        classes, t_collar=0.2, percentage_of_length=percentage_of_length,
        evaluate_onset=onset, evaluate_offset=offset,
        empty_system_output_handling="zero_score")
    for name in reference:
      ref.evaluate(_dicts(name, reference[name]), _dicts(name, estimated.get(name, [])))
    ours = metrics.event_based(reference, estimated, classes, t_collar=0.2,
                               percentage_of_length=percentage_of_length,
                               evaluate_onset=onset, evaluate_offset=offset)
    errors = _compare(ours, ref, classes, segment=False)
    if errors:
      failures.append((i, errors))
  assert not failures, failures[:3]


def test_event_based_default_is_dcase():
  classes, reference, estimated, _ = _sets(4, 1)[0]
  assert metrics.event_based(reference, estimated, classes) == metrics.event_based(
      reference, estimated, classes, t_collar=0.2, percentage_of_length=0.2)


def test_matching_choice_changes_substitutions():
  """Which maximum matching is taken changes sed_eval's substitutions: we take its choice.

  Speech refs A = [0, 1] and B = [0, 1.3] both match the Speech estimate [0, 1.1]. sed_eval's
  Hopcroft-Karp keeps A (the first) and leaves B, which the Dog estimate [0, 1.3] (too long for
  A's offset collar) substitutes: S = 1, D = 0, I = 0. Leaving A instead would give S = 0.
  """
  reference = {"a": [Event(0.0, 1.0, "Speech"), Event(0.0, 1.3, "Speech")]}
  estimated = {"a": [Event(0.0, 1.1, "Speech"), Event(0.0, 1.3, "Dog")]}
  out = metrics.event_based(reference, estimated, ["Dog", "Speech"])
  assert (out["n_tp"], out["n_substitutions"], out["n_deletions"], out["n_insertions"]) == (
      1, 1, 0, 0)
  ref = sed_eval.sound_event.EventBasedMetrics(["Dog", "Speech"], percentage_of_length=0.2)
  ref.evaluate(_dicts("a", reference["a"]), _dicts("a", estimated["a"]))
  assert ref.overall["Nsubs"] == 1


def test_overlapping_same_class_events_match_one_to_one():
  reference = {"a": [Event(1.0, 3.0, "Dog"), Event(1.05, 3.1, "Dog")]}
  estimated = {"a": [Event(1.0, 3.0, "Dog")]}
  out = metrics.event_based(reference, estimated, ["Dog"])
  assert (out["n_tp"], out["n_deletions"], out["n_insertions"]) == (1, 1, 0)
  assert out["class_wise"]["Dog"]["recall"] == 0.5


def test_absent_classes_are_reported_not_averaged():
  reference = {"a": [Event(0.0, 2.0, "Dog")], "b": []}
  estimated = {"a": [Event(0.0, 2.0, "Dog"), Event(5.0, 6.0, "Cat")]}
  for out in (metrics.event_based(reference, estimated, ["Bird", "Cat", "Dog"]),
              metrics.segment_based(reference, estimated, ["Bird", "Cat", "Dog"])):
    rows = out["class_wise"]
    assert rows["Dog"]["status"] == "ok" and rows["Dog"]["f1"] == 1.0
    assert rows["Cat"]["status"] == "no_reference"
    assert rows["Cat"]["precision"] == 0.0 and rows["Cat"]["n_fp"] >= 1
    assert rows["Cat"]["f1"] is None and rows["Cat"]["er"] is None
    assert rows["Bird"]["status"] == "absent"
    assert rows["Bird"]["precision"] is None and rows["Bird"]["f1"] is None
    assert out["f1_macro"] == 1.0 and out["er_macro"] == 0.0 and out["n_macro_classes"] == 1
    assert out["f1_micro"] < 1.0


def test_no_reference_at_all_gives_none_not_nan():
  out = metrics.event_based({"a": []}, {"a": [Event(0.0, 1.0, "Dog")]}, ["Dog"])
  assert out["f1_micro"] is None and out["er"] is None and out["f1_macro"] is None
  assert out["precision_micro"] == 0.0
  empty = metrics.segment_based({"a": []}, {}, ["Dog"])
  assert empty["n_segments"] == 0 and empty["f1_micro"] is None


def test_segment_rule_by_hand():
  # 0.5-1.5 marks segments 0 and 1; a zero-length event at 3.0 marks nothing, at 4.5 marks 4;
  # an event past the given duration is cut at it.
  reference = {"a": [Event(0.5, 1.5, "Dog"), Event(3.0, 3.0, "Dog"), Event(4.5, 4.5, "Dog"),
                     Event(5.5, 9.0, "Dog")]}
  out = metrics.segment_based(reference, {}, ["Dog"], durations={"a": 6.0})
  assert out["n_segments"] == 6 and out["n_ref"] == 4  # Segments 0, 1, 4, 5.
  assert out["er"] == 1.0 and out["deletion_rate"] == 1.0 and out["f1_micro"] == 0.0


def test_input_errors_name_the_problem():
  with pytest.raises(ValueError, match="not in the reference"):
    metrics.event_based({"a.wav": []}, {"A.wav": []}, ["Dog"])
  with pytest.raises(ValueError, match=r"label\(s\) \['Cat'\].*'a'"):
    metrics.segment_based({"a": [Event(0.0, 1.0, "Cat")]}, {}, ["Dog"])
  with pytest.raises(ValueError, match="0 <= onset <= offset"):
    metrics.event_based({"a": [Event(2.0, 1.0, "Dog")]}, {}, ["Dog"])
  with pytest.raises(ValueError, match="durations lacks"):
    metrics.segment_based({"a": [], "b": []}, {}, ["Dog"], durations={"a": 1.0})
  with pytest.raises(ValueError, match="cannot both be False"):
    metrics.event_based({}, {}, ["Dog"], evaluate_onset=False, evaluate_offset=False)


# ---------------------------------------------------------------------------------------------
# PSDS.


@pytest.fixture(name="sse_detector_copies")
def _sse_detector_copies(monkeypatch):
  """sed_scores_eval's Cython detector needs writable arrays; pandas 3 gives read-only ones."""
  detector = sse_statistics.onset_offset_curves
  monkeypatch.setattr(
      sse_statistics, "onset_offset_curves",
      lambda s, t, c=None: detector(np.array(s), np.array(t), None if c is None else np.array(c)))


def random_scores(rng: np.random.Generator):
  """(classes, scores, ground_truth, durations): 2-4 files of 10-40 frames, 2-4 classes.

  Scores rise on the ground truth, with noise; half the sets are rounded to one decimal, which
  makes plateaus and thresholds shared across files and classes. Ground truth touches the clip
  start and end, overlaps within a class, is sometimes very short or zero-length; files without
  events and series without ground truth are common.
  """
  classes = ["Speech", "Dog", "Alarm", "Cat"][:int(rng.integers(2, 5))]
  hop = float(rng.choice([0.2, 0.25, 0.128]))
  scores, ground_truth, durations = {}, {}, {}
  for i in range(int(rng.integers(2, 5))):
    frames = int(rng.integers(10, 40))
    duration = round(frames * hop, 6)
    events = []
    for _ in range(int(rng.integers(0, 4))):
      label = classes[int(rng.integers(len(classes)))]
      onset = 0.0 if rng.random() < 0.2 else float(np.round(rng.uniform(0, duration), 3))
      length = float(rng.choice([0.01, 0.3, 1.0, 3.0])) * rng.random() + 0.001
      length = 0.0 if rng.random() < 0.05 else length  # Zero-length ground truth.
      offset = duration if rng.random() < 0.15 else min(duration, round(onset + length, 3))
      events.append(Event(onset, offset, label))
    values = rng.random((frames, len(classes)))
    for e in events:
      c = classes.index(e.label)
      values[int(e.onset / hop):int(np.ceil(e.offset / hop)), c] += rng.uniform(0, 1)
    if rng.random() < 0.5:
      values = np.round(values, 1)
    name = f"clip_{i}"
    scores[name] = (np.round(np.arange(frames + 1) * hop, 6), values)
    ground_truth[name] = events
    durations[name] = duration
  for c in classes:  # PSDS needs ground truth for every class.
    if not any(e.label == c for events in ground_truth.values() for e in events):
      name = f"clip_{int(rng.integers(len(scores)))}"
      ground_truth[name] = ground_truth[name] + [Event(0.0, 0.5, c)]
  return classes, scores, ground_truth, durations


def _merged_tuples(ground_truth: dict[str, list[Event]]) -> dict[str, list[tuple]]:
  out = {}
  for name, events in ground_truth.items():
    merged = []
    for e in sorted(events, key=lambda e: (e.label, e.onset, e.offset)):
      if merged and merged[-1][2] == e.label and e.onset <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], e.offset)
      else:
        merged.append([e.onset, e.offset, e.label])
    out[name] = [tuple(m) for m in merged]
  return out


PSDS_SETTINGS = {
    "psds1": dict(dtc=0.7, gtc=0.7, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0),
    "psds2": dict(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0),
    "other": dict(dtc=0.5, gtc=0.3, cttc=0.5, alpha_ct=1.0, alpha_st=0.0, max_efpr=40.0),
}


@pytest.mark.usefixtures("sse_detector_copies")
@pytest.mark.parametrize("setting", ["psds1", "psds2", "other"])
def test_psds_equals_sed_scores_eval(setting):
  params = PSDS_SETTINGS[setting]
  rng = np.random.default_rng({"psds1": 5, "psds2": 6, "other": 7}[setting])
  failures = []
  for i in range(NUM_SETS if setting != "other" else NUM_SETS // 4):
    classes, scores, ground_truth, durations = random_scores(rng)
    frames = {k: create_score_dataframe(v, t, classes) for k, (t, v) in scores.items()}
    theirs = intersection_based.psds(
        frames, _merged_tuples(ground_truth), durations, dtc_threshold=params["dtc"],
        gtc_threshold=params["gtc"], cttc_threshold=params.get("cttc"),
        alpha_ct=params["alpha_ct"], alpha_st=params["alpha_st"],
        max_efpr=params["max_efpr"])
    ours = metrics.psd_roc(scores, ground_truth, durations, classes, **params)
    if abs(ours.psds - theirs[0]) > 1e-3:
      failures.append((i, ours.psds, theirs[0]))
    for c in classes:
      if abs(ours.class_psds[c] - theirs[1][c]) > 1e-3:
        failures.append((i, c, ours.class_psds[c], theirs[1][c]))
  assert not failures, failures[:5]


def test_psds_presets():
  classes, scores, ground_truth, durations = random_scores(np.random.default_rng(8))
  assert metrics.psds1(scores, ground_truth, durations, classes) == metrics.psds(
      scores, ground_truth, durations, classes, **PSDS_SETTINGS["psds1"])
  assert metrics.psds2(scores, ground_truth, durations, classes) == metrics.psds(
      scores, ground_truth, durations, classes, **PSDS_SETTINGS["psds2"])


def test_psds_of_a_perfect_detector_is_one():
  hop = 0.1
  values = np.zeros((100, 2))
  values[10:30, 0] = 1.0
  values[50:80, 1] = 1.0
  scores = {"a": (np.round(np.arange(101) * hop, 6), values)}
  truth = {"a": [Event(1.0, 3.0, "Dog"), Event(5.0, 8.0, "Cat")]}
  result = metrics.psd_roc(scores, truth, {"a": 10.0}, ["Dog", "Cat"], dtc=0.7, gtc=0.7)
  assert result.psds == pytest.approx(1.0)
  assert result.class_psds == {"Dog": pytest.approx(1.0), "Cat": pytest.approx(1.0)}
  assert result.efpr[-1] == 100.0


def test_psds_errors():
  classes, scores, ground_truth, durations = random_scores(np.random.default_rng(9))
  with pytest.raises(ValueError, match="no ground-truth event"):
    metrics.psds1(scores, ground_truth, durations, classes + ["Never"])
  with pytest.raises(ValueError, match="cttc"):
    metrics.psds(scores, ground_truth, durations, classes, dtc=0.1, gtc=0.1, alpha_ct=0.5)
  with pytest.raises(ValueError, match="without scores"):
    metrics.psds1(scores, {**ground_truth, "other": []}, durations, classes)
  with pytest.raises(ValueError, match="durations lacks"):
    metrics.psds1(scores, ground_truth, {}, classes)
  bad = {k: (t, np.full_like(v, np.nan)) for k, (t, v) in scores.items()}
  with pytest.raises(ValueError, match="non-finite"):
    metrics.psds1(bad, ground_truth, durations, classes)


def test_psds_is_the_same_in_small_chunks(monkeypatch):
  """Runs are built a few files at a time (bounded memory); chunking must not change results."""
  rng = np.random.default_rng(10)
  sets = [random_scores(rng) for _ in range(10)]
  whole = [metrics.psd_roc(s, g, d, c, **PSDS_SETTINGS["psds2"]) for c, s, g, d in sets]
  monkeypatch.setattr(psd, "_PSDS_CHUNK", 40)
  for (c, s, g, d), expected in zip(sets, whole):
    result = metrics.psd_roc(s, g, d, c, **PSDS_SETTINGS["psds2"])
    assert result.psds == expected.psds and result.class_psds == expected.class_psds


def test_psd_rocs_share_work_without_changing_results():
  """psd_rocs (and psds1_and_psds2) compute the runs once for all settings: same numbers."""
  rng = np.random.default_rng(11)
  settings = list(PSDS_SETTINGS.values())
  assert dict(metrics.PSDS1) == PSDS_SETTINGS["psds1"]
  assert dict(metrics.PSDS2) == PSDS_SETTINGS["psds2"]
  for _ in range(20):
    classes, scores, ground_truth, durations = random_scores(rng)
    shared = metrics.psd_rocs(scores, ground_truth, durations, classes, settings)
    for setting, result in zip(settings, shared):
      alone = metrics.psd_roc(scores, ground_truth, durations, classes, **setting)
      assert result.psds == alone.psds and result.class_psds == alone.class_psds
    assert metrics.psds1_and_psds2(scores, ground_truth, durations, classes) == (
        metrics.psds1(scores, ground_truth, durations, classes),
        metrics.psds2(scores, ground_truth, durations, classes))
  with pytest.raises(TypeError):
    metrics.psd_rocs(scores, ground_truth, durations, classes, [{"dtc": 0.5}])
