"""Report pieces: the results table and the plots."""

import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import report


def row(name, role, params, f1=0.5):
  return dict(name=name, role=role, kd="none", params=params, flops_per_clip=2e9,
              segment_f1=f1, segment_er=0.4, event_f1=f1, psds1=None, psds2=0.3)


def test_results_table_compression_and_missing_values():
  table = report.results_table({"models": [row("a", "teacher", 2_000_000),
                                           row("b", "teacher", 1_000_000),
                                           row("s", "student", 30_000)]})
  lines = table.splitlines()
  assert len(lines) == 5
  assert "| s | student | none | 30,000 | 50.0x | 2.000 | 0.500 | 0.400 | 0.500 | – | 0.300 |" \
      in lines


def test_plots_are_png_files(tmp_path):
  probs = np.random.default_rng(0).random((20, 3))
  out = report.plot_event_roll("clip.wav", [Event(0.1, 0.5, "b")], {"model": probs},
                               ["a", "b", "c"], 0.08, tmp_path / "roll.png")
  assert out.read_bytes()[:4] == b"\x89PNG"
  # New audio has no reference: the roll shows only the model's panel.
  out = report.plot_event_roll("new.wav", None, {"model": probs}, ["a", "b", "c"], 0.08,
                               tmp_path / "new.png")
  assert out.read_bytes()[:4] == b"\x89PNG"
  # Per-class thresholds (tuned post-processing) outline each class at its own level.
  out = report.plot_event_roll("new.wav", None, {"model": probs}, ["a", "b", "c"], 0.08,
                               tmp_path / "per_class.png", threshold=[0.2, 0.5, 0.9])
  assert out.read_bytes()[:4] == b"\x89PNG"
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "metrics.jsonl").write_text(
      '{"step": 1, "split": "train", "loss": 1.0}\n'
      '{"step": 2, "split": "validation", "event_f1_macro": 0.2}\n')
  out = report.plot_training_curves({"run": tmp_path / "run"}, "event_f1_macro",
                                    tmp_path / "curves.png")
  assert out.read_bytes()[:4] == b"\x89PNG"
