"""Report pieces: the results table and the plots."""

import numpy as np

from sed_jax.data.annotations import Event
from sed_jax.evaluation import report


def row(name, role, params, f1=0.5, seed=None):
  return dict(name=name, role=role, kd="none", seed=seed, params=params, flops_per_clip=2e9,
              segment_f1=f1, segment_er=0.4, event_f1=f1, psds1=None, psds2=0.3)


def test_results_table_compression_and_missing_values():
  table = report.results_table({"models": [row("a", "teacher", 2_000_000),
                                           row("b", "teacher", 1_000_000),
                                           row("s", "student", 30_000, seed=2)]})
  lines = table.splitlines()
  assert len(lines) == 5
  assert "| s | student | none | 2 | 30,000 | 50.0x | 2.000 | 0.500 | 0.400 | 0.500 | – | 0.300 |" \
      in lines
  assert lines[2].startswith("| a | teacher | none | – | 2,000,000 |")


def test_summary_table_gives_mean_std_and_the_paired_gain_in_points():
  stats = lambda *v: dict(mean=float(np.mean(v)), std=float(np.std(v, ddof=1)) if len(v) > 1
                          else 0.0, n=len(v), values=list(v))
  metrics = ("event_f1", "segment_f1", "segment_er", "psds1", "psds2")
  summary = dict(
      students=[dict(name="student_no_kd", kd="none", seeds=[0, 1],
                     **{m: stats(0.5, 0.6) for m in metrics})],
      kd_gain=[dict(name="student_kd_x", kd="multi:x", against="student_no_kd", seeds=[0, 1],
                    positive_seeds=1, **{m: stats(0.04, -0.01) for m in metrics})])
  table = report.summary_table(summary)
  assert "| student_no_kd | none | 2 | 0.550 ± 0.071 | 0.550 ± 0.071 |" in table
  assert ("event F1 +1.5 ± 3.5 (seeds [0, 1]: +4.0, -1.0; 1 of 2 positive); segment F1 "
          "+1.5 ± 3.5") in table


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
