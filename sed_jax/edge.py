r"""Detect sound events with an exported detector: numpy, soundfile, soxr and one runtime only.

  python -m sed_jax.edge exported/ recordings/ --out=events.tsv
  python edge.py exported/ a.wav b.flac --out=events.tsv    # this file copied beside the model

`exported/` is what `python -m sed_jax.export` writes: `model.onnx` (onnxruntime) or
`model.vmfb` (IREE) and `detector.json`, which holds everything else: classes, the log-mel front
end's settings, the window, thresholds and median windows, and the model file's SHA-256. This
file imports nothing from sed_jax, JAX, Flax or TensorFlow, so a device needs only
`pip install numpy soundfile soxr` and the runtime (`onnxruntime` or `iree-base-runtime`).

Recordings of any length, sample rate and channel count are streamed as `sed_jax.detect` does:
decoded 30 s at a time, mixed to mono, resampled with soxr's streaming resampler, turned into
log-mel frames incrementally, and run through the model one fixed window at a time (windows
overlap by `overlap_s`; a last, shorter window is padded and its valid frames passed to the
model); overlapping frame probabilities are averaged. Memory holds one audio block, one window
and the file's frame probabilities (1.8 MB per hour for 10 classes). Events: per-class median
filter (scipy's 'reflect' ends), `prob > threshold`, runs of active frames → (onset, offset).
The same recordings and thresholds give the same events as `sed_jax.detect` (tests/test_edge.py
holds the two equal); the front end equals sed_jax's `features.log_mel` to 1e-4.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import soxr

SIDECAR = "detector.json"
RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime"), "iree": ("iree.runtime", "iree-base-runtime")}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
BLOCK_SECONDS = 30.0  # Audio decoded per step; sed_jax.detect's, so the samples are the same.
_KEYS = ("format", "file", "sha256", "classes", "sample_rate", "n_fft", "hop_length", "n_mels",
         "fmin", "fmax", "log_floor", "time_pool", "window_frames", "overlap_s", "threshold",
         "median_window_s", "inputs", "output")


class EdgeError(Exception):
  """A model folder, audio file or option that cannot be used; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Front end: log-mel, as sed_jax.data.features.log_mel computes it with librosa.


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """[n_mels, n_fft // 2 + 1] triangular filters on the Slaney mel scale, Slaney-normalised."""
  f_sp, min_log_hz = 200.0 / 3, 1000.0
  min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

  def to_mel(hz):
    hz = np.asarray(hz, np.float64)
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz)
                    / logstep, hz / f_sp)

  def to_hz(mel):
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)

  hz = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
  fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
  ramps = hz[:, None] - fft_hz[None, :]
  lower = -ramps[:-2] / np.diff(hz)[:-1, None]
  upper = ramps[2:] / np.diff(hz)[1:, None]
  weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (hz[2:] - hz[:-2]))[:, None]
  return weights.astype(np.float32)


class LogMel:
  """Streaming log-mel [k, n_mels] float32: frame i is the Hann-windowed STFT frame centred at
  sample i * hop (zero padding before the start and past the end), power, mel, log(max(., floor));
  a signal of n samples gives n // hop frames."""

  def __init__(self, meta: dict):
    self.hop, self.n_fft, self.floor = meta["hop_length"], meta["n_fft"], meta["log_floor"]
    self.filters = mel_filterbank(meta["sample_rate"], self.n_fft, meta["n_mels"], meta["fmin"],
                                  meta["fmax"])
    self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft)
                   ).astype(np.float32)  # Periodic Hann (librosa's 'hann').
    self.buf = np.zeros(self.n_fft // 2, np.float32)  # buf[0] is sample done*hop - n_fft//2.
    self.received = self.done = 0

  def push(self, samples: np.ndarray) -> np.ndarray:
    """The frames that `samples` completes (a frame needs n_fft // 2 samples past its centre)."""
    self.buf = np.concatenate([self.buf, samples.astype(np.float32)])
    self.received += len(samples)
    whole = 0 if len(self.buf) < self.n_fft else 1 + (len(self.buf) - self.n_fft) // self.hop
    return self._frames(min(whole, self.received // self.hop - self.done))

  def finish(self) -> np.ndarray:
    """The remaining frames, zero-padded past the end."""
    ready = self.received // self.hop - self.done
    need = max(ready - 1, 0) * self.hop + self.n_fft
    if ready > 0 and len(self.buf) < need:
      self.buf = np.concatenate([self.buf, np.zeros(need - len(self.buf), np.float32)])
    return self._frames(ready)

  def _frames(self, k: int) -> np.ndarray:
    out = np.zeros((max(k, 0), len(self.filters)), np.float32)
    for i in range(0, k, 256):  # 256 frames per FFT call: bounded temporaries.
      j = min(k, i + 256)
      idx = np.arange(i, j)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
      spec = np.abs(np.fft.rfft(self.buf[idx] * self.window, axis=1)) ** 2
      out[i:j] = np.log(np.maximum(spec.astype(np.float32) @ self.filters.T, self.floor))
    self.buf, self.done = self.buf[max(k, 0) * self.hop:], self.done + max(k, 0)
    return out


# ---------------------------------------------------------------------------------------------
# The model: one window of log-mel frames → frame probabilities.


class Model:
  """An exported detector folder: the sidecar checked, the model file checked and loaded."""

  def __init__(self, folder: str | os.PathLike, threads: int = 1):
    folder = pathlib.Path(folder)
    path = folder / SIDECAR
    try:
      meta = json.loads(path.read_text())
    except FileNotFoundError:
      raise EdgeError(f"{folder} has no {SIDECAR}: it is not an exported detector. Make one with "
                      "python -m sed_jax.export --workdir=<run> --out=<folder>.") from None
    except (OSError, ValueError) as e:
      raise EdgeError(f"{path} is not readable JSON ({e}); export the model again.") from None
    missing = [k for k in _KEYS if k not in meta]
    if missing:
      raise EdgeError(f"{path} lacks {', '.join(missing)}: it was not written by this version "
                      "of sed_jax.export; export the model again.")
    if meta["format"] not in RUNTIMES:
      raise EdgeError(f"{path}: format {meta['format']!r} is not one of {', '.join(RUNTIMES)}.")
    self.meta, self.path = meta, folder / meta["file"]
    try:
      blob = self.path.read_bytes()
    except FileNotFoundError:
      raise EdgeError(f"{self.path} is missing (named by {path}); copy the whole exported "
                      "folder.") from None
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
      raise EdgeError(
          f"{self.path} does not match {path}: its SHA-256 differs from the one recorded at "
          f"export ({len(blob)} bytes, {meta.get('bytes', '?')} expected). The file is corrupt, "
          "truncated or from another export; copy both files of one export together.")
    self._run = session(meta["format"], blob, threads, meta.get("module"), self.path)
    (_, self.window, self.n_mels), self.t_out = meta["inputs"]["log_mel"], meta["output"][1]
    self.num_classes = len(meta["classes"])
    if (meta["output"] != [1, self.window // meta["time_pool"], self.num_classes]
        or self.n_mels != meta["n_mels"] or self.window != meta["window_frames"]):
      raise EdgeError(f"{path} is inconsistent: input {meta['inputs']['log_mel']}, output "
                      f"{meta['output']}, {self.num_classes} classes; export the model again.")
    got = self(np.zeros((self.window, self.n_mels), np.float32), self.t_out).shape
    if got != (self.t_out, self.num_classes):
      raise EdgeError(f"{self.path} gives frame probabilities of shape {got}, {path} promises "
                      f"{(self.t_out, self.num_classes)}: the two files are not one export.")

  def __call__(self, log_mel: np.ndarray, valid_frames: int) -> np.ndarray:
    """Frame probabilities [t_out, C] of one window [window, n_mels]; output frames from
    `valid_frames` on belong to padding."""
    x = np.ascontiguousarray(log_mel[None], np.float32)
    return np.asarray(self._run(x, np.array([valid_frames], np.int32)))[0]


def session(fmt: str, blob: bytes, threads: int = 1, module: str | None = None,
            path: os.PathLike | str = "the model"):
  """f(log_mel [1, W, F] float32, valid_frames [1] int32) → [1, W // pool, C] of a model file's
  bytes, in onnxruntime (`threads` intra-op threads) or IREE's local-sync runtime (the calling
  thread)."""
  name, extra = RUNTIMES[fmt]
  try:
    runtime = __import__(name, fromlist=["_"])
  except ImportError:
    raise EdgeError(f"{path} needs the {fmt} runtime: pip install {extra} (or pip install -e "
                    "'.[export]' in a sed_jax checkout).") from None
  try:
    if fmt == "onnx":
      options = runtime.SessionOptions()
      options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
      options.log_severity_level = 3
      s = runtime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
      return lambda x, n: s.run(None, {"log_mel": x, "valid_frames": n})[0]
    context = runtime.SystemContext(config=runtime.Config("local-sync"))
    context.add_vm_module(runtime.VmModule.copy_buffer(context.instance, blob))
    fn = context.modules[module]["main"]

    def run(x, n):
      out = fn(x, n)
      return np.array(out.to_host())  # A copy: the host view dies with `out`'s buffer.

    return run
  except Exception as e:  # pylint: disable=broad-except
    raise EdgeError(f"{path} could not be loaded by {extra}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Windows over a recording, and events.


def stream_audio(path: pathlib.Path, sample_rate: int):
  """Mono float32 blocks at `sample_rate` (sed_jax.data.audio.stream_audio's samples)."""
  try:
    f = sf.SoundFile(os.fspath(path))
  except Exception as e:  # pylint: disable=broad-except
    raise EdgeError(f"{path}: cannot be decoded ({e}).") from None
  resampler = None
  if f.samplerate != sample_rate:
    resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
  with f:
    frames = 0
    while True:
      try:
        data = f.read(max(1, int(round(BLOCK_SECONDS * f.samplerate))), dtype="float32",
                      always_2d=True)
      except Exception as e:  # pylint: disable=broad-except
        raise EdgeError(f"{path}: decoding failed after {frames} frames ({e}).") from None
      if data.shape[0] == 0:
        break
      if not np.isfinite(data).all():
        raise EdgeError(f"{path}: non-finite samples (NaN or inf) near "
                        f"{frames / f.samplerate:.3f} s; re-export the audio.")
      frames += data.shape[0]
      mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
      mono = np.ascontiguousarray(mono, np.float32)
      yield resampler.resample_chunk(mono) if resampler else mono
    if frames == 0:
      raise EdgeError(f"{path}: contains no audio (0 frames).")
    if resampler:
      yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def frame_probs(model: Model, blocks, overlap_s: float) -> np.ndarray:
  """Frame probabilities [T // time_pool, C] of a recording given as sample blocks."""
  m = model.meta
  pool, window = m["time_pool"], model.window
  overlap = int(round(overlap_s * m["sample_rate"] / m["hop_length"]))
  step = max(pool, (window - overlap) // pool * pool)
  front = LogMel(m)
  total = np.zeros((0, model.num_classes), np.float32)
  count = np.zeros((0, 1), np.float32)
  pad = np.log(np.float32(m["log_floor"]))

  def run(start, piece):
    nonlocal total, count
    x = np.full((window, model.n_mels), pad, np.float32)
    x[:len(piece)] = piece
    n, o = len(piece) // pool, start // pool
    if o + n > len(total):
      grow = max(o + n - len(total), len(total))
      total = np.concatenate([total, np.zeros((grow, model.num_classes), np.float32)])
      count = np.concatenate([count, np.zeros((grow, 1), np.float32)])
    total[o:o + n] += model(x, n)[:n]
    count[o:o + n] += 1

  def mel_blocks():  # Lazily: one audio block in memory at a time.
    for block in blocks:
      yield front.push(block)
    yield front.finish()

  mel = np.zeros((0, model.n_mels), np.float32)
  mel_start = start = 0
  for frames in mel_blocks():
    mel = np.concatenate([mel, frames])
    while start + window <= mel_start + len(mel):
      run(start, mel[start - mel_start:start - mel_start + window])
      start += step
    drop = min(start - mel_start, len(mel))
    mel, mel_start = mel[drop:], mel_start + drop
  num_frames = mel_start + len(mel)
  if num_frames > 0 and (start == 0 or start - step + window < num_frames):
    run(start, mel[start - mel_start:])
  t_out = num_frames // pool
  return total[:t_out] / np.maximum(count[:t_out], 1)


def events(probs: np.ndarray, meta: dict, threshold=None, median_window_s=None) -> list[tuple]:
  """Sorted (onset, offset, label) of [T, C] probabilities: median filter, `prob > threshold`,
  runs of active frames; output frame j spans [j, j + 1) * frame hop; µs precision."""
  hop = meta["time_pool"] * meta["hop_length"] / meta["sample_rate"]
  t, c = probs.shape
  threshold = np.broadcast_to(meta["threshold"] if threshold is None else threshold, (c,))
  median = meta["median_window_s"] if median_window_s is None else median_window_s
  widths = (np.ones(c, int) if median is None else
            np.maximum(1, np.round(np.broadcast_to(median, (c,)) / hop)).astype(int))
  out = []
  for k, label in enumerate(meta["classes"]):
    p, w = probs[:, k], widths[k]
    if w > 1 and t:
      pos = np.arange(t)[:, None] - w // 2 + np.arange(w)[None, :]
      m = np.mod(pos, 2 * t)
      p = np.partition(p[np.where(m >= t, 2 * t - 1 - m, m)], w // 2, axis=1)[:, w // 2]
    edges = np.diff(np.concatenate([[0], (p > threshold[k]).astype(np.int8), [0]]))
    onsets = np.round(np.flatnonzero(edges > 0) * hop, 6).tolist()
    offsets = np.round(np.flatnonzero(edges < 0) * hop, 6).tolist()
    out += [(on, off, label) for on, off in zip(onsets, offsets)]
  return sorted(out)


def _time(value: float) -> str:
  text = f"{value + 0.0:.6f}".rstrip("0")
  return text + "0" if text.endswith(".") else text


def write_tsv(path: pathlib.Path, events_by_file: dict) -> None:
  """A DCASE strong TSV (files without events get an empty row), written atomically."""
  lines = ["filename\tonset\toffset\tevent_label"]
  for name, found in events_by_file.items():
    lines += [f"{name}\t\t\t"] if not found else [
        f"{name}\t{_time(on)}\t{_time(off)}\t{label}" for on, off, label in found]
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)


def audio_files(paths) -> list[pathlib.Path]:
  out = []
  for p in map(pathlib.Path, paths):
    out += (sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
            if p.is_dir() else [p])
  return out


def parser() -> argparse.ArgumentParser:
  """The command line (argparse: the runner depends on nothing but the standard library)."""
  parser = argparse.ArgumentParser(prog="edge", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("model_dir", help="folder written by python -m sed_jax.export")
  parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
  parser.add_argument("--out", default="events.tsv", help="output DCASE strong TSV")
  parser.add_argument("--threads", type=int, default=1, help="runtime threads (onnx)")
  parser.add_argument("--overlap_s", type=float, default=None,
                      help="window overlap in s (default: the export's, sed_jax.detect's 2 s)")
  parser.add_argument("--threshold", type=float, default=None, help="one for every class")
  parser.add_argument("--median_window_s", type=float, default=None, help="one for every class")
  return parser


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  start = time.perf_counter()
  try:
    model = Model(args.model_dir, args.threads)
    files = audio_files(args.audio)
  except EdgeError as e:
    print(f"edge: {e}", file=sys.stderr)
    return 2
  if not files:
    print(f"edge: no audio file ({', '.join(AUDIO_EXTENSIONS)}) in {args.audio}", file=sys.stderr)
    return 2
  overlap = model.meta["overlap_s"] if args.overlap_s is None else args.overlap_s
  found, failed = {}, []
  for path in files:
    try:
      probs = frame_probs(model, stream_audio(path, model.meta["sample_rate"]), overlap)
    except EdgeError as e:
      failed.append(str(e))
      continue
    found[path.name] = events(probs, model.meta, args.threshold, args.median_window_s)
  write_tsv(pathlib.Path(args.out), found)
  print(f"{sum(map(len, found.values()))} events in {len(found)} file(s) → {args.out} "
        f"({time.perf_counter() - start:.2f} s)")
  for message in failed:
    print(f"skipped: {message}", file=sys.stderr)
  return 1 if failed and not found else 0


if __name__ == "__main__":
  sys.exit(main())
