r"""Speed of our SED metrics against the reference tools, on the same data, in one run.

  python benchmarks/eval_speed.py [--files=500] [--classes=10] [--repeats=3]

Synthetic DESED-like data (10-s clips, `--classes` classes, 0-6 reference events per clip,
jittered/missed/inserted estimates, frame scores at 64 ms hop = 156 frames per clip):
1. segment-based (1 s) + event-based (DCASE collars) metrics: `metrics.segment_based` +
   `metrics.event_based` against sed_eval 0.2.1 driven file by file as DESED_task does;
2. PSDS1 + PSDS2 from scores: `metrics.psds1` + `metrics.psds2` against sed_scores_eval 0.0.4
   `intersection_based.psds` (its DataFrame inputs are built outside the timed region).
Each side's time is the best of `--repeats` runs (sed_eval and sed_scores_eval once each when
they take more than 20 s). The numbers of both sides are compared too (max abs difference).
Prints the ratios; writes the full output to benchmarks/results/eval_speed.json; the last line
is `result: eval_speedup_vs_sed_eval <x> x` (sed_eval time / our time, segment + event).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from absl import app
from absl import flags
import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import references
from sed_jax.evaluation import metrics

_FILES = flags.DEFINE_integer("files", 500, "Clips in the synthetic evaluation set.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Event classes (DESED has 10).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per side; the best is kept.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data.")

RESULTS = Path(__file__).parent / "results" / "eval_speed.json"
DURATION, HOP = 10.0, 0.064


def synthetic_set(num_files: int, num_classes: int, seed: int):
  """(classes, reference, estimated, durations, scores) like a DESED validation set."""
  rng = np.random.default_rng(seed)
  classes = [f"class_{c}" for c in range(num_classes)]
  frames = int(DURATION / HOP)  # 156 frames of 64 ms.
  stamps = np.round(np.arange(frames + 1) * HOP, 6)
  reference, estimated, durations, scores = {}, {}, {}, {}
  for i in range(num_files):
    name = f"clip_{i:05d}.wav"
    ref, est = [], []
    logits = rng.normal(-3.0, 1.0, (frames, num_classes))
    for _ in range(int(rng.integers(0, 7))):
      c = int(rng.integers(num_classes))
      onset = float(np.round(rng.uniform(0, DURATION - 0.2), 3))
      offset = float(np.round(min(DURATION, onset + rng.exponential(2.0) + 0.1), 3))
      ref.append(Event(onset, offset, classes[c]))
      a, b = int(onset / HOP), int(np.ceil(offset / HOP))
      logits[a:b, c] += rng.uniform(2.0, 6.0)
      if rng.random() < 0.8:
        label = classes[c] if rng.random() < 0.85 else classes[int(rng.integers(num_classes))]
        on = max(0.0, round(onset + rng.normal(0, 0.2), 3))
        est.append(Event(on, round(max(on, offset + rng.normal(0, 0.4)), 3), label))
    for _ in range(int(rng.integers(0, 3))):
      onset = float(np.round(rng.uniform(0, DURATION - 0.5), 3))
      est.append(Event(onset, round(onset + rng.uniform(0.1, 2.0), 3),
                       classes[int(rng.integers(num_classes))]))
    kernel = np.ones(5) / 5  # Smooth like a recurrent model's output.
    smooth = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="same"), 0, logits)
    reference[name], estimated[name] = sorted(ref), sorted(est)
    durations[name] = DURATION
    scores[name] = (stamps, (1 / (1 + np.exp(-smooth))).astype(np.float32).astype(np.float64))
  for c, label in enumerate(classes):  # PSDS needs ground truth of every class.
    if not any(e.label == label for events in reference.values() for e in events):
      reference[f"clip_{c:05d}.wav"].append(Event(1.0, 2.0, label))
  return classes, reference, estimated, durations, scores


def best_time(fn, repeats: int):
  """(best seconds, last result); a single run when the first one takes more than 20 s."""
  times, result = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
    if times[-1] > 20:
      break
  return min(times), result


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


def main(argv):
  del argv
  classes, reference, estimated, durations, scores = synthetic_set(
      _FILES.value, _CLASSES.value, _SEED.value)
  n_ref = sum(len(v) for v in reference.values())
  n_est = sum(len(v) for v in estimated.values())
  print(f"{_FILES.value} clips x {DURATION:g} s, {_CLASSES.value} classes, {n_ref} reference "
        f"and {n_est} estimated events, scores {len(scores)} x 156 x {_CLASSES.value}")

  ours_t, ours = best_time(lambda: run_ours(classes, reference, estimated, durations),
                           _REPEATS.value)
  ref_t, theirs = best_time(lambda: run_sed_eval(classes, reference, estimated, durations),
                            _REPEATS.value)
  diff = max(abs(ours[k] - theirs[k]) for k in ours)
  speedup = ref_t / ours_t
  print(f"segment+event metrics: ours {ours_t:.4f} s, sed_eval {ref_t:.3f} s -> "
        f"{speedup:.1f} x (max |difference| {diff:.2e})")

  gt = merged(reference)
  psds_ours_t, psds_ours = best_time(
      lambda: {"psds1": metrics.psds1(scores, gt, durations, classes),
               "psds2": metrics.psds2(scores, gt, durations, classes)}, _REPEATS.value)
  psds_ref_t, psds_theirs = best_time(
      sed_scores_eval_psds(classes, gt, durations, scores), _REPEATS.value)
  psds_diff = max(abs(psds_ours[k] - psds_theirs[k]) for k in psds_ours)
  psds_speedup = psds_ref_t / psds_ours_t
  print(f"PSDS1+PSDS2: ours {psds_ours_t:.3f} s, sed_scores_eval {psds_ref_t:.3f} s -> "
        f"{psds_speedup:.1f} x (max |difference| {psds_diff:.2e}; ours {psds_ours})")

  out = {
      "command": "python benchmarks/eval_speed.py " + " ".join(
          f"--{f}={flags.FLAGS[f].value}" for f in ("files", "classes", "repeats", "seed")),
      "machine": {"platform": platform.platform(), "python": platform.python_version(),
                  "cpu_count": os.cpu_count()},
      "data": {"files": _FILES.value, "classes": _CLASSES.value, "reference_events": n_ref,
               "estimated_events": n_est, "frames_per_file": 156, "hop_s": HOP},
      "segment_event": {"ours_s": ours_t, "sed_eval_s": ref_t, "speedup": speedup,
                        "max_abs_difference": diff, "ours": ours, "sed_eval": theirs},
      "psds": {"ours_s": psds_ours_t, "sed_scores_eval_s": psds_ref_t, "speedup": psds_speedup,
               "max_abs_difference": psds_diff, "ours": psds_ours,
               "sed_scores_eval": psds_theirs},
  }
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
  print(f"psds_speedup_vs_sed_scores_eval {psds_speedup:.1f} x")
  print(f"result: eval_speedup_vs_sed_eval {speedup:.1f} x")


if __name__ == "__main__":
  app.run(main)
