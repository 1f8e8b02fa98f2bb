"""Module-level jobs for tests/test_processes.py (spawned workers import them by name)."""

import os
import time


def slow_square(x):
  time.sleep(0.1 * x)  # Later jobs finish first: results must still come back in job order.
  return x * x


def pid():
  return os.getpid()


def fail_if(fail):
  if fail:
    raise ValueError("bad teacher")
  return 0


def sleep_with_pid_file(folder, i):
  with open(os.path.join(folder, f"{i}.pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
  os.rename(os.path.join(folder, f"{i}.pid.tmp"), os.path.join(folder, f"{i}.pid"))
  time.sleep(600)
