"""Tests for sed_jax.evaluation.postprocess: the frame-to-time rule, filters, thresholds, batching.

The median filter is checked against scipy.ndimage.median_filter (what DESED_task uses) and the
decoder against sed_scores_eval's `scores_to_event_list`, both of which use the same rules.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sed_jax.data import annotations
from sed_jax.data.annotations import Event
from sed_jax.evaluation import postprocess as pp

CLASSES = ["Dog", "Speech", "Alarm"]


def test_frame_to_time_rule():
  """Frame j covers [j * hop, (j + 1) * hop): active frames 2..4 at 0.1 s → [0.2, 0.5)."""
  active = np.zeros((10, 3), dtype=bool)
  active[2:5, 0] = True
  active[0:1, 1] = True   # Touches the clip start.
  active[7:10, 2] = True  # Touches the clip end.
  active[9, 1] = True
  assert pp.decode_events(active, 0.1, CLASSES) == [
      Event(0.0, 0.1, "Speech"), Event(0.2, 0.5, "Dog"), Event(0.7, 1.0, "Alarm"),
      Event(0.9, 1.0, "Speech")]


def test_times_are_microseconds():
  active = np.zeros((200, 1), dtype=bool)
  active[3:157] = True
  (event,) = pp.decode_events(active, 0.064, ["Dog"])
  assert (event.onset, event.offset) == (0.192, 10.048)  # Not 0.19200000000000003.


def test_decode_length_ignores_padding_and_empty_is_empty():
  active = np.ones((6, 1), dtype=bool)
  assert pp.decode_events(active, 0.5, ["Dog"], length=4) == [Event(0.0, 2.0, "Dog")]
  assert pp.decode_events(np.zeros((6, 1), bool), 0.5, ["Dog"]) == []


def test_binarize_is_strict_and_per_class():
  probs = np.array([[0.5, 0.5], [0.6, 0.2]])
  assert pp.binarize(probs).tolist() == [[False, False], [True, False]]
  assert pp.binarize(probs, [0.55, 0.1]).tolist() == [[False, True], [True, True]]
  with pytest.raises(ValueError, match="one per class"):
    pp.binarize(probs, [0.1, 0.2, 0.3])


@pytest.mark.parametrize("window", [1, 2, 3, 4, 7, 8, 25])
def test_median_filter_equals_scipy(window):
  rng = np.random.default_rng(window)
  probs = rng.random((3, 20, 4)).astype(np.float32)
  ours = pp.median_filter(probs, window)
  for n in range(3):
    expected = ndimage.median_filter(probs[n], size=(window, 1), mode="reflect")
    np.testing.assert_array_equal(ours[n], expected)
  assert ours.dtype == probs.dtype


def test_median_filter_per_class_and_lengths():
  rng = np.random.default_rng(0)
  probs = rng.random((2, 16, 3))
  windows = [1, 3, 6]
  lengths = [16, 9]
  ours = pp.median_filter(probs, windows, lengths)
  for n, length in enumerate(lengths):
    for c, w in enumerate(windows):
      expected = ndimage.median_filter(probs[n, :length, c], size=w, mode="reflect")
      np.testing.assert_array_equal(ours[n, :length, c], expected)
    np.testing.assert_array_equal(ours[n, length:], probs[n, length:])  # Padding untouched.
  np.testing.assert_array_equal(pp.median_filter(probs[0], windows), ours[0])  # [T, C] input.


def test_window_frames():
  assert pp.window_frames(None, 0.064, 2).tolist() == [1, 1]
  assert pp.window_frames(0.45, 0.064, 2).tolist() == [7, 7]
  assert pp.window_frames([0.0, 1.0], 0.1, 2).tolist() == [1, 10]
  with pytest.raises(ValueError):
    pp.window_frames([1.0], 0.1, 2)


def test_batch_equals_per_file_and_sed_scores_eval():
  """Batched decoding = file by file = sed_scores_eval's thresholding of the same scores."""
  detection = pytest.importorskip("sed_scores_eval.base_modules.detection")
  scores_lib = pytest.importorskip("sed_scores_eval.base_modules.scores")
  rng = np.random.default_rng(1)
  hop = 0.064
  probs = np.round(rng.random((12, 40, 3)), 1)
  probs[0] = 0.0  # A file with no event.
  probs[1, :, 0] = 1.0  # An event spanning the whole clip.
  names = [f"f{i}" for i in range(12)]
  thresholds = [0.5, 0.3, 0.7]
  batch = pp.batch_probs_to_events(probs, names, hop, CLASSES, thresholds)
  assert list(batch) == names and batch["f0"] == []
  assert Event(0.0, 2.56, "Dog") in batch["f1"]
  stamps = np.round(np.arange(41) * hop, 6)
  for i, name in enumerate(names):
    assert pp.probs_to_events(probs[i], hop, CLASSES, thresholds) == batch[name]
    frame = scores_lib.create_score_dataframe(probs[i], stamps, CLASSES)
    theirs = detection.scores_to_event_list(frame, np.array(thresholds))
    assert [(e.onset, e.offset, e.label) for e in batch[name]] == sorted(
        (float(a), float(b), c) for a, b, c in theirs)


def test_median_window_in_seconds():
  probs = np.zeros((1, 20, 1))
  probs[0, 5, 0] = 1.0  # A one-frame spike: removed by a 3-frame median.
  probs[0, 10:15, 0] = 1.0
  out = pp.batch_probs_to_events(probs, ["a"], 0.1, ["Dog"], median_window_s=0.3)
  assert out == {"a": [Event(1.0, 1.5, "Dog")]}


def test_rows_and_tsv_round_trip(tmp_path):
  events = pp.batch_probs_to_events(np.random.default_rng(2).random((4, 50, 3)),
                                    ["a.wav", "b.wav", "c.wav", "d.wav"], 0.064, CLASSES, 0.9)
  events["e.wav"] = []
  rows = pp.to_strong_rows(events)
  assert rows[-1] == ("e.wav", None, None, None)
  assert len(rows) == sum(max(1, len(v)) for v in events.values())
  path = tmp_path / "est.tsv"
  annotations.write_strong_tsv(path, events)
  assert annotations.read_strong_tsv(path) == events


def test_score_series():
  probs = np.random.default_rng(3).random((2, 10, 3))
  series = pp.score_series(probs, ["a", "b"], 0.25, lengths=[10, 6])
  stamps, values = series["b"]
  assert stamps.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
  np.testing.assert_array_equal(values, probs[1, :6])
  filtered = pp.score_series(probs, ["a", "b"], 0.25, median_window_s=0.75)
  np.testing.assert_array_equal(filtered["a"][1], pp.median_filter(probs[0], 3))


def test_shape_errors():
  with pytest.raises(ValueError, match=r"\[N, T, C=3\]"):
    pp.batch_probs_to_events(np.zeros((2, 5, 2)), ["a", "b"], 0.1, CLASSES)
  with pytest.raises(ValueError, match="lengths"):
    pp.batch_decode_events(np.zeros((1, 5, 3), bool), ["a"], 0.1, CLASSES, lengths=[6])
