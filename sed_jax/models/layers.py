"""Building blocks of the CRNNs: a GRU whose scan does only the recurrence, conv blocks, and
the convolution, pooling and BatchNorm that the blocks use (fast paths for XLA:CPU, same
parameters and numbers as `nn.Conv`, `nn.max_pool` / `nn.avg_pool` and `nn.BatchNorm`).

Layout: convolutional blocks see `[B, T, F, C]` (time, frequency, channels: NHWC with time as
height); recurrent layers see `[B, T, D]`. Every block takes `dtype` (computation) and
`param_dtype` (storage, float32 by default) so a model can compute in bfloat16 while its
parameters and optimiser state stay float32.

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
  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    """x: [B, T, D]; mask: optional [B, T] bool, False frames leave the state unchanged.

    With a mask, padding past a clip's end does not feed the reverse direction: its state stays
    h_0 until the first valid frame from the end.
    """
    b, _, d = x.shape
    h = self.features
    w_x = self.param("input_kernel", self.kernel_init, (d, 3 * h), self.param_dtype)
    b_x = self.param("input_bias", self.bias_init, (3 * h,), self.param_dtype)
    w_h = self.param("hidden_kernel", self.recurrent_kernel_init, (h, 3 * h), self.param_dtype)
    b_h = self.param("hidden_bias", self.bias_init, (3 * h,), self.param_dtype)
    x, w_x, b_x, w_h, b_h = (a.astype(self.dtype) for a in (x, w_x, b_x, w_h, b_h))

    # The input projection of all time steps in one matmul, time-major for the scan: [T, B, 3H].
    gx = jnp.einsum("btd,dg->tbg", x, w_x) + b_x
    if mask is not None:
      mask = jnp.swapaxes(mask.astype(bool), 0, 1)  # [T, B]

    def step(carry: Array, inputs) -> tuple[Array, Array]:
      gx_t, m_t = inputs
      gh = (carry.astype(self.dtype) @ w_h + b_h).astype(jnp.float32)
      xr, xz, xn = jnp.split(gx_t.astype(jnp.float32), 3, axis=-1)
      hr, hz, hn = jnp.split(gh, 3, axis=-1)
      r = jax.nn.sigmoid(xr + hr)
      z = jax.nn.sigmoid(xz + hz)
      n = jnp.tanh(xn + r * hn)
      new = (1.0 - z) * n + z * carry
      if m_t is not None:
        new = jnp.where(m_t[:, None], new, carry)
      return new, new

    h0 = jnp.zeros((b, h), jnp.float32)
    _, ys = jax.lax.scan(step, h0, (gx, mask), reverse=self.reverse, unroll=self.unroll)
    return jnp.swapaxes(ys, 0, 1).astype(self.dtype)


class BiGRU(nn.Module):
  """Bidirectional GRU: a forward and a reverse `GRU` (separate weights), outputs concatenated
  to [B, T, 2H] so each frame sees both its past and its future."""

  features: int
  unroll: int | bool = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    gru = functools.partial(GRU, self.features, unroll=self.unroll, dtype=self.dtype,
                            param_dtype=self.param_dtype)
    fwd = gru(name="forward")(x, mask)
    bwd = gru(reverse=True, name="backward")(x, mask)
    return jnp.concatenate([fwd, bwd], axis=-1)


# ---------------------------------------------------------------------------------------------
# Convolution and pooling as XLA:CPU runs them fastest.
#
# On CPU, XLA lowers the convolutions of these front-ends to generic kernels that are slow for
# their shapes (few channels, many positions): a train step of the student spent most of its
# time in 1x1 and depthwise convolutions and in their weight gradients, and the gradient of
# max pooling (select-and-scatter) went through a scatter with materialised indices. The
# functions below compute the same quantities from matmuls, elementwise fusions and plain
# reductions instead. They are staged out with `lax.platform_dependent`, so GPUs and TPUs keep
# XLA's native convolutions (cuDNN, the TPU convolution units).


def _same_pads(k: int) -> tuple[int, int]:
  """lax's 'SAME' padding of a stride-1 window of size k: (low, high)."""
  return (k - 1) // 2, k // 2


def _shifted_sum(x: Array, kernel: Array, pads: tuple[tuple[int, int], ...]) -> Array:
  """sum_ij pad(x)[:, t+i, f+j, c] * kernel[i, j, c]: a depthwise correlation as one fused
  loop of multiply-adds (XLA fuses the shifted slices; nothing of size [B, T, F, C] but the
  output is written)."""
  kh, kw, _ = kernel.shape
  t, f = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      term = xp[:, i:i + t, j:j + f, :] * kernel[i, j]
      out = term if out is None else out + term
  return out


@jax.custom_vjp
def depthwise_conv(x: Array, kernel: Array) -> Array:
  """Stride-1 'SAME' depthwise convolution of x [B, T, F, C] with kernel [kh, kw, C].

  Why a custom gradient: differentiating the shifted sum gives kh * kw separate reductions of
  [B, T, F, C] products over (B, T, F) for the kernel gradient, each a pass over memory that
  XLA:CPU runs serially; one variadic reduction computes all of them in a single pass.
  """
  kh, kw, _ = kernel.shape
  return _shifted_sum(x, kernel, (_same_pads(kh), _same_pads(kw)))


def _depthwise_fwd(x, kernel):
  return depthwise_conv(x, kernel), (x, kernel)


def _depthwise_bwd(res, g):
  x, kernel = res
  kh, kw, _ = kernel.shape
  (t0, t1), (f0, f1) = _same_pads(kh), _same_pads(kw)
  # The transpose of a correlation is the correlation with the flipped kernel, padded the
  # other way round.
  dx = _shifted_sum(g, kernel[::-1, ::-1], ((t1, t0), (f1, f0)))
  t, f = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (t0, t1), (f0, f1), (0, 0)))
  # Products accumulate in float32 whatever the compute dtype; the reduction keeps (B, T, C),
  # which XLA parallelises over, and the small remainder is summed after.
  products = tuple((xp[:, i:i + t, j:j + f, :] * g).astype(jnp.float32)
                   for i in range(kh) for j in range(kw))
  zeros = tuple(jnp.zeros((), jnp.float32) for _ in products)
  sums = jax.lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (2,))
  dkernel = jnp.stack([jnp.sum(s, axis=(0, 1)) for s in sums]).reshape(kernel.shape)
  return dx, dkernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


@jax.custom_vjp
def pointwise_conv(x: Array, kernel: Array) -> Array:
  """1x1 convolution of x [B, T, F, C] with kernel [C, O] as one matmul over all positions."""
  return jnp.einsum("btfc,co->btfo", x, kernel)


def _pointwise_fwd(x, kernel):
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_bwd(res, g):
  """dx is a matmul; the kernel gradient sum_n x[n, c] g[n, o] is a [C, O] result from a
  reduction over millions of positions, which XLA:CPU runs faster as one fused
  multiply-reduce than as a dot with a huge contracting dimension. The optimization barrier
  stops XLA from fusing the producers of x and g (the forward recomputation, the BatchNorm
  gradient) into that reduction, which would recompute them for every one of the C * O
  outputs."""
  x, kernel = res
  c, o = kernel.shape
  dx = jnp.einsum("btfo,co->btfc", g, kernel)
  x, g = jax.lax.optimization_barrier((x, g))
  dk = jnp.sum(x.reshape(-1, c, 1) * g.reshape(-1, 1, o), axis=0)
  return dx, dk.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


def _im2col_conv(x: Array, kernel: Array) -> Array:
  """Stride-1 'SAME' convolution as patches [B, T, F, kh*kw*C] times kernel [kh*kw*C, O]: for
  few input channels (the first conv sees one) the patches are small and the matmul and its
  gradients are XLA:CPU's fast path."""
  kh, kw, c, o = kernel.shape
  t, f = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), _same_pads(kh), _same_pads(kw), (0, 0)))
  patches = jnp.concatenate([xp[:, i:i + t, j:j + f, :] for i in range(kh) for j in range(kw)],
                            axis=-1)
  return pointwise_conv(patches, kernel.reshape(kh * kw * c, o))


# Largest kh * kw * C_in that the CPU path turns into patches (beyond it the patches cost more
# memory traffic than XLA's own convolution).
IM2COL_MAX_DEPTH = 9


def _cpu_conv(x: Array, kernel: Array, feature_group_count: int) -> Array:
  """The CPU path of a stride-1 'SAME' NHWC convolution: 1x1 convs are matmuls, depthwise
  convs shifted sums, convs of few input channels (the first one) im2col matmuls; the rest
  (3x3 convs over many channels, where XLA's convolution is efficient) stay native."""
  kh, kw, cin, cout = kernel.shape
  if feature_group_count == 1 and kh == kw == 1:
    return pointwise_conv(x, kernel[0, 0])
  if feature_group_count == x.shape[-1] == cout and cin == 1:
    return depthwise_conv(x, kernel[:, :, 0, :])
  if feature_group_count == 1 and kh * kw * cin <= IM2COL_MAX_DEPTH:
    return _im2col_conv(x, kernel)
  return _native_conv(x, kernel, feature_group_count)


def _native_conv(x: Array, kernel: Array, feature_group_count: int) -> Array:
  """`lax.conv_general_dilated`, stride 1, 'SAME', NHWC/HWIO (what the CPU paths replace)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=feature_group_count)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """Drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)`.

  Stride-1, undilated 'SAME' NHWC convolutions (all that the front-ends use) take the CPU
  paths above on CPU and XLA's convolution elsewhere; anything else goes to
  `lax.conv_general_dilated` unchanged. Parameters are `nn.Conv`'s either way.
  """
  native = functools.partial(jax.lax.conv_general_dilated, window_strides=window_strides,
                             padding=padding, lhs_dilation=lhs_dilation,
                             rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                             feature_group_count=feature_group_count, precision=precision,
                             **kwargs)
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  plain = (lhs.ndim == 4 and padding == "SAME" and tuple(window_strides) == (1, 1)
           and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
           and dimension_numbers == nhwc and not kwargs and precision is None)
  if not plain:
    return native(lhs, rhs)
  return jax.lax.platform_dependent(
      lhs, rhs, cpu=lambda x, k: _cpu_conv(x, k, feature_group_count),
      default=lambda x, k: native(x, k))


# `nn.Conv` (same parameters, names and initialisers) computed by `conv_general_dilated`.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def _crop(x: Array, window: tuple[int, int]) -> Array:
  """Drops the frames and bins that fill no whole window (as VALID pooling does)."""
  return x[:, :x.shape[1] // window[0] * window[0], :x.shape[2] // window[1] * window[1]]


def _windows(x: Array, window: tuple[int, int]) -> Array:
  """[B, T, F, C] (T, F multiples of the window) -> [B, T // wt, wt, F // wf, wf, C]."""
  b, t, f, c = x.shape
  wt, wf = window
  return x.reshape(b, t // wt, wt, f // wf, wf, c)


def _max_and_argmax(x: Array, window: tuple[int, int]) -> tuple[Array, Array]:
  """Window maxima and the position of each window's first maximum (row-major in the window),
  by a fold over the window's elements: elementwise work only, no reduce-window."""
  wt, wf = window
  windows = _windows(x, window)
  best = windows[:, :, 0, :, 0, :]
  index = jnp.zeros(best.shape, jnp.int8 if wt * wf <= 127 else jnp.int32)
  for k in range(1, wt * wf):
    value = windows[:, :, k // wf, :, k % wf, :]
    index = jnp.where(value > best, jnp.asarray(k, index.dtype), index)  # Strict: first wins.
    best = jnp.maximum(best, value)
  return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: Array, window: tuple[int, int]) -> Array:
  return _max_and_argmax(x, window)[0]


def _max_pool_fwd(x, window):
  y, index = _max_and_argmax(x, window)
  return y, index


def _max_pool_bwd(window, res, g):
  """The whole gradient of a window goes to its first maximum, as XLA's select-and-scatter
  (the gradient of `nn.max_pool`) sends it; what is kept for the backward pass is one small
  integer per window instead of the input."""
  index = res
  wt, wf = window
  position = (jnp.arange(wt)[:, None] * wf + jnp.arange(wf)[None, :]).astype(index.dtype)
  dx = jnp.where(index[:, :, None, :, None, :] == position[None, None, :, None, :, None],
                 g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  b, tp, _, fp, _, c = dx.shape
  return (dx.reshape(b, tp * wt, fp * wf, c),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def window_pool(x: Array, window: tuple[int, int], kind: str = "max") -> Array:
  """Non-overlapping ('VALID', stride = window) max or average pooling of [B, T, F, C].

  The same values and gradients as `nn.max_pool` / `nn.avg_pool` with those arguments, from
  a reshape into windows: on CPU, XLA's gradient of `reduce_window` max (select-and-scatter)
  is many times slower than the elementwise mask used here. Staged out per platform like the
  convolutions.
  """
  window = tuple(int(w) for w in window)
  if kind == "avg":
    native = lambda x: nn.avg_pool(x, window, strides=window, padding="VALID")
    fast = lambda x: jnp.mean(_windows(_crop(x, window), window), axis=(2, 4))
  else:
    native = lambda x: nn.max_pool(x, window, strides=window, padding="VALID")
    fast = lambda x: _max_pool(_crop(x, window), window)
  return jax.lax.platform_dependent(x, cpu=fast, default=native)


# ---------------------------------------------------------------------------------------------
# Batch normalisation.


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _normalize(x: Array, mean: Array, var: Array, scale: Array, bias: Array,
               epsilon: float) -> Array:
  """(x - mean) * scale / sqrt(var + epsilon) + bias over the last axis, in float32."""
  return (x.astype(jnp.float32) - mean) * (scale * jax.lax.rsqrt(var + epsilon)) + bias


def _normalize_fwd(x, mean, var, scale, bias, epsilon):
  return _normalize(x, mean, var, scale, bias, epsilon), (x, mean, var, scale)


def _normalize_bwd(epsilon, res, g):
  """Keeps only the input and per-channel statistics: autodiff would also keep x - mean, one
  more activation-sized buffer written in the forward pass and read back here."""
  x, mean, var, scale = res
  axes = tuple(range(x.ndim - 1))
  inv = jax.lax.rsqrt(var + epsilon)
  g = g.astype(jnp.float32)
  dbias = jnp.sum(g, axes)
  dscale_inv = jnp.sum(g * (x.astype(jnp.float32) - mean), axes)  # d/d(scale * inv).
  dx = (g * (scale * inv)).astype(x.dtype)
  dvar = dscale_inv * scale * (-0.5) * inv ** 3
  return dx, -dbias * scale * inv, dvar, dscale_inv * inv, dbias


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis: the same variables (params scale, bias; batch_stats
  mean, var), defaults, statistics (float32, E[x^2] - E[x]^2 clipped at 0) and running
  averages (not updated while initialising), with a normalisation whose gradient keeps less
  (`_normalize_bwd`). Only what the front-ends use is supported: no axis_name, no mask."""

  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable[..., Array] = nn.initializers.zeros
  scale_init: Callable[..., Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean, mean2 = jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)
      var = jnp.maximum(0.0, mean2 - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    scale = (self.param("scale", self.scale_init, features, self.param_dtype) if self.use_scale
             else jnp.ones(features, jnp.float32))
    bias = (self.param("bias", self.bias_init, features, self.param_dtype) if self.use_bias
            else jnp.zeros(features, jnp.float32))
    y = _normalize(x, mean, var, scale.astype(jnp.float32), bias.astype(jnp.float32),
                   self.epsilon)
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


def pool_stage(x: Array, time: int, kind: str = "max") -> Array:
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
  return window_pool(x, (time, freq), kind)


def _conv_norm(module: nn.Module, train: bool):
  """The conv (no bias: a BatchNorm follows) and BatchNorm constructors of a block."""
  conv = functools.partial(Conv, use_bias=False, dtype=module.dtype,
                           param_dtype=module.param_dtype)
  norm = functools.partial(BatchNorm, use_running_average=not train, dtype=module.dtype,
                           param_dtype=module.param_dtype)
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
  features are reused rather than recomputed; width grows by `growth` per layer."""

  num_layers: int
  growth: int
  bottleneck: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    for _ in range(self.num_layers):
      y = conv(self.bottleneck * self.growth, (1, 1))(nn.relu(norm()(x)))
      y = conv(self.growth, (3, 3))(nn.relu(norm()(y)))
      x = jnp.concatenate([x, y], axis=-1)
    return x


class Transition(nn.Module):
  """DenseNet transition: BN-ReLU-1x1 conv that compresses the width between dense blocks (the
  front-end then average-pools)."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    return conv(self.features, (1, 1))(nn.relu(norm()(x)))


class InceptionBlock(nn.Module):
  """Inception block: parallel 1x1, 3x3 and 5x5 convs (the larger ones after a 1x1 reduction to
  half their width) and a 3x3 max-pool followed by a 1x1 conv, each conv-BN-ReLU, concatenated.
  Different kernel sizes see short transients and longer, wider-band patterns side by side.

  `features` is the output width: a quarter per branch (the 1x1 branch takes the remainder).
  """

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    if self.features < 4:
      raise ValueError(f"an inception block needs at least 4 channels (one per branch), got "
                       f"{self.features}")
    conv, norm = _conv_norm(self, train)

    def cbr(y, width, k):
      return nn.relu(norm()(conv(width, (k, k))(y)))

    w = self.features // 4
    reduce = max(w // 2, 1)
    b1 = cbr(x, self.features - 3 * w, 1)
    b3 = cbr(cbr(x, reduce, 1), w, 3)
    b5 = cbr(cbr(x, reduce, 1), w, 5)
    bp = cbr(nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME"), w, 1)
    return jnp.concatenate([b1, b3, b5, bp], axis=-1)


class SeparableConv(nn.Module):
  """Depthwise-separable conv: a per-channel k x k conv then a 1x1 conv across channels. For
  C -> C' channels it costs k*k*C + C*C' weights instead of k*k*C*C', which is what makes the
  student small."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
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

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv, norm = _conv_norm(self, train)
    y = x
    for _ in range(self.num_convs):
      y = SeparableConv(self.features, self.kernel_size, dtype=self.dtype,
                        param_dtype=self.param_dtype)(nn.relu(y))
      y = norm()(y)
    if x.shape[-1] != self.features:
      x = norm()(conv(self.features, (1, 1), name="shortcut")(x))
    return x + y


def check_widths(name: str, widths: Sequence[int]) -> None:
  """Front-end widths must be a non-empty sequence of positive ints (a config typo otherwise
  surfaces as an obscure shape error deep inside a conv)."""
  if not widths or any(int(w) < 1 for w in widths):
    raise ValueError(f"{name} must be a non-empty sequence of positive widths, got {widths!r}")
