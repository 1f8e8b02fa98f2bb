"""Input pipeline: TFDS data source → grain (per-process shard, seeded shuffle, augment, batch).

Training batches come from a grain `DataLoader` whose iterator state is small and can be saved
with the model checkpoint, so a resumed run sees exactly the batches an uninterrupted run would
have seen. Evaluation batches are produced in dataset order, padded to a fixed batch size with a
`mask` marking real examples, so every process runs the same number of steps and no example is
dropped or counted twice.

A batch is a dict of numpy arrays with a leading batch axis:
  log_mel [B, T, F] f32 · strong [B, T_out, C] f32 · weak [B, C] f32 · has_strong [B] bool ·
  has_weak [B] bool · frame_mask [B, T_out] bool (False on padding past a clip's end) ·
  (from a teacher cache) teacher_logits [B, K, T_out, C] f16, teacher_clip_logits [B, K, C] f16 ·
  audio_id [B] str (training: to name examples that bring NaN/inf in) · (evaluation only)
  mask [B] bool, and as Python lists of length B: audio_id (str), duration
  (seconds) and events ((onset, offset, class index) tuples: the exact annotated events).
Strings never go to a device: `device_batch` drops them before `sharding.to_global`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
import zlib

import grain
import jax
import numpy as np

from sed_jax.data import builders

DEVICE_KEYS = ("log_mel", "strong", "weak", "has_strong", "has_weak", "frame_mask",
               "teacher_logits", "teacher_clip_logits")


def data_source(data_cfg, feature_cfg, split: str, prepare: bool = False):
  """The random-access source of one split; `prepare=True` builds the dataset if missing."""
  builder = (builders.prepare(data_cfg, feature_cfg) if prepare
             else builders.make_builder(data_cfg, feature_cfg))
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"Dataset {builder.name}/{builder.builder_config.name} is not built in "
        f"{builder.data_dir}. Build it with: python -m sed_jax.build "
        f"--dataset={data_cfg.name}" + (f" --root={data_cfg.root}" if data_cfg.root else "") +
        (f" --data_dir={data_cfg.data_dir}" if data_cfg.data_dir else ""))
  splits = builder.info.splits
  if split not in splits:
    raise KeyError(f"Split {split!r} is not in dataset {builder.name}/"
                   f"{builder.builder_config.name}; it has {sorted(splits)}.")
  return builder.as_data_source(split)


class ConcatSource:
  """Random access over several sources in turn (e.g. a train split and its unlabeled split)."""

  def __init__(self, sources):
    self.sources = list(sources)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __getitem__(self, index: int):
    if not 0 <= index < len(self):
      raise IndexError(index)
    k = int(np.searchsorted(self.offsets, index, side="right") - 1)
    return self.sources[k][index - int(self.offsets[k])]

  def __repr__(self) -> str:
    return f"ConcatSource({self.sources!r})"


def clip_frames(data_cfg, feature_cfg) -> int:
  """Input frames per batched clip: `clip_seconds` worth, a multiple of the model's time pool."""
  n = int(round(data_cfg.clip_seconds * feature_cfg.sample_rate)) // feature_cfg.hop_length
  return n - n % feature_cfg.time_pool


def keeps_strong(audio_id: str, strong_fraction: float) -> bool:
  """Whether a strongly labelled training clip keeps its frame labels under `strong_fraction`.

  A hash of the clip's id, not a random draw: the same clips are strong in every run, process,
  epoch and model (teachers and students see the same label budget), and a larger fraction
  keeps a superset of a smaller one's clips.
  """
  return zlib.crc32(audio_id.encode()) < strong_fraction * 2**32


class FixLength(grain.transforms.Map):
  """Crops or pads a decoded example to `frames` input frames; targets become float32.

  Padding uses the log floor (digital silence) and is marked False in `frame_mask`, so losses and
  metrics can ignore it. With `strong_fraction` < 1 (training only), the strongly labelled clips
  outside that share (`keeps_strong`) keep only their clip-level (weak) labels.
  """

  def __init__(self, frames: int, time_pool: int, log_floor: float, keep_meta: bool = False,
               keep_id: bool = False, strong_fraction: float = 1.0):
    self.frames, self.pool, self.pad_value = frames, time_pool, float(np.log(log_floor))
    self.keep_meta, self.keep_id = keep_meta, keep_id or keep_meta
    self.strong_fraction = strong_fraction

  def map(self, ex: dict[str, Any]) -> dict[str, Any]:
    t_out = self.frames // self.pool
    mel = ex["log_mel"][:self.frames]
    strong = ex["strong"][:t_out].astype(np.float32)
    valid = strong.shape[0]
    has_strong = bool(ex["has_strong"])
    if has_strong and self.strong_fraction < 1 and not keeps_strong(
        text(ex["audio_id"]), self.strong_fraction):
      strong, has_strong = np.zeros_like(strong), False
    out = dict(
        log_mel=np.pad(mel, ((0, self.frames - mel.shape[0]), (0, 0)),
                       constant_values=self.pad_value),
        strong=np.pad(strong, ((0, t_out - valid), (0, 0))),
        weak=ex["weak"].astype(np.float32),
        has_strong=np.bool_(has_strong), has_weak=np.bool_(ex["has_weak"]),
        frame_mask=np.arange(t_out) < valid)
    if "teacher_logits" in ex:  # A teacher cache: [K, T_out, C] f16, cropped/padded alike.
      logits = ex["teacher_logits"][:, :t_out]
      out["teacher_logits"] = np.pad(logits, ((0, 0), (0, t_out - logits.shape[1]), (0, 0)))
      out["teacher_clip_logits"] = ex["teacher_clip_logits"]
    if self.keep_id:
      out["audio_id"] = text(ex["audio_id"])
    if self.keep_meta:
      out["duration"] = float(ex["duration"])
      out["events"] = list(zip(np.asarray(ex["event_onsets"]).tolist(),
                               np.asarray(ex["event_offsets"]).tolist(),
                               np.asarray(ex["event_labels"]).tolist()))
    return out


def text(value) -> str:
  """A TFDS string feature (bytes from array_record, str elsewhere) as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


class SpecAugment(grain.transforms.RandomMap):
  """Time and frequency masking, and an optional time shift that moves the targets too.

  Masks replace values by the example's mean log-mel (a neutral level). Masking leaves the
  targets unchanged (the event is still there, only partly hidden); the shift rolls features,
  strong targets and cached teacher frame logits together by whole output frames, so they stay
  aligned.
  """

  def __init__(self, cfg, time_pool: int):
    self.cfg, self.pool = cfg, time_pool

  def random_map(self, ex: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    cfg, ex = self.cfg, dict(ex)
    mel = ex["log_mel"].copy()
    t, f = mel.shape
    fill = mel.mean()
    for _ in range(cfg.time_masks):
      w = int(rng.integers(0, cfg.time_mask_frames + 1))
      s = int(rng.integers(0, max(1, t - w)))
      mel[s:s + w] = fill
    for _ in range(cfg.freq_masks):
      w = int(rng.integers(0, cfg.freq_mask_bins + 1))
      s = int(rng.integers(0, max(1, f - w)))
      mel[:, s:s + w] = fill
    if cfg.shift_frames:
      k = int(rng.integers(-cfg.shift_frames, cfg.shift_frames + 1))
      mel = np.roll(mel, k * self.pool, axis=0)
      ex["strong"] = np.roll(ex["strong"], k, axis=0)
      ex["frame_mask"] = np.roll(ex["frame_mask"], k, axis=0)
      if "teacher_logits" in ex:  # [K, T_out, C]: cached targets move with the clip too.
        ex["teacher_logits"] = np.roll(ex["teacher_logits"], k, axis=1)
    ex["log_mel"] = mel
    return ex


class Mixup(grain.transforms.RandomMap):
  """Batch-level mixup between examples with the same label kinds.

  Mixing a labelled with an unlabelled clip would leave half of the mixture unlabelled, so
  partners are drawn within groups of equal (has_strong, has_weak). Soft mode weights the targets
  by λ; hard mode takes their maximum (every event present is labelled present).

  Teacher logits from a cache are targets too and are mixed alike: soft mode stores the logit of
  λ·σ(z₁) + (1 − λ)·σ(z₂), each teacher's mixed probability (exact for the KD target at T = 1,
  close to it at other temperatures); hard mode the larger logit, which is the larger tempered
  probability at every T. Left unmixed, a mixture would be distilled towards one clip's teachers.
  """

  def __init__(self, cfg):
    self.cfg = cfg

  def random_map(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    cfg = self.cfg
    if rng.random() >= cfg.mixup_prob:
      return batch
    n = batch["log_mel"].shape[0]
    group = batch["has_strong"].astype(int) * 2 + batch["has_weak"].astype(int)
    perm = np.arange(n)
    for g in np.unique(group):
      idx = np.flatnonzero(group == g)
      perm[idx] = rng.permutation(idx)
    lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, size=n).astype(np.float32)
    mix = lambda x, l: l * x + (1 - l) * x[perm]
    out = dict(batch)
    out["log_mel"] = mix(batch["log_mel"], lam[:, None, None])
    for key, shape in (("strong", (n, 1, 1)), ("weak", (n, 1))):
      if cfg.mixup_mode == "hard":
        out[key] = np.maximum(batch[key], batch[key][perm])
      else:
        out[key] = mix(batch[key], lam.reshape(shape))
    for key in ("teacher_logits", "teacher_clip_logits"):
      if key in batch:
        z = batch[key].astype(np.float64)
        shape = (n,) + (1,) * (z.ndim - 1)
        mixed = (np.maximum(z, z[perm]) if cfg.mixup_mode == "hard"
                 else _mixed_logit(z, z[perm], lam.astype(np.float64).reshape(shape)))
        out[key] = mixed.astype(batch[key].dtype)
    out["frame_mask"] = batch["frame_mask"] | batch["frame_mask"][perm]
    return out


def _mixed_logit(z1: np.ndarray, z2: np.ndarray, lam: np.ndarray) -> np.ndarray:
  """logit(λ·σ(z₁) + (1 − λ)·σ(z₂)), computed in log space so that saturated logits survive."""
  log_sig = lambda z: -np.logaddexp(0.0, -z)  # log σ(z); log(1 − σ(z)) = log σ(−z).
  with np.errstate(divide="ignore"):  # λ may round to 0 or 1: log 0 = −inf is then right.
    log_l, log_1ml = np.log(lam), np.log1p(-lam)
  log_p = np.logaddexp(log_l + log_sig(z1), log_1ml + log_sig(z2))
  log_q = np.logaddexp(log_l + log_sig(-z1), log_1ml + log_sig(-z2))
  return log_p - log_q


class GlobalBatchSlice:
  """A grain sampler: process `p`'s rows of every global batch of one seeded global order.

  Every process walks the same endless, seeded, per-epoch-reshuffled order of the whole split
  (one `IndexSampler`, unsharded) and cuts it into global batches of `local_batch *
  process_count` records; process `p` reads rows `[p * local_batch, (p + 1) * local_batch)` of
  each, the rows `sharding.to_global` places on its devices. So the global batch of step k, and
  each record's augmentation seed (that of its place in the global order), are the same on 1
  process with 1 device, 1 process with 8, or 8 processes: a run's numbers do not depend on
  how many hosts train it. Each process reads only its own rows.

  Indices are this process's (0, 1, 2, ...), so the DataLoader's iterator state and its exact
  resume work as with any grain sampler.
  """

  def __init__(self, num_records: int, *, seed: int, local_batch: int, process_index: int,
               process_count: int):
    self._order = grain.samplers.IndexSampler(num_records=num_records, shuffle=True,
                                              num_epochs=None, seed=seed)
    self._local, self._index, self._count = local_batch, process_index, process_count
    self._args = dict(num_records=num_records, seed=seed, local_batch=local_batch,
                      process_index=process_index, process_count=process_count)

  def __repr__(self) -> str:  # grain checks a restored iterator state against it.
    return f"GlobalBatchSlice({', '.join(f'{k}={v}' for k, v in self._args.items())})"

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    batch, row = divmod(index, self._local)
    position = (batch * self._count + self._index) * self._local + row
    record = self._order[position]
    return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)


def train_loader(source, *, batch_size: int, seed: int, data_cfg, feature_cfg,
                 augment=None, worker_count: int = 0, process_index: int | None = None,
                 process_count: int | None = None) -> grain.DataLoader:
  """An endless, shuffled, augmented loader of this process's rows of each global batch.

  `batch_size` is per process; the global batch is `batch_size * process_count`, the same
  records in the same order whatever the topology (`GlobalBatchSlice`). The process defaults to
  this JAX process. The shuffle is seeded and repeats with a new order each epoch.
  `iter(loader)` gives an iterator whose `get_state()`/`set_state()` make resumption exact.
  Mixup pairs clips within a process's rows, so it alone depends on the process count.

  `data_cfg.strong_fraction` sets the label budget of training: that share of the strongly
  labelled clips keeps frame labels, the rest only clip labels (evaluation always sees all).
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if len(source) < batch_size * count:
    raise ValueError(f"The global batch ({batch_size} x {count} processes) is larger than the "
                     f"split ({len(source)} examples); lower batch_size.")
  sampler = GlobalBatchSlice(len(source), seed=seed, local_batch=batch_size,
                             process_index=index, process_count=count)
  ops: list[Any] = [FixLength(clip_frames(data_cfg, feature_cfg), feature_cfg.time_pool,
                              feature_cfg.log_floor, keep_id=True,
                              strong_fraction=data_cfg.strong_fraction)]
  if augment is not None and (augment.time_masks or augment.freq_masks or augment.shift_frames):
    ops.append(SpecAugment(augment, feature_cfg.time_pool))
  ops.append(grain.transforms.Batch(batch_size, drop_remainder=True))
  if augment is not None and augment.mixup_prob > 0:
    ops.append(Mixup(augment))
  return grain.DataLoader(data_source=source, sampler=sampler, operations=ops,
                          worker_count=worker_count, shard_options=grain.sharding.NoSharding())


def eval_batches(source, *, batch_size: int, data_cfg, feature_cfg,
                 process_index: int | None = None, process_count: int | None = None
                 ) -> Iterator[dict[str, Any]]:
  """This process's contiguous share of a split, in order, padded into full batches.

  Every process yields the same number of batches (`mask` is False on padding), so jit-compiled
  evaluation steps stay in lock-step across processes; concatenating the processes' real
  examples in process order gives the split exactly once, in dataset order.
  """
  p = jax.process_index() if process_index is None else process_index
  n_proc = jax.process_count() if process_count is None else process_count
  n = len(source)
  per_proc = -(-n // n_proc)
  indices = list(range(p * per_proc, min(n, (p + 1) * per_proc)))
  n_batches = -(-per_proc // batch_size)
  fix = FixLength(clip_frames(data_cfg, feature_cfg), feature_cfg.time_pool,
                  feature_cfg.log_floor, keep_meta=True)
  template = None
  for b in range(n_batches):
    chunk = indices[b * batch_size:(b + 1) * batch_size]
    examples = [fix.map(source[i]) for i in chunk]
    if template is None and examples:
      template = examples[0]
    if template is None:  # This process has no example at all: shape from example 0.
      template = fix.map(source[0])
    pad = batch_size - len(examples)
    examples += [_blank(template)] * pad
    batch = {k: (np.stack([e[k] for e in examples]) if k in DEVICE_KEYS
                 else [e[k] for e in examples]) for k in template}
    batch["mask"] = np.arange(batch_size) < batch_size - pad
    yield batch


def _blank(example: dict[str, Any]) -> dict[str, Any]:
  """A padding example: zeros, an empty id, no events."""
  return {k: (np.zeros_like(v) if k in DEVICE_KEYS else type(v)()) for k, v in example.items()}


def device_batch(batch: dict[str, Any]) -> dict[str, np.ndarray]:
  """The numeric part of a batch that goes to devices (strings stay on the host)."""
  return {k: v for k, v in batch.items() if k in DEVICE_KEYS or k == "mask"}
