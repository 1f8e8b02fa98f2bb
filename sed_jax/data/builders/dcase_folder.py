"""`dcase_folder`: any DCASE-format dataset on disk, in its plain layout or a preset layout.

Plain layout under a root: one subfolder per split, each with `audio/` and `strong.tsv` and/or
`weak.tsv` (neither = unlabeled). Presets map other layouts onto the same splits:
- `desed`: DCASE 2019–2024 task 4 as downloaded (`audio/train/synthetic21_train/soundscapes`,
  `strong_label_real`, `weak`, `unlabel_in_domain`, `audio/validation/validation`,
  `…/synthetic21_validation/soundscapes`, `audio/eval/public`, each optionally `_16k`, with
  `metadata/…/*.tsv`): splits synthetic, strong, weak, unlabeled, validation,
  synthetic_validation and test (the public evaluation set);
- `urban_sed`: URBAN-SED v2.0.0 as unpacked, `audio/{train,validate,test}` with per-file
  `annotations/<split>/<name>.txt` (the `.jams` beside them are not read).

Every annotated file must have its audio (the whole missing set is reported at once), and every
audio file of a labelled split must be annotated (a file with no event gets a row with empty
onset/offset/label, as DESED writes them). With `on_error=skip` such files are skipped and listed
in the dataset's metadata instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from sed_jax.data import annotations as ann_lib
from sed_jax.data import audio as audio_lib
from sed_jax.data.builders import base
from sed_jax.data.builders import object_storage

LAYOUTS = ("plain", "desed", "urban_sed")


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """Where one split's audio and annotations are."""
  audio_dir: Path
  strong_tsv: Path | None = None
  weak_tsv: Path | None = None
  txt_dir: Path | None = None  # URBAN-SED: one `<audio stem>.txt` per clip.

  @property
  def labelled(self) -> bool:
    return bool(self.strong_tsv or self.weak_tsv or self.txt_dir)

  def annotation_files(self) -> list[Path]:
    files = [p for p in (self.strong_tsv, self.weak_tsv) if p]
    if self.txt_dir:
      files += sorted(self.txt_dir.glob("*.txt"))
    return files


def find_splits(root: Path, layout: str) -> dict[str, SplitFiles]:
  """The splits present under `root` for a layout; a clear error if there are none."""
  root = Path(root)
  if not root.is_dir():
    raise base.BuildError(
        f"Dataset root {root} does not exist or is not a directory; set --root (or the config "
        "key dataset.root) to the folder that holds the dataset.")
  if layout not in LAYOUTS:
    raise base.BuildError(f"Unknown layout {layout!r}; choose one of {LAYOUTS}.")
  splits = {"plain": _plain, "desed": _desed, "urban_sed": _urban_sed}[layout](root)
  if not splits:
    raise base.BuildError(f"No {layout} split found under {root}; expected {_EXPECTED[layout]}.")
  return splits


_EXPECTED = {
    "plain": "one subfolder per split holding audio/ and strong.tsv and/or weak.tsv",
    "desed": "audio/train/{synthetic*/soundscapes,strong_label_real,weak,unlabel_in_domain}, "
             "audio/validation/validation, audio/eval/public (each optionally _16k) and "
             "metadata/{train,validation,eval}/*.tsv",
    "urban_sed": "audio/{train,validate,test} and annotations/{train,validate,test}/*.txt",
}


def _plain(root: Path) -> dict[str, SplitFiles]:
  out = {}
  for d in sorted(p for p in root.iterdir() if (p / "audio").is_dir()):
    if not re.fullmatch(r"\w+", d.name):
      raise base.BuildError(f"Split folder {d} : a split name may hold only letters, digits and _;"
                            " rename the folder.")
    strong, weak = d / "strong.tsv", d / "weak.tsv"
    out[d.name] = SplitFiles(d / "audio", strong if strong.is_file() else None,
                             weak if weak.is_file() else None)
  return out


def _first(root: Path, *patterns: str) -> Path | None:
  for pattern in patterns:
    hits = sorted(root.glob(pattern))
    if hits:
      return hits[0]
  return None


def _desed(root: Path) -> dict[str, SplitFiles]:
  spec = {
      # Folder names as the downloads write them, with or without the task 4 baseline's
      # resampled `_16k` twins (the original is taken when both are there).
      "synthetic": (("audio/train/synthetic*/soundscapes*", "audio/train/synthetic*"),
                    ("metadata/train/synthetic*/soundscapes.tsv", "metadata/train/synthetic*.tsv"),
                    "strong"),
      "strong": (("audio/train/strong_label_real*",), ("metadata/train/audioset_strong.tsv",),
                 "strong"),
      "weak": (("audio/train/weak*",), ("metadata/train/weak.tsv",), "weak"),
      "unlabeled": (("audio/train/unlabel_in_domain*",), (), None),
      "validation": (("audio/validation/validation*",), ("metadata/validation/validation.tsv",),
                     "strong"),
      "synthetic_validation": (("audio/validation/synthetic*/soundscapes*",),
                               ("metadata/validation/synthetic*/soundscapes.tsv",), "strong"),
      "test": (("audio/eval/public*",), ("metadata/eval/public.tsv",), "strong"),
  }
  out = {}
  for split, (audio_globs, tsv_globs, kind) in spec.items():
    audio = _first(root, *audio_globs)
    if audio is None or not audio.is_dir():
      continue
    tsv = _first(root, *tsv_globs) if tsv_globs else None
    if kind and tsv is None:
      continue  # Audio without its annotations: not this split.
    out[split] = SplitFiles(audio, tsv if kind == "strong" else None, tsv if kind == "weak" else None)
  return out


def _urban_sed(root: Path) -> dict[str, SplitFiles]:
  out = {}
  for name, split in (("train", "train"), ("validate", "validation"), ("test", "test")):
    audio, txt = root / "audio" / name, root / "annotations" / name
    if audio.is_dir():
      out[split] = SplitFiles(audio, txt_dir=txt if txt.is_dir() else None)
  return out


def read_split(files: SplitFiles, classes=None, bad: dict[str, str] | None = None):
  """(strong, weak) annotation maps of a split: filename → events / labels, or None if absent.

  With `bad` (on_error=skip), a file with a bad annotation row is left out and its reason
  recorded in `bad` instead of raising.
  """
  strong = weak = None
  if files.strong_tsv:
    strong = ann_lib.read_strong_tsv(files.strong_tsv, classes, bad_rows=bad)
  if files.weak_tsv:
    weak = ann_lib.read_weak_tsv(files.weak_tsv, classes, bad_rows=bad)
  if files.txt_dir:
    strong = {}
    for audio in audio_lib.find_audio_files(files.audio_dir):
      txt = files.txt_dir / f"{audio.stem}.txt"
      if not txt.is_file():
        continue
      try:
        strong[audio.name] = ann_lib.read_urbansed_txt(txt, classes)
      except ann_lib.AnnotationError as e:
        if bad is None:
          raise
        bad[audio.name] = str(e)
  return strong, weak


def split_items(split: str, files: SplitFiles, classes, on_error: str) -> list[base.Item]:
  """Items of one split; the whole set of missing audio is reported at once."""
  bad: dict[str, str] | None = {} if on_error == "skip" else None
  strong, weak = read_split(files, classes, bad)
  bad = bad or {}
  present = {p.name: p for p in audio_lib.find_audio_files(files.audio_dir)}
  if not files.labelled:
    return [base.Item(key=f"{split}-{name}", audio_id=name, source=base.FileAudio(str(p)),
                      labelled=False) for name, p in present.items()]
  annotated = list(dict.fromkeys([*(strong or {}), *(weak or {}), *bad]))
  missing = [name for name in annotated if name not in present and name not in bad]
  tsv = files.strong_tsv or files.weak_tsv or files.txt_dir
  if missing and on_error == "raise":
    ann_lib.check_audio_present(annotated, files.audio_dir, tsv_path=tsv)
  items = []
  for name in annotated:
    items.append(base.Item(
        key=f"{split}-{name}", audio_id=name,
        source=base.FileAudio(str(files.audio_dir / name)),
        strong=tuple(strong[name]) if strong is not None and name in strong else None,
        weak=tuple(weak[name]) if weak is not None and name in weak else None,
        error=bad.get(name) or (f"audio file missing from {files.audio_dir} (listed in {tsv})"
                                if name not in present else None)))
  for name in present:
    if name not in annotated:
      what = (f"no annotation file {files.txt_dir / Path(name).with_suffix('.txt').name}"
              if files.txt_dir else
              f"not listed in {tsv}; add a row for it (empty onset/offset/label if it has no "
              "event)")
      items.append(base.Item(key=f"{split}-{name}", audio_id=name,
                             source=base.FileAudio(str(present[name])), error=what))
  return items


def content_fingerprint(splits: dict[str, SplitFiles]) -> str:
  """Hash of the annotation files' bytes and the audio files' names and sizes.

  Edited annotations or replaced audio give a new dataset name, so a stale build is never read.
  """
  h = hashlib.sha256()
  for split, files in sorted(splits.items()):
    h.update(split.encode())
    for f in files.annotation_files():
      h.update(f.name.encode() + f.read_bytes())
    for p in audio_lib.find_audio_files(files.audio_dir):
      h.update(f"{p.name}:{p.stat().st_size}".encode())
  return h.hexdigest()[:16]


class DcaseFolder(base.SedBuilder):
  """A DCASE-format folder on disk (see the module docstring)."""

  def _split_items(self):
    p, cfg = self.builder_config.params, self.builder_config
    splits = find_splits(Path(p["root"]), p["layout"])
    return {split: split_items(split, files, cfg.classes, cfg.on_error)
            for split, files in splits.items()}


def resolve_classes(splits: dict[str, SplitFiles], classes, on_error: str = "raise") -> list[str]:
  """The given class list, or the sorted union of every label in the annotations."""
  if classes:
    return list(classes)
  labels = set()
  for files in splits.values():
    strong, weak = read_split(files, bad={} if on_error == "skip" else None)
    for mapping in (strong, weak):
      if mapping:
        labels.update(ann_lib.labels_in(mapping))
  if not labels:
    raise base.BuildError("No label found in any annotation file; pass --classes=a,b,c.")
  return sorted(labels)


def make_from_root(root, layout: str, data_cfg, feature_cfg, preset: str | None = None):
  """The builder for a DCASE folder at `root` (class list from the labels unless configured)."""
  root = Path(root).expanduser().resolve()
  splits = find_splits(root, layout)
  given = [c.strip() for c in data_cfg.classes.split(",") if c.strip()] if data_cfg.classes else []
  classes = resolve_classes(splits, given, data_cfg.on_error)
  config = base.make_config(
      preset or layout, feature_cfg.to_dict(), classes, dict(root=str(root), layout=layout),
      content=content_fingerprint(splits), on_error=data_cfg.on_error,
      num_workers=data_cfg.num_workers, description=f"DCASE folder ({layout}) at {root}")
  return DcaseFolder(config=config, data_dir=object_storage.builder_data_dir(data_cfg),
                     file_format="array_record")


def make(data_cfg, feature_cfg, layout: str = "plain") -> DcaseFolder:
  """The builder for a `dataset` block naming `dcase_folder`, `desed` or `urban_sed`."""
  if not data_cfg.root:
    raise base.BuildError(f"Dataset {data_cfg.name!r} needs a root folder: pass --root=DIR "
                          "(or set the config key dataset.root).")
  return make_from_root(data_cfg.root, layout, data_cfg, feature_cfg)
