"""Checkpoints: orbax managers for the latest states (with the data iterator) and the best one.

Layout in a workdir:
  checkpoints/<step>/{state,data,config}   the latest `keep` train states, grain iterator states
                                    and the config each was trained with (JSON);
  best/<step>/state                 the state with the best validation score so far;
  config.json                       the config the run was started with.
Saves are asynchronous (training goes on while orbax writes) and atomic (orbax writes to a
temporary directory and renames it when complete), so a run killed at any moment restarts from
its last complete checkpoint; with the iterator state restored too, the resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from sed_jax import io_utils


class Checkpointer:
  """The latest-N and best-1 checkpoints of one run.

  One save at a time: each manager finishes its asynchronous save before the other starts
  one. With several processes, every save ends in cross-process barriers run by the manager's
  background threads; two managers' threads in flight at once reach their barriers in an order
  that can differ between processes, and a 2-process run was seen to deadlock that way (one
  process in the latest manager's commit barrier, the other in the best manager's finalize
  barrier). Training still overlaps each save.
  """

  def __init__(self, workdir: epath.PathLike, keep: int = 2, async_save: bool = True):
    workdir = io_utils.absolute(workdir)
    self.latest = ocp.CheckpointManager(
        workdir / "checkpoints", item_names=("state", "data", "config"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True))
    self.best = ocp.CheckpointManager(
        workdir / "best", item_names=("state",),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["score"], best_mode="max",
            enable_async_checkpointing=async_save, create=True))
    self._best = self._best_on_disk()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, data_iterator=None, config=None,
           force: bool = False) -> None:
    """Saves the train state and (if given) the data iterator's position and the config."""
    args = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      args["config"] = ocp.args.JsonSave(config_json(config))
    self.best.wait_until_finished()  # One save at a time (why: the class docstring).
    self.latest.save(step, args=ocp.args.Composite(**args), force=force)

  def save_best(self, step: int, state: Any, score: float) -> bool:
    """Keeps `state` as the best one if `score` beats every earlier one; True if it did."""
    if self._best is not None and self._best >= score:
      return False
    self.latest.wait_until_finished()  # One save at a time (why: the class docstring).
    self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                   metrics={"score": float(score)}, force=True)
    self._best = float(score)
    return True

  def best_score(self) -> float | None:
    """The best validation score kept so far (from disk when the run was resumed)."""
    return self._best

  def _best_on_disk(self) -> float | None:
    step = self.best.best_step()
    if step is None:
      return None
    metrics = self.best.metrics(step)  # type: ignore[attr-defined]
    return None if metrics is None else float(metrics["score"])

  def restore(self, abstract_state: Any, data_iterator=None, step: int | None = None) -> Any:
    """The latest (or `step`'s) state; restores the iterator's position in place if given.

    `abstract_state` None: the saved arrays whole on this process's first device
    (`on_this_device`), whatever topology saved them.
    """
    step = self.latest.latest_step() if step is None else step
    if abstract_state is None:
      abstract_state = on_this_device(self.latest.directory / str(step) / "state")
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.latest.restore(step, args=ocp.args.Composite(**args))["state"]

  def restore_best(self, abstract_state: Any) -> Any:
    step = self.best.best_step()
    if step is None:
      raise FileNotFoundError(f"No best checkpoint in {self.best.directory}.")
    if abstract_state is None:
      abstract_state = on_this_device(self.best.directory / str(step) / "state")
    return self.best.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()


def on_this_device(item_dir: epath.PathLike) -> Any:
  """The abstract tree of a saved state item: its shapes and dtypes, on this process's first device.

  A checkpoint records the sharding it was saved with, a mesh over the devices of every process
  that trained it; restored into that sharding it fails anywhere else ("Topology mismatch
  detected"), e.g. a run trained on a pod slice or by 2 local processes, loaded on one CPU for
  `detect`, `evaluate` or the experiment's later stages. Those want whole arrays on one device,
  so the target keeps only what the arrays are, not where they were.
  """
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir)).tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree,
                      is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def config_json(config) -> dict[str, Any]:
  """A ConfigDict as plain JSON data."""
  return json.loads(config.to_json_best_effort())


def read_checkpoint_config(workdir: epath.PathLike, step: int | None = None) -> dict[str, Any]:
  """The config saved with a checkpoint (the latest by default)."""
  manager = ocp.CheckpointManager(io_utils.absolute(workdir) / "checkpoints",
                                  item_names=("state", "data", "config"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def run_lock(workdir: epath.PathLike):
  """Held by process 0 while a job writes `workdir`: a second job started on the same folder
  stops with a message naming the first (io_utils.exclusive) instead of corrupting it."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return io_utils.exclusive(epath.Path(workdir) / ".lock", f"Run folder {workdir}", wait=False)


def write_config(workdir: epath.PathLike, config) -> None:
  """Writes config.json once per run (process 0 only), atomically."""
  if jax.process_index() != 0:
    return
  with io_utils.atomic_write(epath.Path(workdir) / "config.json") as f:
    json.dump(config_json(config), f, indent=2, sort_keys=True)
