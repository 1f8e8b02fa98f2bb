"""SIGKILL at random moments of every stage of the experiment, then restart: same results.json.

The tiny experiment of tests/test_distill.py runs in a child process that is killed (no cleanup,
as a preempted VM or the OOM killer would) a few times in each stage: dataset build, teacher
training, teacher-cache build, student training, report. Each restart must carry on from what is
on disk, and the finished results must equal, number for number, those of an uninterrupted run
with the same seed. `benchmarks/fault_injection.py` (more kills, any config) is the long version.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import sys
from sed_jax import distill
from tests.test_distill import tiny_student_config
distill.run(tiny_student_config(sys.argv[1]), sys.argv[2])
"""


def _newer(paths, since: float) -> bool:
  return any(p.stat().st_mtime >= since for p in paths if p.exists())


def stages(data: Path, work: Path) -> dict:
  """Per stage: (under way in a process started at `since`, finished)."""
  built = lambda name: any(data.glob(f"{name}/*/[0-9]*.[0-9]*.[0-9]*/dataset_info.json"))
  return {
      "dataset build": (lambda since: _newer(data.glob("synth_sed/*/incomplete.*"), since),
                        lambda: built("synth_sed")),
      "teacher training": (lambda since: _newer(work.glob("teachers/*/metrics.jsonl"), since),
                           lambda: len(list(work.glob("teachers/*/test_metrics.json"))) == 2),
      "teacher-cache build": (
          lambda since: _newer(data.glob("teacher_cache/*/incomplete.*"), since),
          lambda: built("teacher_cache")),
      "student training": (lambda since: _newer(work.glob("students/*/metrics.jsonl"), since),
                           lambda: len(list(work.glob("students/*/test_metrics.json"))) == 2),
      "report": (lambda since: _newer([work / "results.json"], since),
                 lambda: (work / "report.md").exists()),
  }


def run_driver(data: Path, work: Path, under_way=None, delay: float = 0.0) -> bool:
  """Runs the experiment; with `under_way`, SIGKILLs it `delay` s after `under_way(start)` is
  true. Returns whether it was killed (False: it finished first)."""
  start = time.time() - 1.0  # File times have coarse resolution on some file systems.
  proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(data), str(work)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if under_way is not None:
    deadline = time.time() + 600
    while proc.poll() is None and not under_way(start):
      assert time.time() < deadline
      time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return False


def test_killed_at_every_stage_the_experiment_ends_as_if_never_killed(tmp_path):
  ref_data, ref_work = tmp_path / "ref_tfds", tmp_path / "ref_run"
  run_driver(ref_data, ref_work)
  reference = json.loads((ref_work / "results.json").read_text())

  data, work = tmp_path / "tfds", tmp_path / "run"
  rng = random.Random(0)
  kills = {}
  for stage, (under_way, finished) in stages(data, work).items():
    for _ in range(3):
      if finished():
        break
      # Within the stage's length on this config (the report takes a second or two).
      delay = rng.uniform(0.0, 0.3 if stage == "report" else 1.5)
      kills[stage] = kills.get(stage, 0) + run_driver(data, work, under_way, delay)
  run_driver(data, work)  # Whatever is left.

  assert json.loads((work / "results.json").read_text()) == reference
  assert (work / "report.md").exists()
  # Nothing half-written is left for a reader: no temp files, no incomplete TFDS builds.
  assert not list(work.rglob(".*.tmp")) and not list(data.glob("*/*/incomplete.*"))
  assert all(kills.get(s, 0) >= 2 for s in ("dataset build", "teacher training",
                                             "teacher-cache build", "student training")), kills
