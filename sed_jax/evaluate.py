r"""Evaluate a trained model on any DCASE-format folder: metrics table, JSON and event rolls.

  python -m sed_jax.evaluate --workdir=runs/student --audio_dir=data/test/audio \
      --annotations=data/test/strong.tsv [--model=student_no_kd] [--out_dir=eval_out]

Every file listed in the strong TSV is scored (a file with no event is listed with an empty
row); files are processed as `sed_jax.detect` does (any rate, channels, length). Prints the
segment- and event-based tables (overall and class-wise) and PSDS1/PSDS2, and writes
`metrics.json`, `events.tsv` and event-roll plots of the first files to --out_dir.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app
from absl import flags
from etils import epath

from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax.data import annotations
from sed_jax.data import audio as audio_lib
from sed_jax.evaluation import frame_scoring
from sed_jax.evaluation import report
from sed_jax.evaluation import event_scoring
from sed_jax.inference import Detector
from sed_jax.inference import model_runs

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment or training-run directory.")
_MODEL = flags.DEFINE_string("model", None, "Model name in results.json (default: the KD "
                             "student); 'ensemble' averages the teachers.")
_AUDIO = flags.DEFINE_string("audio_dir", None, "Folder with the audio files.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "DCASE strong TSV of those files.")
_OUT = flags.DEFINE_string("out_dir", "eval_out", "Where metrics.json, events.tsv and plots go.")
_PLOTS = flags.DEFINE_integer("plots", 3, "Event-roll plots of the first N files.")


def evaluate_folder(workdir, model, audio_dir, annotations_tsv, out_dir, plots: int = 3):
  """Scores `model` of `workdir` on a DCASE folder; returns the metrics dict (also written)."""
  name, runs = model_runs(workdir, model)
  detector = Detector(runs)
  classes = detector.classes
  reference = annotations.read_strong_tsv(annotations_tsv, classes)
  annotations.check_audio_present(reference, audio_dir, tsv_path=annotations_tsv)
  files = list(reference)
  probs = [detector.frame_probs(epath.Path(audio_dir) / f) for f in files]
  durations = [audio_lib.audio_info(epath.Path(audio_dir) / f)[0] for f in files]
  t_max = max(p.shape[0] for p in probs)
  stacked = np.zeros((len(files), t_max, len(classes)), np.float32)
  for i, p in enumerate(probs):
    stacked[i, :p.shape[0]] = p
  cfg = detector.config.eval
  metrics = frame_scoring.score_predictions(stacked, files, durations, reference, classes,
                                       detector.frame_seconds, cfg)
  out = epath.Path(out_dir)
  estimated = {f: detector.events(p, cfg.threshold, cfg.median_window_s)
               for f, p in zip(files, probs)}
  annotations.write_strong_tsv(out / "events.tsv", estimated)
  with io_utils.atomic_write(out / "metrics.json") as f:
    json.dump({"model": name, "workdir": str(workdir), **metrics}, f, indent=2)
  for i, f in enumerate(files[:plots]):
    report.plot_event_roll(f, reference[f], {name: probs[i]}, classes, detector.frame_seconds,
                           out / f"event_roll_{i}.png", cfg.threshold)
  return dict(metrics, model=name)


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  if not (_WORKDIR.value and _AUDIO.value and _ANNOTATIONS.value):
    raise app.UsageError("--workdir, --audio_dir and --annotations are required.")
  try:
    metrics = evaluate_folder(_WORKDIR.value, _MODEL.value, _AUDIO.value, _ANNOTATIONS.value,
                              _OUT.value, _PLOTS.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"evaluate: {e}")
  print(f"model: {metrics['model']}")
  print(event_scoring.format_table(metrics))
  for k in ("psds1", "psds2"):
    if metrics.get(k) is not None:
      print(f"{k.upper()}: {metrics[k]:.3f}")
  print(f"written to {_OUT.value}/")


if __name__ == "__main__":
  app.run(main)
