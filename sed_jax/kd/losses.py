"""The distillation term: which KD loss (`kd.loss`), and the objective a KD student trains on.

    L = (1 − α)·(strong BCE + weak_weight·weak BCE) + α·T²·(frame KD + clip_weight·clip KD)

The supervised part is `sed_jax.losses`; this module adds the KD part through the `kd` argument
of `losses.total_loss`, so the training loop knows nothing about teachers. Every example
contributes to the KD terms, labelled or not, over its valid frames: unlabeled clips teach
through the teachers only. T² keeps gradient magnitudes comparable across temperatures (Hinton
et al. 2015).

A KD loss compares the student's logits with the combined teacher target (probabilities, see
`strategies.combine`), averaged where `mask` is true. Adding one is a function registered here
and a test (README, "Recipes"):

    @register("my_loss")
    def my_loss(student_logits, target_probs, temperature, mask, denom=None):
      ...  # a scalar, float32, via losses.masked_mean
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sed_jax import losses
from sed_jax.kd import strategies

KDLoss = Callable[..., jnp.ndarray]
KD_LOSSES: dict[str, KDLoss] = {}

# Target probabilities are kept this far from 0 and 1 where a loss needs their logit: a cached
# teacher at ±30 (teacher_cache.LOGIT_LIMIT) stays a finite, very confident target.
_PROB_EPS = 1e-6


def register(name: str):
  """Registers a KD loss under `name` (`kd.loss=<name>`)."""
  def wrap(fn: KDLoss) -> KDLoss:
    if name in KD_LOSSES:
      raise ValueError(f"KD loss {name!r} is registered twice.")
    KD_LOSSES[name] = fn
    return fn
  return wrap


@register("bce")
def bce(student_logits, target_probs, temperature: float, mask, denom=None) -> jnp.ndarray:
  """BCE between σ(student/T) and the soft target (the method's KD term).

  Its gradient with respect to the student logits is (σ(z/T) − target) / T: zero exactly when
  the tempered student equals the target. (For independent binary outputs this is the
  frame-wise KL divergence plus the target's entropy, which has no gradient.)
  """
  z = student_logits.astype(jnp.float32) / temperature
  return losses.masked_mean(optax.sigmoid_binary_cross_entropy(z, target_probs), mask, denom)


@register("mse_prob")
def mse_prob(student_logits, target_probs, temperature: float, mask, denom=None) -> jnp.ndarray:
  """Squared error between σ(student/T) and the target: the consistency cost of mean-teacher
  SED (Tarvainen & Valpola 2017; the DCASE task 4 baseline). Bounded, so a confidently wrong
  teacher pulls less than under BCE."""
  p = jax.nn.sigmoid(student_logits.astype(jnp.float32) / temperature)
  return losses.masked_mean(jnp.square(p - target_probs), mask, denom)


@register("mse_logit")
def mse_logit(student_logits, target_probs, temperature: float, mask, denom=None) -> jnp.ndarray:
  """Squared error between the tempered logits, student/T against the target's logit (Ba &
  Caruana 2014, "Do deep nets really need to be deep?"): it keeps matching the teachers'
  margins where their probabilities saturate."""
  t = jnp.clip(target_probs.astype(jnp.float32), _PROB_EPS, 1 - _PROB_EPS)
  z = student_logits.astype(jnp.float32) / temperature
  return losses.masked_mean(jnp.square(z - jnp.log(t / (1 - t))), mask, denom)


@dataclasses.dataclass(frozen=True, eq=False)
class Distillation:
  """The KD part of a student's objective, as `losses.total_loss(..., kd=...)` takes it.

  Attributes:
    weights: per-teacher, per-class combination weights [K, C] (`strategies.teacher_weights`).
    mode: 'prob' or 'logit' averaging of the teachers.
    alpha: α, the KD share of the loss.
    temperature: T.
    clip_weight: clip-level KD relative to frame-level KD.
    loss: the KD loss's name in `KD_LOSSES`.
  """
  weights: Any
  mode: str = "prob"
  alpha: float = 0.5
  temperature: float = 1.0
  clip_weight: float = 0.5
  loss: str = "bce"

  @property
  def weight(self) -> float:
    """α·T², the factor of the KD term in the loss."""
    return self.alpha * self.temperature * self.temperature

  def __call__(self, frame_logits, clip_logits, batch, denoms=None) -> tuple[jnp.ndarray, dict]:
    """(frame KD + clip_weight·clip KD, its parts) on a batch holding `teacher_logits`
    [B, K, T, C] and `teacher_clip_logits` [B, K, C]."""
    if "teacher_logits" not in batch:
      raise ValueError("A KD student needs teacher logits in the batch (a teacher cache).")
    denoms = denoms or {}
    fn, t = KD_LOSSES[self.loss], self.temperature
    weights = jnp.asarray(self.weights)
    frame_target = strategies.combine(batch["teacher_logits"], weights, t, self.mode)
    clip_target = strategies.combine(batch["teacher_clip_logits"], weights, t, self.mode)
    masks = losses.term_masks(batch)
    kd_frame = fn(frame_logits, frame_target, t, masks["kd_frame"], denoms.get("kd_frame"))
    kd_clip = fn(clip_logits, clip_target, t, masks["kd_clip"], denoms.get("kd_clip"))
    return kd_frame + self.clip_weight * kd_clip, {"loss_kd_frame": kd_frame,
                                                   "loss_kd_clip": kd_clip}


def distillation(kd_cfg, teachers, num_classes: int, class_f1=None) -> Distillation:
  """The objective of the `kd` config block for `teachers` (names, in cache order)."""
  if kd_cfg.loss not in KD_LOSSES:
    raise ValueError(f"Unknown KD loss {kd_cfg.loss!r} (config key kd.loss); one of "
                     f"{', '.join(KD_LOSSES)}.")
  w, mode = strategies.teacher_weights(kd_cfg.strategy, teachers, num_classes,
                                       scalars=list(kd_cfg.weights) or None, class_f1=class_f1)
  return Distillation(weights=np.asarray(w), mode=mode, alpha=kd_cfg.alpha,
                      temperature=kd_cfg.temperature, clip_weight=kd_cfg.clip_weight,
                      loss=kd_cfg.loss)
