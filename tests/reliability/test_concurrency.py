"""Concurrent use: one job per run folder, one build per dataset, no stale locks after a kill."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sed_jax import io_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_busy_run_folder_is_refused_with_the_holder_named(tmp_path):
  with io_utils.exclusive(tmp_path / ".lock", "Run folder x", wait=False):
    with pytest.raises(io_utils.BusyError, match=rf"in use by process {os.getpid()} on .*"
                       r"choose another --workdir"):
      with io_utils.exclusive(tmp_path / ".lock", "Run folder x", wait=False):
        pass


def test_a_second_experiment_on_the_same_workdir_stops_before_any_work(tmp_path):
  run, data = tmp_path / "run", tmp_path / "tfds"
  with io_utils.exclusive(run / ".lock", "Run folder", wait=False):
    out = subprocess.run(
        [sys.executable, "-m", "sed_jax.main", "--config=configs/student.py:smoke",
         f"--workdir={run}", f"--config.dataset.data_dir={data}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert f"sed_jax: Run folder {run} is in use by process {os.getpid()}" in out.stderr
  assert "Traceback" not in out.stderr
  assert not data.exists() and os.listdir(run) == [".lock"]


def test_a_waiting_job_goes_on_when_the_holder_releases(tmp_path):
  order = []
  with io_utils.exclusive(tmp_path / "l", "build", wait=True):
    t = threading.Thread(target=_take, args=(tmp_path / "l", order))
    t.start()
    time.sleep(0.3)
    order.append("holder done")
  t.join(10)
  assert order == ["holder done", "waiter"]


def _take(path, order):
  with io_utils.exclusive(path, "build", wait=True):
    order.append("waiter")


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from sed_jax import io_utils\n"
       f"with io_utils.exclusive({str(tmp_path / 'l')!r}, 'x', wait=False):\n"
       "  print('held', flush=True); time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(io_utils.BusyError):
    with io_utils.exclusive(tmp_path / "l", "x", wait=False):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with io_utils.exclusive(tmp_path / "l", "x", wait=False):
    pass


BUILD = """
import sys
from absl import logging
from sed_jax import config_lib
from sed_jax.data import builders
logging.set_verbosity(logging.INFO)
d = config_lib.common().dataset("synth_sed", smoke=True)
d.synth.update(dict(train=24, validation=4, test=4, unlabeled=4))
d.data_dir, d.num_workers = sys.argv[1], 1
b = builders.prepare(d, config_lib.common().features())
print("splits", sorted(b.info.splits), flush=True)
"""


def test_two_jobs_sharing_a_data_dir_build_the_dataset_once(tmp_path):
  jobs = [subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
  outs = [j.communicate(timeout=600)[0] for j in jobs]
  assert [j.returncode for j in jobs] == [0, 0], outs
  assert sum("downloaded and prepared" in o for o in outs) == 1, outs
  for o in outs:
    assert "splits ['test', 'train', 'unlabeled', 'validation']" in o, o
