"""Datasets whose data_dir is on object storage (`gs://bucket/tfds`, the usual place on TPU VMs).

Every builder writes array_record files, and array_record reads and writes local files only (its
reader is riegeli's file-descriptor reader: the open-source build has no gs:// support). So a
data_dir on a bucket is used through a local mirror on each host:
  - builders are given the mirror as their data_dir (`builder_data_dir`);
  - a dataset already complete in the bucket is downloaded into the mirror before it is read
    (`pull`: once per host; TFDS's `dataset_info.json` marks a complete dataset, so it is
    fetched last and a half-copied folder is never taken for a dataset);
  - a dataset built here is uploaded when complete, `dataset_info.json` last (`push`, process
    0 only), so the next host or job downloads it instead of building it again.
The mirror is `$SED_JAX_LOCAL_DATA_DIR`, else `~/.cache/sed_jax/tfds`, with the bucket's path
below it (gs://b/tfds → ~/.cache/sed_jax/tfds/gs/b/tfds).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import logging
from etils import epath

from sed_jax import io_utils

_COMPLETE = "dataset_info.json"  # What TFDS's is_prepared() looks for: copied last.


def remote_data_dir(data_cfg) -> str | None:
  """The bucket URL of a `dataset` block's data_dir (or of $TFDS_DATA_DIR), if it is one."""
  data_dir = data_cfg.data_dir or os.environ.get("TFDS_DATA_DIR", "")
  return None if io_utils.is_local(data_dir) else data_dir.rstrip("/")


def local_mirror(remote: str) -> str:
  """The local folder that stands for `remote` on this host."""
  root = os.environ.get("SED_JAX_LOCAL_DATA_DIR") or os.path.expanduser("~/.cache/sed_jax/tfds")
  scheme, _, rest = remote.partition("://")
  return os.path.join(root, scheme, *[p for p in rest.split("/") if p not in ("", ".", "..")])


def builder_data_dir(data_cfg) -> str | None:
  """The data_dir to give a builder: the local mirror of a bucket, else the configured folder
  (None: TFDS's default, $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  remote = remote_data_dir(data_cfg)
  return local_mirror(remote) if remote else (data_cfg.data_dir or None)


def _remote_folder(builder, data_cfg) -> epath.Path | None:
  """The bucket folder of `builder`'s dataset version, or None for a local data_dir."""
  remote = remote_data_dir(data_cfg)
  if remote is None:
    return None
  rel = os.path.relpath(builder.data_dir, local_mirror(remote))
  return epath.Path(remote) / rel


def pull(builder, data_cfg) -> bool:
  """Downloads `builder`'s dataset from the bucket if it is complete there and missing here;
  True if the dataset is now prepared locally."""
  if builder.is_prepared():
    return True
  src = _remote_folder(builder, data_cfg)
  if src is None or not (src / _COMPLETE).exists():
    return False
  dst = epath.Path(builder.data_dir)
  dst.parent.mkdir(parents=True, exist_ok=True)
  # The lock of a build of the same dataset (base.BuildOnce): a download and a build on this
  # host never write the same folder at once.
  with io_utils.exclusive(dst.parent / f".{builder.version}.build.lock",
                          f"the build of {builder.name}/{builder.builder_config.name}", wait=True):
    if builder.is_prepared():  # Built or downloaded by another job while this one waited.
      builder.info.read_from_directory(builder.data_dir)
      return True
    for leftover in dst.parent.glob(f".{dst.name}.pull-*"):  # A killed download's.
      shutil.rmtree(leftover, ignore_errors=True)
    logging.info("Downloading dataset %s → %s", src, dst)
    tmp = epath.Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.pull-"))
    try:
      _copy_tree(src, tmp)
      if dst.exists():  # Not prepared (checked under the lock): a killed build's leftovers.
        shutil.rmtree(dst)
      os.replace(tmp, dst)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  builder.info.read_from_directory(builder.data_dir)
  return builder.is_prepared()


def push(builder, data_cfg) -> None:
  """Uploads `builder`'s local dataset to the bucket (process 0; `dataset_info.json` last)."""
  dst = _remote_folder(builder, data_cfg)
  if dst is None:
    return
  import jax  # pylint: disable=g-import-not-at-top  (not for the data-only entry points)
  if jax.process_index() != 0 or (dst / _COMPLETE).exists():
    return
  src = epath.Path(builder.data_dir)
  logging.info("Uploading dataset %s → %s", src, dst)
  _copy_tree(src, dst)


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """Copies every file under `src` to the same place under `dst`, `dataset_info.json` last."""
  for f in sorted(io_utils.files_under(src), key=lambda p: p.name == _COMPLETE):
    out = dst / os.path.relpath(os.fspath(f), os.fspath(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(f.read_bytes())
