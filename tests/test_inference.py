"""Streaming inference: equal to the whole-file computation, bounded memory, detect's TSV."""

import json
import os
import subprocess
import sys
import tracemalloc

import ml_collections
import numpy as np
import pytest
import soundfile as sf
from sed_scores_eval.base_modules import io as sed_scores_io

from sed_jax import inference
from sed_jax import metric_writers
from sed_jax.data import annotations
from sed_jax.data import audio as audio_lib
from sed_jax.data import features as feat_lib
from tests import test_train
from tests.kd import test_teacher_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny 'trained' run (fresh weights, 2-s windows): no training, no dataset."""
  config = test_train.tiny_config(tmp_path_factory.mktemp("tfds"))
  workdir = tmp_path_factory.mktemp("run")
  test_teacher_cache.make_teacher(workdir, config, seed=0)
  (workdir / "classes.json").write_text(json.dumps(CLASSES))
  return workdir


@pytest.fixture(scope="module")
def detector(run):
  return inference.Detector([run], overlap_s=0.5, batch_size=4, block_seconds=0.7)


def whole_file_probs(detector, path):
  """The reference: the whole file's log-mel in memory, windows averaged (the old algorithm)."""
  feat = detector.config.features
  mel = feat_lib.log_mel(audio_lib.load_audio(path, feat.sample_rate), feat)
  t_out = mel.shape[0] // detector.pool
  starts = list(range(0, max(mel.shape[0] - detector.window, 0) + 1, detector.step))
  if starts[-1] + detector.window < mel.shape[0]:
    starts.append(starts[-1] + detector.step)
  assert len(starts) == detector.num_windows(mel.shape[0])
  total = np.zeros((t_out, len(CLASSES)))
  count = np.zeros((t_out, 1))
  for s in starts:
    x = np.full((detector.batch_size, detector.window, mel.shape[1]), np.log(feat.log_floor),
                np.float32)
    mask = np.zeros((detector.batch_size, detector.window // detector.pool), bool)
    piece = mel[s:s + detector.window]
    x[0, :len(piece)] = piece
    mask[0, :len(piece) // detector.pool] = True
    (model, variables), = detector.models
    apply = detector._apply  # pylint: disable=protected-access
    probs = np.asarray(apply(model, variables, x, mask))[0]
    n = min(int(mask[0].sum()), t_out - s // detector.pool)
    total[s // detector.pool:s // detector.pool + n] += probs[:n]
    count[s // detector.pool:s // detector.pool + n] += 1
  return total / np.maximum(count, 1)


def _noise(seconds, rate, channels, seed=0):
  rng = np.random.default_rng(seed)
  n = int(round(seconds * rate))
  tone = np.sin(2 * np.pi * 440 * np.arange(n) / rate)[:, None] * (rng.random(n)[:, None] > 0.5)
  return (0.1 * rng.standard_normal((n, channels)) + 0.3 * tone).astype(np.float32)


@pytest.mark.parametrize("seconds,rate,channels", [
    (7.37, 44100, 2),   # Several batches, a padded last window.
    (1.3, 48000, 6),    # Shorter than one window.
    (4.88, 8000, 1),    # Full windows only: 244 frames = 100 + 2 * 72.
    (0.01, 16000, 1),   # No log-mel frame at all.
])
def test_streaming_equals_the_whole_file(detector, tmp_path, seconds, rate, channels):
  path = tmp_path / "a.wav"
  sf.write(path, _noise(seconds, rate, channels), rate, subtype="FLOAT")
  probs = detector.frame_probs(path)
  expected = whole_file_probs(detector, path) if seconds > 0.1 else np.zeros((0, 10))
  assert probs.shape == expected.shape == (round(seconds * 16000) // 320 // 4, 10)
  assert probs.dtype == np.float32
  np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_blocks_are_yielded_as_soon_as_final(detector, tmp_path):
  path = tmp_path / "a.flac"
  sf.write(path, _noise(20.0, 22050, 1), 22050)
  blocks = list(detector.iter_frame_probs(path))
  # 4 windows per batch, 72 frames (1.44 s) apart: frames are handed on after every batch, not
  # at the end.
  assert len(blocks) >= 3 and sum(len(b) for b in blocks) == 250
  np.testing.assert_allclose(np.concatenate(blocks), whole_file_probs(detector, path), atol=1e-4)


def _peak_bytes(detector, path):
  tracemalloc.start()
  try:
    for _ in detector.iter_frame_probs(path):
      pass
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_file(detector, tmp_path):
  """Doubling a long file (90 s → 180 s, 22.05 kHz stereo) leaves the peak allocation as is."""
  rate = 22050
  short, long = tmp_path / "short.wav", tmp_path / "long.wav"
  sf.write(short, _noise(90.0, rate, 2), rate, subtype="PCM_16")
  with sf.SoundFile(long, "w", rate, 2, "PCM_16") as f:
    f.write(_noise(90.0, rate, 2))
    f.write(_noise(90.0, rate, 2, seed=1))
  detector.frame_probs(short)  # Compile first.
  peak_short, peak_long = _peak_bytes(detector, short), _peak_bytes(detector, long)
  decoded_long = 180 * rate * 2 * 4  # What decoding the long file whole would take: 32 MB.
  assert peak_long < 1.1 * peak_short + 100_000, (peak_short, peak_long)
  assert peak_long < decoded_long / 10, (peak_short, peak_long)


def test_progress_for_long_files(run, tmp_path, monkeypatch):
  updates = []

  class Recorder:

    def __init__(self, total, initial, examples_per_step, desc, every_s=30.0):
      del initial, examples_per_step, every_s
      self.total = total
      updates.append(("start", total, desc))

    def update(self, step, **unused):
      updates.append(("update", step))

    def close(self):
      updates.append(("close",))

  monkeypatch.setattr(metric_writers, "Progress", Recorder)
  path = tmp_path / "a.wav"
  sf.write(path, _noise(9.0, 16000, 1), 16000)
  quiet = inference.Detector([run], overlap_s=0.5, batch_size=4)
  quiet.frame_probs(path)
  assert not updates  # Shorter than progress_after_s.
  loud = inference.Detector([run], overlap_s=0.5, batch_size=4, progress_after_s=5.0)
  loud.frame_probs(path)
  # 450 frames: full windows at 0, 72, ..., 288, then a padded one at 360.
  assert updates == [("start", 6, "detect a.wav (windows)"), ("update", 4), ("update", 6),
                     ("close",)]


def test_bad_audio_is_an_audio_error_naming_the_file(detector, tmp_path):
  x = _noise(6.0, 16000, 1)
  x[80000] = np.nan
  sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
  with pytest.raises(audio_lib.AudioError, match=r"nan.wav: has 1 frame\(s\) with non-finite"):
    detector.frame_probs(tmp_path / "nan.wav")
  with pytest.raises(ValueError, match="overlap_s"):
    inference.Detector([], overlap_s=-1.0)


def test_detect_writes_a_strong_tsv_and_skips_bad_files(run, tmp_path):
  (tmp_path / "audio" / "sub").mkdir(parents=True)
  sf.write(tmp_path / "audio" / "sub" / "b.ogg", _noise(3.0, 48000, 2)[:, 0] * 0.5, 48000)
  sf.write(tmp_path / "audio" / "a.wav", _noise(5.3, 44100, 2), 44100)
  (tmp_path / "audio" / "broken.flac").write_bytes(b"not audio")
  proc = subprocess.run(
      [sys.executable, "-m", "sed_jax.detect", f"--workdir={run}", "--threshold=0.5",
       "--overlap_s=0.5", f"--out={tmp_path / 'events.tsv'}", f"--scores_dir={tmp_path / 's'}",
       str(tmp_path / "audio")], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "broken.flac: cannot be decoded" in proc.stderr
  assert "post-processing: the run's config (overridden by the flags)" in proc.stdout
  events = annotations.read_strong_tsv(tmp_path / "events.tsv", CLASSES)
  assert set(events) <= {"a.wav", "b.ogg"}
  assert all(0 <= e.onset < e.offset <= 5.3 for v in events.values() for e in v)
  assert len((tmp_path / "s" / "a.tsv").read_text().splitlines()) == 1 + 66  # 5.3 s / 80 ms.
  assert len((tmp_path / "s" / "b.tsv").read_text().splitlines()) == 1 + 37
  # The scores are sed_scores_eval's format, and read back as the detector's own float32 values.
  scores = sed_scores_io.read_sed_scores(tmp_path / "s")
  assert sorted(scores) == ["a", "b"]
  probs = inference.Detector([run], overlap_s=0.5).frame_probs(tmp_path / "audio" / "a.wav")
  assert list(scores["a"].columns) == ["onset", "offset", *CLASSES]
  np.testing.assert_array_equal(scores["a"][CLASSES].to_numpy(np.float32), probs)
  np.testing.assert_allclose(scores["a"]["onset"], np.arange(66) * 0.08, atol=1e-9)


def test_postprocessing_is_the_runs_tuned_values_where_it_has_them(tmp_path):
  config = ml_collections.ConfigDict(dict(eval=dict(threshold=0.5, median_window_s=0.24)))
  tuned, plain = tmp_path / "tuned", tmp_path / "plain"
  tuned.mkdir()
  plain.mkdir()
  (tuned / inference.TUNED_FILE).write_text(json.dumps(
      dict(threshold=[0.3, 0.6], median_window_s=[0.08, 0.8])))
  assert inference.postprocessing([tuned], config)[:2] == ([0.3, 0.6], [0.08, 0.8])
  assert inference.postprocessing([tuned], config, "config")[:2] == (0.5, 0.24)
  assert inference.postprocessing([plain], config)[:2] == (0.5, 0.24)
  assert inference.postprocessing([tuned, plain], config)[:2] == (0.5, 0.24)  # An ensemble.
  with pytest.raises(FileNotFoundError, match="has no tuned_postprocessing.json"):
    inference.postprocessing([plain], config, "tuned")
  with pytest.raises(ValueError, match="use auto, config or tuned"):
    inference.postprocessing([plain], config, "best")
