"""SIGTERM, the preemption notice: training saves a checkpoint at the next step, then stops.

A preemptible TPU/GPU VM (and most batch schedulers) sends SIGTERM some seconds before the kill.
Python's default is to die at once, which loses every step since the last periodic checkpoint.
Here SIGTERM only sets a flag while a training loop runs (`deferred`): the loop checks it after
each step (`stop_at`), saves the step's state and data-iterator position, and raises
`Preempted`; running the same command again resumes from exactly that step. Outside a training
loop (dataset or cache builds, reports) SIGTERM raises `Preempted` at once: those stages keep
nothing half-written on any interruption and redo their work on the next run.

A parent that trains runs in worker processes (sed_jax/processes.py) passes the notice on to
its workers and waits for their checkpoints before it stops.

Multi-process jobs use JAX's own preemption service instead (`jax.distributed` installs it): all
processes agree on one step to checkpoint at (`multihost_utils.reached_preemption_sync_point`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator

from absl import logging

EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a job ended by SIGTERM.

_requested = False
_deferring = 0


class Preempted(BaseException):
  """SIGTERM stopped the job (after its checkpoint, when it was training).

  A BaseException, like KeyboardInterrupt: no `except Exception` on the way may swallow it.
  """


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  global _requested
  _requested = True
  for child in multiprocessing.active_children():  # Parallel runs: they checkpoint too.
    try:
      os.kill(child.pid, signal.SIGTERM)
    except ProcessLookupError:
      pass
  if not _deferring:
    raise Preempted("Stopped by SIGTERM before training began; nothing was lost (finished "
                    "stages are kept). Run the same command again to go on.")


def install() -> None:
  """Handles SIGTERM as above, in this process (the main thread of a single-process job)."""
  import jax  # pylint: disable=g-import-not-at-top  (data-only entry points never need JAX)
  if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
    signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def exit_on_preemption() -> Iterator[None]:
  """For a command's main: SIGTERM lets the runs under way save their checkpoints, then the
  process exits with EXIT_CODE and says how to resume, instead of dying mid-step."""
  install()
  try:
    yield
  except Preempted as e:
    print(f"sed_jax: {e}", file=sys.stderr, flush=True)
    _exit(EXIT_CODE)


def _exit(code: int) -> None:
  """Leaves the process once Preempted has unwound every stage (checkpoints waited for, files
  written whole or removed, worker pools shut down).

  Not through interpreter finalisation: native threads that outlive a stopped stage (a broken
  worker pool's manager, TFDS/TensorFlow threads) can crash it, and a handled SIGTERM then ends
  in SIGSEGV instead of EXIT_CODE (a dataset build's stop, docs/reliability.md). Every file of
  ours is complete by now; metric writers flush on each write. A
  multi-process job exits normally: JAX's shutdown barrier keeps its peers from hanging.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    sys.exit(code)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def requested() -> bool:
  return _requested


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """SIGTERM inside this block only sets the flag; the code polls `requested()` / `stop_at`."""
  global _deferring
  _deferring += 1
  try:
    yield
  finally:
    _deferring -= 1


def stop_at(step: int) -> bool:
  """True at the step where training must checkpoint and stop: on every process of a
  multi-process job at once (JAX's preemption sync point), else as soon as SIGTERM came."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.reached_preemption_sync_point(step)
  return _requested


def reset() -> None:
  """Forgets a handled notice (tests run several jobs in one process)."""
  global _requested
  _requested = False
