"""Log-mel features and frame/clip targets.

Time grid (the one rule every module shares):
- input frame `i` of a clip is the STFT frame centred at `i * hop` samples; a clip of `n` samples
  has `T = n // hop` input frames (librosa's centred STFT gives one more, the half frame past the
  end, which we drop so that `T` is exactly `duration * sample_rate / hop` for whole durations);
- output frame `j` (after the model pools time by `time_pool`) covers the time span
  `[j * P, (j + 1) * P)` seconds with `P = time_pool * hop / sample_rate` (80 ms by default), and
  `T_out = T // time_pool`.

Target rule: output frame `j` is active for class `c` when the events of class `c` (their union,
so overlapping or touching events of one class count once) cover at least half of the frame. An
event too short to cover half of any frame still marks the frame that holds its centre, so no
annotated event ever vanishes from the targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

import librosa
import numpy as np

from sed_jax.data.annotations import Event


def num_frames(num_samples: int, hop_length: int) -> int:
  """Input frames of a clip with `num_samples` samples (see the module docstring)."""
  return num_samples // hop_length


def num_output_frames(duration: float, cfg) -> int:
  """Model output frames (`T_out`) of a clip lasting `duration` seconds."""
  n = int(round(duration * cfg.sample_rate))
  return num_frames(n, cfg.hop_length) // cfg.time_pool


def output_frame_seconds(cfg) -> float:
  """Length of one model output frame in seconds."""
  return cfg.time_pool * cfg.hop_length / cfg.sample_rate


def log_mel(audio: np.ndarray, cfg) -> np.ndarray:
  """Log-mel spectrogram [T, n_mels] float32 of a mono clip at `cfg.sample_rate`.

  Power mel spectrogram (Slaney mel scale and normalisation, librosa's defaults) of the centred
  STFT with zero padding at both ends, then `log(max(mel, cfg.log_floor))`: the floor keeps
  digital silence finite and bounds the dynamic range the network has to cope with.
  Deterministic: the same audio gives bit-identical features. This is `stream_log_mel` of the
  clip as one block (the one implementation of the front end).
  """
  audio = np.asarray(audio, dtype=np.float32)
  if audio.ndim != 1:
    raise ValueError(f"log_mel expects mono audio [n], got shape {audio.shape}.")
  blocks = list(stream_log_mel([audio], cfg))
  if not blocks:
    return np.zeros((0, cfg.n_mels), np.float32)
  return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def stream_log_mel(blocks: Iterable[np.ndarray], cfg) -> Iterator[np.ndarray]:
  """`log_mel` of a long signal given as consecutive mono blocks, yielded as frame blocks.

  The yielded [k, n_mels] blocks joined are `log_mel` of the joined samples (the same frames, to
  float rounding: only how many frames go through one FFT/matmul call differs). Memory is bounded
  by about two input blocks whatever the signal's length: a frame is computed once the block
  after the one that completes it arrives (or at the end), from a buffer of the samples not yet
  used. Blocks may have any length, including 0.
  """
  hop, n_fft = cfg.hop_length, cfg.n_fft
  # buf[0] is sample `emitted * hop - n_fft // 2` (the left zero padding of the centred STFT).
  buf = np.zeros(n_fft // 2, np.float32)
  received = emitted = 0
  for block in blocks:
    block = np.asarray(block, dtype=np.float32)
    if block.ndim != 1:
      raise ValueError(f"stream_log_mel expects mono blocks [n], got shape {block.shape}.")
    whole = 0 if buf.shape[0] < n_fft else 1 + (buf.shape[0] - n_fft) // hop
    ready = min(whole, received // hop - emitted)
    if ready > 0:
      yield _log_mel_frames(buf[:(ready - 1) * hop + n_fft], cfg)
      buf, emitted = buf[ready * hop:], emitted + ready
    buf = np.concatenate([buf, block])
    received += block.shape[0]
  ready = received // hop - emitted
  if ready > 0:
    need = (ready - 1) * hop + n_fft
    if buf.shape[0] < need:  # The right zero padding.
      buf = np.concatenate([buf, np.zeros(need - buf.shape[0], np.float32)])
    yield _log_mel_frames(buf[:need], cfg)


def _log_mel_frames(samples: np.ndarray, cfg) -> np.ndarray:
  """Log-mel [k, n_mels] of the frames `samples[i * hop : i * hop + n_fft]` (no padding)."""
  mel = librosa.feature.melspectrogram(
      y=samples, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
      n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, power=2.0, center=False)
  return np.log(np.maximum(mel, cfg.log_floor)).T.astype(np.float32)


def frame_targets(events: Sequence[Event], classes: Sequence[str], num_out_frames: int,
                  frame_seconds: float) -> np.ndarray:
  """Strong targets [num_out_frames, C] uint8 from an event list (rule in the module docstring).

  Exact, not sampled: each class's events are merged into disjoint intervals and their overlap
  with every frame is summed. For events at least one frame long the frame holding the centre is
  always at least half covered, so the centre rule only ever adds frames for short events.
  """
  index = {c: i for i, c in enumerate(classes)}
  out = np.zeros((num_out_frames, len(classes)), np.uint8)
  starts = np.arange(num_out_frames) * frame_seconds
  for label in {e.label for e in events}:
    if label not in index:
      raise ValueError(f"Event label {label!r} is not in the class list {list(classes)}.")
    spans = _merge([(e.onset, e.offset) for e in events if e.label == label])
    on, off = spans[:, :1], spans[:, 1:]
    cover = np.clip(np.minimum(off, starts + frame_seconds) - np.maximum(on, starts), 0, None)
    active = cover.sum(0) >= frame_seconds / 2 - 1e-9
    centres = ((on[:, 0] + off[:, 0]) / 2 // frame_seconds).astype(int)
    active[centres[(centres >= 0) & (centres < num_out_frames)]] = True
    out[:, index[label]] = active
  return out


def _merge(spans: list[tuple[float, float]]) -> np.ndarray:
  """Union of intervals as sorted disjoint [K, 2] rows (touching intervals are joined)."""
  merged: list[list[float]] = []
  for on, off in sorted(spans):
    if merged and on <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], off)
    else:
      merged.append([on, off])
  return np.asarray(merged, np.float64).reshape(-1, 2)


def weak_targets(events: Sequence[Event] | Sequence[str], classes: Sequence[str]) -> np.ndarray:
  """Clip-level targets [C] uint8: a class is present when any event (or weak label) has it."""
  index = {c: i for i, c in enumerate(classes)}
  out = np.zeros(len(classes), np.uint8)
  for e in events:
    label = e if isinstance(e, str) else e.label
    if label not in index:
      raise ValueError(f"Label {label!r} is not in the class list {list(classes)}.")
    out[index[label]] = 1
  return out
