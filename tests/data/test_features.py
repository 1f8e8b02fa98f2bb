"""Log-mel features and the frame-target rule, edge cases included."""

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from sed_jax import config_lib
from sed_jax.data import audio
from sed_jax.data import features
from sed_jax.data.annotations import Event
from tests.data import test_audio

CLASSES = ("a", "b", "c")
P = 0.08  # Output frame length at the defaults: 4 * 320 / 16000.


@pytest.fixture(scope="module")
def cfg():
  return config_lib.common().features()


def test_frame_grid_defaults(cfg):
  assert features.output_frame_seconds(cfg) == pytest.approx(P)
  assert features.num_output_frames(10.0, cfg) == 125
  assert features.num_frames(160000, cfg.hop_length) == 500


def test_log_mel_shape_dtype_and_determinism(cfg):
  rng = np.random.default_rng(0)
  audio = rng.standard_normal(16000 * 2).astype(np.float32) * 0.1
  a, b = features.log_mel(audio, cfg), features.log_mel(audio.copy(), cfg)
  assert a.shape == (100, 64) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.isfinite(a).all()


def test_log_mel_silence_is_floor_and_tone_lands_in_its_band(cfg):
  silence = features.log_mel(np.zeros(16000, np.float32), cfg)
  np.testing.assert_allclose(silence, np.log(cfg.log_floor), rtol=1e-6)
  t = np.arange(16000) / 16000
  low = features.log_mel(np.sin(2 * np.pi * 200 * t).astype(np.float32), cfg).mean(0).argmax()
  high = features.log_mel(np.sin(2 * np.pi * 4000 * t).astype(np.float32), cfg).mean(0).argmax()
  assert low < 15 < 40 < high


def test_log_mel_rejects_stereo(cfg):
  with pytest.raises(ValueError, match="mono"):
    features.log_mel(np.zeros((2, 100), np.float32), cfg)


def test_log_mel_is_librosas_centred_stft_cut_to_the_time_grid(cfg):
  import librosa  # pylint: disable=g-import-not-at-top
  audio = np.random.default_rng(2).standard_normal(16000 + 123).astype(np.float32) * 0.1
  mel = librosa.feature.melspectrogram(
      y=audio, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
      fmin=cfg.fmin, fmax=cfg.fmax, power=2.0, center=True, pad_mode="constant")
  expected = np.log(np.maximum(mel[:, :16123 // cfg.hop_length], cfg.log_floor)).T
  np.testing.assert_allclose(features.log_mel(audio, cfg), expected, atol=1e-5)


@pytest.mark.parametrize("n", [0, 319, 320, 700, 1991, 16000 * 3 + 321])
@pytest.mark.parametrize("block", [1, 77, 320, 1024, 5000])
def test_stream_log_mel_equals_log_mel(cfg, n, block):
  audio = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
  whole = features.log_mel(audio, cfg)
  assert whole.shape == (n // cfg.hop_length, cfg.n_mels)
  blocks = [audio[i:i + block] for i in range(0, n, block)]
  blocks.insert(len(blocks) // 2, np.zeros(0, np.float32))  # Empty blocks are fine.
  out = list(features.stream_log_mel(blocks, cfg))
  assert all(b.dtype == np.float32 and b.shape[0] > 0 for b in out)
  joined = np.concatenate(out) if out else np.zeros((0, cfg.n_mels), np.float32)
  assert joined.shape == whole.shape
  np.testing.assert_allclose(joined, whole, atol=1e-4)


def test_stream_log_mel_rejects_stereo_blocks(cfg):
  with pytest.raises(ValueError, match="mono"):
    list(features.stream_log_mel([np.zeros((100, 2), np.float32)], cfg))


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 6)])
def test_streamed_file_equals_the_whole_file(cfg, tmp_path, rate, channels):
  """stream_audio → stream_log_mel equals load_audio → log_mel, for any rate and channels."""
  n = rate * 3 + 137  # Odd length.
  x = np.random.default_rng(rate).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
  sf.write(tmp_path / "a.wav", x, rate, subtype="FLOAT")
  whole = features.log_mel(audio.load_audio(tmp_path / "a.wav", cfg.sample_rate), cfg)
  streamed = np.concatenate(list(features.stream_log_mel(
      audio.stream_audio(tmp_path / "a.wav", cfg.sample_rate, block_seconds=0.37), cfg)))
  assert streamed.shape == whole.shape == (round(n * 16000 / rate) // 320, 64)
  np.testing.assert_allclose(streamed, whole, atol=1e-4)


def _peak(path, cfg):
  tracemalloc.start()
  try:
    frames = sum(b.shape[0] for b in features.stream_log_mel(
        audio.stream_audio(path, cfg.sample_rate, block_seconds=1.0), cfg))
    return frames, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_file(cfg, tmp_path):
  rate = 48000
  for name, minutes in (("short.wav", 1), ("long.wav", 2)):
    test_audio.write_noise_minutes(tmp_path / name, rate, minutes)
  (n_short, short), (n_long, long) = _peak(tmp_path / "short.wav", cfg), _peak(
      tmp_path / "long.wav", cfg)
  assert (n_short, n_long) == (3000, 6000)
  assert long < 1.1 * short + 50_000, (short, long)
  assert long < 120 * rate * 2 * 4 / 20, (short, long)  # Decoding it whole: 46 MB.


def targets(events, n=10):
  return features.frame_targets(events, CLASSES, n, P)


def test_half_coverage_rule():
  # Covers frame 0 fully, frame 1 by exactly half, frame 2 by less than half.
  t = targets([Event(0.0, 0.12, "a")])
  assert t[:, 0].tolist()[:3] == [1, 1, 0]
  t = targets([Event(0.0, 0.119, "a")])
  assert t[:3, 0].tolist() == [1, 0, 0]


def test_event_at_zero_and_at_clip_end():
  t = targets([Event(0.0, 0.08, "b"), Event(0.72, 0.8, "b")])
  assert t[:, 1].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]


def test_event_past_the_last_frame_is_cut():
  t = targets([Event(0.68, 5.0, "a")])
  assert t[:, 0].tolist() == [0] * 8 + [1, 1]


def test_short_event_marks_the_frame_of_its_centre():
  # 30 ms event straddling frames 1 and 2, covering less than half of either.
  t = targets([Event(0.15, 0.19, "c")])
  assert t[:, 2].tolist() == [0, 0, 1] + [0] * 7
  # A zero-length event still leaves a trace.
  assert targets([Event(0.4, 0.4, "c")])[:, 2].sum() == 1


def test_touching_and_overlapping_events_of_one_class_are_a_union():
  # 0.10-0.12 and 0.12-0.14 each cover a quarter of frame 1; together, half.
  t = targets([Event(0.10, 0.12, "a"), Event(0.12, 0.14, "a")])
  assert t[1, 0] == 1
  t = targets([Event(0.0, 0.4, "a"), Event(0.2, 0.6, "a")])
  assert t[:, 0].tolist() == [1] * 8 + [0, 0]


def test_classes_are_independent_and_unknown_label_is_an_error():
  t = targets([Event(0.0, 0.16, "a"), Event(0.16, 0.32, "c")])
  assert t[:, 0].tolist()[:4] == [1, 1, 0, 0]
  assert t[:, 2].tolist()[:4] == [0, 0, 1, 1]
  assert t[:, 1].sum() == 0
  with pytest.raises(ValueError, match="dog"):
    targets([Event(0.0, 1.0, "dog")])


def test_no_events_and_weak_targets():
  assert targets([]).sum() == 0
  np.testing.assert_array_equal(
      features.weak_targets([Event(0, 1, "c"), Event(2, 3, "c")], CLASSES), [0, 0, 1])
  np.testing.assert_array_equal(features.weak_targets(["a", "b"], CLASSES), [1, 1, 0])
  np.testing.assert_array_equal(features.weak_targets([], CLASSES), [0, 0, 0])


def test_weak_equals_any_strong_frame():
  rng = np.random.default_rng(1)
  for _ in range(50):
    events = []
    for _ in range(rng.integers(0, 5)):
      on = float(rng.uniform(0, 0.9))
      events.append(Event(on, on + float(rng.uniform(0, 0.3)), str(rng.choice(CLASSES))))
    np.testing.assert_array_equal(targets(events, 12).max(0),
                                  features.weak_targets(events, CLASSES))
