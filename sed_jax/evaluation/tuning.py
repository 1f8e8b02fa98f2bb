"""Post-processing tuned per class on the validation split: median window and threshold.

Event-based F1 (onset collar 200 ms) punishes a detection split in two or started late far more
than segment F1 does, and how much smoothing a class needs depends on the class: an air
conditioner hums for seconds, a gun shot lasts a tenth of one. DCASE systems therefore choose a
median window and a decision threshold per class on held-out data. `tune` does that on a model's
validation predictions; `score_tuned` scores another split (the test split) with the chosen
values, so the test split never influences them.

Macro event F1 is the mean of per-class F1s, and a class's F1 depends only on its own column, so
the per-class choice is the argmax of each class's validation F1 over the grid (one scoring of
all classes per grid point).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import frame_scoring
from sed_jax.evaluation import postprocess
from sed_jax.evaluation import event_scoring

# Median windows in seconds (one 80-ms frame = no filtering) and thresholds searched per class.
WINDOWS_S = (0.08, 0.24, 0.4, 0.56, 0.8, 1.2)
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def tune(probs: np.ndarray, audio_ids: Sequence[str], durations: Sequence[float],
         references: dict[str, list[Event]], classes: Sequence[str], frame_hop_s: float,
         windows_s: Sequence[float] = WINDOWS_S,
         thresholds: Sequence[float] = THRESHOLDS) -> dict:
  """Per-class (median window, threshold) maximising each class's event F1 on these predictions.

  Args:
    probs: [N, T, C] frame probabilities of the validation split (padding frames included).
    audio_ids, durations, references: the split's files, their lengths and reference events.
    classes: the label of each column; frame_hop_s: seconds per output frame.
    windows_s, thresholds: the grid. Ties keep the earlier grid point (the shorter window, then
      the lower threshold), so the choice is deterministic.

  Returns:
    {"median_window_s": [C], "threshold": [C], "validation_event_f1": [C] (None for a class
    without validation events, which keeps the grid's middle point), "validation_event_f1_macro"}.
  """
  lengths = frame_scoring.frame_lengths(durations, frame_hop_s, probs.shape[1])
  dur = dict(zip(audio_ids, map(float, durations)))
  grid = [(w, t) for w in windows_s for t in thresholds]
  f1 = np.full((len(grid), len(classes)), np.nan)
  for g, (window, threshold) in enumerate(grid):
    estimated = postprocess.batch_probs_to_events(
        probs, list(audio_ids), frame_hop_s, classes, threshold=threshold,
        median_window_s=window, lengths=lengths)
    rows = event_scoring.score(references, estimated, durations=dur, classes=list(classes))
    for c, name in enumerate(classes):
      row = rows["class_wise"][name]["event"]
      if row["n_ref"] > 0:  # F1 is undefined (None) when nothing is detected: it scores 0.
        f1[g, c] = row["f1"] or 0.0
  known = ~np.all(np.isnan(f1), axis=0)
  best = np.where(known, np.argmax(np.nan_to_num(f1, nan=-1.0), axis=0), len(grid) // 2)
  chosen = [grid[g] for g in best]
  per_class = [float(f1[g, c]) if known[c] else None for c, g in enumerate(best)]
  scored = [v for v in per_class if v is not None]
  return dict(median_window_s=[w for w, _ in chosen], threshold=[t for _, t in chosen],
              validation_event_f1=per_class,
              validation_event_f1_macro=float(np.mean(scored)) if scored else None)


def score_tuned(probs: np.ndarray, audio_ids: Sequence[str], durations: Sequence[float],
                references: dict[str, list[Event]], classes: Sequence[str], frame_hop_s: float,
                eval_cfg, tuned: dict) -> dict:
  """`frame_scoring.score_predictions` with the per-class windows and thresholds of `tune`
  (threshold-free PSDS is left out: it does not depend on them beyond the median window)."""
  cfg = ml_collections.ConfigDict(dict(eval_cfg.to_dict(), psds=False,
                                       threshold=list(tuned["threshold"]),
                                       median_window_s=list(tuned["median_window_s"])))
  return frame_scoring.score_predictions(probs, audio_ids, durations, references, classes,
                                    frame_hop_s, cfg)
