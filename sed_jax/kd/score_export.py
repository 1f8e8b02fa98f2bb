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
import os
import shutil

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
  """Writes the scores of the trained `run` (module docstring); returns source.json's dict."""
  run, out = epath.Path(run), epath.Path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
  if not (run / "config.json").exists():
    raise FileNotFoundError(f"{run} holds no run (no config.json); train it first.")
  config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
  builder = builders.prepare(config.dataset, config.features)
  classes = list(builder.info.metadata["classes"])
  model, variables, _ = train.load_trained(run, len(classes))
  splits = list(splits or builder.info.splits)
  unknown = sorted(set(splits) - set(builder.info.splits))
  if unknown:
    raise ValueError(f"--splits {unknown} not in the dataset's splits {list(builder.info.splits)}.")
  hop = feat_lib.output_frame_seconds(config.features)
  infer, bs = teacher_cache.sharded_inference([dict(model=model, variables=variables)],
                                              batch_size)
  tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  for split in splits:
    source = builder.as_data_source(split)
    progress = metric_writers.Progress(len(source), 0, 1, desc=f"scores {split}")
    ids, lengths, frames, clips = [], [], [], []
    for idx, examples, frame, clip in teacher_cache.batched_logits(
        infer, bs, source, config.dataset, config.features):
      for j, ex in enumerate(examples):
        t_out = ex["strong"].shape[0]
        ids.append(frame_scores.file_stem(pipeline.text(ex["audio_id"])))
        lengths.append(t_out)
        frames.append(frame[j, 0, :t_out])
        clips.append(clip[j, 0])
        if fmt == "tsv":
          frame_scores.write_tsv(tmp / split / f"{ids[-1]}.tsv",
                                 frame_scores.logits_to_probs(frames[-1]), classes, hop)
      progress.update(idx[-1] + 1)
    progress.close()
    if fmt == "tsv":
      frame_scores.write_clip_tsv(tmp / frame_scores.CLIP_FOLDER / f"{split}.tsv", ids,
                                  frame_scores.logits_to_probs(np.stack(clips)), classes)
    else:
      with io_utils.atomic_write(tmp / f"{split}.npz", "wb") as f:
        np.savez(f, audio_id=np.asarray(ids), classes=np.asarray(classes),
                 hop_s=np.float64(hop), lengths=np.asarray(lengths, np.int64),
                 frame_logits=np.concatenate(frames).astype(np.float32),
                 clip_logits=np.stack(clips).astype(np.float32))
  ident = teacher_cache.checkpoint_identity(run)
  source_info = dict(run=str(io_utils.absolute(run)), step=ident["step"], hash=ident["hash"],
                     arch=ident["arch"], dataset=f"{builder.name}/{builder.builder_config.name}",
                     classes=classes, frame_seconds=hop, format=fmt, splits=splits)
  with io_utils.atomic_write(tmp / "source.json") as f:
    json.dump(source_info, f, indent=2)
  if out.exists():
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)
  else:
    tmp.rename(out)
  return source_info
