r"""Detect sound events in audio files with a trained model → a DCASE strong TSV.

  python -m sed_jax.detect --workdir=runs/student --out=events.tsv recording.wav more_audio/
  python -m sed_jax.detect --workdir=runs/student --model=ensemble --scores_dir=scores/ a.flac

`--workdir` is an experiment (results.json: `--model` is any model name in it, default the
multi-teacher KD student) or a single training run. Any sample rate, channel count and length:
audio is mixed to mono and resampled; a file longer than the model's training clips is cut into
overlapping windows (`--overlap_s`), batched through the model, and the overlapping frame
probabilities are averaged, so memory for the model stays that of one batch of windows whatever
the file's length (the decoded audio and its log-mel, ~0.3 GB per hour, are held in memory).
Post-processing: per-class median filter and threshold (defaults from the run's config).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags

from sed_jax import metric_writers
from sed_jax import train
from sed_jax.data import annotations
from sed_jax.data import audio as audio_lib
from sed_jax.data import features as feat_lib
from sed_jax.data import pipeline
from sed_jax.evaluation import postprocess

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment or training-run directory.")
_MODEL = flags.DEFINE_string("model", None, "Model name in results.json (default: the KD "
                             "student); 'ensemble' averages the teachers.")
_OUT = flags.DEFINE_string("out", "events.tsv", "Output DCASE strong TSV.")
_SCORES = flags.DEFINE_string("scores_dir", None, "Also write per-file frame scores here "
                              "(<name>.tsv: onset, offset, one column per class).")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Detection threshold (default: the run's).")
_MEDIAN = flags.DEFINE_float("median_window_s", None, "Median filter (s; default: the run's).")
_OVERLAP = flags.DEFINE_float("overlap_s", 2.0, "Overlap of consecutive windows (s).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Windows per model call.")


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


def expand(paths: Sequence[str]) -> list[Path]:
  """Audio files named directly or found (recursively) in the named folders, sorted."""
  out = []
  for p in map(Path, paths):
    if p.is_dir():
      out += sorted(f for f in p.rglob("*") if f.suffix.lower() in audio_lib.AUDIO_EXTENSIONS)
    else:
      out.append(p)
  if not out:
    raise ValueError(f"No audio file in {list(paths)} (extensions "
                     f"{', '.join(audio_lib.AUDIO_EXTENSIONS)}).")
  return out


def main(argv):
  metric_writers.quiet_library_logs()
  paths = argv[1:]
  if not _WORKDIR.value or not paths:
    raise app.UsageError("Usage: python -m sed_jax.detect --workdir=RUN [--out=events.tsv] "
                         "AUDIO_OR_FOLDER...")
  try:
    name, runs = model_runs(_WORKDIR.value, _MODEL.value)
    detector = Detector(runs, _OVERLAP.value, _BATCH.value)
    files = expand(paths)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"detect: {e}")
  threshold = detector.config.eval.threshold if _THRESHOLD.value is None else _THRESHOLD.value
  median = (detector.config.eval.median_window_s if _MEDIAN.value is None else _MEDIAN.value)
  events_by_file, failed = {}, []
  for path in files:
    try:
      probs = detector.frame_probs(path)
    except audio_lib.AudioError as e:
      failed.append(str(e))
      continue
    events_by_file[path.name] = detector.events(probs, threshold, median)
    if _SCORES.value:
      _write_scores(Path(_SCORES.value) / f"{path.stem}.tsv", probs, detector)
  annotations.write_strong_tsv(_OUT.value, events_by_file)
  n = sum(len(v) for v in events_by_file.values())
  print(f"{name}: {n} events in {len(events_by_file)} file(s) → {_OUT.value}")
  for message in failed:
    print(f"skipped: {message}", file=sys.stderr)
  if failed and not events_by_file:
    sys.exit(1)


def _write_scores(path: Path, probs: np.ndarray, detector: Detector) -> None:
  from sed_jax import io_utils  # pylint: disable=g-import-not-at-top
  hop = detector.frame_seconds
  lines = ["onset\toffset\t" + "\t".join(detector.classes)]
  for j, row in enumerate(probs):
    lines.append(f"{j * hop:.3f}\t{(j + 1) * hop:.3f}\t" + "\t".join(f"{p:.4f}" for p in row))
  with io_utils.atomic_write(path) as f:
    f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
