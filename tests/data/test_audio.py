"""Tests for sed_jax.data.audio: every format loads, every bad file gets an error naming it."""

from __future__ import annotations

import os
import pathlib
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from sed_jax.data import audio

SR = 16000


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(seconds * rate))) / rate
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_frequency(x: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
  return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def _write(path: pathlib.Path, data: np.ndarray, rate: int, subtype: str | None = None,
           fmt: str | None = None) -> pathlib.Path:
  sf.write(path, data, rate, subtype=subtype, format=fmt)
  return path


def _assert_names(err: pytest.ExceptionInfo, path: pathlib.Path) -> None:
  assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name,subtype,fmt,tolerance", [
    ("u8.wav", "PCM_U8", "WAV", 2e-2),
    ("s16.wav", "PCM_16", "WAV", 1e-3),
    ("s24.wav", "PCM_24", "WAV", 1e-3),
    ("s32.wav", "PCM_32", "WAV", 1e-3),
    ("f32.wav", "FLOAT", "WAV", 1e-3),
    ("f64.wav", "DOUBLE", "WAV", 1e-3),
    ("s16.flac", "PCM_16", "FLAC", 1e-3),
    ("s24.flac", "PCM_24", "FLAC", 1e-3),
    ("vorbis.ogg", "VORBIS", "OGG", 5e-2),
    ("UPPER.WAV", "PCM_16", "WAV", 1e-3),
])
def test_every_format_loads_the_same_signal(tmp_path, name, subtype, fmt, tolerance):
  x = _sine(440, SR, 0.5)
  path = _write(tmp_path / name, x, SR, subtype, fmt)
  y = audio.load_audio(path, SR)
  assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
  assert _dominant_frequency(y, SR) == pytest.approx(440, abs=3)
  # Lossless formats reproduce the samples; vorbis is lossy, so compare the middle in RMS.
  mid = slice(1000, -1000)
  assert np.sqrt(np.mean((y[mid] - x[mid]) ** 2)) < tolerance


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resamples_to_the_requested_rate(tmp_path, rate):
  x = _sine(440, rate, 1.3)
  path = _write(tmp_path / "a.wav", x, rate, "PCM_16")
  y = audio.load_audio(path, SR)
  assert y.dtype == np.float32
  assert y.shape == (round(x.size * SR / rate),)
  assert _dominant_frequency(y, SR) == pytest.approx(440, abs=2)
  # The level survives resampling (RMS of a 0.5 sine is 0.5 / sqrt 2).
  assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_upsampling_keeps_content_below_the_old_nyquist(tmp_path):
  path = _write(tmp_path / "a.flac", _sine(1000, 8000, 1.0), 8000, "PCM_24")
  y = audio.load_audio(path, 44100)
  assert y.shape == (44100,)
  assert _dominant_frequency(y, 44100) == pytest.approx(1000, abs=2)


def test_same_rate_is_bit_exact_for_float_wav(tmp_path):
  x = np.random.default_rng(0).uniform(-1, 1, 1234).astype(np.float32)
  y = audio.load_audio(_write(tmp_path / "a.wav", x, SR, "FLOAT"), SR)
  np.testing.assert_array_equal(y, x)


def test_stereo_is_the_mean_of_the_channels(tmp_path):
  left, right = _sine(440, SR, 0.5), _sine(1000, SR, 0.5, amplitude=0.25)
  path = _write(tmp_path / "st.wav", np.stack([left, right], axis=1), SR, "FLOAT")
  np.testing.assert_allclose(audio.load_audio(path, SR), (left + right) / 2, atol=1e-7)


def test_six_channels_mix_down_and_resample(tmp_path):
  rate = 48000
  x = _sine(440, rate, 0.5)
  channels = np.stack([x] * 6, axis=1)
  channels[:, 2] = 0  # One silent channel lowers the mean level to 5/6.
  path = _write(tmp_path / "six.wav", channels, rate, "PCM_24")
  assert audio.audio_info(path) == (0.5, rate, 6)
  y = audio.load_audio(path, SR)
  assert y.shape == (SR // 2,)
  assert _dominant_frequency(y, SR) == pytest.approx(440, abs=3)
  np.testing.assert_allclose(np.abs(y[1000:-1000]).max(), 0.5 * 5 / 6, rtol=0.01)


def test_audio_info(tmp_path):
  path = _write(tmp_path / "a.ogg", _sine(440, 22050, 2.0), 22050, "VORBIS")
  duration, rate, channels = audio.audio_info(path)
  assert (rate, channels) == (22050, 1)
  assert duration == pytest.approx(2.0, abs=1e-3)


# ----------------------------------------------------------------------------- errors


def _valid_wav_bytes(tmp_path: pathlib.Path) -> bytes:
  return _write(tmp_path / "valid.wav", _sine(440, SR, 0.1), SR, "PCM_16").read_bytes()


def _bad_files(tmp_path: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
  """Every kind of bad input: {case: (path, a phrase the message must hold)}."""
  cases = {}
  cases["missing"] = (tmp_path / "missing.wav", "does not exist")
  (tmp_path / "dir.wav").mkdir()
  cases["directory"] = (tmp_path / "dir.wav", "is a directory")
  (tmp_path / "empty.wav").write_bytes(b"")
  cases["empty"] = (tmp_path / "empty.wav", "empty (0 bytes)")
  (tmp_path / "truncated.wav").write_bytes(_valid_wav_bytes(tmp_path)[:20])
  cases["truncated_header"] = (tmp_path / "truncated.wav", "is truncated")
  (tmp_path / "random.wav").write_bytes(np.random.default_rng(0).bytes(4096))
  cases["random_bytes"] = (tmp_path / "random.wav", "cannot be decoded")
  (tmp_path / "text.flac").write_text("this is not audio\n")
  cases["text_as_flac"] = (tmp_path / "text.flac", "cannot be decoded")
  _write(tmp_path / "zero.wav", np.zeros(0, np.float32), SR, "PCM_16")
  cases["zero_frames"] = (tmp_path / "zero.wav", "0 frames")
  (tmp_path / "a.mp3").write_bytes(_valid_wav_bytes(tmp_path))
  cases["mp3"] = (tmp_path / "a.mp3", ".wav, .flac, .ogg")
  (tmp_path / "a.txt").write_text("x")
  cases["txt"] = (tmp_path / "a.txt", "unsupported audio file extension")
  cases["no_extension"] = (tmp_path / "noext", "unsupported audio file extension")
  os.symlink(tmp_path / "loop_b.wav", tmp_path / "loop_a.wav")
  os.symlink(tmp_path / "loop_a.wav", tmp_path / "loop_b.wav")
  cases["symlink_loop"] = (tmp_path / "loop_a.wav", "symlink loop")
  os.symlink(tmp_path / "nowhere.wav", tmp_path / "broken.wav")
  cases["broken_symlink"] = (tmp_path / "broken.wav", "broken symlink")
  return cases


@pytest.mark.parametrize("case", [
    "missing", "directory", "empty", "truncated_header", "random_bytes", "text_as_flac",
    "zero_frames", "mp3", "txt", "no_extension", "symlink_loop", "broken_symlink"])
@pytest.mark.parametrize("fn", ["load_audio", "audio_info", "stream_audio"])
def test_bad_files_raise_audio_error_naming_the_path(tmp_path, case, fn):
  path, phrase = _bad_files(tmp_path)[case]
  call = {"load_audio": lambda: audio.load_audio(path, SR),
          "audio_info": lambda: audio.audio_info(path),
          # The path and header are checked when stream_audio is called, before iterating.
          "stream_audio": lambda: audio.stream_audio(path, SR)}[fn]
  with pytest.raises(audio.AudioError) as err:
    call()
  _assert_names(err, path)
  assert phrase in str(err.value)
  assert isinstance(err.value, ValueError)


def test_wav_cut_short_is_an_error_but_a_streamed_wav_is_read(tmp_path):
  path = _write(tmp_path / "cut.wav", _sine(440, SR, 1.0), SR, "PCM_16")
  whole = path.read_bytes()
  path.write_bytes(whole[:len(whole) // 2])  # libsndfile alone would return half the clip.
  with pytest.raises(audio.AudioError, match=r"cut\.wav: is truncated \(its header declares "
                     f"{len(whole)} bytes, the file has {len(whole) // 2}\\)"):
    audio.load_audio(path, SR)
  # A writer that could not seek back (a pipe) leaves the size fields at 0xFFFFFFFF.
  streamed = tmp_path / "streamed.wav"
  streamed.write_bytes(whole[:4] + b"\xff\xff\xff\xff" + whole[8:])
  assert audio.load_audio(streamed, SR).shape == (SR,)


def test_str_paths_are_accepted_and_named(tmp_path):
  with pytest.raises(audio.AudioError, match="missing.wav: file does not exist"):
    audio.load_audio(str(tmp_path / "missing.wav"), SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
  x = _sine(440, SR, 0.5)
  x[4000] = bad
  path = _write(tmp_path / "nan.wav", x, SR, "FLOAT")
  with pytest.raises(audio.AudioError, match="non-finite") as err:
    audio.load_audio(path, SR)
  _assert_names(err, path)
  assert "0.250 s" in str(err.value)  # Where the first bad sample is.


def test_unreadable_file(tmp_path, monkeypatch):
  path = _write(tmp_path / "locked.wav", _sine(440, SR, 0.1), SR, "PCM_16")
  path.chmod(0)
  try:
    if os.access(path, os.R_OK):
      # Running as root, chmod does not take reading away; pretend that it did.
      monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(audio.AudioError, match="permission denied") as err:
      audio.load_audio(path, SR)
    _assert_names(err, path)
  finally:
    path.chmod(0o644)


def test_too_short_to_resample(tmp_path):
  path = _write(tmp_path / "one.wav", np.full(1, 0.5, np.float32), 96000, "FLOAT")
  with pytest.raises(audio.AudioError, match="too short") as err:
    audio.load_audio(path, SR)
  _assert_names(err, path)


@pytest.mark.parametrize("rate", [0, -16000, 1.5, True])
def test_bad_sample_rate_is_a_caller_error(tmp_path, rate):
  path = _write(tmp_path / "a.wav", _sine(440, SR, 0.1), SR, "PCM_16")
  with pytest.raises(ValueError, match="sample_rate"):
    audio.load_audio(path, rate)
  with pytest.raises(ValueError, match="sample_rate"):
    audio.stream_audio(path, rate)


# ----------------------------------------------------------------------------- streaming


def _noise(rate: int, frames: int, channels: int) -> np.ndarray:
  return np.random.default_rng(frames).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)


@pytest.mark.parametrize("rate,frames,channels,block_seconds", [
    (8000, 8000 * 3 + 7, 1, 0.25),
    (44100, 44100 * 2 + 331, 2, 0.1),
    (48000, 48000 * 2 + 1, 6, 0.3),
    (SR, SR * 2 + 5, 2, 0.2),       # Same rate: no resampler.
    (22050, 999, 1, 10.0),          # One block.
])
def test_stream_blocks_join_to_load_audio_bit_for_bit(tmp_path, rate, frames, channels,
                                                      block_seconds):
  path = _write(tmp_path / "a.wav", _noise(rate, frames, channels), rate, "FLOAT")
  blocks = list(audio.stream_audio(path, SR, block_seconds=block_seconds))
  assert all(b.dtype == np.float32 and b.ndim == 1 and b.size > 0 for b in blocks)
  whole = audio.load_audio(path, SR)
  assert whole.shape == (round(frames * SR / rate),)
  np.testing.assert_array_equal(np.concatenate(blocks), whole)
  if block_seconds < 1:
    assert len(blocks) >= frames / rate / block_seconds - 1
    assert max(b.size for b in blocks) <= 2 * block_seconds * SR


def test_stream_non_finite_after_the_first_blocks(tmp_path):
  x = _sine(440, SR, 2.0)
  x[[20000, 20001, 30000]] = np.nan
  path = _write(tmp_path / "nan.wav", x, SR, "FLOAT")
  stream = audio.stream_audio(path, SR, block_seconds=0.5)
  assert next(stream).size == 8000  # What comes before the bad block is yielded.
  with pytest.raises(audio.AudioError) as err:
    list(stream)
  # The same message as load_audio's: every bad frame counted, the first located.
  assert str(err.value).startswith(f"{path}: has 3 frame(s) with non-finite samples (NaN or inf), "
                                   "the first at 1.250 s")
  with pytest.raises(audio.AudioError) as whole:
    audio.load_audio(path, SR)
  assert str(whole.value) == str(err.value)


def test_stream_too_short_and_bad_block_seconds(tmp_path):
  path = _write(tmp_path / "one.wav", np.full(1, 0.5, np.float32), 96000, "FLOAT")
  with pytest.raises(audio.AudioError, match="one.wav: is too short"):
    list(audio.stream_audio(path, SR))
  with pytest.raises(ValueError, match="block_seconds"):
    audio.stream_audio(path, SR, block_seconds=0)


def _stream_peak(path: pathlib.Path) -> int:
  tracemalloc.start()
  try:
    n = sum(b.size for b in audio.stream_audio(path, SR, block_seconds=1.0))
    assert n > 0
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def write_noise_minutes(path, rate: int, minutes: int, channels: int = 2) -> None:
  """A long noise file written a minute at a time (the test never holds all of it)."""
  minute = (0.1 * np.random.default_rng(0).standard_normal((rate * 60, channels))).astype(
      np.float32)
  with sf.SoundFile(path, "w", rate, channels, "PCM_16") as f:
    for _ in range(minutes):
      f.write(minute)


def test_stream_memory_does_not_grow_with_the_file(tmp_path):
  rate = 44100
  for name, minutes in (("short.flac", 1), ("long.flac", 2)):
    write_noise_minutes(tmp_path / name, rate, minutes)
  short, long = _stream_peak(tmp_path / "short.flac"), _stream_peak(tmp_path / "long.flac")
  assert long < 1.1 * short + 50_000, (short, long)
  assert long < 3 * rate * 2 * 4, (short, long)  # A few 1-s blocks, not 2 min (42 MB).


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name,subtype", [
    ("a.wav", "PCM_16"), ("a.flac", "PCM_16"), ("a.ogg", "VORBIS")])
def test_write_audio_round_trip(tmp_path, name, subtype):
  x = _sine(440, SR, 0.5)
  path = tmp_path / "new" / "sub" / name  # Parent folders are created.
  audio.write_audio(path, x, SR)
  assert sf.info(path).subtype == subtype
  y = audio.load_audio(path, SR)
  assert y.shape == x.shape
  assert _dominant_frequency(y, SR) == pytest.approx(440, abs=3)
  if subtype == "PCM_16":
    np.testing.assert_allclose(y, x, atol=1 / 32768)
  assert [p.name for p in path.parent.iterdir()] == [name]  # No temporary file left behind.
  assert (path.stat().st_mode & 0o777) == 0o644


def test_write_audio_replaces_and_clips(tmp_path):
  path = tmp_path / "a.wav"
  audio.write_audio(path, np.zeros(100, np.float32), SR)
  audio.write_audio(path, np.full((50, 2), 3.0, np.float32), SR)
  info = sf.info(path)
  assert (info.frames, info.channels) == (50, 2)
  np.testing.assert_allclose(audio.load_audio(path, SR), 32767 / 32768)


def test_write_audio_failure_leaves_nothing(tmp_path):
  path = tmp_path / "a.wav"
  audio.write_audio(path, np.zeros(100, np.float32), SR)
  before = path.read_bytes()
  with pytest.raises(audio.AudioError, match="non-finite") as err:
    audio.write_audio(path, np.full(10, np.nan, np.float32), SR)
  _assert_names(err, path)
  for bad, phrase in [(np.zeros(0, np.float32), "shape"), (np.zeros((2, 2, 2)), "shape")]:
    with pytest.raises(audio.AudioError, match=phrase):
      audio.write_audio(path, bad, SR)
  with pytest.raises(audio.AudioError, match="extension"):
    audio.write_audio(tmp_path / "a.mp3", np.zeros(10, np.float32), SR)
  assert path.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


# ----------------------------------------------------------------------------- finding files


def test_find_audio_files(tmp_path):
  for name in ["b.wav", "a.FLAC", "c.ogg", "notes.txt", "d.mp3", "._a.wav", ".e.wav.x.tmp"]:
    (tmp_path / name).write_bytes(b"x")
  (tmp_path / "sub.wav").mkdir()
  (tmp_path / "sub.wav" / "nested.wav").write_bytes(b"x")
  found = audio.find_audio_files(tmp_path)
  assert [p.name for p in found] == ["a.FLAC", "b.wav", "c.ogg"]
  assert all(p.parent == tmp_path for p in found)
  assert audio.find_audio_files(str(tmp_path / "sub.wav")) == [tmp_path / "sub.wav" / "nested.wav"]


def test_find_audio_files_errors(tmp_path):
  with pytest.raises(audio.AudioError, match="does not exist") as err:
    audio.find_audio_files(tmp_path / "nope")
  _assert_names(err, tmp_path / "nope")
  (tmp_path / "f.wav").write_bytes(b"x")
  with pytest.raises(audio.AudioError, match="not a folder"):
    audio.find_audio_files(tmp_path / "f.wav")


def test_write_audio_os_failure_is_an_audio_error(tmp_path):
  (tmp_path / "file").write_bytes(b"x")
  path = tmp_path / "file" / "a.wav"  # Its parent is a file, so the folder cannot be made.
  with pytest.raises(audio.AudioError, match="writing the audio failed") as err:
    audio.write_audio(path, np.zeros(10, np.float32), SR)
  _assert_names(err, path)
