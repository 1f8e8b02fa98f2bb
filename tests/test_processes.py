"""Worker processes for parallel teacher runs: results in order, named failures, no orphans."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sed_jax import processes
from tests import process_jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_results_come_back_in_job_order():
  jobs = [(3,), (1,), (2,)]
  assert processes.run_parallel(process_jobs.slow_square, jobs, ["a", "b", "c"], 2) == [9, 1, 4]


def test_one_worker_runs_in_this_process():
  assert processes.run_parallel(process_jobs.pid, [(), ()], ["a", "b"], 1) == [os.getpid()] * 2


def test_a_failed_job_is_named():
  with pytest.raises(RuntimeError, match=r"densenet failed in its worker process: bad teacher"):
    processes.run_parallel(process_jobs.fail_if, [(False,), (True,)], ["resnet", "densenet"], 2)


def test_workers_die_with_a_killed_parent(tmp_path):
  # A SIGKILLed experiment must not leave workers training on into runs a restart will resume.
  script = ("import sys; from sed_jax import processes; from tests import process_jobs; "
            f"processes.run_parallel(process_jobs.sleep_with_pid_file, "
            f"[({str(tmp_path)!r}, 0), ({str(tmp_path)!r}, 1)], ['a', 'b'], 2)")
  parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
  deadline = time.time() + 120
  while len(list(tmp_path.glob("*.pid"))) < 2:
    assert time.time() < deadline and parent.poll() is None, "workers did not start"
    time.sleep(0.2)
  pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  deadline = time.time() + 30
  while any(_alive(p) for p in pids):
    assert time.time() < deadline, f"orphan workers still running: {pids}"
    time.sleep(0.2)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"  # A zombie has exited.
  except FileNotFoundError:
    return False
