"""TFDS builders (array_record, TensorFlow-free) and the one map from a config to a builder.

`make_builder(data_cfg, feature_cfg)` is how every entry point — the `build` command, the
training input pipeline, the teacher cache — gets a dataset, so building and reading always agree
on the dataset's name and fingerprint.
"""

from __future__ import annotations

from sed_jax.data.builders import base
from sed_jax.data.builders import dcase_folder
from sed_jax.data.builders import object_storage
from sed_jax.data.builders import soundscapes
from sed_jax.data.builders import synth_sed

BuildError = base.BuildError

# name → (function building the builder from (data_cfg, feature_cfg)).
DATASETS = {
    "synth_sed": synth_sed.make,
    "dcase_folder": lambda d, f: dcase_folder.make(d, f, "plain"),
    "desed": lambda d, f: dcase_folder.make(d, f, "desed"),
    "urban_sed": lambda d, f: dcase_folder.make(d, f, "urban_sed"),
    "soundscapes": soundscapes.make,
    "urbansed_mini": lambda d, f: soundscapes.make(d, f, "urbansed_mini"),
}


def make_builder(data_cfg, feature_cfg) -> base.SedBuilder:
  """The TFDS builder for a `dataset` config block (not built yet: see `prepare`)."""
  if data_cfg.name not in DATASETS:
    raise ValueError(f"Unknown dataset {data_cfg.name!r} (config key dataset.name); "
                     f"known: {sorted(DATASETS)}.")
  builder = DATASETS[data_cfg.name](data_cfg, feature_cfg)
  object_storage.pull(builder, data_cfg)  # A data_dir on gs://: fetch a dataset built there.
  return builder


def prepare(data_cfg, feature_cfg) -> base.SedBuilder:
  """Builds the dataset if it is not there yet (a finished build is reused) and returns it."""
  builder = make_builder(data_cfg, feature_cfg)
  if not builder.is_prepared():
    builder.download_and_prepare()
  object_storage.push(builder, data_cfg)  # A data_dir on gs://: share the build.
  return builder
