"""Model outputs over a split → SED metrics (pure numpy; the model part lives in train.py).

One function turns frame probabilities plus the split's exact reference events into every number
the project reports: segment-based F1/ER (1 s), event-based F1/ER (DCASE collars) after
post-processing, and the threshold-free PSDS1/PSDS2 computed from the (median-filtered) scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import metrics
from sed_jax.evaluation import postprocess
from sed_jax.evaluation import event_scoring

# Keys a config's `eval.metric` may name (the validation score that selects the best checkpoint).
METRICS = ("event_f1_macro", "event_f1_micro", "segment_f1_macro", "segment_f1_micro", "psds1",
           "psds2")


def reference_events(events: Sequence[Sequence[tuple[float, float, int]]],
                     audio_ids: Sequence[str], classes: Sequence[str]) -> dict[str, list[Event]]:
  """Per-file reference events from the (onset, offset, class index) tuples of eval batches."""
  return {aid: [Event(on, off, classes[c]) for on, off, c in evs]
          for aid, evs in zip(audio_ids, events)}


def frame_lengths(durations: Sequence[float], frame_hop_s: float, frames: int) -> np.ndarray:
  """Valid output frames of each clip: its duration's frames, at most the padded length."""
  return np.minimum(np.ceil(np.asarray(durations) / frame_hop_s).astype(int), frames)


def score_predictions(frame_probs: np.ndarray, audio_ids: Sequence[str],
                      durations: Sequence[float], references: dict[str, list[Event]],
                      classes: Sequence[str], frame_hop_s: float, cfg) -> dict:
  """Every metric of one split from frame probabilities [N, T_out, C] (padding frames included):
  `score.score`'s segment_*/event_* keys and class_wise table, plus psds1/psds2.

  Frames past a clip's duration are ignored (`lengths`), so padded clips are scored only over
  their real audio.
  """
  lengths = frame_lengths(durations, frame_hop_s, frame_probs.shape[1])
  median = cfg.median_window_s or None
  estimated = postprocess.batch_probs_to_events(
      frame_probs, list(audio_ids), frame_hop_s, classes, threshold=cfg.threshold,
      median_window_s=median, lengths=lengths)
  dur = dict(zip(audio_ids, map(float, durations)))
  out = event_scoring.score(references, estimated, durations=dur, classes=list(classes))
  if cfg.psds:
    # PSDS is defined over classes with ground truth (TPR needs events): score those columns.
    labels = {e.label for evs in references.values() for e in evs}
    keep = [i for i, c in enumerate(classes) if c in labels]
    if keep:
      scores = postprocess.score_series(frame_probs[..., keep], list(audio_ids), frame_hop_s,
                                        lengths=lengths, median_window_s=median)
      present = [classes[i] for i in keep]
      out["psds1"], out["psds2"] = metrics.psds1_and_psds2(scores, references, dur, present)
  return out
