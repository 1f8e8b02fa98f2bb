"""Losses as pure functions of arrays: masked strong/weak BCE (and, later, multi-teacher KD).

Masking rules, shared by every term:
- an example contributes a strong (frame-level) term only if `has_strong`, a weak (clip-level)
  term only if `has_weak`: unlabelled or weakly labelled clips never pull frame outputs to zero;
- frames past a clip's end (`frame_mask` False) never count;
- each term is a mean over the examples that have it (not over the whole batch), so its scale
  does not depend on the mix of label kinds in a batch; a batch without any such example gives 0.
All reductions are in float32 whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray, denom=None) -> jnp.ndarray:
  """Mean of `x` over the positions where `mask` (broadcast to x) is true; 0 if none is.

  `denom` replaces the count of those positions: gradient accumulation passes the whole
  batch's count to each micro-batch, so that the micro-batch terms add up to the batch's mean.
  """
  mask = jnp.broadcast_to(mask, x.shape).astype(jnp.float32)
  if denom is None:
    denom = jnp.maximum(jnp.sum(mask), 1.0)
  return jnp.sum(x.astype(jnp.float32) * mask) / denom


def _strong_mask(has_strong, frame_mask):
  return has_strong[:, None, None] & frame_mask[:, :, None]


def term_masks(batch) -> dict[str, jnp.ndarray]:
  """Where each loss term averages, broadcastable to [B, T, C] (frames) or [B, C] (clips)."""
  valid = batch.get("mask", jnp.ones(batch["frame_mask"].shape[0], bool))
  return dict(strong=_strong_mask(batch["has_strong"], batch["frame_mask"]),
              weak=batch["has_weak"][:, None], kd_frame=batch["frame_mask"][:, :, None],
              kd_clip=valid[:, None])


def term_denominators(batch, num_classes: int) -> dict[str, jnp.ndarray]:
  """Each term's count of averaged positions over `batch` (see masked_mean's `denom`)."""
  return {k: jnp.maximum(jnp.sum(m.astype(jnp.float32)) * num_classes, 1.0)
          for k, m in term_masks(batch).items()}


def strong_bce(frame_logits, strong, has_strong, frame_mask, denom=None) -> jnp.ndarray:
  """Frame-level BCE [B, T, C] averaged over labelled examples' valid frames and classes."""
  bce = optax.sigmoid_binary_cross_entropy(frame_logits.astype(jnp.float32), strong)
  return masked_mean(bce, _strong_mask(has_strong, frame_mask), denom)


def weak_bce(clip_logits, weak, has_weak, denom=None) -> jnp.ndarray:
  """Clip-level BCE [B, C] averaged over weakly (or strongly) labelled examples and classes."""
  bce = optax.sigmoid_binary_cross_entropy(clip_logits.astype(jnp.float32), weak)
  return masked_mean(bce, has_weak[:, None], denom)


def supervised_loss(frame_logits, clip_logits, batch, weak_weight: float = 1.0, denoms=None):
  """BCE on the labels a batch has: strong + weak_weight * weak. Returns (loss, metrics)."""
  denoms = denoms or {}
  s = strong_bce(frame_logits, batch["strong"], batch["has_strong"], batch["frame_mask"],
                 denoms.get("strong"))
  w = weak_bce(clip_logits, batch["weak"], batch["has_weak"], denoms.get("weak"))
  return s + weak_weight * w, {"loss_strong": s, "loss_weak": w}


def loss_config() -> ml_collections.ConfigDict:
  """Loss weights. alpha = 0 is plain supervised training (teachers, the no-KD student)."""
  return ml_collections.ConfigDict(dict(
      weak_weight=0.5,      # Clip-level BCE relative to frame-level BCE.
      alpha=0.0,            # L = (1 − α)·BCE(labels) + α·T²·KD.
      temperature=2.0,
      kd_clip_weight=0.5,   # Clip-level KD relative to frame-level KD.
  ))


def total_loss(frame_logits, clip_logits, batch, cfg, kd_weights=None, kd_mode: str = "prob",
               denoms=None):
  """The training objective of every model.

  `(1 − α)·(strong BCE + weak_weight·weak BCE) + α·T²·(frame KD + kd_clip_weight·clip KD)`.
  The KD terms need `teacher_logits` [B, K, T, C] and `teacher_clip_logits` [B, K, C] in the
  batch and the combination `kd_weights` [K, C]; every example contributes to them (labelled or
  not) over its valid frames, so unlabelled clips teach through the teachers only. `denoms`
  (term_denominators of a larger batch) make it a micro-batch's share of that batch's loss.
  Returns (loss, metrics).
  """
  denoms = denoms or {}
  sup, aux = supervised_loss(frame_logits, clip_logits, batch, cfg.weak_weight, denoms)
  if not cfg.alpha:
    return sup, aux
  if kd_weights is None or "teacher_logits" not in batch:
    raise ValueError("loss.alpha > 0 needs teacher logits in the batch (a teacher cache).")
  t = cfg.temperature
  frame_target = combine_teachers(batch["teacher_logits"], kd_weights, t, kd_mode)
  clip_target = combine_teachers(batch["teacher_clip_logits"], kd_weights, t, kd_mode)
  masks = term_masks(batch)
  kd_frame = kd_bce(frame_logits, frame_target, t, masks["kd_frame"], denoms.get("kd_frame"))
  kd_clip = kd_bce(clip_logits, clip_target, t, masks["kd_clip"], denoms.get("kd_clip"))
  kd = kd_frame + cfg.kd_clip_weight * kd_clip
  loss = (1 - cfg.alpha) * sup + cfg.alpha * t * t * kd
  return loss, aux | {"loss_kd_frame": kd_frame, "loss_kd_clip": kd_clip, "loss_supervised": sup}


# ---------------------------------------------------------------------------------------------
# Multi-teacher knowledge distillation.

STRATEGIES = ("mean_prob", "mean_logit", "weighted", "class_weighted", "single")


def teacher_weights(strategy: str, teachers: list[str], num_classes: int,
                    scalars=None, class_f1=None) -> tuple[jnp.ndarray, str]:
  """Per-teacher, per-class combination weights [K, C] (each class's column sums to 1) and
  whether teachers are averaged as probabilities ('prob') or logits ('logit').

  - mean_prob / mean_logit: equal weights;
  - weighted: one scalar per teacher (`scalars`, e.g. from config), normalised;
  - class_weighted: each teacher's validation F1 per class (`class_f1` [K, C]), normalised per
    class, so for every class the teachers that detect it best dominate the target (the
    "complementary teachers" of the method); a class that no teacher detects falls back to
    equal weights;
  - single:<name>: all weight on one teacher (the single-teacher ablation).
  """
  k = len(teachers)
  mode = "logit" if strategy == "mean_logit" else "prob"
  if strategy in ("mean_prob", "mean_logit"):
    w = jnp.ones((k, num_classes))
  elif strategy == "weighted":
    if scalars is None or len(scalars) != k or min(scalars) < 0 or sum(scalars) <= 0:
      raise ValueError(f"Strategy 'weighted' needs one non-negative weight per teacher "
                       f"({teachers}), not all zero; got {scalars}.")
    w = jnp.broadcast_to(jnp.asarray(scalars, jnp.float32)[:, None], (k, num_classes))
  elif strategy == "class_weighted":
    f1 = jnp.asarray(class_f1, jnp.float32)
    if f1.shape != (k, num_classes) or bool(jnp.any(f1 < 0)):
      raise ValueError(f"Strategy 'class_weighted' needs non-negative per-class validation F1 "
                       f"of shape {(k, num_classes)}; got {f1.shape}.")
    w = jnp.where(f1.sum(0, keepdims=True) > 0, f1, 1.0)
  elif strategy.startswith("single:"):
    name = strategy.split(":", 1)[1]
    if name not in teachers:
      raise ValueError(f"Strategy {strategy!r}: no teacher named {name!r}; teachers: {teachers}.")
    w = jnp.zeros((k, num_classes)).at[teachers.index(name)].set(1.0)
  else:
    raise ValueError(f"Unknown KD strategy {strategy!r}; one of {STRATEGIES[:-1]} or "
                     "single:<teacher>.")
  return w / w.sum(0, keepdims=True), mode


def combine_teachers(teacher_logits, weights, temperature: float, mode: str = "prob"):
  """The soft target from K teachers: [B, K, ..., C] logits → [B, ..., C] probabilities.

  `weights` [K, C] (columns summing to 1) weight each teacher per class; 'prob' averages the
  tempered probabilities, 'logit' the logits before the tempered sigmoid.
  """
  z = teacher_logits.astype(jnp.float32) / temperature
  w = weights.reshape((1, weights.shape[0]) + (1,) * (z.ndim - 3) + (weights.shape[1],))
  if mode == "logit":
    return jax.nn.sigmoid(jnp.sum(w * z, axis=1))
  return jnp.sum(w * jax.nn.sigmoid(z), axis=1)


def kd_bce(student_logits, target_probs, temperature: float, mask, denom=None) -> jnp.ndarray:
  """BCE between σ(student/T) and the soft target, averaged where `mask` is true.

  Its gradient with respect to the student logits is (σ(z/T) − target) / T: zero exactly when
  the tempered student equals the target. Multiplying by T² (in `total_loss`) keeps gradient
  magnitudes comparable across temperatures (Hinton et al. 2015).
  """
  z = student_logits.astype(jnp.float32) / temperature
  return masked_mean(optax.sigmoid_binary_cross_entropy(z, target_probs), mask, denom)
