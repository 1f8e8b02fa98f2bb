"""Per-class post-processing tuned on one split, scored on another (sed_jax/evaluation/tuning.py)."""

import ml_collections
import numpy as np

from sed_jax import config_lib
from sed_jax.data.annotations import Event
from sed_jax.evaluation import frame_scoring
from sed_jax.evaluation import tuning

HOP = 0.08
CLASSES = ["hum", "faint", "absent"]


def _split(n: int, seed: int):
  """Class 'hum' is detected confidently but in fragments (every third frame drops out), class
  'faint' at a low, steady probability; 'absent' never occurs."""
  rng = np.random.default_rng(seed)
  probs = np.full((n, 125, 3), 0.05)
  refs, ids = {}, []
  for i in range(n):
    aid = f"clip{i}"
    on = int(rng.integers(5, 40))
    probs[i, on:on + 40, 0] = 0.9
    probs[i, on:on + 40:3, 0] = 0.1
    on2 = int(rng.integers(60, 90))
    probs[i, on2:on2 + 25, 1] = 0.35
    refs[aid] = [Event(on * HOP, (on + 40) * HOP, "hum"), Event(on2 * HOP, (on2 + 25) * HOP,
                                                                 "faint")]
    ids.append(aid)
  return probs, ids, [10.0] * n, refs


def _eval_cfg(**kw):
  return ml_collections.ConfigDict(dict(config_lib.common().evaluation().to_dict(), psds=False,
                                         **kw))


def test_each_class_gets_the_smoothing_and_threshold_it_needs():
  probs, ids, dur, refs = _split(12, seed=0)
  tuned = tuning.tune(probs, ids, dur, refs, CLASSES, HOP)
  assert tuned["median_window_s"][0] > HOP  # The fragmented class is smoothed...
  assert tuned["threshold"][1] < 0.35       # ... and the faint one found below its level.
  assert tuned["validation_event_f1"][:2] == [1.0, 1.0]
  assert tuned["validation_event_f1"][2] is None  # No events: the grid's middle point.
  mid = len(tuning.WINDOWS_S) * len(tuning.THRESHOLDS) // 2
  assert (tuned["median_window_s"][2], tuned["threshold"][2]) == (
      tuning.WINDOWS_S[mid // len(tuning.THRESHOLDS)], tuning.THRESHOLDS[mid % len(tuning.THRESHOLDS)])
  # Without tuning (one frame, 0.5) both classes score far lower.
  plain = frame_scoring.score_predictions(probs, ids, dur, refs, CLASSES, HOP,
                                     _eval_cfg(median_window_s=0.0, threshold=0.5))
  assert plain["event_f1_macro"] < 0.2


def test_values_tuned_on_validation_score_the_test_split():
  val, test = _split(12, seed=0), _split(9, seed=1)
  tuned = tuning.tune(*val, CLASSES, HOP)
  out = tuning.score_tuned(*test, CLASSES, HOP, config_lib.common().evaluation(), tuned)
  assert out["event_f1_macro"] == 1.0 and "psds1" not in out
  # The same numbers as scoring with those per-class values by hand.
  by_hand = frame_scoring.score_predictions(*test, CLASSES, HOP, _eval_cfg(
      threshold=tuned["threshold"], median_window_s=tuned["median_window_s"]))
  assert by_hand["event_f1_macro"] == out["event_f1_macro"]
