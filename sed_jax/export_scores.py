r"""Write a trained run's frame scores for every split of its dataset: our models as files.

  python -m sed_jax.export_scores --workdir=runs/student/teachers/resnet --out=scores/resnet
  python -m sed_jax.export_scores --workdir=runs/student --model=student_no_kd --out=s --format=npz

The folder layout is the one external teachers are read from (`data/frame_scores.py`,
docs/distillation.md): `<out>/<split>/<audio id>.tsv` in sed_scores_eval's format plus
`<out>/clip_scores/<split>.tsv` (`--format=tsv`), or one `<out>/<split>.npz` holding the logits
(`--format=npz`). So sed_scores_eval can score our models, other code can use them, and they
come back in as `--config.teachers="('external:<name>=<out>',)"`.

The scores are the very numbers the teacher cache would hold: the same batched inference
(`teacher_cache.batched_logits`), probabilities written from the float32 logits with 17
digits (or the logits themselves in the .npz). `<out>/source.json` records the run, its
checkpoint and the dataset. The folder is written beside `<out>` and moved into place when
complete, so a killed export leaves no partial folder behind.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from sed_jax import inference
from sed_jax import metric_writers
from sed_jax.kd import score_export

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run, or an experiment with --model.")
_MODEL = flags.DEFINE_string("model", None, "Model name in the experiment's results.json "
                             "(default: the KD student).")
_OUT = flags.DEFINE_string("out", None, "Folder to write (must not exist, or --overwrite).")
_FORMAT = flags.DEFINE_enum("format", "tsv", ["tsv", "npz"], "tsv: one sed_scores_eval file "
                            "per clip; npz: one file of logits per split.")
_SPLITS = flags.DEFINE_list("splits", None, "Splits to write (default: all of the dataset's).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Clips per model call (the cache's default, "
                              "kd.cache_batch_size: the same batches give the same bits).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder.")


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("Usage: python -m sed_jax.export_scores --workdir=RUN --out=DIR "
                         "[--format=tsv|npz]")
  try:
    name, runs = inference.model_runs(_WORKDIR.value, _MODEL.value)
    if len(runs) != 1:
      raise ValueError(f"--model={name!r} averages {len(runs)} runs; export each teacher on "
                       "its own (--model=<teacher>).")
    info = score_export.export(runs[0], _OUT.value, _FORMAT.value, _SPLITS.value, _BATCH.value,
                  _OVERWRITE.value)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    sys.exit(f"export_scores: {e}")
  print(f"{name}: scores of splits {', '.join(info['splits'])} → {_OUT.value} "
        f"({info['format']}, step {info['step']})")


if __name__ == "__main__":
  app.run(main)
