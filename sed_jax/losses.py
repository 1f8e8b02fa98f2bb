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

import jax.numpy as jnp
import ml_collections
import optax


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of `x` over the positions where `mask` (broadcast to x) is true; 0 if none is."""
  mask = jnp.broadcast_to(mask, x.shape).astype(jnp.float32)
  return jnp.sum(x.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def strong_bce(frame_logits, strong, has_strong, frame_mask) -> jnp.ndarray:
  """Frame-level BCE [B, T, C] averaged over labelled examples' valid frames and classes."""
  bce = optax.sigmoid_binary_cross_entropy(frame_logits.astype(jnp.float32), strong)
  mask = has_strong[:, None, None] & frame_mask[:, :, None]
  return masked_mean(bce, mask)


def weak_bce(clip_logits, weak, has_weak) -> jnp.ndarray:
  """Clip-level BCE [B, C] averaged over weakly (or strongly) labelled examples and classes."""
  bce = optax.sigmoid_binary_cross_entropy(clip_logits.astype(jnp.float32), weak)
  return masked_mean(bce, has_weak[:, None])


def supervised_loss(frame_logits, clip_logits, batch, weak_weight: float = 1.0):
  """BCE on the labels a batch has: strong + weak_weight * weak. Returns (loss, metrics)."""
  s = strong_bce(frame_logits, batch["strong"], batch["has_strong"], batch["frame_mask"])
  w = weak_bce(clip_logits, batch["weak"], batch["has_weak"])
  return s + weak_weight * w, {"loss_strong": s, "loss_weak": w}


def loss_config() -> ml_collections.ConfigDict:
  """Loss weights; the distillation terms join here."""
  return ml_collections.ConfigDict(dict(weak_weight=0.5))


def total_loss(frame_logits, clip_logits, batch, cfg):
  """The training objective of every model: supervised BCE on the labels the batch has."""
  return supervised_loss(frame_logits, clip_logits, batch, cfg.weak_weight)
