"""Soundscape mixing from Scaper-style folders that the tests write (synthetic tones and noise)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf

from sed_jax.data import annotations as ann_lib
from sed_jax.data import audio as audio_lib
from sed_jax.data import soundscapes as ss

SR = 16000
SHORT = dict(duration=4.0, sample_rate=SR)  # 4-s clips keep the tests fast.


def _tone(seconds, freq, lead_silence=0.0, sr=SR):
  t = np.arange(int(seconds * sr)) / sr
  x = 0.5 * np.sin(2 * np.pi * freq * t)
  return np.concatenate([np.zeros(int(lead_silence * sr)), x]).astype(np.float32)


def _noise(seconds, seed, sr=SR):
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Scaper-style sources (3 labels, fsID-style names) and 2 backgrounds, one shorter than a clip.

  Returns (source root, sources dict, background paths).
  """
  root = tmp_path_factory.mktemp("scaper")
  src = root / "sources"
  for k, (label, freq) in enumerate([("low", 300.0), ("mid", 1000.0), ("high", 3000.0)]):
    (src / label).mkdir(parents=True)
    for i in range(3):
      # The last file starts with 0.3 s of silence, which must not count as the event.
      sf.write(src / label / f"{100 + k}-{k}-0-{i}.wav",
               _tone(0.4 + 0.4 * i, freq * (1 + 0.05 * i), lead_silence=0.3 * (i == 2)), SR)
  (src / "notes.txt").write_text("not a label folder")
  bg = root / "backgrounds"
  bg.mkdir()
  sf.write(bg / "short.wav", _noise(1.5, 0), SR)
  sf.write(bg / "long.flac", _noise(12.0, 1), SR)
  sources = ss.collect_sources([src])
  return src, sources, audio_lib.find_audio_files(bg)


def test_collect_sources(data):
  src, sources, _ = data
  assert list(sources) == ["high", "low", "mid"]
  assert all(len(files) == 3 for files in sources.values())
  only = ss.collect_sources([src], classes=["mid", "low", "absent"],
                            file_filter=lambda p: not p.name.endswith("-0.wav"))
  assert list(only) == ["mid", "low"]
  assert all(len(files) == 2 for files in only.values())


def test_collect_sources_errors(tmp_path):
  with pytest.raises(ss.SoundscapeError, match="does not exist"):
    ss.collect_sources([tmp_path / "nope"])
  (tmp_path / "flat").mkdir()
  sf.write(tmp_path / "flat" / "a.wav", _tone(0.5, 440.0), SR)
  with pytest.raises(ss.SoundscapeError, match="no label folders"):
    ss.collect_sources([tmp_path / "flat"])
  (tmp_path / "empty" / "dog").mkdir(parents=True)
  with pytest.raises(ss.SoundscapeError, match="No source audio"):
    ss.collect_sources([tmp_path / "empty"])


def test_mix_is_deterministic(data):
  _, sources, backgrounds = data
  config = ss.SoundscapeConfig(**SHORT)
  a1, e1 = ss.mix_soundscape(5, sources, backgrounds, config)
  a2, e2 = ss.mix_soundscape(5, sources, backgrounds, config,
                             load=ss.AudioCache(SR))
  assert a1.tobytes() == a2.tobytes() and e1 == e2
  a3, _ = ss.mix_soundscape(6, sources, backgrounds, config)
  assert not np.array_equal(a1, a3)


def test_events_fit_the_clip_and_respect_polyphony(data):
  _, sources, backgrounds = data
  config = ss.SoundscapeConfig(min_events=4, max_events=8, max_polyphony=2, **SHORT)
  cache = ss.AudioCache(SR)
  lengths = {}
  for files in sources.values():
    for f in files:
      lengths[f.name] = len(ss._trim(cache(f))) / SR
  n_events = 0
  for seed in range(30):
    audio, events = ss.mix_soundscape(seed, sources, backgrounds, config, load=cache)
    assert audio.dtype == np.float32 and audio.shape == (4 * SR,)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= config.peak + 1e-6
    assert [e.onset for e in events] == sorted(e.onset for e in events)
    for e in events:
      assert 0.0 <= e.onset < e.offset <= 4.0 and e.label in sources
      # Durations are those of the (trimmed) source files: 0.4, 0.8 or 1.2 s.
      assert min(abs(e.offset - e.onset - v) for v in (0.4, 0.8, 1.2)) < 2e-3, e
      active = sum(o.onset <= e.onset < o.offset for o in events)
      assert active <= 2, (seed, events)
    n_events += len(events)
  assert n_events > 30 * 3  # Polyphony drops some events, not most.


def test_snr_is_respected(tmp_path):
  """A steady tone mixed at 10 dB over stationary noise measures 10 dB (+-0.5)."""
  (tmp_path / "src" / "tone").mkdir(parents=True)
  sf.write(tmp_path / "src" / "tone" / "1-0-0-0.wav", _tone(1.0, 1000.0), SR)
  sf.write(tmp_path / "bg.wav", _noise(6.0, 3), SR)
  sources = ss.collect_sources([tmp_path / "src"])
  for snr in (0.0, 10.0, 20.0):
    config = ss.SoundscapeConfig(min_events=1, max_events=1, snr_db=(snr, snr), **SHORT)
    for seed in range(3):
      audio, events = ss.mix_soundscape(seed, sources, [tmp_path / "bg.wav"], config)
      (e,) = events
      x = audio.astype(np.float64)
      inside = np.zeros(x.size, bool)
      inside[int(round(e.onset * SR)):int(round(e.offset * SR))] = True
      p_bg = np.mean(x[~inside] ** 2)
      p_event = np.mean(x[inside] ** 2) - p_bg
      assert 10 * np.log10(p_event / p_bg) == pytest.approx(snr, abs=0.5)


def test_active_rms_ignores_silence():
  x = np.concatenate([_tone(0.5, 500.0), np.zeros(SR * 2, np.float32)])
  assert ss.active_rms(x, SR) == pytest.approx(0.5 / np.sqrt(2), rel=1e-2)


def test_write_soundscapes_and_reuse(data, tmp_path):
  _, sources, backgrounds = data
  config = ss.SoundscapeConfig(**SHORT)
  out = ss.write_soundscapes(tmp_path / "train", 4, sources, backgrounds, config, "train",
                             progress=False)
  assert out == tmp_path / "train"
  names = sorted(p.name for p in (out / "audio").iterdir())
  assert names == [ss.clip_name(i) for i in range(4)]
  strong = ann_lib.read_strong_tsv(out / "strong.tsv", classes=list(sources))
  assert sorted(strong) == names
  first, events = ss.mix_soundscape(
      ss.synth.clip_seed("soundscapes/train", 0, config.seed), sources, backgrounds, config)
  assert strong[names[0]] == events
  written = audio_lib.load_audio(out / "audio" / names[0], SR)
  assert written.shape == first.shape
  np.testing.assert_allclose(written, first, atol=1 / 2**15 + 1e-6)  # 16-bit wav.
  marker = json.loads((out / ss.MARKER).read_text())
  assert marker["params"]["n_clips"] == 4
  assert [p.name for p in tmp_path.iterdir()] == ["train"]  # No temporary folder left.

  mtime = (out / "strong.tsv").stat().st_mtime_ns
  again = ss.write_soundscapes(out, 4, sources, backgrounds, config, "train", progress=False)
  assert again == out and (out / "strong.tsv").stat().st_mtime_ns == mtime  # Reused.

  # Another split seed into another folder gives other clips.
  other = ss.write_soundscapes(tmp_path / "test", 4, sources, backgrounds, config, "test",
                               progress=False)
  assert (other / "audio" / names[0]).read_bytes() != (out / "audio" / names[0]).read_bytes()


def test_write_soundscapes_refuses_a_different_folder(data, tmp_path):
  _, sources, backgrounds = data
  config = ss.SoundscapeConfig(**SHORT)
  out = ss.write_soundscapes(tmp_path / "s", 2, sources, backgrounds, config, 0, progress=False)
  changed = ss.SoundscapeConfig(snr_db=(0.0, 10.0), **SHORT)
  with pytest.raises(ss.SoundscapeError, match=r"different settings \(changed: config;.*Delete"):
    ss.write_soundscapes(out, 2, sources, backgrounds, changed, 0, progress=False)
  with pytest.raises(ss.SoundscapeError, match="n_clips"):
    ss.write_soundscapes(out, 3, sources, backgrounds, config, 0, progress=False)
  (tmp_path / "foreign").mkdir()
  with pytest.raises(ss.SoundscapeError, match="not written"):
    ss.write_soundscapes(tmp_path / "foreign", 2, sources, backgrounds, config, 0,
                         progress=False)


def test_write_soundscapes_leaves_nothing_when_interrupted(data, tmp_path, monkeypatch):
  _, sources, backgrounds = data
  calls = []

  def failing_write(path, audio, sample_rate):
    calls.append(path)
    if len(calls) == 2:
      raise KeyboardInterrupt
    original(path, audio, sample_rate)

  original = audio_lib.write_audio
  monkeypatch.setattr(audio_lib, "write_audio", failing_write)
  with pytest.raises(KeyboardInterrupt):
    ss.write_soundscapes(tmp_path / "s", 3, sources, backgrounds, ss.SoundscapeConfig(**SHORT),
                         0, progress=False)
  assert list(tmp_path.iterdir()) == []


def test_stale_temporary_folder_of_a_dead_process_is_removed(data, tmp_path):
  _, sources, backgrounds = data
  stale = tmp_path / f".s.incomplete-{ss.socket.gethostname()}-999999999"
  (stale / "audio").mkdir(parents=True)
  ss.write_soundscapes(tmp_path / "s", 1, sources, backgrounds, ss.SoundscapeConfig(**SHORT), 0,
                       progress=False)
  assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_mix_errors(data, tmp_path):
  _, sources, backgrounds = data
  config = ss.SoundscapeConfig(**SHORT)
  with pytest.raises(ss.SoundscapeError, match="background"):
    ss.mix_soundscape(0, sources, [], config)
  with pytest.raises(ss.SoundscapeError, match="No source"):
    ss.mix_soundscape(0, {"a": []}, backgrounds, config)
  sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
  with pytest.raises(ss.SoundscapeError, match="silent.wav.*silent"):
    ss.mix_soundscape(0, sources, [tmp_path / "silent.wav"], config)


def test_config_validation():
  with pytest.raises(ValueError, match="min_events"):
    ss.SoundscapeConfig(min_events=3, max_events=2)
  with pytest.raises(ValueError, match="snr_db"):
    ss.SoundscapeConfig(snr_db=(10.0, 0.0))
  # Lists (as config systems hand them over) and tuples are the same config.
  assert ss.SoundscapeConfig(snr_db=[6, 30]) == ss.SoundscapeConfig(snr_db=(6.0, 30.0))


def _fake_urbansound(root):
  """Empty files named like UrbanSound8K slices (only names matter for the split)."""
  labels = ss.URBANSED_MINI_CLASSES[:4]
  for fold in (1, 2, 3):
    for k, label in enumerate(labels):
      d = root / "urbansound8k" / f"fold{fold}" / label
      d.mkdir(parents=True)
      for rec in range(6):
        fs = 1000 * fold + 10 * k + rec
        for s in range(2):
          (d / f"{fs}-{k}-0-{s}.ogg").write_bytes(b"x")
  # One recording with slices of two classes must still land in one split.
  (root / "urbansound8k" / "fold1" / labels[1] / f"{1000}-1-0-9.ogg").write_bytes(b"x")
  (root / "backgrounds").mkdir()
  (root / "backgrounds" / "street.ogg").write_bytes(b"x")
  return labels


def test_urbansed_mini_splits_separate_recordings(tmp_path):
  labels = _fake_urbansound(tmp_path)
  splits = ss.urbansed_mini_splits(tmp_path)
  assert set(splits) == {"train", "validation", "unlabeled", "test"}
  got = {name: ss.collect_sources(dirs, ss.URBANSED_MINI_CLASSES, flt)
         for name, (dirs, flt) in splits.items()}
  ids = {name: {ss.fs_id(f) for files in s.values() for f in files} for name, s in got.items()}
  assert ids["train"].isdisjoint(ids["validation"])
  assert ids["train"] | ids["validation"] == {str(1000 * f + 10 * k + r) for f in (1, 2)
                                              for k in range(4) for r in range(6)}
  assert ids["test"] == {str(3000 + 10 * k + r) for k in range(4) for r in range(6)}
  assert ids["unlabeled"] == ids["train"]
  assert list(got["validation"]) == list(labels)  # Every class has validation recordings.
  assert 0.1 < len(ids["validation"]) / (len(ids["train"]) + len(ids["validation"])) < 0.3
  pickle.loads(pickle.dumps(splits["validation"][1]))  # Filters travel to worker processes.
  assert ss.urbansed_mini_backgrounds(tmp_path) == [tmp_path / "backgrounds" / "street.ogg"]


def test_urbansed_mini_missing_root_says_what_to_do(tmp_path):
  with pytest.raises(ss.SoundscapeError, match=r"dataset\.root") as e:
    ss.urbansed_mini_splits(tmp_path / "nowhere")
  assert str(tmp_path / "nowhere" / "urbansound8k" / "fold1") in str(e.value)
  assert "UrbanSound8K.tar.gz" in str(e.value)  # What to download.


def _official_urbansound(root, audio=False):
  """The same slices as `_fake_urbansound`, in the layout of the official archive as unpacked:
  flat UrbanSound8K/audio/foldN/ (wav) and metadata/UrbanSound8K.csv (its exact header)."""
  scaper = root / "scaper"
  labels = _fake_urbansound(scaper)
  us8k = root / "official" / "UrbanSound8K"
  rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
  for f in sorted((scaper / "urbansound8k").rglob("*.ogg")):
    fold, label = int(f.parents[1].name[4:]), f.parent.name
    name = f.with_suffix(".wav").name
    (us8k / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    if audio:  # A real slice: 44.1 kHz stereo, as many of the archive's are.
      sf.write(us8k / "audio" / f"fold{fold}" / name,
               np.stack([_tone(0.5, 300 + 50 * labels.index(label), sr=44100)] * 2, 1), 44100)
    else:
      (us8k / "audio" / f"fold{fold}" / name).write_bytes(b"x")
    fs, class_id = name.split("-")[:2]
    rows.append(f"{name},{fs},0.0,0.5,1,{fold},{class_id},{label}")
  (us8k / "metadata").mkdir()
  (us8k / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")
  (us8k / "UCS_LICENSE.txt").write_text("CC BY-NC 3.0")  # Shipped beside audio/, ignored.
  (root / "official" / "backgrounds").mkdir()
  sf.write(root / "official" / "backgrounds" / "street.wav", _noise(3.0, 0), SR)
  return root / "scaper", root / "official"


def test_urbansed_mini_reads_the_official_download_as_the_scaper_folds(tmp_path):
  scaper, official = _official_urbansound(tmp_path)
  ids = {}
  for root in (scaper, official):
    splits = ss.urbansed_mini_splits(root)
    ids[root] = {name: {label: sorted(ss.fs_id(f) + f.stem[len(ss.fs_id(f)):] for f in files)
                        for label, files in ss.collect_sources(dirs, ss.URBANSED_MINI_CLASSES,
                                                               flt).items()}
                 for name, (dirs, flt) in splits.items()}
  assert ids[official] == ids[scaper]  # Same clips, labels and train/validation/test split.
  assert str(official / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv") in str(
      ss.urbansed_mini_splits(official)["test"][0][0])


def test_a_configured_source_may_be_an_official_fold(tmp_path):
  """`dataset.soundscapes.sources.<split>=UrbanSound8K/audio/fold3`: labelled by the CSV, the
  same clips as the Scaper-style fold."""
  scaper, official = _official_urbansound(tmp_path)
  fold = ss.as_source(official / "UrbanSound8K" / "audio" / "fold3")
  assert isinstance(fold, ss.LabelledFiles)
  stems = lambda sources: {label: [f.stem for f in files] for label, files in sources.items()}
  assert stems(ss.collect_sources([fold])) == stems(
      ss.collect_sources([ss.as_source(scaper / "urbansound8k" / "fold3")]))


def test_a_broken_official_download_is_named(tmp_path):
  _, official = _official_urbansound(tmp_path)
  csv_path = official / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv"
  lines = csv_path.read_text().splitlines()
  missing = official / "UrbanSound8K" / "audio" / "fold2" / lines[60].split(",")[0]
  missing.unlink()
  with pytest.raises(ss.SoundscapeError, match=rf"lists 1 file\(s\) that are not on disk, the "
                     rf"first: {missing} \(line 61\)"):
    ss.urbansed_mini_splits(official)
  missing.write_bytes(b"x")
  csv_path.write_text("\n".join([lines[0].replace(",class", ",label")] + lines[1:]))
  with pytest.raises(ss.SoundscapeError, match=r"UrbanSound8K\.csv:1: the header .* lacks "
                     r"\['class'\]"):
    ss.urbansed_mini_splits(official)
  csv_path.write_text("\n".join([lines[0]] + [l for l in lines[1:] if ",3," not in l]))
  with pytest.raises(ss.SoundscapeError, match=r"no row for fold\(s\) \[3\]"):
    ss.urbansed_mini_splits(official)


def test_urbansed_mini_builds_from_the_official_download_and_needs_a_root(tmp_path):
  from sed_jax import config_lib  # pylint: disable=g-import-not-at-top
  from sed_jax.data import builders  # pylint: disable=g-import-not-at-top
  from sed_jax.data.builders import base  # pylint: disable=g-import-not-at-top
  _, official = _official_urbansound(tmp_path, audio=True)
  cfg = config_lib.common().dataset("urbansed_mini", smoke=True)
  cfg.update(dict(root=str(official), data_dir=str(tmp_path / "tfds"), num_workers=1,
                  clip_seconds=2.0))
  cfg.soundscapes.clips.update(dict(train=3, validation=2, test=2, unlabeled=0))
  builder = builders.prepare(cfg, config_lib.common().features())
  assert {k: v["clips"] for k, v in builder.info.metadata["summary"].items()} == {
      "train": 3, "validation": 2, "test": 2}
  cfg.root = ""
  with pytest.raises(base.BuildError, match=r"needs dataset\.root.*UrbanSound8K\.tar\.gz.*"
                     r"--config\.dataset\.root=<folder>"):
    builders.make_builder(cfg, config_lib.common().features())


def test_short_background_is_looped_to_the_clip_length():
  x = np.sin(np.arange(SR) / 10.0)
  out = ss._background_excerpt(np.random.default_rng(0), x, int(3.5 * SR), SR)
  assert out.shape == (int(3.5 * SR),)
  assert np.abs(out).max() <= 1.0 + 1e-9
  # The crossfade joins copies without a gap: no 10-ms stretch is silent.
  frames = out[:len(out) // 160 * 160].reshape(-1, 160)
  assert (np.sqrt(np.mean(frames ** 2, axis=1)) > 0.3).all()
