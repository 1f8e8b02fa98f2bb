"""`soundscapes`: real isolated clips mixed onto backgrounds, then built as a DCASE folder.

The mixing (`sed_jax.data.soundscapes`) writes one DCASE split folder per split under
`<data_dir>/soundscapes_audio/<config name>/`, each reused when complete; this builder then turns
those folders into TFDS examples exactly like `dcase_folder` does. The `unlabeled` split is mixed
like the others and has its labels withheld.

Sources per split are Scaper-style folders (`<dir>/<label>/*.ogg`) or folds of the official
UrbanSound8K download (`UrbanSound8K/audio/foldN`, labelled by its CSV). The preset `urbansed_mini`
takes UrbanSound8K folds 1–3 from `dataset.root` (no default: the data is the user's download):
the official archive unpacked there (`UrbanSound8K/audio/foldN/*.wav`, labels and folds from
`UrbanSound8K/metadata/UrbanSound8K.csv`) or Scaper-style `urbansound8k/fold{1,2,3}` (as in
../shared/data), beside `backgrounds/`. Folds 1–2 give train / validation (split by Freesound
recording) and unlabeled, fold 3 test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sed_jax.data import audio as audio_lib
from sed_jax.data import soundscapes as mix_lib
from sed_jax.data.builders import base
from sed_jax.data.builders import object_storage
from sed_jax.data.builders import dcase_folder

SPLITS = ("train", "validation", "test", "unlabeled")


def _split_sources(params) -> tuple[dict[str, tuple[list[Path], object]], list[Path]]:
  """(split → (source dirs, file filter), backgrounds) for the configured preset or folders."""
  root = Path(params["root"])
  if params["preset"] == "urbansed_mini":
    return mix_lib.urbansed_mini_splits(root), mix_lib.urbansed_mini_backgrounds(root)
  if params["preset"]:
    raise base.BuildError(f"Unknown soundscapes preset {params['preset']!r} "
                          "(config key dataset.soundscapes.preset); known: urbansed_mini.")
  splits = {}
  for split in SPLITS:
    dirs = [d.strip() for d in params["sources"].get(split, "").split(",") if d.strip()]
    if dirs and params["clips"][split]:
      splits[split] = ([mix_lib.as_source(root / d) for d in dirs], None)
  backgrounds = audio_lib.find_audio_files(root / params["backgrounds"])
  if not splits:
    raise base.BuildError("No soundscape sources configured: set dataset.soundscapes.sources."
                          "<split> to comma-separated Scaper-style folders under dataset.root.")
  return splits, backgrounds


class Soundscapes(base.SedBuilder):
  """Mixed soundscapes (see the module docstring)."""

  def _split_items(self):
    p, cfg = self.builder_config.params, self.builder_config
    splits, backgrounds = _split_sources(p)
    mix_cfg = mix_lib.SoundscapeConfig(**p["mixing"])
    out_root = Path(self.data_dir).parents[2] / "soundscapes_audio" / cfg.name
    items = {}
    for split, (dirs, file_filter) in splits.items():
      n = p["clips"][split]
      if not n:
        continue
      sources = mix_lib.collect_sources(dirs, cfg.classes, file_filter)
      folder = mix_lib.write_soundscapes(out_root / split, n, sources, backgrounds, mix_cfg,
                                         split_seed=split)
      files = dcase_folder.SplitFiles(folder / "audio", strong_tsv=folder / "strong.tsv")
      split_items = dcase_folder.split_items(split, files, cfg.classes, cfg.on_error)
      if split == "unlabeled":
        split_items = [dataclasses.replace(it, labelled=False) for it in split_items]
      items[split] = split_items
    return items


def make(data_cfg, feature_cfg, preset: str = "") -> Soundscapes:
  """The builder for a `dataset` block naming `soundscapes` (or the `urbansed_mini` preset)."""
  s = data_cfg.soundscapes
  preset = preset or s.preset
  if not data_cfg.root:
    what = (f"UrbanSound8K folds 1-3: download {mix_lib.US8K_DOWNLOAD}, unpack it into a "
            "folder beside a backgrounds/ folder of ambient recordings"
            if preset == "urbansed_mini" else "the source folders of "
            "dataset.soundscapes.sources and its backgrounds folder")
    raise base.BuildError(
        f"Dataset {data_cfg.name!r} needs dataset.root, the folder holding {what}; then pass "
        "--config.dataset.root=<folder> (--root on the build command).")
  root = Path(data_cfg.root).expanduser().resolve()
  params = dict(preset=preset, root=str(root), sources=s.sources.to_dict(),
                backgrounds=s.backgrounds, clips=s.clips.to_dict(),
                mixing=dict(duration=data_cfg.clip_seconds, sample_rate=feature_cfg.sample_rate,
                            min_events=s.min_events, max_events=s.max_events,
                            snr_db=(s.snr_low_db, s.snr_high_db), max_polyphony=s.max_polyphony,
                            seed=s.seed))
  if preset == "urbansed_mini":
    classes = list(mix_lib.URBANSED_MINI_CLASSES)
  else:
    classes = [c.strip() for c in data_cfg.classes.split(",") if c.strip()]
    if not classes:
      raise base.BuildError("The soundscapes dataset needs its class list: set dataset.classes "
                            "(--classes=a,b,c), the label folder names to use.")
  splits, backgrounds = _split_sources(params)  # Fails early, naming missing folders.
  content = {split: [(label, f.name, f.stat().st_size)
                     for label, files in mix_lib.collect_sources(dirs, classes, keep).items()
                     for f in files]
             for split, (dirs, keep) in sorted(splits.items())}
  content["backgrounds"] = [(b.name, b.stat().st_size) for b in backgrounds]
  config = base.make_config(
      preset or "soundscapes", feature_cfg.to_dict(), classes, params, content=content,
      on_error=data_cfg.on_error, num_workers=data_cfg.num_workers,
      description=f"Soundscapes mixed from {root} ({preset or 'custom sources'})")
  return Soundscapes(config=config, data_dir=object_storage.builder_data_dir(data_cfg),
                     file_format="array_record")
