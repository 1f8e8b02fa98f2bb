"""The standalone runner: its front end equals the training features, its probabilities and
events equal `sed_jax.detect`'s, it runs alone (no sed_jax, JAX or TensorFlow), and bad model
folders get clear errors."""

import hashlib
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from sed_jax import edge
from sed_jax import inference
from sed_jax.data import features as feat_lib
from tests.deploy import runs as runs_lib

pytest.importorskip("onnxruntime")
pytest.importorskip("iree.runtime")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
META = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 320, "n_mels": 64, "fmin": 50.0,
        "fmax": 8000.0, "log_floor": 1e-5}


def _noise(seconds, rate, channels, seed=0):
  rng = np.random.default_rng(seed)
  n = int(round(seconds * rate))
  tone = np.sin(2 * np.pi * 440 * np.arange(n) / rate)[:, None] * (rng.random(n)[:, None] > 0.5)
  return (0.1 * rng.standard_normal((n, channels)) + 0.3 * tone).astype(np.float32)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  return runs_lib.make_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
  """Odd rates, channels and lengths (a padded last window, shorter than a window, no frame at
  all), and real recordings from ../shared/data where it is beside the checkout."""
  folder = tmp_path_factory.mktemp("audio")
  for name, (seconds, rate, channels) in {"a.wav": (7.37, 44100, 2), "b.flac": (1.3, 48000, 6),
                                          "c.ogg": (4.88, 8000, 1), "d.wav": (0.01, 16000, 1)
                                          }.items():
    sf.write(folder / name, _noise(seconds, rate, channels, seed=len(name)), rate)
  if SHARED.is_dir():
    for path in sorted((SHARED / "urbansound8k" / "fold3").rglob("*.ogg"))[:2]:
      shutil.copy(path, folder / path.name)
  return folder


def test_the_filterbank_is_librosas():
  want = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=50.0, fmax=8000.0)
  np.testing.assert_allclose(edge.mel_filterbank(16000, 1024, 64, 50.0, 8000.0), want,
                             atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("n", [0, 100, 1023, 16000, 48123])
def test_the_front_end_equals_the_training_features_in_any_blocks(n):
  cfg = type("Cfg", (), dict(META, time_pool=4))
  audio = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.3
  want = feat_lib.log_mel(audio, cfg)
  front = edge.LogMel(META)
  cuts = np.sort(np.random.default_rng(1).integers(0, n + 1, 5))
  got = np.concatenate([front.push(b) for b in np.split(audio, cuts)] + [front.finish()])
  assert got.shape == want.shape == (n // 320, 64)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", sorted(runs_lib.ARCHS))
@pytest.mark.parametrize("fmt", ["onnx", "iree"])
def test_probabilities_and_events_equal_detect(exports, recordings, arch, fmt):
  folders, runs = exports
  model = edge.Model(folders[arch, fmt])
  detector = inference.Detector([runs[arch]], overlap_s=runs_lib.OVERLAP_S)
  for path in sorted(recordings.iterdir()):
    want = detector.frame_probs(path)
    got = edge.frame_probs(model, edge.stream_audio(path, 16000), runs_lib.OVERLAP_S)
    assert got.shape == want.shape, path.name
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=path.name)
    for threshold, median in ((0.5, 0.24), (_threshold_between(want), 0.0)):
      expected = [(e.onset, e.offset, e.label)
                  for e in detector.events(want, threshold, median)]
      assert edge.events(got, model.meta, threshold, median) == expected, path.name


def _threshold_between(probs):
  """A threshold in the widest gap between the middle half of the probabilities: many events,
  none decided by a float rounding (the formats differ from JAX by ~1e-7)."""
  if probs.size < 8:
    return 0.5
  v = np.unique(probs)
  v = v[(v >= np.quantile(probs, 0.25)) & (v <= np.quantile(probs, 0.75))]
  if len(v) < 2:
    return 0.5
  i = int(np.argmax(np.diff(v)))
  return float(v[i] + v[i + 1]) / 2


def test_the_file_alone_writes_detects_tsv(exports, recordings, tmp_path):
  """edge.py copied on its own beside the model: the same TSV as detect, byte for byte, and no
  module of sed_jax, JAX, Flax or TensorFlow imported."""
  folders, runs = exports
  model_dir = tmp_path / "device"
  shutil.copytree(folders["student", "onnx"], model_dir)
  shutil.copy(ROOT / "sed_jax" / "edge.py", model_dir / "edge.py")
  (recordings.parent / "broken").mkdir(exist_ok=True)
  broken = recordings.parent / "broken" / "x.wav"
  broken.write_bytes(b"not audio")
  script = (
      "import runpy, sys\n"
      f"sys.argv = ['edge.py', '.', {str(recordings)!r}, {str(broken)!r}, "
      f"'--out={tmp_path / 'edge.tsv'}']\n"
      "try:\n  runpy.run_path('edge.py', run_name='__main__')\n"
      "except SystemExit as e:\n  code = e.code\n"
      "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
      "('sed_jax', 'jax', 'jaxlib', 'flax', 'tensorflow', 'tensorflow_datasets', 'librosa'))\n"
      "print('CODE', code, 'IMPORTED', bad)\n")
  proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=model_dir,
                        capture_output=True, text=True, timeout=300)
  assert "CODE 0 IMPORTED []" in proc.stdout, proc.stdout + proc.stderr[-3000:]
  assert "x.wav: cannot be decoded" in proc.stderr
  det = subprocess.run(
      [sys.executable, "-m", "sed_jax.detect", f"--workdir={runs['student']}",
       f"--overlap_s={runs_lib.OVERLAP_S}", f"--out={tmp_path / 'detect.tsv'}", str(recordings)],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert det.returncode == 0, det.stderr[-3000:]
  assert (tmp_path / "edge.tsv").read_text() == (tmp_path / "detect.tsv").read_text()


def test_memory_does_not_grow_with_the_recording(exports, tmp_path):
  model = edge.Model(exports[0]["student", "onnx"])

  def peak(seconds):
    path = tmp_path / f"{seconds}.wav"
    sf.write(path, _noise(seconds, 16000, 1), 16000)
    tracemalloc.start()
    edge.frame_probs(model, edge.stream_audio(path, 16000), runs_lib.OVERLAP_S)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top

  short, long = peak(60), peak(240)
  # 180 s more add only their frame probabilities (2250 frames x 10 classes x 8 bytes).
  assert long - short < 2e6, (short, long)


def _copy(exports, tmp_path, fmt="onnx"):
  folder = tmp_path / fmt
  shutil.copytree(exports[0]["student", fmt], folder)
  return folder


def test_a_corrupt_or_truncated_model_is_named(exports, tmp_path):
  folder = _copy(exports, tmp_path)
  data = (folder / "model.onnx").read_bytes()
  (folder / "model.onnx").write_bytes(data[:len(data) // 2])
  with pytest.raises(edge.EdgeError, match=r"model.onnx does not match .*detector.json.*"
                     r"corrupt, truncated"):
    edge.Model(folder)
  (folder / "model.onnx").unlink()
  with pytest.raises(edge.EdgeError, match="model.onnx is missing"):
    edge.Model(folder)


def test_a_sidecar_that_does_not_match_the_model_is_named(exports, tmp_path):
  folder = _copy(exports, tmp_path)
  other = _copy(exports, tmp_path, "iree")
  meta = json.loads((other / edge.SIDECAR).read_text())
  meta["output"][2] = 11  # Promises 11 classes; the model gives 10.
  meta["classes"] = meta["classes"] + ["extra"]
  (other / edge.SIDECAR).write_text(json.dumps(meta))
  with pytest.raises(edge.EdgeError, match="the two files are not one export"):
    edge.Model(other)
  # A model file of one export beside the sidecar of another (rehashed, as a careless copy).
  blob = (folder / "model.onnx").read_bytes()
  shutil.copy(folder / "model.onnx", other / "model.vmfb")
  meta = json.loads((exports[0]["student", "iree"] / edge.SIDECAR).read_text())
  meta["sha256"] = hashlib.sha256(blob).hexdigest()
  (other / edge.SIDECAR).write_text(json.dumps(meta))
  with pytest.raises(edge.EdgeError, match="could not be loaded by iree-base-runtime"):
    edge.Model(other)
  (folder / edge.SIDECAR).write_text("{broken")
  with pytest.raises(edge.EdgeError, match="detector.json is not readable JSON"):
    edge.Model(folder)
  (folder / edge.SIDECAR).write_text(json.dumps({"format": "onnx"}))
  with pytest.raises(edge.EdgeError, match="lacks file, sha256"):
    edge.Model(folder)
  (folder / edge.SIDECAR).unlink()
  with pytest.raises(edge.EdgeError, match="has no detector.json: it is not an exported"):
    edge.Model(folder)


def test_a_missing_runtime_names_what_to_install(exports, monkeypatch):
  monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails.
  with pytest.raises(edge.EdgeError, match=r"pip install onnxruntime \(or pip install -e "
                     r"'\.\[export\]'"):
    edge.Model(exports[0]["student", "onnx"])


def test_bad_audio_is_named(exports, tmp_path):
  model = edge.Model(exports[0]["student", "onnx"])
  sf.write(tmp_path / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
  with pytest.raises(edge.EdgeError, match="nan.wav: non-finite samples"):
    edge.frame_probs(model, edge.stream_audio(tmp_path / "nan.wav", 16000), 0.5)
