"""TFDS builders: build tiny datasets from files the test writes, read them back TF-free."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sed_jax import config_lib
from sed_jax.data import builders
from sed_jax.data import pipeline
from sed_jax.data.builders import base

SR = 16000


def tone(seconds, freq=440.0, sr=SR, channels=1):
  t = np.arange(int(seconds * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
  return np.stack([x] * channels, 1) if channels > 1 else x


def write_tsv(path, header, rows):
  path.write_text("\n".join(["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]) + "\n")


def make_plain_root(root):
  """train (strong), validation (weak), unlabeled (no TSV); 1-s clips."""
  for split in ("train", "validation", "unlabeled"):
    (root / split / "audio").mkdir(parents=True)
  for i in range(3):
    sf.write(root / "train" / "audio" / f"t{i}.wav", tone(1.0, 300 + 200 * i), SR)
  write_tsv(root / "train" / "strong.tsv", ["filename", "onset", "offset", "event_label"],
            [("t0.wav", 0.0, 0.5, "dog"), ("t0.wav", 0.4, 0.9, "cat"),
             ("t1.wav", 0.2, 1.5, "dog"),   # Runs past the clip end: clipped and counted.
             ("t2.wav", "", "", "")])       # DESED's "no event" row.
  for i in range(2):
    sf.write(root / "validation" / "audio" / f"v{i}.wav", tone(1.0, 500), SR)
  write_tsv(root / "validation" / "weak.tsv", ["filename", "event_labels"],
            [("v0.wav", "cat,dog"), ("v1.wav", "")])
  sf.write(root / "unlabeled" / "audio" / "u0.flac", tone(1.0, 700), SR)
  return root


def data_config(name, root, data_dir, **kw):
  cfg = config_lib.common().dataset(name)
  cfg.update(dict(dict(root=str(root), data_dir=str(data_dir), num_workers=1, clip_seconds=1.0),
                  **kw))
  return cfg


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
  """A built plain dcase_folder dataset: (data_cfg, feature_cfg, builder)."""
  tmp = tmp_path_factory.mktemp("plain")
  root = make_plain_root(tmp / "root")
  data_cfg, feat = data_config("dcase_folder", root, tmp / "tfds"), config_lib.common().features()
  return data_cfg, feat, builders.prepare(data_cfg, feat)


def test_dcase_folder_content(plain):
  data_cfg, feat, builder = plain
  meta = builder.info.metadata
  assert meta["classes"] == ["cat", "dog"]  # From the labels, sorted.
  train = pipeline.data_source(data_cfg, feat, "train")
  assert len(train) == 3
  by_id = {train[i]["audio_id"].decode(): train[i] for i in range(3)}
  t0, t1, t2 = by_id["t0.wav"], by_id["t1.wav"], by_id["t2.wav"]
  assert t0["log_mel"].shape == (50, 64) and t0["log_mel"].dtype == np.float32
  assert t0["strong"].shape == (12, 2)
  # dog 0-0.5 s → output frames 0..5 (80 ms each; frame 6 starts at 0.48, covered 20 ms).
  assert t0["strong"][:, 1].tolist() == [1] * 6 + [0] * 6
  assert t0["strong"][:, 0].tolist() == [0] * 5 + [1] * 6 + [0]
  assert t0["weak"].tolist() == [1, 1] and t0["has_strong"] and t0["has_weak"]
  assert t1["strong"][:, 1].tolist() == [0, 0] + [1] * 10
  assert t2["strong"].sum() == 0 and t2["weak"].sum() == 0 and t2["has_strong"]
  assert t0["duration"] == pytest.approx(1.0)
  # The exact annotated events travel with the example (t1's dog clipped at the clip end).
  assert t0["event_onsets"].tolist() == [0.0, pytest.approx(0.4)]
  assert t0["event_labels"].tolist() == [1, 0]
  assert t1["event_offsets"].tolist() == [1.0] and t2["event_labels"].size == 0
  summary = meta["summary"]
  assert summary["train"]["events_clipped_at_clip_end"] == 1
  assert summary["train"]["events_per_class"] == {"cat": 1, "dog": 2}
  assert summary["train"]["skipped"] == []


def test_weak_and_unlabeled_splits(plain):
  data_cfg, feat, _ = plain
  val = pipeline.data_source(data_cfg, feat, "validation")
  rows = {val[i]["audio_id"].decode(): val[i] for i in range(len(val))}
  assert rows["v0.wav"]["weak"].tolist() == [1, 1] and rows["v1.wav"]["weak"].tolist() == [0, 0]
  assert all(r["has_weak"] and not r["has_strong"] for r in rows.values())
  unl = pipeline.data_source(data_cfg, feat, "unlabeled")
  assert len(unl) == 1 and not unl[0]["has_weak"] and not unl[0]["has_strong"]


def test_reading_never_imports_tensorflow(plain):
  assert "tensorflow" not in sys.modules
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401  The test environment must not even have it.


def test_prepared_dataset_is_reused_and_settings_change_the_name(plain):
  data_cfg, feat, builder = plain
  again = builders.make_builder(data_cfg, feat)
  assert again.builder_config.name == builder.builder_config.name and again.is_prepared()
  other = config_lib.common().features()
  other.n_mels = 32
  assert builders.make_builder(data_cfg, other).builder_config.name != builder.builder_config.name
  renamed = data_config("dcase_folder", data_cfg.root, data_cfg.data_dir, classes="cat,dog,bird")
  assert builders.make_builder(renamed, feat).builder_config.name != builder.builder_config.name


def test_edited_annotations_give_a_new_dataset(tmp_path):
  root = make_plain_root(tmp_path / "root")
  cfg, feat = data_config("dcase_folder", root, tmp_path / "tfds"), config_lib.common().features()
  before = builders.make_builder(cfg, feat).builder_config.name
  with open(root / "train" / "strong.tsv", "a") as f:
    f.write("t2.wav\t0.1\t0.2\tcat\n")
  assert builders.make_builder(cfg, feat).builder_config.name != before


def test_unbuilt_dataset_says_how_to_build(tmp_path):
  root = make_plain_root(tmp_path / "root")
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="python -m sed_jax.build --dataset=dcase_folder"):
    pipeline.data_source(cfg, config_lib.common().features(), "train")


def make_messy_root(root):
  """A folder mixing a corrupt file, an empty file, stereo, odd rates and a TSV with a bad line."""
  audio = root / "train" / "audio"
  audio.mkdir(parents=True)
  sf.write(audio / "mono16k.wav", tone(1.0), SR)
  sf.write(audio / "stereo44k.wav", tone(1.0, sr=44100, channels=2), 44100)
  sf.write(audio / "mono8k.wav", tone(1.0, sr=8000), 8000)
  sf.write(audio / "mono22k.flac", tone(1.0, sr=22050), 22050)
  sf.write(audio / "stereo48k.wav", tone(1.0, sr=48000, channels=2), 48000)
  (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
  (audio / "empty.wav").write_bytes(b"")
  sf.write(audio / "badrow.wav", tone(1.0), SR)
  rows = [(n, 0.1, 0.5, "dog") for n in ("mono16k.wav", "stereo44k.wav", "mono8k.wav",
                                         "mono22k.flac", "stereo48k.wav", "corrupt.wav",
                                         "empty.wav")]
  rows.append(("badrow.wav", 0.3, "oops", "dog"))  # Line 9.
  write_tsv(root / "train" / "strong.tsv", ["filename", "onset", "offset", "event_label"], rows)
  return root


def test_messy_folder_raise_names_the_file(tmp_path):
  root = make_messy_root(tmp_path / "root")
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"strong\.tsv:9: offset 'oops' is not a number"):
    builders.make_builder(cfg, config_lib.common().features())
  # Fix the bad row: now the corrupt audio is the first problem.
  rows = [(n, 0.1, 0.5, "dog") for n in ("mono16k.wav", "corrupt.wav", "badrow.wav")]
  write_tsv(root / "train" / "strong.tsv", ["filename", "onset", "offset", "event_label"], rows)
  (root / "train" / "audio" / "empty.wav").unlink()
  for name in ("stereo44k.wav", "mono8k.wav", "mono22k.flac", "stereo48k.wav"):
    (root / "train" / "audio" / name).unlink()
  with pytest.raises(base.BuildError, match=r"(?s)corrupt\.wav.*--on_error=skip"):
    builders.prepare(cfg, config_lib.common().features())
  assert not builders.make_builder(cfg, config_lib.common().features()).is_prepared()


def test_messy_folder_skip_builds_the_rest_and_lists_why(tmp_path):
  root = make_messy_root(tmp_path / "root")
  cfg = data_config("dcase_folder", root, tmp_path / "tfds", on_error="skip")
  builder = builders.prepare(cfg, config_lib.common().features())
  skipped = builder.info.metadata["summary"]["train"]["skipped"]
  assert sorted(s["file"] for s in skipped) == ["badrow.wav", "corrupt.wav", "empty.wav"]
  reasons = {s["file"]: s["reason"] for s in skipped}
  assert "strong.tsv:9" in reasons["badrow.wav"] and "empty" in reasons["empty.wav"]
  src = pipeline.data_source(cfg, config_lib.common().features(), "train")
  assert len(src) == 5
  for i in range(5):  # Every rate and channel count became 1 s of 16 kHz mono.
    assert src[i]["log_mel"].shape == (50, 64)
  # Reopened from disk, the metadata still lists the skipped files.
  reopened = builders.make_builder(cfg, config_lib.common().features())
  assert len(reopened.info.metadata["summary"]["train"]["skipped"]) == 3


def test_bad_tsv_line_is_named(tmp_path):
  root = make_plain_root(tmp_path / "root")
  with open(root / "train" / "strong.tsv", "a") as f:
    f.write("t1.wav\tabc\t0.5\tdog\n")
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"strong\.tsv:6"):
    builders.prepare(cfg, config_lib.common().features())


def test_missing_audio_is_reported_as_a_set(tmp_path):
  root = make_plain_root(tmp_path / "root")
  with open(root / "train" / "strong.tsv", "a") as f:
    f.write("gone1.wav\t0.1\t0.2\tdog\ngone2.wav\t0.1\t0.2\tcat\n")
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  with pytest.raises(ValueError, match=r"2 annotated file.*gone1\.wav, gone2\.wav"):
    builders.prepare(cfg, config_lib.common().features())
  cfg.on_error = "skip"
  builder = builders.prepare(cfg, config_lib.common().features())
  skipped = {s["file"] for s in builder.info.metadata["summary"]["train"]["skipped"]}
  assert skipped == {"gone1.wav", "gone2.wav"}


def test_unannotated_audio_in_a_labelled_split_is_an_error(tmp_path):
  root = make_plain_root(tmp_path / "root")
  sf.write(root / "train" / "audio" / "stray.wav", tone(1.0), SR)
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  with pytest.raises(base.BuildError, match=r"stray\.wav.*not listed"):
    builders.prepare(cfg, config_lib.common().features())


def make_desed_root(d, suffix=""):
  """DESED as its download scripts write it (DCASE 2021-2024 task 4: `desed` package and the
  task 4 baseline; `suffix='_16k'` gives the baseline's resampled folder names), with every file
  the download leaves beside the ones the builder reads (durations, unlabel_in_domain.tsv,
  the synthetic validation set) and YouTube-style file names."""
  a, m = d / "audio", d / "metadata"
  clips = {
      f"train/synthetic21_train/soundscapes{suffix}": ["0.wav", "1.wav"],
      f"train/strong_label_real{suffix}": ["Y--4gqARaEJE_0.000_10.000.wav"],
      f"train/weak{suffix}": ["Y-BJNMHMZDcU_50.000_60.000.wav", "Y00pbt6aJV8Y_350.000_360.000.wav"],
      f"train/unlabel_in_domain{suffix}": ["Y--0w1YA1Hm4_30.000_40.000.wav"] * 1 +
                                           ["Y-0ZFDJcZS5I_30.000_40.000.wav"],
      f"validation/validation{suffix}": ["Y00pbt6aJV8Y_350.000_360.000.wav"],
      f"validation/synthetic21_validation/soundscapes{suffix}": ["10.wav"],
      f"eval/public{suffix}": ["Y-AI9yYcB_0Y_30.000_40.000.wav", "Y-JP1GqPEKtw_30.000_40.000.wav"],
  }
  for folder, names in clips.items():
    (a / folder).mkdir(parents=True)
    for k, name in enumerate(names):
      sf.write(a / folder / name, tone(1.0, 300 + 100 * k), SR)
  strong = ["filename", "onset", "offset", "event_label"]
  for sub in ("train/synthetic21_train", "validation/synthetic21_validation", "eval"):
    (m / sub).mkdir(parents=True)
  write_tsv(m / "train/synthetic21_train/soundscapes.tsv", strong,
            [("0.wav", 0.1, 0.5, "Speech"), ("0.wav", 0.3, 0.9, "Dog"),
             ("1.wav", 0.0, 1.0, "Vacuum_cleaner")])
  write_tsv(m / "train/audioset_strong.tsv", strong,
            [("Y--4gqARaEJE_0.000_10.000.wav", 0.2, 0.6, "Alarm_bell_ringing")])
  write_tsv(m / "train/weak.tsv", ["filename", "event_labels"],
            [("Y-BJNMHMZDcU_50.000_60.000.wav", "Alarm_bell_ringing,Dog"),
             ("Y00pbt6aJV8Y_350.000_360.000.wav", "Speech")])
  write_tsv(m / "train/unlabel_in_domain.tsv", ["filename"],
            [("Y--0w1YA1Hm4_30.000_40.000.wav",), ("Y-0ZFDJcZS5I_30.000_40.000.wav",)])
  write_tsv(m / "validation/validation.tsv", strong,
            [("Y00pbt6aJV8Y_350.000_360.000.wav", 0.2, 0.4, "Dog")])
  write_tsv(m / "validation/validation_durations.tsv", ["filename", "duration"],
            [("Y00pbt6aJV8Y_350.000_360.000.wav", 1.0)])
  write_tsv(m / "validation/synthetic21_validation/soundscapes.tsv", strong,
            [("10.wav", 0.1, 0.2, "Speech")])
  write_tsv(m / "validation/synthetic21_validation/durations.tsv", ["filename", "duration"],
            [("10.wav", 1.0)])
  write_tsv(m / "eval/public.tsv", strong,
            [("Y-AI9yYcB_0Y_30.000_40.000.wav", 0.0, 0.7, "Speech"),
             ("Y-JP1GqPEKtw_30.000_40.000.wav", "", "", "")])
  write_tsv(m / "eval/public_durations.tsv", ["filename", "duration"],
            [("Y-AI9yYcB_0Y_30.000_40.000.wav", 1.0), ("Y-JP1GqPEKtw_30.000_40.000.wav", 1.0)])
  return d


@pytest.mark.parametrize("suffix", ["", "_16k"])
def test_desed_preset_reads_the_published_layout(tmp_path, suffix):
  d = make_desed_root(tmp_path / "DESED", suffix)
  cfg = data_config("desed", d, tmp_path / "tfds")
  builder = builders.prepare(cfg, config_lib.common().features())
  sizes = {s: i.num_examples for s, i in builder.info.splits.items()}
  assert sizes == {"synthetic": 2, "strong": 1, "weak": 2, "unlabeled": 2, "validation": 1,
                   "synthetic_validation": 1, "test": 2}
  assert builder.info.metadata["classes"] == ["Alarm_bell_ringing", "Dog", "Speech",
                                              "Vacuum_cleaner"]
  feat = config_lib.common().features()
  src = {s: pipeline.data_source(cfg, feat, s) for s in sizes}
  by_id = lambda split: {pipeline.text(src[split][i]["audio_id"]): src[split][i]
                         for i in range(sizes[split])}
  weak = by_id("weak")["Y-BJNMHMZDcU_50.000_60.000.wav"]
  assert weak["has_weak"] and not weak["has_strong"] and weak["weak"].tolist() == [1, 1, 0, 0]
  unlabeled = by_id("unlabeled")
  assert not any(ex["has_weak"] or ex["has_strong"] for ex in unlabeled.values())
  test = by_id("test")
  assert test["Y-JP1GqPEKtw_30.000_40.000.wav"]["weak"].sum() == 0  # DESED's "no event" row.
  assert test["Y-AI9yYcB_0Y_30.000_40.000.wav"]["has_strong"]


def test_urban_sed_preset_reads_the_published_layout(tmp_path):
  """URBAN-SED v2.0.0 as unpacked: audio/{train,validate,test}/soundscape_<split>_<kind><n>.wav,
  annotations/<split>/ holding a .txt (onset, offset, label; no header) and a .jams each."""
  u = tmp_path / "URBAN-SED_v2.0.0"
  events = {"train": [("soundscape_train_uniform0", "0.1\t0.6\tsiren\n"),
                      ("soundscape_train_bimodal1", "0.000\t0.300\tdog_bark\n")],
            "validate": [("soundscape_validate_uniform0", "0.0\t0.3\tdog_bark\n0.5\t0.9\tsiren\n")],
            "test": [("soundscape_test_unimodal0", "0.2\t0.8\tjackhammer\n")]}
  for split, clips in events.items():
    (u / "audio" / split).mkdir(parents=True)
    (u / "annotations" / split).mkdir(parents=True)
    for name, txt in clips:
      sf.write(u / "audio" / split / f"{name}.wav", tone(1.0), SR)
      (u / "annotations" / split / f"{name}.txt").write_text(txt)
      (u / "annotations" / split / f"{name}.jams").write_text("{}")  # Ignored.
  cfg = data_config("urban_sed", u, tmp_path / "tfds")
  builder = builders.prepare(cfg, config_lib.common().features())
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 2, "validation": 1, "test": 1}
  assert builder.info.metadata["classes"] == ["dog_bark", "jackhammer", "siren"]
  val = pipeline.data_source(cfg, config_lib.common().features(), "validation")
  assert val[0]["weak"].tolist() == [1, 0, 1]


def test_missing_root_is_a_clear_error(tmp_path):
  cfg = data_config("dcase_folder", tmp_path / "nowhere", tmp_path / "tfds")
  with pytest.raises(base.BuildError, match="dataset.root"):
    builders.make_builder(cfg, config_lib.common().features())
  cfg = data_config("dcase_folder", "", tmp_path / "tfds")
  with pytest.raises(base.BuildError, match="--root"):
    builders.make_builder(cfg, config_lib.common().features())


def test_killed_build_leaves_nothing_readable_and_next_build_succeeds(tmp_path):
  root = make_plain_root(tmp_path / "root")
  tfds_dir = tmp_path / "tfds"
  # A real SIGKILL in the middle of writing the train split.
  script = textwrap.dedent(f"""
      import os, signal
      from sed_jax import config_lib
      from sed_jax.data import builders
      from sed_jax.data.builders import base
      real, calls = base.make_example, []
      def dying(*a):
        calls.append(1)
        if len(calls) == 2:
          os.kill(os.getpid(), signal.SIGKILL)
        return real(*a)
      base.make_example = dying
      cfg = config_lib.common().dataset("dcase_folder")
      cfg.update(dict(root={str(root)!r}, data_dir={str(tfds_dir)!r}, num_workers=1))
      builders.prepare(cfg, config_lib.common().features())
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
  assert proc.returncode == -9, proc.stderr[-2000:]
  cfg, feat = data_config("dcase_folder", root, tfds_dir), config_lib.common().features()
  builder = builders.make_builder(cfg, feat)
  assert not builder.is_prepared()
  leftovers = list(tfds_dir.rglob("incomplete.*"))
  assert leftovers  # The killed build did leave its partial files behind...
  with pytest.raises(FileNotFoundError):
    pipeline.data_source(cfg, feat, "train")  # ...which are never read as a dataset.
  builders.prepare(cfg, feat)
  assert len(pipeline.data_source(cfg, feat, "train")) == 3
  assert not list(tfds_dir.rglob("incomplete.*"))


def test_parallel_extraction_equals_serial(tmp_path):
  root = tmp_path / "root"
  (root / "train" / "audio").mkdir(parents=True)
  rows = []
  for i in range(10):
    sf.write(root / "train" / "audio" / f"c{i}.wav", tone(1.0, 200 + 50 * i), SR)
    rows.append((f"c{i}.wav", 0.1 * (i % 5), 0.6, "x"))
  write_tsv(root / "train" / "strong.tsv", ["filename", "onset", "offset", "event_label"], rows)
  feat = config_lib.common().features()
  serial = builders.prepare(data_config("dcase_folder", root, tmp_path / "a"), feat)
  par_cfg = data_config("dcase_folder", root, tmp_path / "b", num_workers=2)
  parallel = builders.prepare(par_cfg, feat)
  a = pipeline.data_source(data_config("dcase_folder", root, tmp_path / "a"), feat, "train")
  b = pipeline.data_source(par_cfg, feat, "train")
  for i in range(10):
    np.testing.assert_array_equal(a[i]["log_mel"], b[i]["log_mel"])
    np.testing.assert_array_equal(a[i]["strong"], b[i]["strong"])
  assert serial.info.metadata["summary"] == parallel.info.metadata["summary"]


def test_soundscapes_builder_mixes_builds_and_withholds_unlabeled_labels(tmp_path):
  root = tmp_path / "src"
  for split, labels in (("a", ("beep", "hum")), ("b", ("beep", "hum"))):
    for k, label in enumerate(labels):
      (root / split / label).mkdir(parents=True)
      for j in range(2):
        sf.write(root / split / label / f"{k}{j}.wav", tone(0.5, 300 + 400 * k + 50 * j), SR)
  (root / "bg").mkdir()
  rng = np.random.default_rng(0)
  sf.write(root / "bg" / "noise.wav", (0.01 * rng.standard_normal(SR * 3)).astype(np.float32),
           SR)
  cfg = data_config("soundscapes", root, tmp_path / "tfds", classes="beep,hum", clip_seconds=2.0)
  s = cfg.soundscapes
  s.update(dict(backgrounds="bg", max_events=2))
  s.sources.update(dict(train="a", validation="b", test="", unlabeled="a"))
  s.clips.update(dict(train=4, validation=2, test=0, unlabeled=3))
  feat = config_lib.common().features()
  builder = builders.prepare(cfg, feat)
  assert sorted(builder.info.splits) == ["train", "unlabeled", "validation"]
  train = pipeline.data_source(cfg, feat, "train")
  assert len(train) == 4 and train[0]["log_mel"].shape == (100, 64)
  assert sum(int(train[i]["weak"].sum()) for i in range(4)) > 0
  unl = pipeline.data_source(cfg, feat, "unlabeled")
  assert not any(unl[i]["has_strong"] or unl[i]["has_weak"] for i in range(3))
  assert all(unl[i]["strong"].sum() == 0 for i in range(3))
  # The mixed audio is reused: the same config maps to the same, prepared dataset.
  assert builders.make_builder(cfg, feat).is_prepared()


@pytest.mark.skipif(not (Path(__file__).parents[2] / ".." / "shared" / "data").is_dir(),
                    reason="../shared/data (real UrbanSound8K clips) is not beside this checkout")
def test_urbansed_mini_smoke_builds_from_the_real_clips(tmp_path):
  cfg = config_lib.common().dataset("urbansed_mini", smoke=True)
  cfg.update(dict(root=str(Path(__file__).parents[2] / ".." / "shared" / "data"),
                  data_dir=str(tmp_path / "tfds"), num_workers=1))
  cfg.soundscapes.clips.update(dict(train=8, validation=4, test=4, unlabeled=0))
  builder = builders.prepare(cfg, config_lib.common().features())
  summary = builder.info.metadata["summary"]
  assert {k: v["clips"] for k, v in summary.items()} == {"train": 8, "validation": 4, "test": 4}
  assert builder.info.metadata["classes"][0] == "air_conditioner"
