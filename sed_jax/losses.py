"""Supervised losses as pure functions of arrays: masked strong/weak BCE on the labels a clip has.

The KD term is added by `sed_jax.kd.losses` through `total_loss(..., kd=...)`: this layer
knows nothing about teachers.

Masking rules, shared by every term:
- an example contributes a strong (frame-level) term only if `has_strong`, a weak (clip-level)
  term only if `has_weak`: unlabelled or weakly labelled clips never pull frame outputs to zero;
- frames past a clip's end (`frame_mask` False) never count;
- each term is a mean over the examples that have it (not over the whole batch), so its scale
  does not depend on the mix of label kinds in a batch; a batch without any such example gives 0.
All reductions are in float32 whatever the compute dtype.
"""

from __future__ import annotations

import jax.numpy as jnp
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


def total_loss(frame_logits, clip_logits, batch, cfg, kd=None, denoms=None):
  """The training objective of every model.

  Without `kd`: strong BCE + weak_weight·weak BCE. With `kd` (a `kd.losses.Distillation`, or
  any callable `kd(frame_logits, clip_logits, batch, denoms) -> (kd_term, metrics)` with
  `alpha` and `weight` = α·T²): `(1 − α)·supervised + α·T²·kd_term`. `denoms`
  (term_denominators of a larger batch) make it a micro-batch's share of that batch's loss.
  Returns (loss, metrics).
  """
  denoms = denoms or {}
  sup, aux = supervised_loss(frame_logits, clip_logits, batch, cfg.weak_weight, denoms)
  if kd is None:
    return sup, aux
  kd_term, kd_aux = kd(frame_logits, clip_logits, batch, denoms)
  loss = (1 - kd.alpha) * sup + kd.weight * kd_term
  return loss, aux | kd_aux | {"loss_supervised": sup}
