"""CRNNs for sound event detection: conv front-end -> BiGRU -> frame logits + pooled clip logits.

  model = make_model("resnet", num_classes=10)                # a teacher
  variables = model.init({"params": rng, "dropout": rng}, log_mel, train=False)
  frame_logits, clip_logits = model.apply(variables, log_mel)  # [B, T // 4, C], [B, C]
  (frame_logits, clip_logits), updates = model.apply(
      variables, log_mel, train=True, mutable=["batch_stats"], rngs={"dropout": rng})

Input: log-mel [B, T, F] (F = 64 by default; any F works). A BatchNorm over mel bins normalises
the raw log energies (the dataset stores them unnormalised), the front-end pools time by
`time_pool` and frequency by 2 per stage, averages the remaining frequency bins into the
channels, and the BiGRU stack and two dense heads produce per-frame logits and the clip
logits. Both outputs are logits in float32 (whatever the compute dtype), so BCE-with-logits and
temperature-scaled distillation apply to frames and clips alike.

Architectures (`make_model` names): five teachers with different inductive biases, so their
errors differ and distilling all of them gives the student more than any one of them
(`gated`: DESED baseline GLU blocks; `resnet`; `densenet`; `inception`; `xception`), and the
`student`: a small depthwise-separable front-end and a one-layer BiGRU with ~1/50 of a
teacher's parameters. Parameter and FLOP counts: `python -m sed_jax.model_cost`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sed_jax.models import blocks
from sed_jax.models import cpu_kernels as kernels

Dtype = Any
Array = jax.Array

POOLINGS = ("attention", "linear_softmax", "max")
# The values of `cpu_kernels` (`model.cpu_kernels` in configs): "auto" runs the XLA:CPU fast
# paths of `cpu_kernels` on CPU, "off" the stock flax/lax ops everywhere (same parameters).
CPU_KERNELS = kernels.MODES

# A finite stand-in for log(0) on masked frames: exp() of it is exactly 0 in float32, and unlike
# -inf it cannot make NaNs in gradients (inf - inf).
_LOG_ZERO = -1e30


# ---------------------------------------------------------------------------------------------
# Clip pooling.


def clip_logits_from_frames(frame_logits: Array, pooling: str = "attention",
                            attention_logits: Array | None = None,
                            mask: Array | None = None) -> Array:
  """Pools frame logits [B, T, C] into clip logits [B, C] (computed in float32).

  Each pooling is defined on probabilities p_t = sigmoid(frame_logit_t) and returned as the
  logit of the clip probability, computed in log space, so it is exact and finite for any
  finite input (no clipping of probabilities near 0 or 1, which would zero the gradient of
  confident clips):

  - "attention": P = sum_t w_t p_t with w = softmax over time of `attention_logits` [B, T, C]
    (per class). The weights average frame *probabilities* (not logits), so P stays between
    the smallest and the largest frame probability. Since sum_t w_t = 1,
    1 - P = sum_t w_t sigmoid(-l_t), and logit(P) = logsumexp_t(log w_t + log sigmoid(l_t))
    - logsumexp_t(log w_t + log sigmoid(-l_t)).
  - "linear_softmax": P = sum_t p_t^2 / sum_t p_t (frames weight themselves by their own
    probability); 1 - P = sum_t p_t (1 - p_t) / sum_t p_t, so logit(P) =
    logsumexp_t(2 log p_t) - logsumexp_t(log p_t + log(1 - p_t)).
  - "max": P = max_t p_t, i.e. logit(P) = max_t l_t (sigmoid is monotonic).

  `mask` [B, T] (optional, True = real frame) leaves padded frames out of the pooling; an
  example with no real frame at all is pooled over all its frames instead (its loss is masked
  anyway, but it must not produce NaNs).
  """
  if pooling not in POOLINGS:
    raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
  l = frame_logits.astype(jnp.float32)
  if mask is not None:
    mask = mask.astype(bool)
    mask = (mask | ~jnp.any(mask, axis=1, keepdims=True))[:, :, None]
  masked = (lambda a: a) if mask is None else (lambda a: jnp.where(mask, a, _LOG_ZERO))

  if pooling == "max":
    return jnp.max(masked(l), axis=1)
  log_p, log_not_p = jax.nn.log_sigmoid(l), jax.nn.log_sigmoid(-l)
  if pooling == "attention":
    if attention_logits is None:
      raise ValueError("attention pooling needs attention_logits")
    log_w = jax.nn.log_softmax(masked(attention_logits.astype(jnp.float32)), axis=1)
    lse = functools.partial(jax.nn.logsumexp, axis=1)
    return lse(log_w + log_p) - lse(log_w + log_not_p)
  # linear_softmax
  return (jax.nn.logsumexp(masked(2.0 * log_p), axis=1)
          - jax.nn.logsumexp(masked(log_p + log_not_p), axis=1))


# ---------------------------------------------------------------------------------------------
# Front-ends: [B, T, F] -> [B, T // time_pool, C].


def per_stage(value: int | Sequence[int], num_stages: int, name: str) -> tuple[int, ...]:
  """An int for every stage, or one value per stage (checked against the number of stages)."""
  if isinstance(value, int):
    return (value,) * num_stages
  if len(value) != num_stages:
    raise ValueError(f"{name} has {len(value)} values for {num_stages} stages: {value!r}")
  return tuple(value)


def stem_pool_factors(stem_pool: Sequence[int], time_pool: int) -> tuple[int, int]:
  """(time, frequency) of a front-end's `stem_pool`, checked against its total `time_pool`."""
  if len(stem_pool) != 2 or any(int(v) < 1 for v in stem_pool):
    raise ValueError(f"stem_pool must be two positive ints (time, frequency), got {stem_pool!r}")
  stem_time, stem_freq = (int(v) for v in stem_pool)
  if time_pool % stem_time:
    raise ValueError(f"stem_pool time factor {stem_time} does not divide time_pool {time_pool}")
  return stem_time, stem_freq


class FrontEnd(nn.Module):
  """Shared skeleton of the conv front-ends: add a channel axis, run `stages` (one per width,
  each followed by `pool_stage` and dropout), then average the remaining frequency bins into the
  channel axis. Averaging (not flattening) keeps the GRU input width independent of the number
  of mel bands. Subclasses implement `stage(i, x, train)` and `stem(x, train)`.

  `stem_pool` = (time, frequency) pools right after the stem, before any stage: on a CPU the
  full-resolution activations of the first stages cost most of a step (memory traffic, not
  FLOPs), so the small models of the CPU configs pool there; its time factor counts towards
  `time_pool`, which stays the front-end's total time pooling.

  `cpu_kernels` ("auto" | "off") goes to every block, pooling and BatchNorm of the front-end
  (`make_model` sets it to the CRNN's)."""

  widths: Sequence[int] = ()
  time_pool: int = 4
  stem_pool: Sequence[int] = (1, 1)
  conv_dropout: float = 0.2
  pool_kind: str = "max"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  def stem(self, x: Array, train: bool) -> Array:
    return x

  def stage(self, i: int, x: Array, train: bool) -> Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    blocks.check_widths(f"{type(self).__name__}.widths", self.widths)
    x = self.stem(x[..., None].astype(self.dtype), train)
    stem_time, stem_freq = stem_pool_factors(self.stem_pool, self.time_pool)
    if (stem_time, stem_freq) != (1, 1):
      x = kernels.window_pool(x, (stem_time, stem_freq), self.pool_kind, self.cpu_kernels)
    stage_pools = blocks.time_pool_factors(self.time_pool // stem_time, len(self.widths))
    for i, t in enumerate(stage_pools):
      x = blocks.pool_stage(self.stage(i, x, train), t, self.pool_kind, self.cpu_kernels)
      x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
    return jnp.mean(x, axis=2)

  # Helpers for the subclasses' stems.
  def conv_bn_relu(self, x: Array, features: int, train: bool, name: str) -> Array:
    x = kernels.conv_module(self.cpu_kernels)(features, (3, 3), use_bias=False,
                                              dtype=self.dtype, param_dtype=self.param_dtype,
                                              name=f"{name}_conv")(x)
    x = blocks.BatchNorm(use_running_average=not train, dtype=self.dtype,
                         param_dtype=self.param_dtype, cpu_kernels=self.cpu_kernels,
                         name=f"{name}_bn")(x)
    return nn.relu(x)

  def block_kwargs(self) -> dict[str, Any]:
    return dict(dtype=self.dtype, param_dtype=self.param_dtype, cpu_kernels=self.cpu_kernels)


class GatedFrontEnd(FrontEnd):
  """DESED baseline: conv-BN-GLU blocks, dropout, max pooling; no stem."""

  widths: Sequence[int] = (16, 32, 64, 128, 128, 128, 256)
  kernel_size: int = 3
  conv_dropout: float = 0.5

  def stage(self, i, x, train):
    return blocks.GLUBlock(self.widths[i], self.kernel_size, **self.block_kwargs(),
                           name=f"block{i}")(x, train)


class ResNetFrontEnd(FrontEnd):
  """3x3 conv stem, then `blocks_per_stage` residual blocks per width."""

  widths: Sequence[int] = (32, 64, 128, 256)
  stem_width: int = 16
  blocks_per_stage: int | Sequence[int] = (1, 1, 2, 1)

  def stem(self, x, train):
    return self.conv_bn_relu(x, self.stem_width, train, "stem")

  def stage(self, i, x, train):
    for j in range(per_stage(self.blocks_per_stage, len(self.widths), "blocks_per_stage")[i]):
      x = blocks.ResidualBlock(self.widths[i], **self.block_kwargs(),
                               name=f"stage{i}_block{j}")(x, train)
    return x


class DenseNetFrontEnd(FrontEnd):
  """3x3 conv stem, then per stage a dense block and a transition to `widths[i]` channels
  (average pooling, as in DenseNet). `layers_per_block` and `growth` are per stage (an int
  applies to every stage): the early stages run at full time-frequency resolution, so they get
  few, narrow layers, and the parameters go to the later, cheaper-per-weight stages."""

  widths: Sequence[int] = (64, 128, 192, 256)
  stem_width: int = 16
  layers_per_block: int | Sequence[int] = (2, 3, 4, 4)
  growth: int | Sequence[int] = (16, 32, 48, 80)
  bottleneck: int = 2
  pool_kind: str = "avg"

  def stem(self, x, train):
    return self.conv_bn_relu(x, self.stem_width, train, "stem")

  def stage(self, i, x, train):
    num_layers = per_stage(self.layers_per_block, len(self.widths), "layers_per_block")[i]
    growth = per_stage(self.growth, len(self.widths), "growth")[i]
    x, moments = blocks.DenseBlock(num_layers, growth, self.bottleneck, **self.block_kwargs(),
                                   name=f"dense{i}")(x, train)
    return blocks.Transition(self.widths[i], **self.block_kwargs(),
                             name=f"transition{i}")(x, train, moments)


class InceptionFrontEnd(FrontEnd):
  """3x3 conv stem, then `blocks_per_stage` inception blocks per width."""

  widths: Sequence[int] = (64, 128, 256, 512, 512)
  stem_width: int = 32
  blocks_per_stage: int | Sequence[int] = 1

  def stem(self, x, train):
    return self.conv_bn_relu(x, self.stem_width, train, "stem")

  def stage(self, i, x, train):
    for j in range(per_stage(self.blocks_per_stage, len(self.widths), "blocks_per_stage")[i]):
      x = blocks.InceptionBlock(self.widths[i], **self.block_kwargs(),
                                name=f"stage{i}_block{j}")(x, train)
    return x


class XceptionFrontEnd(FrontEnd):
  """3x3 conv stem, then one residual block of depthwise-separable convs per width (also the
  student's front-end, at small widths)."""

  widths: Sequence[int] = (64, 128, 256, 512, 512)
  stem_width: int = 16
  convs_per_block: int = 2
  kernel_size: int = 3

  def stem(self, x, train):
    return self.conv_bn_relu(x, self.stem_width, train, "stem")

  def stage(self, i, x, train):
    return blocks.XceptionBlock(self.widths[i], self.convs_per_block, self.kernel_size,
                                **self.block_kwargs(), name=f"block{i}")(x, train)


# ---------------------------------------------------------------------------------------------
# The CRNN.


class CRNN(nn.Module):
  """Front-end -> `gru_layers` BiGRUs -> frame logits [B, T_out, C] and clip logits [B, C].

  Attributes:
    num_classes: C.
    frontend: a `FrontEnd` (it owns `time_pool`); its parameters live under "frontend".
    gru_features: hidden size per direction.
    gru_layers: stacked BiGRUs.
    dropout: on the GRU input and on the heads' input (train mode only).
    pooling: clip pooling, one of POOLINGS (see `clip_logits_from_frames`).
    input_norm: BatchNorm over mel bins on the raw input (in float32).
    gru_unroll: `lax.scan` unroll factor of the GRUs (a speed knob; same numbers).
    dtype: computation dtype (e.g. jnp.bfloat16); param_dtype: parameter dtype. Outputs are
      float32 either way.
    cpu_kernels: "auto" (the XLA:CPU fast paths of `cpu_kernels` on CPU, native ops elsewhere)
      or "off" (stock flax/lax ops everywhere); same parameters. The front-end must have the
      same value (`make_model` sets both).
  """

  num_classes: int
  frontend: nn.Module
  gru_features: int = 128
  gru_layers: int = 2
  dropout: float = 0.3
  pooling: str = "attention"
  input_norm: bool = True
  gru_unroll: int | bool = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False,
               frame_mask: Array | None = None) -> tuple[Array, Array]:
    """x: log-mel [B, T, F]; frame_mask: optional [B, T // time_pool] bool (False = padding),
    kept out of the GRU state and of the clip pooling. Returns (frame_logits, clip_logits)."""
    if x.ndim != 3:
      raise ValueError(f"CRNN expects log-mel [batch, frames, mels], got shape {x.shape}")
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLINGS)}")
    fe_kernels = getattr(self.frontend, "cpu_kernels", self.cpu_kernels)
    if fe_kernels != self.cpu_kernels:
      raise ValueError(f"CRNN.cpu_kernels={self.cpu_kernels!r} but its front-end has "
                       f"{fe_kernels!r}: build both with make_model(..., cpu_kernels=...)")
    x = x.astype(jnp.float32)
    if self.input_norm:
      x = blocks.BatchNorm(use_running_average=not train, dtype=jnp.float32,
                           param_dtype=self.param_dtype, cpu_kernels=self.cpu_kernels,
                           name="input_norm")(x)
    h = self.frontend(x.astype(self.dtype), train=train)
    t_out = x.shape[1] // self.frontend.time_pool
    if t_out < 1:
      raise ValueError(f"input has {x.shape[1]} frames, fewer than time_pool = "
                       f"{self.frontend.time_pool}")
    if h.shape[1] != t_out:
      raise ValueError(f"front-end gave {h.shape[1]} frames, expected T // time_pool = {t_out}")
    if frame_mask is not None and frame_mask.shape != h.shape[:2]:
      raise ValueError(f"frame_mask has shape {frame_mask.shape}, expected {h.shape[:2]}")

    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    for i in range(self.gru_layers):
      h = blocks.BiGRU(self.gru_features, unroll=self.gru_unroll, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"bigru{i}")(h, frame_mask)
    h = nn.Dropout(self.dropout, deterministic=not train)(h).astype(jnp.float32)
    # The heads are tiny ([B, T_out, 2H] x [2H, C]) and make the logits that the losses and the
    # teacher cache consume, so they run in float32 whatever `dtype` is.
    dense = functools.partial(nn.Dense, self.num_classes, dtype=jnp.float32,
                              param_dtype=self.param_dtype)
    frame_logits = dense(name="frame_head")(h)
    # No bias: a per-class constant cancels in the softmax over time (its gradient is exactly 0,
    # and Adam would turn the rounding noise of that 0 into updates).
    attention = (dense(name="attention_head", use_bias=False)(h) if self.pooling == "attention"
                 else None)
    clip_logits = clip_logits_from_frames(frame_logits, self.pooling, attention, frame_mask)
    return frame_logits, clip_logits


def compiler_options(model: CRNN) -> dict[str, Any]:
  """XLA compile options for the jitted step that trains `model` (the `jax.jit`
  `compiler_options` of `train.train_and_evaluate`'s training step and of the step benchmarks).

  Why: on CPU, XLA's newer emitter of loop and reduction fusions compiles some fusions of the
  depthwise-separable front-ends (xception, the student: the pooling gradient at the stem's
  resolution, partial sums of BatchNorm statistics over few channels) into far slower code
  than its older one, so their training steps run faster with the older; the other
  front-ends' run as fast or slower with it (benchmarks/results/fusion_emitters.json,
  docs/benchmarks.md). So only those models, only with the CPU paths ("auto") and only on
  the CPU backend, get it; {} otherwise.
  """
  depthwise = isinstance(model.frontend, XceptionFrontEnd)
  if depthwise and model.cpu_kernels == "auto" and jax.default_backend() == "cpu":
    return {"xla_cpu_use_fusion_emitters": False}
  return {}


# ---------------------------------------------------------------------------------------------
# Factory.

# name -> (front-end class, front-end defaults, CRNN defaults). Front-end defaults not listed
# here are the class attributes above.
ARCHS: dict[str, tuple[type[FrontEnd], dict[str, Any], dict[str, Any]]] = {
    "gated": (GatedFrontEnd, {}, {}),
    "resnet": (ResNetFrontEnd, {}, {}),
    "densenet": (DenseNetFrontEnd, {}, {}),
    "inception": (InceptionFrontEnd, {}, {}),
    "xception": (XceptionFrontEnd, {}, {}),
    "student": (XceptionFrontEnd,
                dict(widths=(16, 32, 48, 64), stem_width=8, stem_pool=(2, 2), convs_per_block=1,
                     conv_dropout=0.1),
                dict(gru_features=32, gru_layers=1, dropout=0.1)),
}
TEACHER_ARCHS = ("gated", "resnet", "densenet", "inception", "xception")  # Any may teach.

_MODULE_FIELDS = ("parent", "name")


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)} - set(_MODULE_FIELDS)


def _override_fields(arch: str) -> tuple[set[str], set[str]]:
  """The attribute names `make_model` can override: the CRNN's and the front-end's."""
  fixed = {"dtype", "param_dtype", "cpu_kernels"}  # make_model's own arguments.
  crnn_fields = _fields(CRNN) - {"num_classes", "frontend"} - fixed
  return crnn_fields, _fields(ARCHS[arch][0]) - fixed


def override_problem(arch: str, overrides) -> str | None:
  """Why `overrides` cannot build `arch` (names it does not have, with the valid ones), or None.

  Shared by `make_model` and the up-front config checks, so a misspelt override stops a job
  before its dataset build and teacher training, with the same message.
  """
  unknown = set(overrides) - set().union(*_override_fields(arch))
  if not unknown:
    return None
  return (f"unknown model overrides {sorted(unknown)} for arch {arch!r}; valid: "
          f"{sorted(set().union(*_override_fields(arch)))}")


def make_model(arch: str, num_classes: int, *, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, cpu_kernels: str = "auto",
               **overrides: Any) -> CRNN:
  """The CRNN named `arch` (one of ARCHS) with `num_classes` outputs.

  `overrides` set any attribute of the CRNN (gru_features, gru_layers, dropout, pooling,
  input_norm, gru_unroll) or of the architecture's front-end (time_pool, widths, conv_dropout,
  stem_width, ...), so configs can scale widths and depths; an unknown name is an error that
  lists the valid ones. Lists become tuples (configs hold lists; module attributes should be
  immutable). `dtype` is the computation dtype of every layer; parameters are `param_dtype`.
  `cpu_kernels` (one of CPU_KERNELS) goes to the CRNN and its front-end: "auto" takes the
  XLA:CPU fast paths on CPU, "off" stock flax/lax ops; the parameters are the same.
  """
  if arch not in ARCHS:
    raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(ARCHS)}")
  kernels.check_mode(cpu_kernels)
  problem = override_problem(arch, overrides)
  if problem:
    raise ValueError(problem)
  fe_cls, fe_defaults, crnn_defaults = ARCHS[arch]
  crnn_fields, fe_fields = _override_fields(arch)
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  shared = dict(dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                cpu_kernels=cpu_kernels)  # The CRNN's and its front-end's.
  fe_kwargs = {**fe_defaults, **{k: v for k, v in overrides.items() if k in fe_fields}}
  crnn_kwargs = {**crnn_defaults, **{k: v for k, v in overrides.items() if k in crnn_fields}}
  frontend = fe_cls(**fe_kwargs, **shared)
  return CRNN(num_classes=num_classes, frontend=frontend, **crnn_kwargs, **shared)
