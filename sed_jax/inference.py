"""Trained models applied to whole recordings: the library behind `detect` and `evaluate`.

A recording of any sample rate, channel count and length is streamed: decoded, mixed to mono and
resampled block by block (`audio.stream_audio`), turned into log-mel frames incrementally
(`features.stream_log_mel`, equal to the whole-file `log_mel`), and cut into windows of the
training clip length (overlapping by `overlap_s`) that go through the model in fixed-size batches
(one compiled shape); overlapping frame probabilities are averaged and each output frame is
handed on as soon as no later window covers it. Peak memory is therefore independent of the
file's length: one audio block, the log-mel frames of the windows not yet run and one batch of
windows. The only thing that grows is the result of `frame_probs`, [T_out, C] float32 at
12.5 frames/s (1.8 MB per hour for 10 classes); `iter_frame_probs` yields it block by block.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from etils import epath

from sed_jax import metric_writers
from sed_jax import train
from sed_jax.data import audio as audio_lib
from sed_jax.data import features as feat_lib
from sed_jax.data import pipeline
from sed_jax.evaluation import postprocess


def model_runs(workdir: epath.PathLike, name: str | None) -> tuple[str, list[epath.Path]]:
  """(model name, run directories to average) for `--workdir`/`--model`."""
  workdir = epath.Path(workdir)
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
  external = [r["name"] for r in rows if r["role"] == "teacher" and r["kd"] == "external"]
  if name in external + ["ensemble"] * bool(external):
    raise ValueError(
        f"--model={name!r} {'includes' if name == 'ensemble' else 'is'} the external "
        f"teacher(s) {', '.join(external)} of {results}: their scores came from files, so they "
        "cannot run on new audio here; pick a model trained here (a student or a built-in "
        "teacher).")
  if name == "ensemble":
    return name, [workdir / "teachers" / r["name"] for r in rows if r["role"] == "teacher"]
  if name.startswith("student_"):
    return name, [workdir / "students" / name[len("student_"):]]
  return name, [workdir / "teachers" / name]


TUNED_FILE = "tuned_postprocessing.json"  # Written by kd.experiment.tuned_metrics.


def postprocessing(runs: Sequence[epath.Path], config, choice: str = "auto"
                   ) -> tuple[list[float] | float, list[float] | float, str]:
  """(threshold, median window in s, where they come from) for a model's detections.

  `choice`: 'config' takes the run's `eval` block (one threshold and window for all classes);
  'tuned' the per-class values chosen on the validation split (`<run>/tuned_postprocessing.json`,
  written by the real-audio benchmark), an error if the run has none; 'auto' the tuned values
  when a single run has them, else the config's.
  """
  if choice not in ("auto", "config", "tuned"):
    raise ValueError(f"postprocessing={choice!r}: use auto, config or tuned.")
  path = runs[0] / TUNED_FILE if len(runs) == 1 else None
  if choice == "tuned" and (path is None or not path.exists()):
    raise FileNotFoundError(
        f"postprocessing=tuned: {path or 'an ensemble'} has no {TUNED_FILE} (it is written for "
        "each student run by experiments/paper_table.py); use --postprocessing=config.")
  if choice != "config" and path is not None and path.exists():
    tuned = json.loads(path.read_text())
    return tuned["threshold"], tuned["median_window_s"], f"tuned per class on validation ({path})"
  return config.eval.threshold, config.eval.median_window_s, "the run's config"


class Detector:
  """One or more trained runs (averaged) applied to whole recordings, streamed."""

  def __init__(self, runs: Sequence[epath.Path], overlap_s: float = 2.0, batch_size: int = 16,
               block_seconds: float = 30.0, progress_after_s: float = 300.0):
    """Loads the runs.

    Args:
      runs: training-run directories (their models' probabilities are averaged).
      overlap_s: overlap of consecutive windows in seconds (at least 0).
      batch_size: windows per model call.
      block_seconds: audio decoded, resampled and turned into log-mel per step.
      progress_after_s: files at least this long show progress (a bar on a terminal, else a log
        line every 30 s).
    """
    if not overlap_s >= 0:
      raise ValueError(f"overlap_s must be at least 0, got {overlap_s!r}.")
    self.config = ml_collections.ConfigDict(json.loads((runs[0] / "config.json").read_text()))
    self.classes = train.run_classes(runs[0], self.config)
    self.models = [train.load_trained(r, len(self.classes))[:2] for r in runs]
    feat = self.config.features
    self.pool = feat.time_pool
    self.window = pipeline.clip_frames(self.config.dataset, feat)
    overlap = int(round(overlap_s * feat.sample_rate / feat.hop_length))
    self.step = max(self.pool, (self.window - overlap) // self.pool * self.pool)
    self.batch_size = batch_size
    self.block_seconds = block_seconds
    self.progress_after_s = progress_after_s
    self.frame_seconds = feat_lib.output_frame_seconds(feat)
    self._apply = jax.jit(lambda m, v, x, mask: jax.nn.sigmoid(
        m.apply(v, x, train=False, frame_mask=mask)[0]), static_argnums=0)

  def frame_probs(self, path: epath.PathLike) -> np.ndarray:
    """Frame probabilities [T_out, C] of a whole file (windows averaged where they overlap)."""
    blocks = list(self.iter_frame_probs(path))
    if not blocks:
      return np.zeros((0, len(self.classes)), np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

  def num_windows(self, num_frames: int) -> int:
    """Windows over a file of `num_frames` log-mel frames: full ones `step` apart, then a padded
    last one when the full ones leave frames at the end (a file shorter than a window: one)."""
    if num_frames <= self.window:
      return 1
    full = (num_frames - self.window) // self.step + 1
    return full + ((full - 1) * self.step + self.window < num_frames)

  def iter_frame_probs(self, path: epath.PathLike) -> Iterator[np.ndarray]:
    """`frame_probs` of a file as consecutive [k, C] blocks, each yielded once final.

    Memory is bounded whatever the file's length: the audio is decoded and resampled
    `block_seconds` at a time (`audio.stream_audio`), turned into log-mel frames incrementally
    (`features.stream_log_mel`), and only the frames of windows not yet run and the
    probabilities of output frames a later window may still cover are kept.

    Raises:
      AudioError: the file cannot be used (possibly after some blocks were yielded).
    """
    feat = self.config.features
    n_classes = len(self.classes)
    duration, _, _ = audio_lib.audio_info(path)
    expected = int(round(duration * feat.sample_rate))
    progress = None
    if duration >= self.progress_after_s:
      progress = metric_writers.Progress(self.num_windows(expected // feat.hop_length), 0, 1,
                                         f"detect {epath.Path(path).name} (windows)")
    mel_blocks = feat_lib.stream_log_mel(
        audio_lib.stream_audio(path, feat.sample_rate, self.block_seconds), feat)
    x = np.full((self.batch_size, self.window, feat.n_mels), np.log(feat.log_floor), np.float32)
    mask = np.zeros((self.batch_size, self.window // self.pool), bool)
    starts = []  # Window starts (input frames) in the batch being filled.
    mel = np.zeros((0, feat.n_mels), np.float32)  # Input frames from `mel_start` on.
    mel_start = next_start = windows_done = 0
    # Summed probabilities and window counts of output frames from `done` on.
    total = np.zeros((0, n_classes), np.float32)
    count = np.zeros((0, 1), np.float32)
    done = 0

    def add_window(start: int, piece: np.ndarray) -> None:
      i = len(starts)
      x[i, :len(piece)] = piece
      x[i, len(piece):] = np.log(feat.log_floor)
      mask[i] = False
      mask[i, :len(piece) // self.pool] = True
      starts.append(start)

    def run_batch():
      nonlocal total, count, windows_done
      mask[len(starts):] = False
      probs = np.mean([np.asarray(self._apply(m, v, x, mask)) for m, v in self.models], 0)
      for i, s in enumerate(starts):
        o, n = s // self.pool - done, int(mask[i].sum())
        if o + n > total.shape[0]:
          grow = o + n - total.shape[0]
          total = np.concatenate([total, np.zeros((grow, n_classes), np.float32)])
          count = np.concatenate([count, np.zeros((grow, 1), np.float32)])
        total[o:o + n] += probs[i, :n]
        count[o:o + n] += 1
      windows_done += len(starts)
      starts.clear()
      if progress is not None:
        progress.update(min(windows_done, progress.total))

    def finished(upto: int) -> np.ndarray:
      """Takes the output frames before `upto` (no window still to come covers them)."""
      nonlocal total, count, done
      k = upto - done
      out = total[:k] / np.maximum(count[:k], 1)
      total, count, done = total[k:], count[k:], upto
      return out

    try:
      for block in mel_blocks:
        mel = np.concatenate([mel, block])
        while next_start + self.window <= mel_start + mel.shape[0]:
          o = next_start - mel_start
          add_window(next_start, mel[o:o + self.window])
          next_start += self.step
          if len(starts) == self.batch_size:
            run_batch()
            if next_start // self.pool > done:
              yield finished(next_start // self.pool)
        drop = min(next_start - mel_start, mel.shape[0])
        mel, mel_start = mel[drop:], mel_start + drop
      num_frames = mel_start + mel.shape[0]
      if num_frames > 0 and (next_start == 0 or next_start - self.step + self.window < num_frames):
        add_window(next_start, mel[next_start - mel_start:])
      if starts:
        run_batch()
      t_out = num_frames // self.pool
      if t_out > done:
        yield finished(t_out)
    finally:
      if progress is not None:
        progress.close()

  def events(self, probs: np.ndarray, threshold, median_window_s):
    """Events of one file's [T, C] probabilities; threshold and window: one or one per class."""
    return postprocess.probs_to_events(probs, self.frame_seconds, self.classes,
                                       threshold=threshold,
                                       median_window_s=median_window_s or None)
