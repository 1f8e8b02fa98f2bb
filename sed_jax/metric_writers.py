"""Where training numbers go: metrics.jsonl, TensorBoard event files, a progress bar or log lines.

Only process 0 writes (every process computes the same global metrics). TensorBoard files come
from tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

import jax
import tqdm
from absl import logging
from etils import epath

from sed_jax import io_utils


# Libraries whose INFO lines (one per checkpoint file, per shard) drown a run's own log, and the
# lowest level still shown for each.
_CHATTY = {"/orbax/": std_logging.WARNING, "/grain/": std_logging.WARNING,
           "/jax/_src/": std_logging.WARNING, "/tensorflow_datasets/": std_logging.ERROR}


class _QuietLibraries(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    for part, level in _CHATTY.items():
      if part in record.pathname:
        return record.levelno >= level
    return True


def quiet_library_logs() -> None:
  """Keeps the absl log (the console) to this project's lines and the libraries' problems."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())


def _plain(value: Any) -> Any:
  """JSON-able Python scalars (NaN/inf become None, as the evaluation module does)."""
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricWriter:
  """Appends {"step", "split", ...metrics} lines to <workdir>/metrics.jsonl and TensorBoard."""

  def __init__(self, workdir: str | os.PathLike):
    self.active = jax.process_index() == 0
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self._tb = None
    # Object storage cannot append: there the file is rewritten whole (it stays small: a line
    # per log_every steps), from the lines it held when the run (re)started plus the new ones.
    # TensorBoard files likewise are written to a local folder and uploaded whole on each write
    # (`_tb_remote`), through the same client as every other file of the run.
    self._lines = self._tb_remote = None
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.path.parent.mkdir(parents=True, exist_ok=True)
      tb_dir = epath.Path(workdir) / "tensorboard"
      if not io_utils.is_local(self.path):
        self._lines = self.path.read_text() if self.path.exists() else ""
        self._tb_remote, tb_dir = tb_dir, tempfile.mkdtemp(prefix="sed_jax_tensorboard_")
      self._tb = SummaryWriter(os.fspath(tb_dir))

  def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step), "split": split}
    row.update({k: _plain(v) for k, v in scalars.items() if not isinstance(v, dict)})
    if self._lines is not None:
      self._lines += json.dumps(row) + "\n"
      self.path.write_text(self._lines)
    else:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    for k, v in row.items():
      if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
        self._tb.add_scalar(f"{split}/{k}", v, int(step))
    self._tb.flush()
    self._upload_tensorboard()

  def _upload_tensorboard(self) -> None:
    if self._tb_remote is not None:
      for f in pathlib.Path(self._tb.logdir).iterdir():
        (self._tb_remote / f.name).write_bytes(f.read_bytes())

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._upload_tensorboard()
      if self._tb_remote is not None:
        shutil.rmtree(self._tb.logdir, ignore_errors=True)
      self._tb = None


def read_metrics(workdir: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
  """The rows of a run's metrics.jsonl (optionally one split's), by step.

  A run resumed after a kill redoes the steps since its last checkpoint and writes their rows
  again; the last row written for a (step, split) wins.
  """
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = {}
  for line in path.read_text().splitlines():
    if line.strip():
      row = json.loads(line)
      rows[(row["step"], row["split"])] = row
  return sorted((r for r in rows.values() if split is None or r["split"] == split),
                key=lambda r: r["step"])


_BAR_POSITION = [0]


def set_bar_position(position: int) -> None:
  """The terminal line of this process's progress bars (parallel teacher workers: one each)."""
  _BAR_POSITION[0] = position


class Progress:
  """A tqdm bar on a terminal; otherwise a log line every `every_s` seconds (for log files)."""

  def __init__(self, total: int, initial: int, examples_per_step: int, desc: str,
               every_s: float = 30.0):
    self.examples_per_step = examples_per_step
    self.every_s, self.total, self.step = every_s, total, initial
    self.active = jax.process_index() == 0
    self.bar = None
    if self.active and sys.stderr.isatty():
      self.bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit="step",
                           dynamic_ncols=True, position=_BAR_POSITION[0])
    self._t0, self._s0, self._last = time.perf_counter(), initial, time.perf_counter()
    self.desc = desc

  def update(self, step: int, **postfix) -> None:
    if not self.active:
      return
    now = time.perf_counter()
    rate = (step - self._s0) * self.examples_per_step / max(now - self._t0, 1e-9)
    if self.bar is not None:
      self.bar.update(step - self.step)
      self.bar.set_postfix({"ex/s": f"{rate:.0f}", **postfix}, refresh=False)
    elif now - self._last >= self.every_s or step == self.total:
      extra = " ".join(f"{k}={v}" for k, v in postfix.items())
      logging.info("%s: step %d/%d, %.0f examples/s %s", self.desc, step, self.total, rate, extra)
      self._last = now
    self.step = step

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
