"""A corpus of bad inputs, each fed to what a user runs: a dataset build, the experiment's config.

Every case either stops with an error that names the file and line (or the config key) and says
what to do, or is handled in a documented way that the build summary reports. A failed build
leaves nothing that a later run could read as a dataset. The module-level tests
(tests/data/test_audio.py, test_annotations.py, test_builders.py) cover each reader in detail;
this corpus checks the user-facing path end to end. README "Reliability" lists the cases.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sed_jax import config_checks
from sed_jax import config_lib
from sed_jax.data import builders
from tests.data.test_builders import SR, data_config, tone
import tests

ROOT = Path(__file__).resolve().parents[2]
HEADER = "filename\tonset\toffset\tevent_label\n"
GOOD_ROWS = "good0.wav\t0.1\t0.5\tdog\ngood1.wav\t0.2\t0.8\tcat\n"


def _good_root(root: Path) -> Path:
  (root / "train" / "audio").mkdir(parents=True)
  for i in range(2):
    sf.write(root / "train" / "audio" / f"good{i}.wav", tone(1.0, 300 + 200 * i), SR)
  (root / "train" / "strong.tsv").write_text(HEADER + GOOD_ROWS)
  return root


def _add_audio(root: Path, name: str, write) -> None:
  """Adds one clip (written by `write(path)`) with an annotation row."""
  write(root / "train" / "audio" / name)
  with open(root / "train" / "strong.tsv", "a") as f:
    f.write(f"{name}\t0.1\t0.4\tdog\n")


def _wav(data, rate=SR, subtype="PCM_16"):
  return lambda p: sf.write(p, data, rate, subtype=subtype)


def _truncated(path):
  sf.write(path, tone(1.0), SR, subtype="PCM_16")
  data = path.read_bytes()
  path.write_bytes(data[:60])  # The header promises 1 s of samples; 16 bytes are left.


def _with_bad_sample(value):
  x = tone(1.0)
  x[8000] = value
  return _wav(x, subtype="FLOAT")


def _symlink_loop(path):
  os.symlink(path.with_name("loop_b.wav"), path)
  os.symlink(path, path.with_name("loop_b.wav"))


def _unreadable(path):
  sf.write(path, tone(1.0), SR)
  path.chmod(0)


def _rows(text):
  """A case that appends annotation rows (line numbers: header 1, good rows 2-3)."""
  def edit(root):
    with open(root / "train" / "strong.tsv", "a") as f:
      f.write(text)
  return edit


def _replace_tsv(text):
  return lambda root: (root / "train" / "strong.tsv").write_text(text)


# case → (edit of a good DCASE folder, expected phrase in the error; None = handled).
ERRORS = {
    "audio: corrupt header": (
        lambda r: _add_audio(r, "bad.wav", lambda p: p.write_bytes(b"RIFF\0\0\0\0WAVEjunk" * 8)),
        r"bad\.wav.*cannot be decoded"),
    "audio: truncated file": (lambda r: _add_audio(r, "bad.wav", _truncated), r"bad\.wav"),
    "audio: empty file": (
        lambda r: _add_audio(r, "bad.wav", lambda p: p.write_bytes(b"")), r"bad\.wav.*empty"),
    "audio: 0 samples": (
        lambda r: _add_audio(r, "bad.wav", _wav(np.zeros(0, np.float32))), r"bad\.wav.*0 frames"),
    "audio: NaN samples": (lambda r: _add_audio(r, "bad.wav", _with_bad_sample(np.nan)),
                           r"bad\.wav.*non-finite"),
    "audio: inf samples": (lambda r: _add_audio(r, "bad.wav", _with_bad_sample(np.inf)),
                           r"bad\.wav.*non-finite"),
    "audio: directory named like audio": (
        lambda r: _add_audio(r, "bad.wav", lambda p: p.mkdir()),
        r"no audio in this folder: bad\.wav \(a directory, not a file\)"),
    "audio: symlink loop": (lambda r: _add_audio(r, "bad.wav", _symlink_loop),
                            r"bad\.wav \(a symlink to no file: broken, or a loop\)"),
    "audio: unreadable permissions": (lambda r: _add_audio(r, "bad.wav", _unreadable),
                                      r"bad\.wav.*permission denied"),
    "annotations: missing column": (_replace_tsv("filename\tonset\tevent_label\n"
                                                 "good0.wav\t0.1\tdog\n"), r"strong\.tsv:1"),
    "annotations: onset not a number": (_rows("good0.wav\tabc\t0.5\tdog\n"),
                                        r"strong\.tsv:4: onset 'abc' is not a number"),
    "annotations: offset before onset": (_rows("good0.wav\t0.7\t0.2\tdog\n"), r"strong\.tsv:4"),
    "annotations: negative onset": (_rows("good0.wav\t-1\t0.2\tdog\n"), r"strong\.tsv:4"),
    "annotations: too few fields": (_rows("good0.wav\t0.1\n"), r"strong\.tsv:4"),
    "annotations: annotated audio missing": (_rows("gone.wav\t0.1\t0.2\tdog\n"), r"gone\.wav"),
    "annotations: audio not annotated": (
        lambda r: sf.write(r / "train" / "audio" / "stray.wav", tone(1.0), SR),
        r"stray\.wav.*not listed"),
}

HANDLED = {
    "audio: 8-bit": lambda r: _add_audio(r, "x.wav", _wav(tone(1.0), subtype="PCM_U8")),
    "audio: 24-bit": lambda r: _add_audio(r, "x.wav", _wav(tone(1.0), subtype="PCM_24")),
    "audio: 6 channels": lambda r: _add_audio(r, "x.wav", _wav(tone(1.0, channels=6))),
    "audio: 8 kHz": lambda r: _add_audio(r, "x.wav", _wav(tone(1.0, sr=8000), rate=8000)),
    "audio: 96 kHz": lambda r: _add_audio(r, "x.wav", _wav(tone(1.0, sr=96000), rate=96000)),
    "annotations: duplicated rows": _rows("good0.wav\t0.1\t0.5\tdog\n"
                                          "good0.wav\t0.10\t0.500\tdog\n"),
    "annotations: overlapping same-class events": _rows("good0.wav\t0.3\t0.9\tdog\n"),
    "annotations: labels with spaces and unicode": _rows("good1.wav\t0.1\t0.3\tcar horn\n"
                                                         "good1.wav\t0.5\t0.6\tcafé ☕\n"),
    "annotations: event beyond the clip": _rows("good1.wav\t0.5\t4.0\tdog\n"),
}


def _build(tmp_path, edit):
  root = _good_root(tmp_path / "root")
  edit(root)
  cfg = data_config("dcase_folder", root, tmp_path / "tfds")
  return cfg, lambda: builders.prepare(cfg, config_lib.common().features())


def _nothing_half_written(cfg) -> None:
  data_dir = Path(cfg.data_dir)
  assert not list(data_dir.rglob("incomplete.*")), list(data_dir.rglob("incomplete.*"))
  assert not list(data_dir.rglob("dataset_info.json"))


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_stops_the_build_naming_the_file(tmp_path, monkeypatch, case):
  edit, phrase = ERRORS[case]
  cfg, build = _build(tmp_path, edit)
  if case.endswith("permissions") and os.access(
      tmp_path / "root" / "train" / "audio" / "bad.wav", os.R_OK):
    real = os.access  # Root ignores chmod: make this file look unreadable, as to a user.
    monkeypatch.setattr(os, "access", lambda p, mode, **k: (
        not os.fspath(p).endswith("bad.wav") and real(p, mode, **k)))
  with pytest.raises((builders.BuildError, ValueError, OSError), match=f"(?s){phrase}"):
    build()
  _nothing_half_written(cfg)


@pytest.mark.parametrize("case", list(HANDLED))
def test_odd_input_is_handled_and_reported(tmp_path, case):
  cfg, build = _build(tmp_path, HANDLED[case])
  builder = build()
  meta = builder.info.metadata
  summary = meta["summary"]["train"]
  assert not summary["skipped"]
  source = builder.as_data_source("train")
  clips = {ex["audio_id"].decode() if isinstance(ex["audio_id"], bytes) else ex["audio_id"]: ex
           for ex in (source[i] for i in range(len(source)))}
  for ex in clips.values():
    assert np.isfinite(ex["log_mel"]).all() and ex["log_mel"].shape == (50, 64)
  if case.startswith("audio"):  # Any bit depth, channel count or rate: 16 kHz mono features.
    assert len(clips) == 3
  if case.endswith("duplicated rows"):
    assert summary["events_per_class"]["dog"] == 1  # The same event twice is one event.
  if case.endswith("overlapping same-class events"):
    assert summary["events_per_class"]["dog"] == 2  # Kept; the targets take their union.
    dog = list(meta["classes"]).index("dog")
    assert clips["good0.wav"]["strong"][2:11, dog].all()  # 0.16-0.88 s: 0.1-0.5 ∪ 0.3-0.9.
  if case.endswith("unicode"):
    assert {"car horn", "café ☕"} <= set(meta["classes"])
  if case.endswith("beyond the clip"):
    assert summary["events_clipped_at_clip_end"] == 1


def test_the_build_command_prints_the_error_without_a_traceback(tmp_path):
  cfg, _ = _build(tmp_path, ERRORS["annotations: onset not a number"][0])
  proc = subprocess.run(
      [sys.executable, "-m", "sed_jax.build", "--dataset=dcase_folder",
       f"--root={cfg.root}", f"--data_dir={cfg.data_dir}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "Build failed:" in proc.stderr and "strong.tsv:4" in proc.stderr
  _nothing_half_written(cfg)


CONFIG_CASES = {
    "negative temperature": ({"kd.temperature": -1.0}, "kd.temperature=-1.0 must be > 0"),
    "alpha above 1": ({"kd.alpha": 1.5}, "kd.alpha=1.5 must be in [0, 1]"),
    "alpha below 0": ({"kd.alpha": -0.1}, "kd.alpha=-0.1 must be in [0, 1]"),
    "negative unlabeled ratio": ({"kd.unlabeled_ratio": -1.0},
                                 "kd.unlabeled_ratio=-1.0 must be >= 0"),
    "unknown teacher": ({"teachers": ("resnet", "vgg")}, "'vgg' is not one"),
    "duplicate teachers": ({"teachers": ("resnet", "resnet")}, "must be distinct"),
    "single-teacher KD from no teacher": ({"kd.strategy": "single:gated"},
                                          "names no teacher"),
    "weights for the wrong teacher count": ({"kd.strategy": "weighted", "kd.weights": [1.0]},
                                            "needs one per teacher"),
    "zero steps": ({"total_steps": 0}, "total_steps=0 must be a positive integer"),
    "teacher LR of 0": ({"teacher.optim.lr": 0.0}, "teacher.optim.lr=0.0 must be > 0"),
    "unknown optimiser": ({"optim.name": "sgd"}, "optim.name='sgd' is not one of"),
    "threshold outside (0, 1)": ({"eval.threshold": 1.0}, "eval.threshold=1.0"),
    "strong fraction above 1": ({"dataset.strong_fraction": 1.5},
                                "dataset.strong_fraction=1.5 must be in [0, 1]"),
    "unknown dataset": ({"dataset.name": "audioset"}, "dataset.name='audioset' is not one of"),
    "misspelt student attribute": ({"model.overrides.gru_feature": 64},
                                   "model.overrides: unknown model overrides ['gru_feature']"),
    "misspelt teacher attribute": ({"teacher.arch_overrides.resnet.widthz": [8]},
                                   "teacher.arch_overrides.resnet: unknown model overrides "
                                   "['widthz'] for arch 'resnet'"),
    "unknown CPU kernel setting": ({"model.cpu_kernels": "on"},
                                   "model.cpu_kernels='on' is not one of ('auto', 'off')"),
    "unknown teacher CPU kernel setting": ({"teacher.model.cpu_kernels": "xla"},
                                           "teacher.model.cpu_kernels='xla' is not one of "
                                           "('auto', 'off')"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_impossible_config_values_are_named_before_any_work(case):
  overrides, phrase = CONFIG_CASES[case]
  config = config_lib.load_config(str(ROOT / "configs/student.py:smoke"))
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  with pytest.raises(config_checks.ConfigError, match=phrase.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[").replace("]", r"\]")):
    config_checks.check(config)


def test_every_problem_is_listed_at_once():
  config = config_lib.load_config(str(ROOT / "configs/student.py:smoke"))
  config.kd.alpha, config.batch_size = 2.0, -4
  with pytest.raises(config_checks.ConfigError) as err:
    config_checks.check(config)
  assert "kd.alpha=2.0" in str(err.value) and "batch_size=-4" in str(err.value)


def test_shipped_configs_pass():
  for spec in ("configs/student.py", "configs/student.py:smoke", "configs/student.py:scale=full",
               "configs/student.py:labels=strong",
               "configs/teacher.py:arch=resnet", "configs/teacher.py:arch=gated,smoke"):
    config_checks.check(config_lib.load_config(str(ROOT / spec)), device_count=8)


def test_batch_that_does_not_split_over_the_devices_stops_main_at_once(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "sed_jax.main", "--config=configs/student.py:smoke",
       f"--workdir={tmp_path / 'run'}", f"--config.dataset.data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, XLA_FLAGS=tests.xla_flags("--xla_force_host_platform_device_count=3")))
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "batch_size=8 does not split over the 3 devices: use a multiple of 3" in proc.stderr
  assert not (tmp_path / "tfds").exists() and not (tmp_path / "run").exists()
