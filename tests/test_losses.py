"""Masked BCE: label kinds and padded frames are respected; scale is per labelled example."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sed_jax import config_lib
from sed_jax import losses


def batch(has_strong, has_weak, frame_mask=None, t=4, c=2, seed=0):
  rng = np.random.default_rng(seed)
  b = len(has_strong)
  return dict(
      strong=jnp.asarray(rng.integers(0, 2, (b, t, c)), jnp.float32),
      weak=jnp.asarray(rng.integers(0, 2, (b, c)), jnp.float32),
      has_strong=jnp.asarray(has_strong), has_weak=jnp.asarray(has_weak),
      frame_mask=jnp.ones((b, t), bool) if frame_mask is None else jnp.asarray(frame_mask))


def logits(b, t=4, c=2, seed=1):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((b, t, c)), jnp.float32),
          jnp.asarray(rng.standard_normal((b, c)), jnp.float32))


def test_strong_term_ignores_examples_without_strong_labels():
  frame, clip = logits(3)
  full = batch([True, False, True], [True, True, True])
  loss = losses.strong_bce(frame, full["strong"], full["has_strong"], full["frame_mask"])
  expected = optax.sigmoid_binary_cross_entropy(frame[jnp.array([0, 2])], full["strong"][jnp.array([0, 2])]).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # Changing the targets of the unlabelled example changes nothing.
  other = dict(full, strong=full["strong"].at[1].set(1 - full["strong"][1]))
  np.testing.assert_allclose(
      losses.strong_bce(frame, other["strong"], other["has_strong"], other["frame_mask"]), loss)


def test_padded_frames_do_not_count():
  frame, _ = logits(2)
  mask = np.ones((2, 4), bool)
  mask[1, 2:] = False
  b = batch([True, True], [True, True], frame_mask=mask)
  loss = losses.strong_bce(frame, b["strong"], b["has_strong"], b["frame_mask"])
  bce = optax.sigmoid_binary_cross_entropy(frame, b["strong"])
  expected = (bce[0].sum() + bce[1, :2].sum()) / (6 * 2)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_weak_term_and_empty_label_kinds_give_zero():
  frame, clip = logits(2)
  b = batch([False, False], [False, False])
  total, aux = losses.supervised_loss(frame, clip, b, weak_weight=0.5)
  assert float(total) == 0.0 and float(aux["loss_strong"]) == 0.0
  b = batch([False, False], [True, False])
  w = losses.weak_bce(clip, b["weak"], b["has_weak"])
  np.testing.assert_allclose(w, optax.sigmoid_binary_cross_entropy(clip[0], b["weak"][0]).mean(),
                             rtol=1e-6)


def test_total_loss_weights_the_weak_term():
  frame, clip = logits(2)
  b = batch([True, True], [True, True])
  cfg = config_lib.common().loss()
  cfg.weak_weight = 0.25
  total, aux = losses.total_loss(frame, clip, b, cfg)
  np.testing.assert_allclose(total, aux["loss_strong"] + 0.25 * aux["loss_weak"], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_reductions_are_float32(dtype):
  frame, clip = logits(2)
  b = batch([True, True], [True, True])
  total, _ = losses.supervised_loss(frame.astype(dtype), clip.astype(dtype), b)
  assert total.dtype == jnp.float32
