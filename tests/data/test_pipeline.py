"""grain input pipeline: determinism, exact resume, sharding, augmentation, padded evaluation."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sed_jax import config_lib
from sed_jax.data import pipeline
import tests

T, F, C = 40, 8, 3  # 40 input frames → 10 output frames at time_pool 4.


def example(i, frames=T, has_strong=True, has_weak=True):
  strong = np.zeros((frames // 4, C), np.uint8)
  strong[: (i % 5) + 1, i % C] = 1
  return dict(log_mel=np.full((frames, F), float(i), np.float32), strong=strong,
              weak=strong.max(0), has_strong=np.bool_(has_strong), has_weak=np.bool_(has_weak),
              audio_id=f"clip{i}.wav".encode(), duration=np.float32(frames * 0.02),
              event_onsets=np.array([0.0], np.float32),
              event_offsets=np.array([0.08 * ((i % 5) + 1)], np.float32),
              event_labels=np.array([i % C], np.int32))


@pytest.fixture(scope="module")
def cfgs():
  feat = config_lib.common().features()
  feat.n_mels = F
  data = config_lib.common().dataset()
  data.clip_seconds = T * feat.hop_length / feat.sample_rate
  return data, feat


SOURCE = [example(i) for i in range(30)]


def ids(batch):
  return batch["log_mel"][:, 0, 0].astype(int).tolist()


def take(it, n):
  return [next(it) for _ in range(n)]


def loader(cfgs, seed=0, source=SOURCE, batch_size=4, **kw):
  data, feat = cfgs
  return pipeline.train_loader(source, batch_size=batch_size, seed=seed, data_cfg=data,
                               feature_cfg=feat, **kw)


def test_batches_have_the_documented_shapes(cfgs):
  b = next(iter(loader(cfgs)))
  assert b["log_mel"].shape == (4, T, F) and b["log_mel"].dtype == np.float32
  assert b["strong"].shape == (4, T // 4, C) and b["strong"].dtype == np.float32
  assert b["weak"].shape == (4, C) and b["frame_mask"].shape == (4, T // 4)
  assert b["has_strong"].dtype == np.bool_
  # Strings stay on the host: named in a NaN/inf report, dropped by device_batch.
  assert b["audio_id"].shape == (4,) and "audio_id" not in pipeline.device_batch(b)


def test_same_seed_same_batches_other_seed_other_order(cfgs):
  a = [ids(b) for b in take(iter(loader(cfgs, seed=1)), 6)]
  b = [ids(b) for b in take(iter(loader(cfgs, seed=1)), 6)]
  c = [ids(b) for b in take(iter(loader(cfgs, seed=2)), 6)]
  assert a == b and a != c
  # One epoch (7 full batches of 30 examples) visits examples without repetition.
  assert len(set(sum(a, []))) == 24


def test_iterator_state_resumes_exactly(cfgs):
  it = iter(loader(cfgs, seed=3))
  take(it, 9)  # Into the second epoch.
  state = it.get_state()
  expected = [ids(b) for b in take(it, 5)]
  fresh = iter(loader(cfgs, seed=3))
  fresh.set_state(state)
  assert [ids(b) for b in take(fresh, 5)] == expected
  json.dumps(state if isinstance(state, (str, dict)) else state.decode())  # Serialisable.


@pytest.mark.parametrize("count", [2, 3])
def test_processes_read_their_rows_of_the_one_process_global_batches(cfgs, count):
  """Topology independence: the processes' batches, side by side in process order, are the
  batches one process reads at the global batch size (records and augmentation seeds alike),
  into the next epochs."""
  local = 2
  one = [ids(b) for b in take(iter(loader(cfgs, seed=5, batch_size=local * count)), 8)]
  parts = [[ids(b) for b in take(iter(loader(cfgs, seed=5, batch_size=local, process_index=p,
                                              process_count=count)), 8)] for p in range(count)]
  assert [sum((parts[p][k] for p in range(count)), []) for k in range(8)] == one
  first = set(sum(parts[0][:2], [])), set(sum(parts[1][:2], []))
  assert len(first[0]) == len(first[1]) == 2 * local and not first[0] & first[1]


def test_short_clips_are_padded_and_masked_long_ones_cropped(cfgs):
  data, feat = cfgs
  fix = pipeline.FixLength(T, 4, feat.log_floor)
  short = fix.map(example(2, frames=20))
  assert short["log_mel"].shape == (T, F)
  assert (short["log_mel"][20:] == np.float32(np.log(feat.log_floor))).all()
  assert short["frame_mask"].tolist() == [True] * 5 + [False] * 5
  assert short["strong"][5:].sum() == 0
  long = fix.map(example(2, frames=80))
  assert long["log_mel"].shape == (T, F) and long["frame_mask"].all()


def test_strong_fraction_leaves_the_other_clips_only_their_weak_labels(cfgs):
  data, feat = cfgs
  ids_ = [f"clip{i}.wav" for i in range(400)]
  kept = {f: [i for i in ids_ if pipeline.keeps_strong(i, f)] for f in (0.0, 0.3, 0.6, 1.0)}
  assert kept[0.0] == [] and kept[1.0] == ids_
  assert 0.2 < len(kept[0.3]) / 400 < 0.4 and set(kept[0.3]) <= set(kept[0.6])  # Nested.
  fix = pipeline.FixLength(T, 4, feat.log_floor, strong_fraction=0.5)
  for i in range(30):
    out, full = fix.map(example(i)), pipeline.FixLength(T, 4, feat.log_floor).map(example(i))
    strong = pipeline.keeps_strong(f"clip{i}.wav", 0.5)
    assert bool(out["has_strong"]) == strong and out["has_weak"]
    np.testing.assert_array_equal(out["strong"], full["strong"] if strong else 0)
    np.testing.assert_array_equal(out["weak"], full["weak"])  # The clip labels stay.
  data = data.copy_and_resolve_references()
  data.strong_fraction = 0.0
  batch = next(iter(pipeline.train_loader(SOURCE, batch_size=4, seed=0, data_cfg=data,
                                          feature_cfg=feat)))
  assert not batch["has_strong"].any() and batch["has_weak"].all() and batch["weak"].any()


def test_specaugment_masks_features_but_not_targets(cfgs):
  data, feat = cfgs
  aug = config_lib.common().augment()
  aug.update(dict(time_masks=2, time_mask_frames=10, freq_masks=2, freq_mask_bins=3))
  ex = pipeline.FixLength(T, 4, feat.log_floor).map(example(4))
  ex["log_mel"] = np.random.default_rng(0).standard_normal((T, F)).astype(np.float32)
  out = pipeline.SpecAugment(aug, 4).random_map(ex, np.random.default_rng(5))
  assert (out["log_mel"] != ex["log_mel"]).any()
  np.testing.assert_array_equal(out["strong"], ex["strong"])


def test_time_shift_moves_features_and_targets_together(cfgs):
  data, feat = cfgs
  aug = config_lib.common().augment()
  aug.update(dict(time_masks=0, freq_masks=0, shift_frames=3))
  ex = pipeline.FixLength(T, 4, feat.log_floor).map(example(0))
  ex["log_mel"] = np.zeros((T, F), np.float32)
  ex["log_mel"][:4] = 1.0  # The event (output frame 0) is loud in input frames 0-3.
  ex["strong"][:] = 0
  ex["strong"][0, 0] = 1
  # A teacher cache's frame logits [K, T_out, C] are targets too: the event's frame is high.
  ex["teacher_logits"] = np.full((2, ex["strong"].shape[0], ex["strong"].shape[1]), -5,
                                 np.float16)
  ex["teacher_logits"][:, 0, 0] = 5
  shifts = set()
  for seed in range(10):
    out = pipeline.SpecAugment(aug, 4).random_map(ex, np.random.default_rng(seed))
    loud = np.flatnonzero(out["log_mel"][:, 0])
    assert out["strong"][:, 0].argmax() == loud[0] // 4
    np.testing.assert_array_equal(out["teacher_logits"][:, :, 0].argmax(axis=1), loud[0] // 4)
    shifts.add(int(loud[0]))
  assert len(shifts) > 1  # The clip did move.


def test_mixup_pairs_only_examples_with_the_same_label_kinds(cfgs):
  aug = config_lib.common().augment()
  aug.update(dict(mixup_prob=1.0, mixup_alpha=0.4))
  fix = pipeline.FixLength(T, 4, config_lib.common().features().log_floor)
  exs = [fix.map(example(i, has_strong=i < 4, has_weak=i < 4)) for i in range(8)]
  batch = {k: np.stack([e[k] for e in exs]) for k in exs[0]}
  out = pipeline.Mixup(aug).random_map(batch, np.random.default_rng(0))
  values = out["log_mel"][:, 0, 0]
  assert (values[:4] < 4).all() and (values[4:] >= 4).all()  # Labelled mixed with labelled.
  assert (out["strong"] <= 1).all() and (out["strong"] >= 0).all()
  aug.mixup_mode = "hard"
  hard = pipeline.Mixup(aug).random_map(batch, np.random.default_rng(0))
  assert set(np.unique(hard["strong"])) <= {0.0, 1.0}


def test_mixup_mixes_teacher_targets_with_their_clips():
  """A KD target must follow its mixture: each teacher's probability is mixed with λ (soft) or
  maxed (hard), saturated logits included; left unmixed it would be one clip's teachers."""
  aug = config_lib.common().augment()
  aug.update(dict(mixup_prob=1.0, mixup_alpha=0.4))
  n, k, t = 6, 2, 5
  logits = np.random.default_rng(1).normal(0, 4, (n, k, t, C)).astype(np.float16)
  logits[:, 0, 0, 0] = [30, -30, 30, -30, 30, -30]  # σ = 1 − 1e-13 or 1e-13.
  batch = dict(log_mel=np.eye(n, dtype=np.float32)[:, None, :],  # Clip i is the one-hot e_i.
               strong=np.zeros((n, t, C), np.float32), weak=np.zeros((n, C), np.float32),
               has_strong=np.zeros(n, bool), has_weak=np.zeros(n, bool),
               frame_mask=np.ones((n, t), bool), teacher_logits=logits,
               teacher_clip_logits=logits.max(2))
  sig = lambda z: 1 / (1 + np.exp(-z.astype(np.float64)))
  for mode in ("soft", "hard"):
    aug.mixup_mode = mode
    out = pipeline.Mixup(aug).random_map(batch, np.random.default_rng(3))
    assert out["teacher_logits"].dtype == np.float16
    for i in range(n):
      mel = out["log_mel"][i, 0]  # λ·e_i + (1 − λ)·e_j: λ and the partner j can be read off.
      lam = float(mel[i])
      j = i if np.isclose(lam, 1.0) else int(np.argmax(np.where(np.arange(n) == i, -1, mel)))
      for key in ("teacher_logits", "teacher_clip_logits"):
        zi, zj = batch[key][i], batch[key][j]
        want = (np.maximum(zi, zj) if mode == "hard" else
                np.log(lam * sig(zi) + (1 - lam) * sig(zj)) -
                np.log(lam * sig(-zi) + (1 - lam) * sig(-zj)))
        np.testing.assert_allclose(out[key][i].astype(np.float64), want, rtol=2e-3, atol=2e-2)
    assert np.isfinite(out["teacher_logits"].astype(np.float32)).all()


def test_eval_batches_cover_the_split_once_in_order_for_any_process_count(cfgs):
  data, feat = cfgs
  source = SOURCE[:11]
  for n_proc in (1, 2, 3):
    per_process = [list(pipeline.eval_batches(source, batch_size=2, data_cfg=data,
                                              feature_cfg=feat, process_index=p,
                                              process_count=n_proc)) for p in range(n_proc)]
    assert len({len(b) for b in per_process}) == 1  # Lock-step.
    got = [aid for batches in per_process for b in batches
           for aid, m in zip(b["audio_id"], b["mask"]) if m]
    assert got == [f"clip{i}.wav" for i in range(11)]
  b = per_process[0][0]
  assert b["events"][1] == [(0.0, pytest.approx(0.16), 1)]
  assert b["duration"][0] == pytest.approx(0.8)
  assert set(pipeline.device_batch(b)) == {"log_mel", "strong", "weak", "has_strong", "has_weak",
                                           "frame_mask", "mask"}


def test_batches_shard_over_8_devices():
  """A batch becomes a global array split over an 8-device `data` mesh (simulated CPUs)."""
  script = textwrap.dedent("""
      import numpy as np, jax
      from sed_jax import sharding
      mesh = sharding.make_mesh()
      assert mesh.devices.size == 8
      assert sharding.check_batch_size(16, mesh) == 16
      try:
        sharding.check_batch_size(12, mesh)
        raise SystemExit("12 should not split over 8 devices")
      except ValueError as e:
        assert "batch_size" in str(e)
      batch = {"log_mel": np.arange(16 * 6 * 2, dtype=np.float32).reshape(16, 6, 2),
               "has_strong": np.ones(16, bool)}
      g = sharding.to_global(batch, mesh)
      assert g["log_mel"].shape == (16, 6, 2)
      shards = g["log_mel"].addressable_shards
      assert len(shards) == 8 and all(s.data.shape == (2, 6, 2) for s in shards)
      np.testing.assert_array_equal(np.asarray(g["log_mel"]), batch["log_mel"])
      print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags("--xla_force_host_platform_device_count=8"),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
