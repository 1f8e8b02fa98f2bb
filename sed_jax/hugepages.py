"""Transparent huge pages for the buffers XLA:CPU allocates at every step: a command restarts
itself once with glibc's `glibc.malloc.hugetlb=1` tunable.

Why: XLA:CPU allocates a step's temporary and output buffers anew at each execution. glibc
serves buffers that large with fresh mmaps and unmaps them when they are freed, so each step
faults its whole working set back in, 4 KiB at a time, and a large share of a CPU training step
went to the kernel (`benchmarks/step_settings.py`, results/hugepages.json). With the tunable, glibc
advises those mappings for transparent huge pages, which the kernel then maps 2 MiB at a time.
glibc reads its tunables once, when a process starts, so the only way to get them from
Python is to start again: `reexec()` replaces the process (same pid, same arguments) before it
has done any work. It is called by the commands that train or time training (`sed_jax.main`
and the step benchmarks), never on import: a library must not restart its host.

Nothing is done when the tunable is already in GLIBC_TUNABLES (the restarted process, or a
user's own setting), when `SED_JAX_MALLOC_DEFAULTS=1` asks for glibc's defaults, off Linux /
glibc, or when the kernel's THP mode is `never` (the advice would be ignored). The numbers
computed do not change, only how memory is mapped.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
KEEP_DEFAULTS_ENV = "SED_JAX_MALLOC_DEFAULTS"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE) -> str | None:
  """The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), None if unknown."""
  try:
    text = path.read_text()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def environ_with_hugepages(environ: Mapping[str, str], mode: str | None,
                           libc: str = "glibc") -> dict[str, str] | None:
  """The environment to restart with, or None when there is nothing to gain (see the module
  docstring): `environ` plus TUNABLE appended to GLIBC_TUNABLES (colon-separated)."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if ("glibc.malloc.hugetlb=" in tunables or environ.get(KEEP_DEFAULTS_ENV, "") not in ("", "0")
      or libc != "glibc" or mode not in ("always", "madvise")):
    return None
  return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def reexec() -> None:
  """Restarts this command (`sys.orig_argv`, same interpreter) with TUNABLE set, when
  `environ_with_hugepages` says so; returns otherwise. Call it first thing in a command's
  `__main__`, before JAX starts work."""
  if sys.platform != "linux":
    return
  env = environ_with_hugepages(os.environ, thp_mode(), platform.libc_ver()[0])
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
