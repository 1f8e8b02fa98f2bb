"""Teacher combination strategies: weights per class, the averaging rules, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax.kd import strategies

TEACHERS = ["resnet", "densenet", "inception"]


def teacher_logits(b=2, k=3, t=4, c=2, seed=2):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(3 * rng.standard_normal((b, k, t, c)), jnp.float16),
          jnp.asarray(3 * rng.standard_normal((b, k, c)), jnp.float16))


@pytest.mark.parametrize("strategy", ["mean_prob", "mean_logit", "weighted", "class_weighted",
                                      "single:densenet"])
def test_teacher_weights_are_normalised_per_class(strategy):
  w, mode = strategies.teacher_weights(strategy, TEACHERS, 4, scalars=[1.0, 2.0, 1.0],
                                       class_f1=[[0.5, 0.0, 0.2, 0.0], [0.5, 0.0, 0.6, 0.0],
                                                 [0.0, 0.0, 0.2, 0.9]])
  np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-6)
  assert mode == ("logit" if strategy == "mean_logit" else "prob")
  if strategy == "class_weighted":
    np.testing.assert_allclose(w[:, 1], 1 / 3)        # Nobody detects class 1: equal weights.
    np.testing.assert_allclose(w[:, 2], [0.2, 0.6, 0.2])
    np.testing.assert_allclose(w[:, 3], [0.0, 0.0, 1.0])
  if strategy == "weighted":
    np.testing.assert_allclose(w[:, 0], [0.25, 0.5, 0.25])
  if strategy == "single:densenet":
    np.testing.assert_array_equal(w[1], 1.0)


def test_bad_strategies_are_clear_errors():
  with pytest.raises(ValueError, match="no teacher named 'vgg'"):
    strategies.teacher_weights("single:vgg", TEACHERS, 2)
  with pytest.raises(ValueError, match="one non-negative weight per teacher"):
    strategies.teacher_weights("weighted", TEACHERS, 2, scalars=[1.0])
  with pytest.raises(ValueError, match="Unknown KD strategy 'median'.*single:<teacher>"):
    strategies.teacher_weights("median", TEACHERS, 2)
  with pytest.raises(ValueError, match="Unknown KD strategy 'single'"):
    strategies.teacher_weights("single", TEACHERS, 2)  # The teacher is missing.
  assert strategies.problem("single:vgg", TEACHERS) == f"names no teacher of {tuple(TEACHERS)!r}"
  assert "is not one of" in strategies.problem("mean_prob:x", TEACHERS)
  assert strategies.problem("class_weighted", TEACHERS) is None


def test_combination_rules():
  frame, clip = teacher_logits()
  z = frame.astype(jnp.float32)
  w, _ = strategies.teacher_weights("mean_prob", TEACHERS, 2)
  np.testing.assert_allclose(strategies.combine(frame, w, 2.0, "prob"),
                             jax.nn.sigmoid(z / 2).mean(1), rtol=1e-6)
  np.testing.assert_allclose(strategies.combine(frame, w, 2.0, "logit"),
                             jax.nn.sigmoid(z.mean(1) / 2), rtol=1e-6)
  w, _ = strategies.teacher_weights("single:inception", TEACHERS, 2)
  np.testing.assert_allclose(strategies.combine(clip, w, 1.0),
                             jax.nn.sigmoid(clip[:, 2].astype(jnp.float32)), rtol=1e-6)


def test_a_registered_strategy_is_usable_by_name(monkeypatch):
  """The recipe of the README: one function and its registration."""
  monkeypatch.setattr(strategies, "STRATEGIES", dict(strategies.STRATEGIES))

  @strategies.register("first_two")
  def first_two(ctx):
    w = np.zeros((len(ctx.teachers), ctx.num_classes), np.float32)
    w[:2] = 1.0
    return w, "prob"

  w, mode = strategies.teacher_weights("first_two", TEACHERS, 3)
  np.testing.assert_allclose(w, [[0.5] * 3, [0.5] * 3, [0.0] * 3])
  assert mode == "prob" and "first_two" in strategies.names()
  assert strategies.problem("first_two", TEACHERS) is None
  with pytest.raises(ValueError, match="registered twice"):
    strategies.register("first_two")(first_two)
