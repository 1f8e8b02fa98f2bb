r"""Builds one dataset as TFDS array_record files and prints what went into it.

  python -m sed_jax.build --dataset=synth_sed
  python -m sed_jax.build --dataset=dcase_folder --root=/data/my_sed --on_error=skip
  python -m sed_jax.build --dataset=desed --root=/data/DESED --classes=Speech,Dog,...

A finished build is reused (same name and fingerprint); a killed build leaves only an
`incomplete.*` folder, which is never read and is removed by the next build.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from sed_jax import config_lib
from sed_jax import metric_writers
from sed_jax.data import builders

_DATASET = flags.DEFINE_string("dataset", "synth_sed", f"One of {sorted(builders.DATASETS)}.")
_ROOT = flags.DEFINE_string("root", "", "Dataset folder (dcase_folder, desed, urban_sed).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data_dir (default: $TFDS_DATA_DIR or "
                                "~/tensorflow_datasets).")
_ON_ERROR = flags.DEFINE_enum("on_error", "raise", ["raise", "skip"],
                              "raise: stop at the first bad file; skip: build the rest and list "
                              "the skipped files in the metadata and the summary.")
_CLASSES = flags.DEFINE_string("classes", "", "Comma-separated class list (default: from labels).")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Feature-extraction processes (0 = all cores).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny variant of the embedded dataset.")


def format_summary(builder) -> str:
  """A markdown table per split: clips, hours, events per class, skipped files and why."""
  meta = builder.info.metadata
  lines = [f"# {builder.name}/{builder.builder_config.name}", f"data: {builder.data_dir}",
           f"classes ({len(meta['classes'])}): {', '.join(meta['classes'])}", ""]
  summary = meta["summary"]
  splits = list(summary)
  lines.append("| | " + " | ".join(splits) + " |")
  lines.append("|---|" + "---|" * len(splits))
  rows = [("clips", "clips"), ("hours", "hours"), ("labelled clips", "labelled_clips"),
          ("events clipped at clip end", "events_clipped_at_clip_end")]
  for title, key in rows:
    lines.append(f"| {title} | " + " | ".join(str(summary[s][key]) for s in splits) + " |")
  for c in meta["classes"]:
    lines.append(f"| events: {c} | " + " | ".join(
        str(summary[s]["events_per_class"].get(c, 0)) for s in splits) + " |")
  lines.append("| files skipped | " + " | ".join(
      str(len(summary[s]["skipped"])) for s in splits) + " |")
  for s in splits:
    for skipped in summary[s]["skipped"]:
      lines.append(f"- skipped ({s}) {skipped['file']}: {skipped['reason']}")
  return "\n".join(lines)


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  data_cfg = config_lib.common().dataset(_DATASET.value, smoke=_SMOKE.value)
  data_cfg.update(dict(root=_ROOT.value, data_dir=_DATA_DIR.value, on_error=_ON_ERROR.value,
                       classes=_CLASSES.value, num_workers=_WORKERS.value))
  try:
    builder = builders.prepare(data_cfg, config_lib.common().features())
  except (builders.BuildError, ValueError, OSError) as e:
    sys.exit(f"Build failed: {e}")
  print(format_summary(builder))


if __name__ == "__main__":
  app.run(main)
