"""Trained models applied to whole recordings: the library behind `detect` and `evaluate`.

A recording of any sample rate, channel count and length is mixed to mono, resampled and turned
into log-mel frames; windows of the training clip length (overlapping by `overlap_s`) go through
the model in fixed-size batches (one compiled shape), and overlapping frame probabilities are
averaged. Memory for the model is that of one batch of windows whatever the file's length; the
decoded audio and its log-mel (~0.3 GB per hour) are held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from sed_jax import train
from sed_jax.data import audio as audio_lib
from sed_jax.data import features as feat_lib
from sed_jax.data import pipeline
from sed_jax.evaluation import postprocess


def model_runs(workdir: str | Path, name: str | None) -> tuple[str, list[Path]]:
  """(model name, run directories to average) for `--workdir`/`--model`."""
  workdir = Path(workdir)
  results = workdir / "results.json"
  if not results.exists():
    if (workdir / "config.json").exists():
      return workdir.name, [workdir]
    raise FileNotFoundError(f"{workdir} is neither an experiment (results.json) nor a training "
                            "run (config.json); pass --workdir of a finished run.")
  rows = json.loads(results.read_text())["models"]
  names = [r["name"] for r in rows]
  if name is None:
    kd = [r["name"] for r in rows if r["role"] == "student" and r["kd"].startswith("multi")]
    name = kd[0] if kd else names[-1]
  if name not in names:
    raise ValueError(f"--model={name!r} is not in {results}; models: {', '.join(names)}.")
  if name == "ensemble":
    return name, [workdir / "teachers" / r["name"] for r in rows if r["role"] == "teacher"]
  if name.startswith("student_"):
    return name, [workdir / "students" / name[len("student_"):]]
  return name, [workdir / "teachers" / name]


class Detector:
  """One or more trained runs (averaged) applied to whole recordings."""

  def __init__(self, runs: Sequence[Path], overlap_s: float = 2.0, batch_size: int = 16):
    self.config = ml_collections.ConfigDict(json.loads((runs[0] / "config.json").read_text()))
    self.classes = train.run_classes(runs[0], self.config)
    self.models = [train.load_trained(r, len(self.classes))[:2] for r in runs]
    feat = self.config.features
    self.pool = feat.time_pool
    self.window = pipeline.clip_frames(self.config.dataset, feat)
    overlap = int(round(overlap_s * feat.sample_rate / feat.hop_length))
    self.step = max(self.pool, (self.window - overlap) // self.pool * self.pool)
    self.batch_size = batch_size
    self.frame_seconds = feat_lib.output_frame_seconds(feat)
    self._apply = jax.jit(lambda m, v, x, mask: jax.nn.sigmoid(
        m.apply(v, x, train=False, frame_mask=mask)[0]), static_argnums=0)

  def frame_probs(self, path: str | Path) -> np.ndarray:
    """Frame probabilities [T_out, C] of a whole file (windows averaged where they overlap)."""
    feat = self.config.features
    mel = feat_lib.log_mel(audio_lib.load_audio(path, feat.sample_rate), feat)
    t_out = mel.shape[0] // self.pool
    starts = list(range(0, max(mel.shape[0] - self.window, 0) + 1, self.step))
    if starts[-1] + self.window < mel.shape[0]:
      starts.append(starts[-1] + self.step)
    total = np.zeros((t_out, len(self.classes)), np.float32)
    count = np.zeros((t_out, 1), np.float32)
    pad_value = np.log(feat.log_floor)
    for b in range(0, len(starts), self.batch_size):
      chunk = starts[b:b + self.batch_size]
      x = np.full((self.batch_size, self.window, mel.shape[1]), pad_value, np.float32)
      mask = np.zeros((self.batch_size, self.window // self.pool), bool)
      for i, s in enumerate(chunk):
        piece = mel[s:s + self.window]
        x[i, :len(piece)] = piece
        mask[i, :len(piece) // self.pool] = True
      probs = np.mean([np.asarray(self._apply(m, v, x, mask)) for m, v in self.models], 0)
      for i, s in enumerate(chunk):
        o, n = s // self.pool, int(mask[i].sum())
        n = min(n, t_out - o)
        total[o:o + n] += probs[i, :n]
        count[o:o + n] += 1
    return total / np.maximum(count, 1)

  def events(self, probs: np.ndarray, threshold: float, median_window_s: float):
    return postprocess.probs_to_events(probs, self.frame_seconds, self.classes,
                                       threshold=threshold,
                                       median_window_s=median_window_s or None)
