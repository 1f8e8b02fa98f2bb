"""PyTorch twins of our CRNNs and of our train step, for speed comparisons only.

Each twin is built from a Flax `crnn.CRNN` (`from_flax`), so it reads the same widths, depths,
pooling factors and dropout rates and cannot drift from the model it is compared with; its
layers are the same layer by layer for all five front-ends (convolutions without bias before
BatchNorm; GLU gates, residual, dense and transition, inception and depthwise-separable blocks;
max or average pooling of time and frequency; a bidirectional GRU, a frame head and an
attention head without bias, log-space attention pooling) and it has exactly as many
parameters (`count_params`; benchmarks/train_step.py checks it before timing).

Layout is PyTorch's native one: convolutions see [B, C, T, F] (NCHW), the GRU [B, T, D]. The
twin of our masked GRU is a plain `nn.GRU` over all frames: the benchmark's clips have no padding,
so masking would change nothing but would cost PyTorch a packed sequence; leaving it out is
conservative for our side of the ratio.

Torch is an optional dependency (`pip install .[bench]`); nothing in `sed_jax` imports this file.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from sed_jax.models import crnn as flax_crnn
from sed_jax.models import blocks as flax_blocks

# Flax's BatchNorm: running = 0.99 * running + 0.01 * batch, eps 1e-5.
_BN = dict(eps=1e-5, momentum=0.01)
_LOG_ZERO = -1e30


def _bn(c: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, **_BN)


def pool_stage(x: torch.Tensor, time: int, pool=F.max_pool2d) -> torch.Tensor:
  """Pools [B, C, T, F] by `time` along time and by 2 along frequency while F >= 2 (as
  `blocks.pool_stage`: non-overlapping windows, remainders dropped)."""
  freq = 2 if x.shape[3] >= 2 else 1
  if time == 1 and freq == 1:
    return x
  return pool(x, (time, freq), (time, freq))


class GLUBlock(nn.Module):
  """conv (2C, no bias) -> BN -> a * sigmoid(g)."""

  def __init__(self, cin: int, features: int, kernel_size: int):
    super().__init__()
    self.conv = nn.Conv2d(cin, 2 * features, kernel_size, padding=kernel_size // 2, bias=False)
    self.bn = _bn(2 * features)

  def forward(self, x):
    a, g = self.bn(self.conv(x)).chunk(2, dim=1)
    return a * torch.sigmoid(g)


class XceptionBlock(nn.Module):
  """num_convs x (ReLU, depthwise k x k, pointwise 1x1, BN) + shortcut (1x1 conv-BN if needed)."""

  def __init__(self, cin: int, features: int, num_convs: int, kernel_size: int):
    super().__init__()
    convs, c = [], cin
    for _ in range(num_convs):
      convs += [nn.ReLU(),
                nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2, groups=c, bias=False),
                nn.Conv2d(c, features, 1, bias=False), _bn(features)]
      c = features
    self.body = nn.Sequential(*convs)
    self.shortcut = (nn.Sequential(nn.Conv2d(cin, features, 1, bias=False), _bn(features))
                     if cin != features else nn.Identity())

  def forward(self, x):
    return self.shortcut(x) + self.body(x)


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
  """conv (no bias) -> BN -> ReLU, 'SAME' padding (odd k)."""
  return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), _bn(cout), nn.ReLU())


class ResidualBlock(nn.Module):
  """conv-BN-ReLU, conv-BN (scale 0 at init), + shortcut (1x1 conv-BN if the width changes),
  ReLU."""

  def __init__(self, cin: int, features: int):
    super().__init__()
    self.body = nn.Sequential(_cbr(cin, features, 3),
                              nn.Conv2d(features, features, 3, padding=1, bias=False),
                              _bn(features))
    nn.init.zeros_(self.body[2].weight)
    self.shortcut = (nn.Sequential(nn.Conv2d(cin, features, 1, bias=False), _bn(features))
                     if cin != features else nn.Identity())

  def forward(self, x):
    return F.relu(self.shortcut(x) + self.body(x))


class DenseBlock(nn.Module):
  """Per layer: BN-ReLU-1x1 conv to bottleneck*growth, BN-ReLU-3x3 conv to growth, concatenated
  onto the input."""

  def __init__(self, cin: int, num_layers: int, growth: int, bottleneck: int):
    super().__init__()
    layers, c = [], cin
    for _ in range(num_layers):
      layers.append(nn.Sequential(
          _bn(c), nn.ReLU(), nn.Conv2d(c, bottleneck * growth, 1, bias=False),
          _bn(bottleneck * growth), nn.ReLU(),
          nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)))
      c += growth
    self.layers = nn.ModuleList(layers)
    self.out_channels = c

  def forward(self, x):
    for layer in self.layers:
      x = torch.cat([x, layer(x)], dim=1)
    return x


class InceptionBlock(nn.Module):
  """Parallel 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max-pool -> 1x1 branches (each conv-BN-ReLU),
  concatenated; a quarter of `features` per branch, the 1x1 branch takes the remainder."""

  def __init__(self, cin: int, features: int):
    super().__init__()
    w = features // 4
    reduce = max(w // 2, 1)
    self.b1 = _cbr(cin, features - 3 * w, 1)
    self.b3 = nn.Sequential(_cbr(cin, reduce, 1), _cbr(reduce, w, 3))
    self.b5 = nn.Sequential(_cbr(cin, reduce, 1), _cbr(reduce, w, 5))
    self.bp = _cbr(cin, w, 1)

  def forward(self, x):
    pooled = F.max_pool2d(x, 3, 1, padding=1)
    return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(pooled)], dim=1)


class FrontEnd(nn.Module):
  """stem -> per stage: block, pool_stage, dropout -> mean over frequency: [B, T', C]."""

  def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], time_pools: Sequence[int],
               dropout: float, stem_pool: Sequence[int] = (1, 1), pool_kind: str = "max"):
    super().__init__()
    self.stem = stem
    self.stem_pool = tuple(stem_pool)
    self.blocks = nn.ModuleList(blocks)
    self.time_pools = tuple(time_pools)
    self.dropout = nn.Dropout(dropout)
    self.pool = F.max_pool2d if pool_kind == "max" else F.avg_pool2d

  def forward(self, x):  # x: [B, T, F]
    x = self.stem(x[:, None])
    if self.stem_pool != (1, 1):
      x = self.pool(x, self.stem_pool, self.stem_pool)
    for block, t in zip(self.blocks, self.time_pools):
      x = self.dropout(pool_stage(block(x), t, self.pool))
    return x.mean(dim=3).transpose(1, 2)


def clip_logits_from_frames(frame_logits, attention_logits, mask=None):
  """Attention pooling of frame probabilities, returned as a logit, in log space (the twin of
  `crnn.clip_logits_from_frames(..., "attention", ...)`)."""
  log_w = attention_logits
  if mask is not None:
    mask = (mask | ~mask.any(dim=1, keepdim=True))[:, :, None]
    log_w = torch.where(mask, log_w, torch.full_like(log_w, _LOG_ZERO))
  log_w = torch.log_softmax(log_w, dim=1)
  return (torch.logsumexp(log_w + F.logsigmoid(frame_logits), dim=1)
          - torch.logsumexp(log_w + F.logsigmoid(-frame_logits), dim=1))


class CRNN(nn.Module):
  """input BN over mel bins -> front-end -> dropout -> BiGRU stack -> dropout -> heads."""

  def __init__(self, frontend: FrontEnd, mels: int, frontend_width: int, num_classes: int,
               gru_features: int, gru_layers: int, dropout: float, input_norm: bool = True):
    super().__init__()
    self.input_norm = nn.BatchNorm1d(mels, **_BN) if input_norm else None
    self.frontend = frontend
    self.dropout = nn.Dropout(dropout)
    self.gru = nn.GRU(frontend_width, gru_features, num_layers=gru_layers, batch_first=True,
                      bidirectional=True)
    self.frame_head = nn.Linear(2 * gru_features, num_classes)
    self.attention_head = nn.Linear(2 * gru_features, num_classes, bias=False)

  def forward(self, x, frame_mask=None):  # x: [B, T, F]
    if self.input_norm is not None:
      x = self.input_norm(x.transpose(1, 2)).transpose(1, 2)
    h, _ = self.gru(self.dropout(self.frontend(x)))
    h = self.dropout(h)
    frame_logits = self.frame_head(h)
    clip_logits = clip_logits_from_frames(frame_logits, self.attention_head(h), frame_mask)
    return frame_logits, clip_logits


def _stem_pool(fe) -> tuple[int, int]:
  return flax_crnn.stem_pool_factors(fe.stem_pool, fe.time_pool)


def _time_pools(fe) -> list[int]:
  return flax_blocks.time_pool_factors(fe.time_pool // _stem_pool(fe)[0], len(fe.widths))


def from_flax(model: flax_crnn.CRNN, mels: int = 64) -> CRNN:
  """The PyTorch twin of a Flax CRNN with any of the five front-ends (gated, ResNet, DenseNet,
  Inception, Xception: the teachers and the student) and attention clip pooling."""
  fe = model.frontend
  if model.pooling != "attention" or fe.pool_kind not in ("max", "avg"):
    raise NotImplementedError("twins exist for attention clip pooling and max/avg pooling")
  per_stage = lambda v, name: flax_crnn.per_stage(v, len(fe.widths), name)
  if isinstance(fe, flax_crnn.GatedFrontEnd):
    blocks, c = [], 1
    for w in fe.widths:
      blocks.append(GLUBlock(c, w, fe.kernel_size))
      c = w
    stem = nn.Identity()
  elif isinstance(fe, flax_crnn.XceptionFrontEnd):
    stem = _cbr(1, fe.stem_width, 3)
    blocks, c = [], fe.stem_width
    for w in fe.widths:
      blocks.append(XceptionBlock(c, w, fe.convs_per_block, fe.kernel_size))
      c = w
  elif isinstance(fe, (flax_crnn.ResNetFrontEnd, flax_crnn.InceptionFrontEnd)):
    block = ResidualBlock if isinstance(fe, flax_crnn.ResNetFrontEnd) else InceptionBlock
    stem, blocks, c = _cbr(1, fe.stem_width, 3), [], fe.stem_width
    for w, n in zip(fe.widths, per_stage(fe.blocks_per_stage, "blocks_per_stage")):
      stage = []
      for _ in range(n):
        stage.append(block(c, w))
        c = w
      blocks.append(nn.Sequential(*stage))
  elif isinstance(fe, flax_crnn.DenseNetFrontEnd):
    stem, blocks, c = _cbr(1, fe.stem_width, 3), [], fe.stem_width
    for w, n, g in zip(fe.widths, per_stage(fe.layers_per_block, "layers_per_block"),
                       per_stage(fe.growth, "growth")):
      dense = DenseBlock(c, n, g, fe.bottleneck)
      blocks.append(nn.Sequential(dense, _bn(dense.out_channels), nn.ReLU(),
                                  nn.Conv2d(dense.out_channels, w, 1, bias=False)))
      c = w
  else:
    raise NotImplementedError(f"no PyTorch twin for {type(fe).__name__}")
  frontend = FrontEnd(stem, blocks, _time_pools(fe), fe.conv_dropout, _stem_pool(fe),
                      fe.pool_kind)
  return CRNN(frontend, mels, fe.widths[-1], model.num_classes, model.gru_features,
              model.gru_layers, model.dropout, model.input_norm)


def count_params(module: nn.Module) -> int:
  """Trainable scalars (BatchNorm running statistics are buffers, as Flax's batch_stats are not
  params)."""
  return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# The train step.


def _masked_mean(x, mask):
  mask = mask.expand_as(x).to(x.dtype)
  return (x * mask).sum() / mask.sum().clamp_min(1.0)


def supervised_loss(frame_logits, clip_logits, batch, weak_weight: float):
  """Twin of `losses.supervised_loss`: masked strong BCE + weak_weight * masked weak BCE."""
  s = _masked_mean(
      F.binary_cross_entropy_with_logits(frame_logits, batch["strong"], reduction="none"),
      batch["has_strong"][:, None, None] & batch["frame_mask"][:, :, None])
  w = _masked_mean(
      F.binary_cross_entropy_with_logits(clip_logits, batch["weak"], reduction="none"),
      batch["has_weak"][:, None])
  return s + weak_weight * w


def warmup_cosine(peak: float, warmup: int, total: int, end_ratio: float):
  """The multiplier of optax.warmup_cosine_decay_schedule(0, peak, warmup, total, end) / peak."""

  def factor(step: int) -> float:
    if step < warmup:
      return step / warmup
    frac = min((step - warmup) / max(total - warmup, 1), 1.0)
    return end_ratio + (1 - end_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

  return factor


class TrainStep:
  """AdamW + global-norm clipping + schedule, like
  `train.make_optimizer(config_lib.common().optimizer())`, and one step like `train.train_step`
  (a non-finite loss or gradient skips the update)."""

  def __init__(self, model: CRNN, optim_cfg: Any, loss_cfg: Any, total_steps: int):
    self.model = model.train()
    self.cfg, self.loss_cfg = optim_cfg, loss_cfg
    self.opt = torch.optim.AdamW(model.parameters(), lr=optim_cfg.lr, betas=(0.9, optim_cfg.b2),
                                 eps=1e-8, weight_decay=optim_cfg.weight_decay)
    warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
    self.sched = torch.optim.lr_scheduler.LambdaLR(
        self.opt, warmup_cosine(optim_cfg.lr, warmup, max(total_steps, warmup + 1),
                                optim_cfg.final_lr_ratio))

  def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    self.opt.zero_grad(set_to_none=True)
    frame_logits, clip_logits = self.model(batch["log_mel"], batch["frame_mask"])
    loss = supervised_loss(frame_logits, clip_logits, batch, self.loss_cfg.weak_weight)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                          self.cfg.grad_clip or float("inf"))
    finite = bool(torch.isfinite(loss) & torch.isfinite(norm))
    if finite:
      self.opt.step()
    self.sched.step()
    return dict(loss=loss.item(), grad_norm=norm.item(), finite=finite)
