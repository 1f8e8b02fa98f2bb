"""collect: many runs → one table (seeds averaged, unfinished runs named) and a metric plot."""

import json
import os
import subprocess
import sys

import pytest

from sed_jax.evaluation import sweep_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_run(path, batch, seed, event_f1=None, lr=1e-3):
  path.mkdir(parents=True)
  config = dict(seed=seed, batch_size=batch, total_steps=64000 // batch,
                optim=dict(name="adamw", lr=lr, lr_scaling="sqrt", warmup_examples=12800),
                model=dict(arch="student"), kd=dict(loss="bce", alpha=0.5, temperature=1.0))
  (path / "config.json").write_text(json.dumps(config))
  if event_f1 is not None:
    (path / "test_metrics.json").write_text(json.dumps(dict(
        event_f1_macro=event_f1, segment_f1_macro=0.8, segment_er=0.3, psds1=None, psds2=0.7)))
  return str(path)


@pytest.fixture
def runs(tmp_path):
  return [make_run(tmp_path / "b256_s0", 256, 0, 0.40), make_run(tmp_path / "b64_s1", 64, 1, 0.52),
          make_run(tmp_path / "b64_s0", 64, 0, 0.50), make_run(tmp_path / "b1024_s0", 1024, 0),
          make_run(tmp_path / "b128_s0", 128, 0, 0.45)]


def test_table_groups_seeds_sorts_by_batch_and_names_unfinished_runs(runs):
  table = sweep_table.markdown([sweep_table.read_run(r) for r in runs])
  lines = table.splitlines()
  assert lines[0].startswith("| batch_size | total_steps | seeds | event F1 |")
  # psds1 is null: shown as missing ('–'), never as NaN.
  assert lines[2] == ("| 64 | 1000 | 2 | 0.510 ± 0.014 | 0.800 ± 0.000 | 0.300 ± 0.000 | – "
                      "| 0.700 ± 0.000 |")
  assert lines[3].startswith("| 128 | 500 | 1 | 0.450 |")
  assert lines[4].startswith("| 256 | 250 | 1 | 0.400 |")
  assert lines[-1] == f"Unfinished (no test_metrics.json): {runs[3]}"


def test_command_writes_the_table_and_the_plot(runs, tmp_path):
  out = tmp_path / "report" / "large_batch"
  proc = subprocess.run([sys.executable, "-m", "sed_jax.collect", *runs,
                         f"--out={out}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert out.with_suffix(".md").read_text() in proc.stdout
  assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_a_run_is_named(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "sed_jax.collect", str(tmp_path)],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert f"collect: {tmp_path} holds no run (no config.json)" in proc.stderr
