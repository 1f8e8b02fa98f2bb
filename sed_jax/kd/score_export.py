"""A trained run's frame scores written as files: the way out matching external teachers' way in.

The layout is the one external teachers are read from (`data/frame_scores.py`): per split, a
folder of sed_scores_eval TSVs plus `clip_scores/<split>.tsv`, or one `.npz` of logits. The
scores are the very numbers the teacher cache would hold: the same batched inference
(`teacher_cache.batched_logits`), probabilities written from the float32 logits with 17 digits
(or the logits themselves in the .npz), so a run exported and read back as an external teacher
caches the same float16 logits (tests/test_export_scores.py). The command is
`python -m sed_jax.export_scores`.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
from etils import epath

from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax import train
from sed_jax.data import builders
from sed_jax.data import features as feat_lib
from sed_jax.data import frame_scores
from sed_jax.data import pipeline
from sed_jax.kd import teacher_cache


def export(run: epath.PathLike, out: epath.PathLike, fmt: str = "tsv", splits=None,
           batch_size: int = 32, overwrite: bool = False) -> dict:
  """Writes the scores of the trained `run` for `splits` (default: every split of its
  dataset) into `out` (`frame_scores.FolderWriter`); returns what source.json records."""
  run = epath.Path(run)
  if not (run / "config.json").exists():
    raise FileNotFoundError(f"{run} holds no run (no config.json); train it first.")
  config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
  builder = builders.prepare(config.dataset, config.features)
  classes = list(builder.info.metadata["classes"])
  splits = list(splits or builder.info.splits)
  unknown = sorted(set(splits) - set(builder.info.splits))
  if unknown:
    raise ValueError(f"--splits {unknown} not in the dataset's splits {list(builder.info.splits)}.")
  model, variables, _ = train.load_trained(run, len(classes))
  infer, bs = teacher_cache.sharded_inference([dict(model=model, variables=variables)],
                                              batch_size)
  ident = teacher_cache.checkpoint_identity(run)
  with frame_scores.FolderWriter(out, classes, feat_lib.output_frame_seconds(config.features),
                                 fmt, overwrite) as writer:
    for split in splits:
      source = builder.as_data_source(split)
      progress = metric_writers.Progress(len(source), 0, 1, desc=f"scores {split}")
      ids, frames, clips = [], [], []
      for idx, examples, frame, clip in teacher_cache.batched_logits(
          infer, bs, source, config.dataset, config.features):
        for j, ex in enumerate(examples):
          ids.append(pipeline.text(ex["audio_id"]))
          frames.append(frame[j, 0, :ex["strong"].shape[0]])
          clips.append(clip[j, 0])
        progress.update(idx[-1] + 1)
      progress.close()
      writer.split(split, ids, frames, np.stack(clips))
    writer.info = dict(run=str(io_utils.absolute(run)), step=ident["step"], hash=ident["hash"],
                       arch=ident["arch"], splits=splits,
                       dataset=f"{builder.name}/{builder.builder_config.name}")
  return dict(writer.info, format=fmt)
