"""The KD term: every registered KD loss, and the objective (1 − α)·BCE + α·T²·KD."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sed_jax import config_lib
from sed_jax import losses
from sed_jax.kd import losses as kd_losses
from sed_jax.kd import strategies
from sed_jax.kd import teacher_cache
from tests.kd.test_strategies import TEACHERS
from tests.kd.test_strategies import teacher_logits
from tests.test_losses import batch
from tests.test_losses import logits


def kd_batch(seed=2):
  out = batch([True, False], [True, False])  # Example 1 has no labels at all.
  out["teacher_logits"], out["teacher_clip_logits"] = teacher_logits(seed=seed)
  return out


def objective(strategy="mean_prob", **kw) -> kd_losses.Distillation:
  w, mode = strategies.teacher_weights(strategy, TEACHERS, 2)
  return kd_losses.Distillation(w, mode, **kw)


@pytest.mark.parametrize("name", list(kd_losses.KD_LOSSES))
def test_every_kd_loss_is_zero_gradient_exactly_at_the_target(name):
  """Each KD loss pulls σ(student/T) towards the target and stops there, and only counts the
  positions its mask keeps."""
  fn = kd_losses.KD_LOSSES[name]
  b = kd_batch()
  w, mode = strategies.teacher_weights("mean_prob", TEACHERS, 2)
  target = strategies.combine(b["teacher_logits"], w, 3.0, mode)
  mask = b["frame_mask"][:, :, None]
  student = 3.0 * jnp.log(target / (1 - target))  # σ(student / T) == target.
  grad = jax.grad(lambda s: fn(s, target, 3.0, mask))(student)
  np.testing.assert_allclose(grad, 0.0, atol=1e-5)
  moved = jax.grad(lambda s: fn(s, target, 3.0, mask))(student + 1.0)
  assert float(jnp.min(moved)) > 0  # Every student logit above its target is pulled down.
  value = fn(student + 1.0, target, 3.0, mask)
  assert value.dtype == jnp.float32 and np.isfinite(float(value))
  masked = mask.at[1].set(False)
  g = jax.grad(lambda s: fn(s, target, 3.0, masked))(student + 1.0)
  np.testing.assert_array_equal(g[1], 0.0)


def test_the_kd_losses_are_what_their_names_say():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.standard_normal((2, 4, 3)), jnp.float32)
  t = jnp.asarray(rng.uniform(0.05, 0.95, (2, 4, 3)), jnp.float32)
  mask = jnp.ones((2, 4, 1), bool)
  p = jax.nn.sigmoid(z / 2.0)
  np.testing.assert_allclose(kd_losses.bce(z, t, 2.0, mask),
                             -(t * jnp.log(p) + (1 - t) * jnp.log(1 - p)).mean(), rtol=1e-5)
  np.testing.assert_allclose(kd_losses.mse_prob(z, t, 2.0, mask), ((p - t) ** 2).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(kd_losses.mse_logit(z, t, 2.0, mask),
                             ((z / 2.0 - jnp.log(t / (1 - t))) ** 2).mean(), rtol=1e-5)


def test_total_loss_mixes_bce_and_t_squared_kd():
  b = kd_batch()
  frame, clip = logits(2)
  kd = objective(alpha=0.7, temperature=4.0, clip_weight=0.5)
  loss, aux = losses.total_loss(frame, clip, b, config_lib.common().loss(), kd)
  term = aux["loss_kd_frame"] + 0.5 * aux["loss_kd_clip"]
  np.testing.assert_allclose(loss, 0.3 * aux["loss_supervised"] + 0.7 * 16.0 * term, rtol=1e-6)
  # No KD: the supervised loss, and no teacher logits needed.
  plain, _ = losses.total_loss(frame, clip, batch([True, False], [True, False]),
                               config_lib.common().loss())
  np.testing.assert_allclose(plain, aux["loss_supervised"], rtol=1e-6)


@pytest.mark.parametrize("name", list(kd_losses.KD_LOSSES))
def test_kd_reaches_unlabelled_examples_and_skips_padded_frames(name):
  b = kd_batch()
  frame, clip = logits(2)
  kd = objective(alpha=1.0, loss=name)
  g = jax.grad(lambda f: losses.total_loss(f, clip, b, config_lib.common().loss(), kd)[0])(frame)
  assert float(jnp.abs(g[1]).sum()) > 0  # The unlabelled example is taught by the teachers.
  padded = dict(b, frame_mask=b["frame_mask"].at[1, 2:].set(False))
  g = jax.grad(
      lambda f: losses.total_loss(f, clip, padded, config_lib.common().loss(), kd)[0])(frame)
  np.testing.assert_array_equal(g[1, 2:], 0.0)
  with pytest.raises(ValueError, match="teacher logits"):
    losses.total_loss(frame, clip, batch([True, True], [True, True]), config_lib.common().loss(),
                      kd)


@pytest.mark.parametrize("name", list(kd_losses.KD_LOSSES))
@pytest.mark.parametrize("strategy", ["mean_prob", "mean_logit"])
def test_saturated_float16_teachers_give_a_finite_loss_and_gradient(strategy, name):
  """Cached logits sit at ±30 when teachers are certain (teacher_cache.LOGIT_LIMIT), and two
  teachers may be certain in opposite directions."""
  b = kd_batch()
  z = np.zeros(b["teacher_logits"].shape, np.float32)
  z[:, 0], z[:, 1] = 1e6, -1e6  # What an overconfident teacher could output.
  b["teacher_logits"] = jnp.asarray(teacher_cache._f16(z))  # pylint: disable=protected-access
  assert float(jnp.abs(b["teacher_logits"].astype(jnp.float32)).max()) == 30.0
  frame, clip = logits(2)
  kd = objective(strategy, alpha=0.9, loss=name)
  loss, grads = jax.value_and_grad(
      lambda f: losses.total_loss(f, clip, b, config_lib.common().loss(), kd)[0])(frame)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grads)).all()


def test_distillation_from_the_config_block():
  kd_cfg = ml_collections.ConfigDict(dict(loss="mse_prob", strategy="class_weighted", alpha=0.6,
                                          temperature=2.0, clip_weight=0.25, weights=[]))
  kd = kd_losses.distillation(kd_cfg, TEACHERS, 2, class_f1=[[1, 0], [1, 0], [0, 0]])
  assert (kd.loss, kd.alpha, kd.temperature, kd.clip_weight, kd.mode) == (
      "mse_prob", 0.6, 2.0, 0.25, "prob")
  assert kd.weight == pytest.approx(0.6 * 4.0)
  np.testing.assert_allclose(kd.weights, [[0.5, 1 / 3], [0.5, 1 / 3], [0.0, 1 / 3]], rtol=1e-6)
  kd_cfg.loss = "kl_softmax"
  with pytest.raises(ValueError, match="Unknown KD loss 'kl_softmax'.*bce"):
    kd_losses.distillation(kd_cfg, TEACHERS, 2, class_f1=[[1, 0], [1, 0], [0, 0]])


def test_a_registered_kd_loss_is_usable_by_name(monkeypatch):
  """The recipe of the README: one function and its registration."""
  monkeypatch.setattr(kd_losses, "KD_LOSSES", dict(kd_losses.KD_LOSSES))

  @kd_losses.register("l1_prob")
  def l1_prob(student_logits, target_probs, temperature, mask, denom=None):
    p = jax.nn.sigmoid(student_logits.astype(jnp.float32) / temperature)
    return losses.masked_mean(jnp.abs(p - target_probs), mask, denom)

  b = kd_batch()
  frame, clip = logits(2)
  loss, aux = losses.total_loss(frame, clip, b, config_lib.common().loss(),
                                objective(alpha=1.0, loss="l1_prob"))
  assert float(aux["loss_kd_frame"]) > 0 and np.isfinite(float(loss))
