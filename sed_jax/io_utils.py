"""Small file-system helpers shared by every module that writes files people rely on."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path` and renames it onto `path` only on success.

  A crash or kill mid-write leaves the old file (or none) in place, never a half-written one; the
  hidden `.name.XXXX.tmp` leftover of a SIGKILL is ignored by every reader. Missing parent folders
  are created. Files get mode 0644 (mkstemp's 0600 would hide shared datasets from other users).
  """
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
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
