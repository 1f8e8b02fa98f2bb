r"""Detect sound events in audio files with a trained model → a DCASE strong TSV.

  python -m sed_jax.detect --workdir=runs/student --out=events.tsv recording.wav more_audio/
  python -m sed_jax.detect --workdir=runs/student --model=ensemble --scores_dir=scores/ a.flac

`--workdir` is an experiment (results.json: `--model` is any model name in it, default the
multi-teacher KD student) or a single training run. Any sample rate, channel count and length:
each file is streamed (decoded, resampled and turned into log-mel block by block, run in
overlapping windows, `--overlap_s`; see `sed_jax/inference.py`), so memory does not grow with
the file's length apart from its frame probabilities (1.8 MB per hour for 10 classes); files of
5 minutes or more show progress. Files that cannot be decoded are skipped with a message naming
them. Post-processing: median filter and threshold per class, tuned on the validation split where the
run has them (`--postprocessing`), else the run's config.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app
from absl import flags

from sed_jax import inference
from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax.data import annotations
from sed_jax.data import audio as audio_lib
from sed_jax.data import frame_scores
from sed_jax.evaluation import report
from sed_jax.inference import Detector
from sed_jax.inference import model_runs

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment or training-run directory.")
_MODEL = flags.DEFINE_string("model", None, "Model name in results.json (default: the KD "
                             "student); 'ensemble' averages the teachers.")
_OUT = flags.DEFINE_string("out", "events.tsv", "Output DCASE strong TSV.")
_SCORES = flags.DEFINE_string("scores_dir", None, "Also write per-file frame scores here "
                              "(<name>.tsv: onset, offset, one column per class).")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Detection threshold (default: the run's).")
_MEDIAN = flags.DEFINE_float("median_window_s", None, "Median filter (s; default: the run's).")
_POSTPROCESSING = flags.DEFINE_enum(
    "postprocessing", "auto", ["auto", "config", "tuned"], "Thresholds and median windows: "
    "'tuned' per class on the validation split (<run>/tuned_postprocessing.json), 'config' the "
    "run's eval block, 'auto' tuned where the run has them. --threshold/--median_window_s "
    "override either for every class.")
_OVERLAP = flags.DEFINE_float("overlap_s", 2.0, "Overlap of consecutive windows (s).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Windows per model call.")
_PLOTS = flags.DEFINE_string("plots_dir", None, "Also draw each file's event roll (frame "
                             "probabilities, detections outlined) as <plots_dir>/<name>.png.")


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
    threshold, median, how = inference.postprocessing(runs, detector.config,
                                                      _POSTPROCESSING.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"detect: {e}")
  threshold = threshold if _THRESHOLD.value is None else _THRESHOLD.value
  median = median if _MEDIAN.value is None else _MEDIAN.value
  print(f"post-processing: {how}" + (" (overridden by the flags)" if _THRESHOLD.value is not None
                                     or _MEDIAN.value is not None else ""))
  events_by_file, failed = {}, []
  for path in files:
    try:
      probs = detector.frame_probs(path)
    except audio_lib.AudioError as e:
      failed.append(str(e))
      continue
    events_by_file[path.name] = detector.events(probs, threshold, median)
    if _SCORES.value:
      # sed_scores_eval's format (data/frame_scores.py): the float32 values exactly.
      with io_utils.atomic_write(Path(_SCORES.value) / f"{path.stem}.tsv") as f:
        f.write(frame_scores.tsv_text(probs, detector.classes, detector.frame_seconds))
    if _PLOTS.value:
      report.plot_event_roll(path.name, None, {name: probs}, detector.classes,
                             detector.frame_seconds, Path(_PLOTS.value) / f"{path.stem}.png",
                             threshold)
  annotations.write_strong_tsv(_OUT.value, events_by_file)
  n = sum(len(v) for v in events_by_file.values())
  print(f"{name}: {n} events in {len(events_by_file)} file(s) → {_OUT.value}")
  for message in failed:
    print(f"skipped: {message}", file=sys.stderr)
  if failed and not events_by_file:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
