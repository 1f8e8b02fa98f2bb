r"""Speed of our SED metrics against the reference tools: same data, same numbers, one run.

  python benchmarks/metrics.py [--files=1000] [--classes=10] [--repeats=3]

Our metrics are only worth having if they give the reference tools' numbers, so the run first
checks that both sides agree, then reports how much faster ours are:
(a) segment-based (1 s) + event-based (DCASE collars) metrics: `metrics.segment_based` +
    `metrics.event_based` against sed_eval 0.2.1, driven file by file as DESED_task does
    (`references.run_sed_eval`); the six headline numbers must agree to 1e-6;
(b) PSDS1 + PSDS2 from frame scores: `metrics.psds1_and_psds2` (one call; the two scenarios
    share the detection runs) against two sed_scores_eval 0.0.4 `intersection_based.psds` calls
    (its DataFrame inputs are built outside the timed region); both scores must agree to 1e-3.
    Separate `metrics.psds1` + `metrics.psds2` calls are timed too and reported alongside.

Data (synthetic, DESED-like, seeded): `--files` ten-second clips, `--classes` classes, 0-6
ground-truth events per clip of 0.2-10 s (short and long classes, overlaps within and across
classes), frame probabilities at 12.5 frames/s (80 ms hop, 125 frames) that rise on the events,
with misses, confusions and false alarms. The estimated events are those probabilities through
the usual chain (median filter, threshold 0.5, decode: `postprocess.batch_probs_to_events`), the
PSDS scores the same probabilities as `postprocess.score_series`.

Each side's time is the best of `--repeats` runs, the sides taking turns so that load from
other processes hits every side alike (a side stops repeating after a 60-s run).
Prints both ratios (reference time / our time); writes the full output to
benchmarks/results/metrics.json; the line before last is the segment+event ratio and the last
line is `result: psds_speedup_vs_sed_scores_eval <x> x`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from absl import app
from absl import flags
import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import metrics
from sed_jax.evaluation import postprocess
from sed_jax.evaluation import references

_FILES = flags.DEFINE_integer("files", 1000, "Clips in the synthetic evaluation set.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Event classes (DESED has 10).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating timed runs per side; the best is kept.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data.")

RESULTS = Path(__file__).parent / "results" / "metrics.json"
DURATION, HOP = 10.0, 0.08   # 12.5 frames/s.
FRAMES = int(round(DURATION / HOP))  # 125.
MEDIAN_WINDOW_S = 0.48  # 6 frames, about DESED's 7 frames of 64 ms.
SED_EVAL_TOLERANCE, PSDS_TOLERANCE = 1e-6, 1e-3


def synthetic_set(num_files: int, num_classes: int, seed: int):
  """(classes, reference, estimated, durations, scores) shaped like a DESED validation set.

  Half the classes are short sounds (dog, dishes, speech: log-uniform 0.2-3 s), half long ones
  (vacuum cleaner, frying: 2-10 s), cut at the clip end. The model's logits rise by a random
  margin on each event (20 % of events only weakly: misses), sometimes leak into another class
  (confusions) and have false-alarm bumps; a 5-frame moving average makes them as smooth as a
  recurrent model's output. Float32 probabilities, as a model gives them.
  """
  rng = np.random.default_rng(seed)
  classes = [f"class_{c}" for c in range(num_classes)]
  long_class = np.arange(num_classes) >= num_classes // 2
  names = [f"clip_{i:05d}.wav" for i in range(num_files)]
  logits = rng.normal(-3.0, 1.0, (num_files, FRAMES, num_classes))
  reference = {}
  for i, name in enumerate(names):
    events = []
    for _ in range(int(rng.integers(0, 7))):
      c = int(rng.integers(num_classes))
      length = (rng.uniform(2.0, 10.0) if long_class[c]
                else float(np.exp(rng.uniform(np.log(0.2), np.log(3.0)))))
      onset = float(np.round(rng.uniform(0.0, DURATION - 0.2), 3))
      offset = float(np.round(min(DURATION, onset + length), 3))
      events.append(Event(onset, offset, classes[c]))
      a, b = int(onset / HOP), int(np.ceil(offset / HOP))
      logits[i, a:b, c] += rng.uniform(0.5, 2.0) if rng.random() < 0.2 else rng.uniform(2.5, 6.0)
      if rng.random() < 0.15:  # Confused with another class.
        logits[i, a:b, int(rng.integers(num_classes))] += rng.uniform(1.0, 4.0)
    for _ in range(int(rng.integers(0, 3))):  # False alarms.
      a = int(rng.integers(FRAMES - 2))
      logits[i, a:a + int(rng.integers(2, 25)), int(rng.integers(num_classes))] += rng.uniform(
          2.0, 5.0)
    reference[name] = sorted(events)
  kernel = np.ones(5) / 5
  smooth = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="same"), 1, logits)
  probs = (1 / (1 + np.exp(-smooth))).astype(np.float32)
  for c, label in enumerate(classes):  # PSDS needs ground truth of every class.
    if not any(e.label == label for events in reference.values() for e in events):
      reference[names[c]] = sorted(reference[names[c]] + [Event(1.0, 2.0, label)])
  estimated = postprocess.batch_probs_to_events(probs, names, HOP, classes, 0.5, MEDIAN_WINDOW_S)
  scores = postprocess.score_series(probs, names, HOP)
  durations = {name: DURATION for name in names}
  return classes, reference, estimated, durations, scores


def alternating_best(sides: dict, repeats: int) -> tuple[dict[str, float], dict]:
  """Best seconds and last result of each side, the sides timed in turn `repeats` times."""
  times = {k: [] for k in sides}
  results = {}
  for _ in range(repeats):
    for key, fn in sides.items():
      if times[key] and times[key][-1] > 60:
        continue  # One slow run is a precise enough measure.
      start = time.perf_counter()
      results[key] = fn()
      times[key].append(time.perf_counter() - start)
  return {k: min(v) for k, v in times.items()}, results


def run_sed_eval(classes, reference, estimated, durations):
  seg, ev = references.run_sed_eval(reference, estimated, classes, durations)
  return {
      "segment_f1_micro": seg.results_overall_metrics()["f_measure"]["f_measure"],
      "segment_f1_macro": seg.results_class_wise_average_metrics()["f_measure"]["f_measure"],
      "segment_er": seg.results_overall_metrics()["error_rate"]["error_rate"],
      "event_f1_micro": ev.results_overall_metrics()["f_measure"]["f_measure"],
      "event_f1_macro": ev.results_class_wise_average_metrics()["f_measure"]["f_measure"],
      "event_er": ev.results_overall_metrics()["error_rate"]["error_rate"],
  }


def run_ours(classes, reference, estimated, durations):
  seg = metrics.segment_based(reference, estimated, classes, durations)
  ev = metrics.event_based(reference, estimated, classes)
  return {"segment_f1_micro": seg["f1_micro"], "segment_f1_macro": seg["f1_macro"],
          "segment_er": seg["er"], "event_f1_micro": ev["f1_micro"],
          "event_f1_macro": ev["f1_macro"], "event_er": ev["er"]}


def sed_scores_eval_psds(classes, reference, durations, scores):
  """Returns a function computing (PSDS1, PSDS2) with sed_scores_eval, inputs prepared."""
  # pylint: disable=g-import-not-at-top
  from sed_scores_eval import intersection_based
  from sed_scores_eval.base_modules import statistics
  from sed_scores_eval.base_modules.scores import create_score_dataframe
  # pylint: enable=g-import-not-at-top
  detector = statistics.onset_offset_curves
  # pandas >= 3 hands its Cython detector read-only arrays, which it rejects: give it copies.
  statistics.onset_offset_curves = lambda s, t, c=None: detector(
      np.array(s), np.array(t), None if c is None else np.array(c))
  frames = {k: create_score_dataframe(v, t, classes) for k, (t, v) in scores.items()}
  truth = {k: [(e.onset, e.offset, e.label) for e in events] for k, events in reference.items()}

  def run():
    p1 = intersection_based.psds(frames, truth, durations, dtc_threshold=0.7, gtc_threshold=0.7,
                                 alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)[0]
    p2 = intersection_based.psds(frames, truth, durations, dtc_threshold=0.1, gtc_threshold=0.1,
                                 cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
                                 max_efpr=100.0)[0]
    return {"psds1": float(p1), "psds2": float(p2)}

  return run


def merged(reference):
  """Same-class overlaps merged, as sed_scores_eval requires (ours merges internally)."""
  out = {}
  for name, events in reference.items():
    rows = []
    for e in sorted(events, key=lambda e: (e.label, e.onset)):
      if rows and rows[-1].label == e.label and e.onset <= rows[-1].offset:
        rows[-1] = Event(rows[-1].onset, max(rows[-1].offset, e.offset), e.label)
      else:
        rows.append(e)
    out[name] = rows
  return out


def check_equal(what: str, ours: dict, theirs: dict, tolerance: float) -> float:
  """Max |difference|; exits with both sides' numbers when it exceeds the tolerance."""
  diff = max(abs(ours[k] - theirs[k]) for k in ours)
  if not diff <= tolerance:
    sys.exit(f"{what}: our numbers differ from the reference by {diff:.3g} > {tolerance:g}: "
             f"ours {ours}, reference {theirs}")
  return diff


def main(argv):
  del argv
  classes, reference, estimated, durations, scores = synthetic_set(
      _FILES.value, _CLASSES.value, _SEED.value)
  gt = merged(reference)
  n_ref = sum(len(v) for v in reference.values())
  n_gt = sum(len(v) for v in gt.values())
  n_est = sum(len(v) for v in estimated.values())
  print(f"{_FILES.value} clips x {DURATION:g} s, {_CLASSES.value} classes, {n_ref} reference "
        f"events ({n_gt} after merging same-class overlaps), {n_est} estimated events, scores "
        f"{len(scores)} x {FRAMES} frames x {_CLASSES.value} classes ({1 / HOP:g} frames/s)")

  seg_t, seg = alternating_best({
      "ours": lambda: run_ours(classes, reference, estimated, durations),
      "sed_eval": lambda: run_sed_eval(classes, reference, estimated, durations),
  }, _REPEATS.value)
  diff = check_equal("segment+event", seg["ours"], seg["sed_eval"], SED_EVAL_TOLERANCE)
  speedup = seg_t["sed_eval"] / seg_t["ours"]
  print(f"(a) segment+event metrics: ours {seg_t['ours']:.4f} s, sed_eval "
        f"{seg_t['sed_eval']:.3f} s -> {speedup:.1f} x (max |difference| {diff:.2e})")

  psds_t, psds = alternating_best({
      "ours": lambda: dict(zip(("psds1", "psds2"), metrics.psds1_and_psds2(
          scores, reference, durations, classes))),
      "ours_separate_calls": lambda: {
          "psds1": metrics.psds1(scores, reference, durations, classes),
          "psds2": metrics.psds2(scores, reference, durations, classes)},
      "sed_scores_eval": sed_scores_eval_psds(classes, gt, durations, scores),
  }, _REPEATS.value)
  psds_diff = max(check_equal("PSDS", psds[k], psds["sed_scores_eval"], PSDS_TOLERANCE)
                  for k in ("ours", "ours_separate_calls"))
  psds_speedup = psds_t["sed_scores_eval"] / psds_t["ours"]
  separate_speedup = psds_t["sed_scores_eval"] / psds_t["ours_separate_calls"]
  print(f"(b) PSDS1+PSDS2: ours {psds_t['ours']:.3f} s, sed_scores_eval "
        f"{psds_t['sed_scores_eval']:.3f} s -> {psds_speedup:.1f} x (max |difference| "
        f"{psds_diff:.2e}; PSDS1 {psds['ours']['psds1']:.4f}, PSDS2 {psds['ours']['psds2']:.4f}); "
        f"as two separate calls {psds_t['ours_separate_calls']:.3f} s -> {separate_speedup:.1f} x")

  out = {
      "command": "python benchmarks/metrics.py " + " ".join(
          f"--{f}={flags.FLAGS[f].value}" for f in ("files", "classes", "repeats", "seed")),
      "machine": {"platform": platform.platform(), "python": platform.python_version(),
                  "cpu_count": os.cpu_count()},
      "data": {"files": _FILES.value, "classes": _CLASSES.value, "clip_s": DURATION,
               "reference_events": n_ref, "ground_truth_events_merged": n_gt,
               "estimated_events": n_est, "frames_per_file": FRAMES, "hop_s": HOP,
               "median_window_s": MEDIAN_WINDOW_S},
      "segment_event": {"ours_s": seg_t["ours"], "sed_eval_s": seg_t["sed_eval"],
                        "speedup": speedup, "max_abs_difference": diff,
                        "tolerance": SED_EVAL_TOLERANCE, **seg},
      "psds": {"ours_s": psds_t["ours"],
               "ours_separate_calls_s": psds_t["ours_separate_calls"],
               "sed_scores_eval_s": psds_t["sed_scores_eval"], "speedup": psds_speedup,
               "speedup_separate_calls": separate_speedup, "max_abs_difference": psds_diff,
               "tolerance": PSDS_TOLERANCE, **psds},
      "goal": ">= 10x for each",
  }
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
  print(f"segment_event_speedup_vs_sed_eval {speedup:.1f} x")
  print(f"result: psds_speedup_vs_sed_scores_eval {psds_speedup:.1f} x")


if __name__ == "__main__":
  app.run(main)
