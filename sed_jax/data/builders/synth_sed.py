"""`synth_sed`: the embedded default dataset, synthesised from seeds (no download, no files).

Every clip is generated inside the worker that computes its features, from a seed derived from
(split, index, base seed), so the dataset is the same on every machine and needs no audio on disk.
"""

from __future__ import annotations

import dataclasses

from sed_jax.data import synth
from sed_jax.data.builders import base
from sed_jax.data.builders import object_storage

SPLITS = ("train", "validation", "test", "unlabeled")


@dataclasses.dataclass(frozen=True)
class SynthAudio:
  """A clip generated from its seed (audio and its events)."""
  seed: int
  duration: float

  def load(self, sample_rate: int):
    audio, events = synth.synth_clip(self.seed, duration=self.duration, sample_rate=sample_rate)
    return audio, events


class SynthSed(base.SedBuilder):
  """Procedurally synthesised 10-class soundscapes; `unlabeled` withholds its labels."""

  def _split_items(self):
    p = self.builder_config.params
    items = {}
    for split in SPLITS:
      items[split] = [
          base.Item(key=f"{split}-{i:06d}", audio_id=f"{split}_{i:06d}.wav",
                    source=SynthAudio(synth.clip_seed(split, i, p["seed"]), p["clip_seconds"]),
                    labelled=split != "unlabeled")
          for i in range(p[split])]
    return {k: v for k, v in items.items() if v}


def make(data_cfg, feature_cfg) -> SynthSed:
  """The builder for a `dataset` config block whose name is `synth_sed`."""
  s = data_cfg.synth
  params = dict(seed=s.seed, clip_seconds=data_cfg.clip_seconds, **{k: s[k] for k in SPLITS})
  config = base.make_config(
      "synth", feature_cfg.to_dict(), synth.CLASSES, params, on_error=data_cfg.on_error,
      num_workers=data_cfg.num_workers,
      description="Procedurally synthesised 10-class soundscapes (sed_jax.data.synth).")
  return SynthSed(config=config, data_dir=object_storage.builder_data_dir(data_cfg), file_format="array_record")
