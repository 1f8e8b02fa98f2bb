"""Masked BCE: label kinds and padded frames are respected; scale is per labelled example."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
  cfg = losses.loss_config()
  cfg.weak_weight = 0.25
  total, aux = losses.total_loss(frame, clip, b, cfg)
  np.testing.assert_allclose(total, aux["loss_strong"] + 0.25 * aux["loss_weak"], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_reductions_are_float32(dtype):
  frame, clip = logits(2)
  b = batch([True, True], [True, True])
  total, _ = losses.supervised_loss(frame.astype(dtype), clip.astype(dtype), b)
  assert total.dtype == jnp.float32


# --- Multi-teacher KD -------------------------------------------------------------------------

TEACHERS = ["resnet", "densenet", "inception"]


def kd_batch(b=2, k=3, t=4, c=2, seed=2):
  rng = np.random.default_rng(seed)
  out = batch([True, False], [True, False], t=t, c=c)
  out["teacher_logits"] = jnp.asarray(3 * rng.standard_normal((b, k, t, c)), jnp.float16)
  out["teacher_clip_logits"] = jnp.asarray(3 * rng.standard_normal((b, k, c)), jnp.float16)
  return out


@pytest.mark.parametrize("strategy", ["mean_prob", "mean_logit", "weighted", "class_weighted",
                                      "single:densenet"])
def test_teacher_weights_are_normalised_per_class(strategy):
  w, mode = losses.teacher_weights(strategy, TEACHERS, 4, scalars=[1.0, 2.0, 1.0],
                                   class_f1=[[0.5, 0.0, 0.2, 0.0], [0.5, 0.0, 0.6, 0.0],
                                             [0.0, 0.0, 0.2, 0.9]])
  np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-6)
  assert mode == ("logit" if strategy == "mean_logit" else "prob")
  if strategy == "class_weighted":
    np.testing.assert_allclose(w[:, 1], 1 / 3)        # Nobody detects class 1: equal weights.
    np.testing.assert_allclose(w[:, 2], [0.2, 0.6, 0.2])
    np.testing.assert_allclose(w[:, 3], [0.0, 0.0, 1.0])
  if strategy == "single:densenet":
    np.testing.assert_array_equal(w[1], 1.0)


def test_bad_strategies_are_clear_errors():
  with pytest.raises(ValueError, match="no teacher named 'vgg'"):
    losses.teacher_weights("single:vgg", TEACHERS, 2)
  with pytest.raises(ValueError, match="one non-negative weight per teacher"):
    losses.teacher_weights("weighted", TEACHERS, 2, scalars=[1.0])
  with pytest.raises(ValueError, match="Unknown KD strategy"):
    losses.teacher_weights("median", TEACHERS, 2)


def test_combination_rules():
  b = kd_batch()
  z = b["teacher_logits"].astype(jnp.float32)
  w, _ = losses.teacher_weights("mean_prob", TEACHERS, 2)
  np.testing.assert_allclose(losses.combine_teachers(b["teacher_logits"], w, 2.0, "prob"),
                             jax.nn.sigmoid(z / 2).mean(1), rtol=1e-6)
  np.testing.assert_allclose(losses.combine_teachers(b["teacher_logits"], w, 2.0, "logit"),
                             jax.nn.sigmoid(z.mean(1) / 2), rtol=1e-6)
  w, _ = losses.teacher_weights("single:inception", TEACHERS, 2)
  np.testing.assert_allclose(losses.combine_teachers(b["teacher_clip_logits"], w, 1.0),
                             jax.nn.sigmoid(b["teacher_clip_logits"][:, 2].astype(jnp.float32)),
                             rtol=1e-6)


def test_kd_gradient_is_zero_when_the_student_equals_the_target():
  b = kd_batch()
  w, mode = losses.teacher_weights("mean_prob", TEACHERS, 2)
  target = losses.combine_teachers(b["teacher_logits"], w, 3.0, mode)
  student = 3.0 * jnp.log(target / (1 - target))  # σ(student / T) == target.
  grad = jax.grad(lambda s: losses.kd_bce(s, target, 3.0, b["frame_mask"][:, :, None]))(student)
  np.testing.assert_allclose(grad, 0.0, atol=1e-6)
  other = jax.grad(lambda s: losses.kd_bce(s, target, 3.0, b["frame_mask"][:, :, None]))(
      student + 1.0)
  assert float(jnp.abs(other).max()) > 1e-3


def test_total_loss_mixes_bce_and_t_squared_kd():
  b = kd_batch()
  frame, clip = logits(2)
  w, mode = losses.teacher_weights("mean_prob", TEACHERS, 2)
  cfg = losses.loss_config()
  cfg.update(dict(alpha=0.7, temperature=4.0, kd_clip_weight=0.5))
  loss, aux = losses.total_loss(frame, clip, b, cfg, w, mode)
  kd = aux["loss_kd_frame"] + 0.5 * aux["loss_kd_clip"]
  np.testing.assert_allclose(loss, 0.3 * aux["loss_supervised"] + 0.7 * 16.0 * kd, rtol=1e-6)
  cfg.alpha = 0.0  # No KD: the supervised loss, and no teacher logits needed.
  plain, _ = losses.total_loss(frame, clip, batch([True, False], [True, False]), cfg)
  np.testing.assert_allclose(plain, aux["loss_supervised"], rtol=1e-6)


def test_kd_reaches_unlabelled_examples_and_skips_padded_frames():
  b = kd_batch()  # Example 1 has no labels at all.
  frame, clip = logits(2)
  w, mode = losses.teacher_weights("mean_prob", TEACHERS, 2)
  cfg = losses.loss_config()
  cfg.alpha = 1.0
  g = jax.grad(lambda f: losses.total_loss(f, clip, b, cfg, w, mode)[0])(frame)
  assert float(jnp.abs(g[1]).sum()) > 0  # The unlabelled example is taught by the teachers.
  padded = dict(b, frame_mask=b["frame_mask"].at[1, 2:].set(False))
  g = jax.grad(lambda f: losses.total_loss(f, clip, padded, cfg, w, mode)[0])(frame)
  np.testing.assert_array_equal(g[1, 2:], 0.0)
  with pytest.raises(ValueError, match="teacher logits"):
    losses.total_loss(frame, clip, batch([True, True], [True, True]), cfg, w, mode)


@pytest.mark.parametrize("strategy", ["mean_prob", "mean_logit"])
def test_saturated_float16_teachers_give_a_finite_loss_and_gradient(strategy):
  """Cached logits sit at ±30 when teachers are certain (teacher_cache.LOGIT_LIMIT), and two
  teachers may be certain in opposite directions."""
  from sed_jax.data.builders import teacher_cache  # pylint: disable=g-import-not-at-top
  b = kd_batch()
  z = np.zeros(b["teacher_logits"].shape, np.float32)
  z[:, 0], z[:, 1] = 1e6, -1e6  # What an overconfident teacher could output.
  b["teacher_logits"] = jnp.asarray(teacher_cache._f16(z))  # pylint: disable=protected-access
  assert np.isfinite(np.asarray(b["teacher_logits"], np.float32)).all()
  assert float(jnp.abs(b["teacher_logits"].astype(jnp.float32)).max()) == 30.0
  frame, clip = logits(2)
  w, mode = losses.teacher_weights(strategy, TEACHERS, 2)
  cfg = losses.loss_config()
  cfg.update(dict(alpha=0.9, temperature=1.0))
  loss, grads = jax.value_and_grad(
      lambda f: losses.total_loss(f, clip, b, cfg, w, mode)[0])(frame)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grads)).all()
