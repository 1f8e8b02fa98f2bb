"""Building blocks of the CRNNs: a GRU whose scan does only the recurrence, BatchNorm, the
conv blocks of the front-ends and their pooling helpers. The convolution, pooling and
BatchNorm arithmetic they compute with are `cpu_kernels`' (XLA:CPU fast paths, same parameters
and numbers as `nn.Conv`, `nn.max_pool` / `nn.avg_pool` and `nn.BatchNorm`).

Layout: convolutional blocks see `[B, T, F, C]` (time, frequency, channels: NHWC with time as
height); recurrent layers see `[B, T, D]`. Every block takes `dtype` (computation) and
`param_dtype` (storage, float32 by default) so a model can compute in bfloat16 while its
parameters and optimiser state stay float32. Every block that convolves, pools or normalises
takes `cpu_kernels` ("auto" or "off", see `cpu_kernels.MODES`): whether those ops take the CPU
fast paths; parameters are the same either way.

GRU convention (PyTorch's, so weights and numbers can be compared with `torch.nn.GRU`): gates in
the order r (reset), z (update), n (candidate),

  r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
  z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
  n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  h' = (1 - z) * n + z * h,

with `input_kernel` [D, 3H] = concat(W_ir, W_iz, W_in).T (PyTorch's `weight_ih_l0.T`),
`hidden_kernel` [H, 3H] = `weight_hh_l0.T`, `input_bias` = `bias_ih_l0`, `hidden_bias` =
`bias_hh_l0`, and h_0 = 0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sed_jax.models import cpu_kernels as kernels

Dtype = Any
Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Recurrent layers.


def stacked_orthogonal(num_gates: int = 3) -> Callable[..., Array]:
  """Initialiser of a [H, G*H] recurrent kernel: one orthogonal [H, H] matrix per gate.

  Orthogonal recurrent weights keep the hidden state's norm from exploding or vanishing early in
  training; initialising the stacked [H, 3H] matrix as a whole would only make its rows
  orthonormal, not each gate's square block.
  """
  orthogonal = nn.initializers.orthogonal()

  def init(key, shape, dtype=jnp.float32):
    h, gh = shape
    if gh != num_gates * h:
      raise ValueError(f"expected a [H, {num_gates}H] kernel, got {shape}")
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([orthogonal(k, (h, h), dtype) for k in keys], axis=1)

  return init


class GRU(nn.Module):
  """One-directional GRU over [B, T, D] -> hidden states [B, T, H] (gate convention above).

  Why the split: the input projection W_x x of all three gates does not depend on the hidden
  state, so it is one [B*T, D] x [D, 3H] matmul over the whole sequence, which the accelerator runs
  at full width; only h -> W_h h and the gate arithmetic stay inside `jax.lax.scan`. Computing
  W_x x per step inside the scan (as a plain `nn.GRUCell` under `nn.scan` does) would issue T
  small matmuls sequentially instead.

  The hidden state and the gate arithmetic are float32 whatever `dtype` is (only the matmuls run
  in `dtype`): rounding h to bfloat16 at every one of T steps would accumulate error.

  Attributes:
    features: hidden size H.
    reverse: run from the last frame to the first (outputs stay in input order).
    unroll: `jax.lax.scan` unroll factor (more steps per loop iteration: less loop overhead,
      longer compiles; `True` unrolls completely).
  """

  features: int
  reverse: bool = False
  unroll: int | bool = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  recurrent_kernel_init: Callable[..., Array] = stacked_orthogonal(3)
  bias_init: Callable[..., Array] = nn.initializers.zeros

  @nn.compact
  def project(self, x: Array) -> tuple[Array, Array, Array]:
    """The parameters, and the input projection of all time steps in one matmul: gx [T, B, 3H]
    (time-major, for the scan; in time order whatever `reverse` is), and w_h, b_h, in `dtype`."""
    d, h = x.shape[-1], self.features
    w_x = self.param("input_kernel", self.kernel_init, (d, 3 * h), self.param_dtype)
    b_x = self.param("input_bias", self.bias_init, (3 * h,), self.param_dtype)
    w_h = self.param("hidden_kernel", self.recurrent_kernel_init, (h, 3 * h), self.param_dtype)
    b_h = self.param("hidden_bias", self.bias_init, (3 * h,), self.param_dtype)
    x, w_x, b_x, w_h, b_h = (a.astype(self.dtype) for a in (x, w_x, b_x, w_h, b_h))
    return jnp.einsum("btd,dg->tbg", x, w_x) + b_x, w_h, b_h

  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    """x: [B, T, D]; mask: optional [B, T] bool, False frames leave the state unchanged.

    With a mask, padding past a clip's end does not feed the reverse direction: its state stays
    h_0 until the first valid frame from the end.
    """
    gx, w_h, b_h = self.project(x)
    mask = None if mask is None else jnp.swapaxes(mask.astype(bool), 0, 1)  # [T, B]
    if self.reverse:
      gx, mask = gx[::-1], None if mask is None else mask[::-1]
    ys = gru_scan(gx[:, None], w_h[None], b_h[None], None if mask is None else mask[:, None],
                  self.unroll, self.dtype)[:, 0]
    return jnp.swapaxes(ys[::-1] if self.reverse else ys, 0, 1).astype(self.dtype)


def gru_scan(gx: Array, w_h: Array, b_h: Array, mask: Array | None, unroll: int | bool,
             dtype: Dtype) -> Array:
  """Runs D independent GRUs side by side in one `lax.scan`: gx [T, D, B, 3H] (input
  projections, in the order each one consumes them), w_h [D, H, 3H], b_h [D, 3H], mask
  [T, D, B] or None. Returns the hidden states [T, D, B, H], float32.

  Why one scan for several: the recurrence is latency-bound (a [B, H] x [H, 3H] matmul and a
  few small elementwise ops per step), so running the two directions of a BiGRU as one batched
  matmul per step halves the sequential steps, forward and backward, on every backend.
  """
  def step(carry: Array, inputs) -> tuple[Array, Array]:
    gx_t, m_t = inputs
    gh = (jnp.einsum("dbh,dhg->dbg", carry.astype(dtype), w_h) + b_h[:, None]).astype(
        jnp.float32)
    xr, xz, xn = jnp.split(gx_t.astype(jnp.float32), 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    new = (1.0 - z) * n + z * carry
    if m_t is not None:
      new = jnp.where(m_t[..., None], new, carry)
    return new, new

  _, d, b, gh3 = gx.shape
  h0 = jnp.zeros((d, b, gh3 // 3), jnp.float32)
  _, ys = jax.lax.scan(step, h0, (gx, mask), unroll=unroll)
  return ys


class BiGRU(nn.Module):
  """Bidirectional GRU: a forward and a reverse `GRU` (separate weights), outputs concatenated
  to [B, T, 2H] so each frame sees both its past and its future. Both directions run in one
  scan (`gru_scan`): step s feeds frame s forward and frame T-1-s backward."""

  features: int
  unroll: int | bool = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    gru = functools.partial(GRU, self.features, unroll=self.unroll, dtype=self.dtype,
                            param_dtype=self.param_dtype)
    gx_f, w_f, b_f = gru(name="forward").project(x)
    gx_b, w_b, b_b = gru(reverse=True, name="backward").project(x)
    if mask is not None:
      mask = jnp.swapaxes(mask.astype(bool), 0, 1)  # [T, B]
      mask = jnp.stack([mask, mask[::-1]], axis=1)
    ys = gru_scan(jnp.stack([gx_f, gx_b[::-1]], axis=1), jnp.stack([w_f, w_b]),
                  jnp.stack([b_f, b_b]), mask, self.unroll, self.dtype)
    return jnp.swapaxes(jnp.concatenate([ys[:, 0], ys[::-1, 1]], axis=-1), 0, 1).astype(
        self.dtype)


# ---------------------------------------------------------------------------------------------
# Batch normalisation.


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis: the same variables (params scale, bias; batch_stats
  mean, var), defaults, statistics (float32, E[x^2] - E[x]^2 clipped at 0) and running
  averages (not updated while initialising), with a normalisation whose gradient keeps less
  under `cpu_kernels="auto"` (`cpu_kernels.normalize`). Only what the front-ends use is
  supported: no axis_name, no mask. A caller that already has the batch's moments passes them
  (`moments`, as `cpu_kernels.batch_moments` computes them): a dense block's BatchNorms
  normalise a concatenation of parts whose moments it computed once each (`DenseBlock`).

  `dot_sums=False` keeps plain sums for the gradients of scale and bias on CPU, where the
  matmuls of `cpu_kernels._gradient_sums` are slower (the inception block's branches)."""

  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable[..., Array] = nn.initializers.zeros
  scale_init: Callable[..., Array] = nn.initializers.ones
  cpu_kernels: str = "auto"
  dot_sums: bool = True

  @nn.compact
  def __call__(self, x: Array, use_running_average: bool | None = None,
               moments: tuple[Array, Array] | None = None) -> Array:
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean, mean2 = (kernels.batch_moments(x, self.cpu_kernels) if moments is None
                     else moments)
      var = jnp.maximum(0.0, mean2 - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    scale = (self.param("scale", self.scale_init, features, self.param_dtype) if self.use_scale
             else jnp.ones(features, jnp.float32))
    bias = (self.param("bias", self.bias_init, features, self.param_dtype) if self.use_bias
            else jnp.zeros(features, jnp.float32))
    y = kernels.normalize(x, mean, var, scale.astype(jnp.float32), bias.astype(jnp.float32),
                          self.epsilon, self.cpu_kernels, self.dot_sums)
    dtype = self.dtype or jnp.result_type(x, self.param_dtype)
    return y.astype(dtype)


# ---------------------------------------------------------------------------------------------
# Pooling helpers shared by the front-ends.


def time_pool_factors(time_pool: int, num_stages: int) -> list[int]:
  """Per-stage time pooling whose product is `time_pool`: its prime factors, smallest first, on
  the first stages (pooling early makes the later, wider stages cheap), the excess merged into
  the last stage. Since floor(floor(T / a) / b) = floor(T / (a b)), the output has exactly
  T // time_pool frames whatever T is."""
  if time_pool < 1:
    raise ValueError(f"time_pool must be >= 1, got {time_pool}")
  if num_stages < 1:
    raise ValueError(f"need at least one stage, got {num_stages}")
  factors, n, p = [], time_pool, 2
  while n > 1:
    while n % p == 0:
      factors.append(p)
      n //= p
    p += 1
  while len(factors) > num_stages:
    factors[-2:] = [factors[-2] * factors[-1]]
  return factors + [1] * (num_stages - len(factors))


def pool_stage(x: Array, time: int, kind: str = "max", cpu_kernels: str = "auto") -> Array:
  """Pools [B, T, F, C] by `time` along time and by 2 along frequency while F >= 2.

  Frequency always halves, so each stage's receptive field doubles in frequency and whatever
  is left after the last stage is small (the front-end then averages it away); windows are
  non-overlapping (VALID), so T becomes T // time.
  """
  freq = 2 if x.shape[2] >= 2 else 1
  if time == 1 and freq == 1:
    return x
  if kind not in ("max", "avg"):
    raise ValueError(f"unknown pooling kind {kind!r}; known: max, avg")
  return kernels.window_pool(x, (time, freq), kind, cpu_kernels)


def _conv_norm(module: nn.Module, train: bool):
  """The conv (no bias: a BatchNorm follows) and BatchNorm constructors of a block."""
  conv = functools.partial(kernels.conv_module(module.cpu_kernels), use_bias=False,
                           dtype=module.dtype, param_dtype=module.param_dtype)
  norm = functools.partial(BatchNorm, use_running_average=not train, dtype=module.dtype,
                           param_dtype=module.param_dtype, cpu_kernels=module.cpu_kernels)
  return conv, norm


# ---------------------------------------------------------------------------------------------
# Convolutional blocks ([B, T, F, C] -> [B, T, F, C']; no pooling: the front-ends pool).


class GLUBlock(nn.Module):
  """DESED-baseline style conv -> BatchNorm -> GLU: the conv makes 2C channels, half of which
  gate the other half through a sigmoid (out = a * sigmoid(b)), a learned per-position gain
  that lets a block pass or suppress time-frequency regions."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    k = (self.kernel_size, self.kernel_size)
    y = norm()(conv(2 * self.features, k)(x))
    a, g = jnp.split(y, 2, axis=-1)
    return a * jax.nn.sigmoid(g)


class ResidualBlock(nn.Module):
  """ResNet basic block: two 3x3 conv-BN with a ReLU between, plus the input (1x1 conv-BN where
  the width changes). The second BN's scale starts at zero, so each block starts as the
  identity and a deep stack trains like a shallow one at first."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    y = nn.relu(norm()(conv(self.features, (3, 3))(x)))
    y = norm(scale_init=nn.initializers.zeros)(conv(self.features, (3, 3))(y))
    if x.shape[-1] != self.features:
      x = norm()(conv(self.features, (1, 1), name="shortcut")(x))
    return nn.relu(x + y)


class DenseBlock(nn.Module):
  """DenseNet-BC block: each layer (BN-ReLU-1x1 conv to bottleneck*growth, BN-ReLU-3x3 conv to
  `growth`) sees the concatenation of the block input and every earlier layer's output, so
  features are reused rather than recomputed; width grows by `growth` per layer.

  Returns the concatenation and, in training, its batch moments (for the `Transition`'s
  BatchNorm). Why the moments: a channel's batch statistics do not depend on which
  concatenation it sits in, so each part's are computed once, when it is made, instead of
  every later layer reducing the whole, ever wider concatenation again; and with its moments
  given, a layer's BatchNorm is the only reader of the concatenation, which XLA then fuses into
  the normalisation instead of writing it out at every layer. The values are those of a
  BatchNorm over the concatenation (tests/models/test_blocks.py)."""

  num_layers: int
  growth: int
  bottleneck: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> tuple[Array, tuple[Array, Array] | None]:
    conv, norm = _conv_norm(self, train)
    parts = [x]
    moments = [kernels.batch_moments(x, self.cpu_kernels)] if train else None
    joined = lambda: jnp.concatenate(parts, axis=-1)
    joined_moments = lambda: (tuple(jnp.concatenate(m, axis=-1) for m in zip(*moments))
                              if train else None)
    for _ in range(self.num_layers):
      y = conv(self.bottleneck * self.growth, (1, 1))(
          nn.relu(norm()(joined(), moments=joined_moments())))
      y = conv(self.growth, (3, 3))(nn.relu(norm()(y)))
      parts.append(y)
      if train:
        moments.append(kernels.batch_moments(y, self.cpu_kernels))
    return joined(), joined_moments()


class Transition(nn.Module):
  """DenseNet transition: BN-ReLU-1x1 conv that compresses the width between dense blocks (the
  front-end then average-pools). `moments`: the input's batch moments when the dense block
  before it has them (`DenseBlock`)."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False,
               moments: tuple[Array, Array] | None = None) -> Array:
    conv, norm = _conv_norm(self, train)
    return conv(self.features, (1, 1))(nn.relu(norm()(x, moments=moments)))


class InceptionBlock(nn.Module):
  """Inception block: parallel 1x1, 3x3 and 5x5 convs (the larger ones after a 1x1 reduction to
  half their width) and a 3x3 max-pool followed by a 1x1 conv, each conv-BN-ReLU, concatenated.
  Different kernel sizes see short transients and longer, wider-band patterns side by side.

  `features` is the output width: a quarter per branch (the 1x1 branch takes the remainder).
  """

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    if self.features < 4:
      raise ValueError(f"an inception block needs at least 4 channels (one per branch), got "
                       f"{self.features}")
    conv, norm = _conv_norm(self, train)

    def cbr(y, width, k):  # Plain gradient sums: as matmuls they slowed this block's step.
      return nn.relu(norm(dot_sums=False)(conv(width, (k, k))(y)))

    w = self.features // 4
    reduce = max(w // 2, 1)
    b1 = cbr(x, self.features - 3 * w, 1)
    b3 = cbr(cbr(x, reduce, 1), w, 3)
    b5 = cbr(cbr(x, reduce, 1), w, 5)
    bp = cbr(kernels.same_max_pool(x, 3, self.cpu_kernels), w, 1)
    return jnp.concatenate([b1, b3, b5, bp], axis=-1)


class SeparableConv(nn.Module):
  """Depthwise-separable conv: a per-channel k x k conv then a 1x1 conv across channels. For
  C -> C' channels it costs k*k*C + C*C' weights instead of k*k*C*C', which is what makes the
  student small."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(kernels.conv_module(self.cpu_kernels), use_bias=False,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    k = (self.kernel_size, self.kernel_size)
    x = conv(c, k, feature_group_count=c, name="depthwise")(x)
    return conv(self.features, (1, 1), name="pointwise")(x)


class XceptionBlock(nn.Module):
  """Xception block: `num_convs` x (ReLU, separable conv, BN) plus the input (1x1 conv-BN where
  the width changes)."""

  features: int
  num_convs: int = 2
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    y = x
    for _ in range(self.num_convs):
      y = SeparableConv(self.features, self.kernel_size, dtype=self.dtype,
                        param_dtype=self.param_dtype, cpu_kernels=self.cpu_kernels)(nn.relu(y))
      y = norm()(y)
    if x.shape[-1] != self.features:
      x = norm()(conv(self.features, (1, 1), name="shortcut")(x))
    return x + y


def check_widths(name: str, widths: Sequence[int]) -> None:
  """Front-end widths must be a non-empty sequence of positive ints (a config typo otherwise
  surfaces as an obscure shape error deep inside a conv)."""
  if not widths or any(int(w) < 1 for w in widths):
    raise ValueError(f"{name} must be a non-empty sequence of positive widths, got {widths!r}")
