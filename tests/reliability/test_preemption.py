"""SIGTERM (the preemption notice) checkpoints the runs under way, then the job exits; the next
run resumes from those checkpoints and ends exactly as the uninterrupted reference.

`python -m sed_jax.main` runs the tiny experiment (tests/reliability/conftest.py) on the
reference's datasets. Its training runs checkpoint only at their last step (4), so a checkpoint
at an earlier step can only be the one SIGTERM asked for. The notice is sent while each run
compiles its first training step, inside the training loop: the run must save step 1.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sed_jax import preemption
from tests.reliability.tiny_experiment import ROOT

LAST_STEP = 4


def run_main(command: list[str], stop_when=None):
  """Runs the experiment; with `stop_when`, sends SIGTERM once `stop_when()` holds."""
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  if stop_when is not None:
    deadline = time.time() + 600
    while proc.poll() is None and not stop_when():
      assert time.time() < deadline
      time.sleep(0.05)
    # The loop starts right after the metric writer: by now the run is compiling step 1, which
    # takes seconds even for the tiny models.
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  return proc.returncode, err


def training(runs: list[Path]):
  """True once every run of `runs` has opened its metric writer (its training loop follows)."""
  return lambda: all((r / "tensorboard").exists() for r in runs)


def sigterm_checkpoints(run: Path) -> list[int]:
  return [int(p.name) for p in (run / "checkpoints").glob("[0-9]*") if int(p.name) < LAST_STEP]


@pytest.mark.slow
def test_sigterm_checkpoints_then_the_rerun_ends_as_if_never_stopped(tiny_experiment, tmp_path):
  work = tmp_path / "run"
  command = lambda *flags: tiny_experiment.command(tiny_experiment.data, work, *flags)
  teachers = [work / "teachers" / t for t in ("resnet", "xception")]
  # Teachers train in two worker processes: the parent passes SIGTERM on to both.
  rc, err = run_main(command(), stop_when=training(teachers))
  assert rc == preemption.EXIT_CODE, err[-3000:]
  assert "sed_jax: Stopped by SIGTERM" in err and "Traceback" not in err, err[-3000:]
  for run in teachers:
    assert not (run / "test_metrics.json").exists()
    assert sigterm_checkpoints(run), f"{run.name}: no checkpoint saved on SIGTERM"

  # Students one at a time in this process (parallel_runs=1): its own loop stops.
  student = work / "students" / "no_kd"
  rc, err = run_main(command("--config.parallel_runs=1"), stop_when=training([student]))
  assert rc == preemption.EXIT_CODE, err[-3000:]
  assert "Stopped by SIGTERM at step" in err and "Traceback" not in err, err[-3000:]
  assert sigterm_checkpoints(student)
  assert all((r / "test_metrics.json").exists() for r in teachers)  # Resumed and finished.

  rc, err = run_main(command())
  assert rc == 0, err[-3000:]
  assert json.loads((work / "results.json").read_text()) == tiny_experiment.results
