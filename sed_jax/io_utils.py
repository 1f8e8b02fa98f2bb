"""Small file-system helpers shared by every module that writes files people rely on.

Run folders and datasets may live on object storage (`gs://bucket/...`, the usual place on TPU
VMs): every path goes through `etils.epath` (gcsfs behind `gs://`, install `sed_jax[gcs]`), and
the two things object storage lacks, rename and file locks, are handled here.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import os
import pathlib
import socket
import tempfile
from collections.abc import Iterator
from typing import IO

from absl import logging
from etils import epath


def is_local(path: str | os.PathLike) -> bool:
  """False for URLs such as gs://bucket/dir (object storage), True for file-system paths."""
  return "://" not in os.fspath(path)


def files_under(folder: str | os.PathLike) -> list[epath.Path]:
  """Every file under `folder`, sorted. (epath refuses recursive globs on buckets; the trees
  walked here are small: a dataset version or a checkpoint, a few dozen files.)"""
  out = []
  for p in sorted(epath.Path(folder).iterdir()):
    out.extend(files_under(p) if p.is_dir() else [p])
  return out


def content_hash(folder: str | os.PathLike) -> str:
  """16 hex digits of a SHA-256 over every file under `folder` (relative names and bytes): what
  a cache built from that folder (a checkpoint, an external teacher's scores) depends on."""
  folder = epath.Path(folder)
  h = hashlib.sha256()
  for f in files_under(folder):
    h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
  return h.hexdigest()[:16]


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` made absolute (against the working directory) unless it is a URL already."""
  return epath.Path(pathlib.Path(path).absolute()) if is_local(path) else epath.Path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path` and renames it onto `path` only on success.

  A crash or kill mid-write leaves the old file (or none) in place, never a half-written one; the
  hidden `.name.XXXX.tmp` leftover of a SIGKILL is ignored by every reader and removed by the next
  write of the same file (one writer per file: run folders and builds are locked). Missing parent
  folders are created. Files get mode 0644 (mkstemp's 0600 would hide shared datasets from other
  users). On object storage, where an object appears whole or not at all but nothing renames,
  the content is gathered in memory and uploaded in one request on success.
  """
  if not is_local(path):
    p = epath.Path(path)
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    p.parent.mkdir(parents=True, exist_ok=True)
    data = buffer.getvalue()
    if isinstance(data, str):
      data = data.encode(open_kwargs.get("encoding") or "utf-8")
    p.write_bytes(data)
    return
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  for leftover in p.parent.glob(f".{glob.escape(p.name)}.*.tmp"):
    with contextlib.suppress(OSError):
      leftover.unlink()
  fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
    os.chmod(tmp, 0o644)
    os.replace(tmp, p)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


class BusyError(RuntimeError):
  """Another process holds the lock of a workdir; the message names it and what to do."""


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str, wait: bool) -> Iterator[None]:
  """Holds an exclusive lock on `lock_path` (created if missing) for the `with` block.

  `wait=False` (a run's workdir): a second process refuses at once with `BusyError` naming the
  holder, instead of two runs writing the same checkpoints. `wait=True` (a shared dataset build):
  it waits its turn, then finds the work done. The kernel drops the lock of a process that dies,
  even by SIGKILL, so no stale lock ever blocks a restart.
  """
  if not is_local(lock_path):
    # Object storage has no locks: take a lock file on this host named after the URL. Jobs on
    # one host still take turns; across hosts, process 0 alone writes a run folder or builds a
    # dataset (checkpoint.run_lock, builders.prepare), and one job per folder is the user's
    # rule.
    digest = hashlib.sha256(os.fspath(lock_path).encode()).hexdigest()[:16]
    p = pathlib.Path(tempfile.gettempdir()) / "sed_jax_locks" / f"{digest}.lock"
    if not p.parent.is_dir():
      p.parent.mkdir(exist_ok=True)
      with contextlib.suppress(OSError):
        p.parent.chmod(0o1777)  # Shared by every user of the host, like /tmp itself.
  else:
    p = pathlib.Path(lock_path)
  p.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      if not wait:
        raise BusyError(f"{what} is in use by {holder} (lock {p}). Wait for that run to "
                        "finish (or stop it), or choose another --workdir.") from None
      logging.info("Waiting for %s (held by %s)...", what, holder)
      fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.
