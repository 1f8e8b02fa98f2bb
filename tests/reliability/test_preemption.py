"""SIGTERM (the preemption notice) checkpoints the runs under way, then the job exits; the next
run resumes from those checkpoints and ends exactly as an uninterrupted run.

`python -m sed_jax.main` runs the tiny experiment of tests/kd/test_experiment.py with longer training
runs. Their periodic checkpoint comes only at the last step, so a checkpoint at any earlier step
can only be the one SIGTERM asked for.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sed_jax import preemption

ROOT = Path(__file__).resolve().parents[2]
STEPS = 150
CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.kd.test_experiment import tiny_student_config

def get_config():
  c = tiny_student_config("")
  for block in (c, c.teacher):
    block.total_steps = block.eval_every = block.checkpoint_every = {STEPS}
    block.log_every = 5
  return c
"""


def run_main(config: Path, data: Path, work: Path, *flags, stop_when=None):
  """Runs the experiment; with `stop_when`, sends SIGTERM once `stop_when()` holds."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "sed_jax.main", f"--config={config}", f"--workdir={work}",
       f"--config.dataset.data_dir={data}", *flags],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if stop_when is not None:
    deadline = time.time() + 600
    while proc.poll() is None and not stop_when():
      assert time.time() < deadline
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  return proc.returncode, err


def training(runs: list[Path]):
  """True once every run of `runs` has logged a training step (its loop is running) or, should
  one be much faster to compile, finished."""
  logged = lambda r: (r / "metrics.jsonl").exists() and (r / "metrics.jsonl").stat().st_size
  return lambda: all(logged(r) or (r / "test_metrics.json").exists() for r in runs)


def sigterm_checkpoints(run: Path) -> list[int]:
  return [int(p.name) for p in (run / "checkpoints").glob("[0-9]*") if int(p.name) < STEPS]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tiny.py"
  path.write_text(CONFIG)
  return path


def test_sigterm_checkpoints_then_the_rerun_ends_as_if_never_stopped(config_file, tmp_path,
                                                                     monkeypatch):
  # Restarts compile afresh, as a user's would (no persistent XLA cache lends them the
  # reference's executables): equal numbers show that the resumption itself is exact.
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  data = tmp_path / "tfds"
  rc, err = run_main(config_file, data, tmp_path / "ref")
  assert rc == 0, err[-3000:]
  reference = json.loads((tmp_path / "ref" / "results.json").read_text())

  work = tmp_path / "run"
  teachers = [work / "teachers" / t for t in ("resnet", "xception")]
  # Teachers train in two worker processes: the parent passes SIGTERM on to both.
  rc, err = run_main(config_file, data, work, stop_when=training(teachers))
  assert rc == preemption.EXIT_CODE, err[-3000:]
  assert "sed_jax: Stopped by SIGTERM" in err and "Traceback" not in err, err[-3000:]
  stopped = [run for run in teachers if not (run / "test_metrics.json").exists()]
  assert stopped  # At least one was still training: usually both.
  for run in stopped:
    assert sigterm_checkpoints(run), f"{run.name}: no checkpoint saved on SIGTERM"

  # Students one at a time in this process (parallel_runs=1): its own loop stops.
  student = work / "students" / "no_kd"
  rc, err = run_main(config_file, data, work, "--config.parallel_runs=1",
                     stop_when=training([student]))
  assert rc == preemption.EXIT_CODE, err[-3000:]
  assert f"Stopped by SIGTERM at step" in err and "Traceback" not in err, err[-3000:]
  assert sigterm_checkpoints(student)
  assert all((r / "test_metrics.json").exists() for r in teachers)  # Resumed and finished.

  rc, err = run_main(config_file, data, work)
  assert rc == 0, err[-3000:]
  assert json.loads((work / "results.json").read_text()) == reference
