"""Independent runs (teachers, students) in parallel worker processes that die with their parent.

Why processes: on a CPU host one training process leaves cores idle for much of a step (the GRU
recurrence is sequential, and compilation is single-threaded), so two models trained at once
finish sooner than one after the other (`configs/student.py`, `parallel_runs`). Accelerator
hosts train one model at a time on all their devices instead.

Workers are spawned (not forked: JAX is not fork-safe) and ask the kernel to kill them when the
parent dies, so a SIGKILLed experiment leaves no orphan still writing checkpoints into a run that
the restarted experiment is about to resume.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sed_jax import preemption

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
  """Worker initialiser: SIGKILL this process when the parent exits (Linux; elsewhere a
  no-op), and exit at once if the parent is already gone."""
  if sys.platform.startswith("linux"):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent_pid:
    os._exit(1)


def spawn_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """A pool of `workers` spawned processes that die with this one (every pool of the project:
  parallel runs here, feature extraction in dataset builds)."""
  return concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
      initializer=_die_with_parent, initargs=(os.getpid(),))


def run_parallel(fn: Callable[..., Any], jobs: Sequence[tuple], names: Sequence[str],
                 workers: int) -> list[Any]:
  """`[fn(*job) for job in jobs]`, `workers` at a time in spawned processes, in job order.

  `fn` must be importable (a module-level function) and its arguments picklable. A job that
  raises stops the others and re-raises with its name; a worker killed from outside (out of
  memory) is reported the same way. SIGTERM reaches every worker (preemption.py); this waits
  for their checkpoints, then raises `preemption.Preempted`.
  """
  if workers <= 1 or len(jobs) <= 1:
    return [fn(*job) for job in jobs]
  with spawn_pool(min(workers, len(jobs))) as pool, preemption.deferred():
    futures = [pool.submit(fn, *job) for job in jobs]
    try:
      results = []
      for name, future in zip(names, futures):
        try:
          results.append(future.result())
        except preemption.Preempted:
          # SIGTERM, passed on to every worker: let the running jobs finish their checkpoints.
          for f in futures:
            f.cancel()
          concurrent.futures.wait(futures)
          raise preemption.Preempted(
              f"Stopped by SIGTERM; the runs under way ({name} among them) saved checkpoints "
              "first. Run the same command again to resume them.") from None
        except concurrent.futures.process.BrokenProcessPool as e:
          if preemption.requested():  # SIGTERM reached a worker before it could handle it.
            raise preemption.Preempted("Stopped by SIGTERM. Run the same command again to "
                                       "resume.") from None
          raise RuntimeError(f"The worker process running {name} died (killed from outside, "
                             "or out of memory); run again to resume it, or use one worker."
                             ) from e
        except Exception as e:
          raise RuntimeError(f"{name} failed in its worker process: {e}") from e
      return results
    except BaseException:
      for f in futures:
        f.cancel()
      for p in list(getattr(pool, "_processes", {}).values()):
        p.kill()  # A failed or interrupted experiment stops its other jobs too.
      raise
