"""XLA:CPU fast paths of the convolutions, pooling and BatchNorm arithmetic that the CRNN blocks
use: pure functions with the same parameters, values and gradients (to float32 rounding) as
`lax.conv_general_dilated` / `nn.Conv`, `nn.max_pool` / `nn.avg_pool` (non-overlapping, and
the inception block's stride-1 'SAME' pool) and autodiff through BatchNorm's normalisation.

Why they exist: on CPU, XLA lowers the convolutions of these front-ends to generic kernels that
are slow for their shapes (few channels, many positions): a train step of the student spent most
of its time in 1x1 and depthwise convolutions and in their weight gradients, and the gradient of
max pooling (select-and-scatter) went through a scatter with materialised indices. The
functions below compute the same quantities from matmuls, elementwise fusions and plain
reductions instead. They are staged out with `lax.platform_dependent`, so GPUs and TPUs keep
XLA's native convolutions (cuDNN, the TPU convolution units). Which dense convolutions are
rewritten depends on one process-wide XLA:CPU flag (`sed_jax.xla_cpu_flags`), read when a
function is traced.

The switch (`model.cpu_kernels`, a `mode` argument here, a `cpu_kernels` attribute on the
modules of `blocks` and `crnn`; never global state):

- "auto": the convolution and pooling fast paths on CPU, XLA's native ops on GPU/TPU (chosen
  per platform when the computation is lowered), and BatchNorm's leaner gradient everywhere
  (its scale and bias sums as matmuls on CPU).
- "off": the stock ops everywhere (`nn.Conv` with `lax.conv_general_dilated`, `nn.max_pool` /
  `nn.avg_pool`, the BatchNorm arithmetic differentiated by autodiff): for a platform where
  the CPU paths are never wanted, or to rule them out while chasing a bug.

Both modes create the same parameters (names, shapes, initialisers), so a checkpoint trained
with one loads with the other (`tests/models/test_cpu_kernels.py` checks outputs and gradients
of every architecture agree to 1e-5).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sed_jax import xla_cpu_flags

Array = jax.Array

MODES = ("auto", "off")  # The values of `model.cpu_kernels`.


def check_mode(mode: str) -> str:
  """`mode` if it is one of MODES; a ValueError naming the allowed values otherwise."""
  if mode not in MODES:
    raise ValueError(f"cpu_kernels={mode!r} is not one of {MODES} ('auto': the XLA:CPU fast "
                     "paths on CPU, native ops elsewhere; 'off': stock flax/lax ops everywhere)")
  return mode


# ---------------------------------------------------------------------------------------------
# Convolution.


def _same_pads(k: int) -> tuple[int, int]:
  """lax's 'SAME' padding of a stride-1 window of size k: (low, high), so the CPU paths pad
  exactly as the convolution they replace."""
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
  """Keeps the input and the kernel: the backward pass recomputes the shifted products."""
  return depthwise_conv(x, kernel), (x, kernel)


def _depthwise_bwd(res, g):
  """dx is a shifted sum again (with the flipped kernel); the kernel gradient is one variadic
  reduction of all kh * kw products (why: `depthwise_conv`; how: `_channel_sums`)."""
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
  products = tuple(xp[:, i:i + t, j:j + f, :] * g for i in range(kh) for j in range(kw))
  dkernel = jnp.stack(_channel_sums(products)).reshape(kernel.shape)
  return dx, dkernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


@jax.custom_vjp
def pointwise_conv(x: Array, kernel: Array) -> Array:
  """1x1 convolution of x [B, T, F, C] with kernel [C, O] as one matmul over all positions.

  Why: XLA:CPU runs a 1x1 convolution over few channels as a generic convolution, far slower
  than the equivalent [B*T*F, C] x [C, O] matmul; the custom gradient is `_pointwise_bwd`'s.
  """
  return jnp.einsum("btfc,co->btfo", x, kernel)


def _pointwise_fwd(x, kernel):
  """Keeps the input and the kernel, what both gradients are products of."""
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_bwd(res, g):
  """dx and the kernel gradient are both matmuls; the kernel gradient contracts over every
  position ([B*T*F, C]^T x [B*T*F, O]), which jaxlib 0.10's XLA:CPU runs faster as a dot than
  as the fused multiply-reduce this used to be, with or without the flag of
  `sed_jax.xla_cpu_flags` (docs/benchmarks.md, issue 25)."""
  x, kernel = res
  c, o = kernel.shape
  dx = jnp.einsum("btfo,co->btfc", g, kernel)
  dk = jnp.einsum("nc,no->co", x.reshape(-1, c), g.reshape(-1, o),
                  preferred_element_type=jnp.float32)
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


# Which dense convolutions the CPU path turns into patches: those of few input channels (the
# first conv sees one; kh * kw * C_in up to IM2COL_MAX_DEPTH), where the patches are small and
# their matmul beats XLA's convolution either way; and, only without the flag of
# `sed_jax.xla_cpu_flags`, those of at least IM2COL_MIN_OUT output channels, where XLA's
# default convolution is the slower one (benchmarks/conv_paths.py, results/conv_paths.json).
IM2COL_MAX_DEPTH = 9
IM2COL_MIN_OUT = 32


def uses_im2col(kernel_shape) -> bool:
  """Whether the CPU path computes a dense conv of HWIO `kernel_shape` from patches: always
  for few input channels; for many output channels only without the flag of
  `sed_jax.xla_cpu_flags`, under which XLA's own convolution is faster for those."""
  kh, kw, cin, cout = kernel_shape
  if kh * kw * cin <= IM2COL_MAX_DEPTH:
    return True
  return cout >= IM2COL_MIN_OUT and not xla_cpu_flags.fusions_set()


def _cpu_conv(x: Array, kernel: Array, feature_group_count: int) -> Array:
  """The CPU path of a stride-1 'SAME' NHWC convolution: 1x1 convs are matmuls, depthwise
  convs shifted sums, dense convs of few input channels (the stems) im2col matmuls. The other
  dense convs are XLA's own under the flag of `sed_jax.xla_cpu_flags` (set by default: then
  XLA's convolution is the fastest path for them); without it, those of many output channels
  are im2col matmuls too (`uses_im2col`)."""
  kh, kw, cin, cout = kernel.shape
  if feature_group_count == x.shape[-1] == cout and cin == 1:
    return depthwise_conv(x, kernel[:, :, 0, :])
  if feature_group_count == 1 and kh == kw == 1:
    return pointwise_conv(x, kernel[0, 0])
  if feature_group_count == 1 and uses_im2col(kernel.shape):
    return _im2col_conv(x, kernel)
  return _native_conv(x, kernel, feature_group_count)


def _native_conv(x: Array, kernel: Array, feature_group_count: int) -> Array:
  """`lax.conv_general_dilated`, stride 1, 'SAME', NHWC/HWIO (what the CPU paths replace, kept
  where XLA's own convolution is already the fast one)."""
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


def conv_module(mode: str = "auto") -> Any:
  """The conv module constructor of `mode`: `Conv` (the CPU paths) for "auto", `nn.Conv`
  (`lax.conv_general_dilated`) for "off". Both are `nn.Conv`, so parameters are the same."""
  return Conv if check_mode(mode) == "auto" else nn.Conv


# ---------------------------------------------------------------------------------------------
# Pooling.


def _crop(x: Array, window: tuple[int, int]) -> Array:
  """Drops the frames and bins that fill no whole window (as VALID pooling does), so the
  reshape into windows matches `nn.max_pool` / `nn.avg_pool` on any size."""
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
  """Non-overlapping max pooling of x (sizes multiples of the window). Why a custom gradient:
  XLA:CPU's select-and-scatter is many times slower than `_max_pool_bwd`'s elementwise mask."""
  return _max_and_argmax(x, window)[0]


def _max_pool_fwd(x, window):
  """Keeps only each window's argmax (int8 for windows up to 127 elements), not the input."""
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


def window_pool(x: Array, window: tuple[int, int], kind: str = "max",
                mode: str = "auto") -> Array:
  """Non-overlapping ('VALID', stride = window) max or average pooling of [B, T, F, C].

  The same values and gradients as `nn.max_pool` / `nn.avg_pool` with those arguments, from
  a reshape into windows: on CPU, XLA's gradient of `reduce_window` max (select-and-scatter)
  is many times slower than the elementwise mask used here. Staged out per platform like the
  convolutions under `mode` "auto"; "off" is `nn.max_pool` / `nn.avg_pool` everywhere.
  """
  window = tuple(int(w) for w in window)
  if kind == "avg":
    native = lambda x: nn.avg_pool(x, window, strides=window, padding="VALID")
    fast = lambda x: jnp.mean(_windows(_crop(x, window), window), axis=(2, 4))
  else:
    native = lambda x: nn.max_pool(x, window, strides=window, padding="VALID")
    fast = lambda x: _max_pool(_crop(x, window), window)
  # The scope names the pool in the compiled HLO's metadata (benchmarks/step_profile.py).
  with jax.named_scope(f"{kind}_pool"):
    if check_mode(mode) == "off":
      return native(x)
    return jax.lax.platform_dependent(x, cpu=fast, default=native)


def _shifted_windows(x: Array, size: int, fill: float) -> list[Array]:
  """The size * size shifted views of x [B, T, F, C] padded 'SAME' with `fill`, row-major over
  the window (view k is the window element k of every output position)."""
  lo, hi = _same_pads(size)
  t, f = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), constant_values=fill)
  return [xp[:, i:i + t, j:j + f, :] for i in range(size) for j in range(size)]


def _same_max_and_argmax(x: Array, size: int) -> tuple[Array, Array]:
  """Stride-1 'SAME' window maxima and each window's first maximum (row-major), by a fold over
  the shifted views: one elementwise fusion, no reduce-window."""
  views = _shifted_windows(x, size, -jnp.inf)
  best, index = views[0], jnp.zeros(x.shape, jnp.int8)
  for k, value in enumerate(views[1:], start=1):
    index = jnp.where(value > best, jnp.asarray(k, jnp.int8), index)  # Strict: first wins.
    best = jnp.maximum(best, value)
  return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _same_max_pool(x: Array, size: int) -> Array:
  """Stride-1 'SAME' size x size max pooling (the inception block's pool branch). Why a custom
  gradient: as for `_max_pool`, XLA:CPU's select-and-scatter over overlapping windows is the
  slow part of the step; here each output sends its gradient back through the same shifted
  views, masked by the argmax kept from the forward pass."""
  return _same_max_and_argmax(x, size)[0]


def _same_max_pool_fwd(x, size):
  """Keeps each window's argmax (one int8 per output), not the input."""
  return _same_max_and_argmax(x, size)


def _same_max_pool_bwd(size, index, g):
  """dx at a position is the sum of the gradients of the windows whose first maximum it is:
  window element k of output (t, f) is input (t + i - lo, f + j - lo), so each k adds its
  masked gradient shifted back by its offset (a transposed shifted sum)."""
  lo, hi = _same_pads(size)
  t, f = g.shape[1:3]
  # Output (t, f) reaches input (t', f') = (t + i - lo, f + j - lo); padding g by (hi, lo) puts
  # output t' - i + lo at padded index t' + (lo + hi - i). Padded windows match no k.
  pads = ((0, 0), (hi, lo), (hi, lo), (0, 0))
  gp, ip = jnp.pad(g, pads), jnp.pad(index, pads, constant_values=-1)
  dx = None
  for k in range(size * size):
    i, j = divmod(k, size)
    ti, fj = lo + hi - i, lo + hi - j
    term = jnp.where(ip[:, ti:ti + t, fj:fj + f] == k, gp[:, ti:ti + t, fj:fj + f],
                     jnp.zeros((), g.dtype))
    dx = term if dx is None else dx + term
  return (dx,)


_same_max_pool.defvjp(_same_max_pool_fwd, _same_max_pool_bwd)


def same_max_pool(x: Array, size: int = 3, mode: str = "auto") -> Array:
  """Stride-1 'SAME' size x size max pooling of [B, T, F, C]: `nn.max_pool(x, (size, size),
  strides=(1, 1), padding="SAME")`, values and gradients (the whole gradient of a window to
  its first maximum, as select-and-scatter sends it). Staged per platform like `window_pool`;
  "off" is `nn.max_pool` everywhere."""
  native = lambda x: nn.max_pool(x, (size, size), strides=(1, 1), padding="SAME")
  with jax.named_scope("same_max_pool"):  # As in `window_pool`.
    if check_mode(mode) == "off":
      return native(x)
    return jax.lax.platform_dependent(x, cpu=lambda x: _same_max_pool(x, size), default=native)


# ---------------------------------------------------------------------------------------------
# Batch normalisation.


def _channel_sums(arrays: tuple[Array, ...]) -> tuple[Array, ...]:
  """Per-channel (last axis) float32 sums of each of `arrays` (one shape, at least 2-D), as
  XLA:CPU computes them fastest: one variadic reduction over the axis before the channels,
  which reads every array once and keeps the other axes (XLA parallelises over them), then a
  small sum of what is left.

  Why: a plain `jnp.sum` over every axis but the last is a reduction of millions of elements
  into a few channels, which XLA:CPU splits into partial sums through reduce-window (with a
  square, say, written out in full first); on the front-ends' shapes that ran 3-13x slower
  than this, and summed less accurately (docs/benchmarks.md)."""
  axis = arrays[0].ndim - 2
  arrays = tuple(a.astype(jnp.float32) for a in arrays)
  zeros = tuple(jnp.zeros((), jnp.float32) for _ in arrays)
  partial = jax.lax.reduce(arrays, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)),
                           (axis,))
  return tuple(jnp.sum(p, axis=tuple(range(p.ndim - 1))) for p in partial)


@jax.custom_vjp
def _cpu_moments(x: Array) -> tuple[Array, Array]:
  """E[x] and E[x^2] per channel from one pass of `_channel_sums`. A custom gradient because
  autodiff has no rule for a variadic reduction; the gradient is elementwise."""
  n = x.size // x.shape[-1]
  s1, s2 = _channel_sums((x, jnp.square(x.astype(jnp.float32))))
  return s1 / n, s2 / n


def _cpu_moments_fwd(x):
  """Keeps the input (the gradient of E[x^2] is 2x / n)."""
  return _cpu_moments(x), x


def _cpu_moments_bwd(x, g):
  """d/dx of g1 . E[x] + g2 . E[x^2]: (g1 + 2 x g2) / n, broadcast over the channels."""
  g1, g2 = g
  n = x.size // x.shape[-1]
  return (((g1 + 2.0 * x.astype(jnp.float32) * g2) / n).astype(x.dtype),)


_cpu_moments.defvjp(_cpu_moments_fwd, _cpu_moments_bwd)


def batch_moments(x: Array, mode: str = "auto") -> tuple[Array, Array]:
  """Per-channel float32 E[x] and E[x^2] over every axis but the last: the batch statistics
  BatchNorm normalises with (its variance is E[x^2] - E[x]^2, clipped at 0). On CPU under
  "auto" one pass (`_channel_sums`); the plain means elsewhere and under "off"."""
  def plain(x):
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    return jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)
  if check_mode(mode) == "off":
    return plain(x)
  return tuple(jax.lax.platform_dependent(x, cpu=_cpu_moments, default=plain))


def _normalize_plain(x: Array, mean: Array, var: Array, scale: Array, bias: Array,
                     epsilon: float) -> Array:
  """(x - mean) * scale / sqrt(var + epsilon) + bias over the last axis, in float32: the
  arithmetic of `nn.BatchNorm`, differentiated by autodiff (the "off" mode)."""
  return (x.astype(jnp.float32) - mean) * (scale * jax.lax.rsqrt(var + epsilon)) + bias


def _gradient_sums(g: Array, centred: Array, dots: bool) -> tuple[Array, Array]:
  """Per-channel (last axis) sums of g and of g * centred, float32: the gradients of
  BatchNorm's bias and (up to a factor) scale. With `dots`, on CPU, as two matmuls with a ones
  vector; plain sums elsewhere.

  Why matmuls: XLA:CPU splits a plain sum of millions of elements into reduce-window partial
  sums, which read the gradient at a few GB/s; a matmul reads its operands once at full
  bandwidth. The one-pass reduction of `_channel_sums` would be faster still, but XLA fuses
  the whole chain that makes g (ReLU, pooling, dropout and residual gradients) into it and
  recomputes it there. A matmul needs its operands in memory, so g is computed once. In the
  inception block, whose branch outputs are concatenated, XLA then writes more copies than the
  matmuls save, and its BatchNorms keep plain sums (`dots=False`; docs/benchmarks.md)."""
  def plain(g, centred):
    axes = tuple(range(g.ndim - 1))
    return jnp.sum(g, axes), jnp.sum(g * centred, axes)

  def matmuls(g, centred):
    c = g.shape[-1]
    g2 = g.reshape(-1, c)
    ones = jnp.ones((g2.shape[0],), jnp.float32)
    return ones @ g2, ones @ (g2 * centred.reshape(-1, c))

  if not dots:
    return plain(g, centred)
  return tuple(jax.lax.platform_dependent(g, centred, cpu=matmuls, default=plain))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _normalize(x: Array, mean: Array, var: Array, scale: Array, bias: Array,
               epsilon: float, dot_sums: bool) -> Array:
  """`_normalize_plain` with the leaner gradient of `_normalize_bwd`."""
  return _normalize_plain(x, mean, var, scale, bias, epsilon)


def _normalize_fwd(x, mean, var, scale, bias, epsilon, dot_sums):
  """Keeps the input and the per-channel statistics and scale, not x - mean."""
  return _normalize(x, mean, var, scale, bias, epsilon, dot_sums), (x, mean, var, scale)


def _normalize_bwd(epsilon, dot_sums, res, g):
  """Keeps only the input and per-channel statistics: autodiff would also keep x - mean, one
  more activation-sized buffer written in the forward pass and read back here."""
  x, mean, var, scale = res
  inv = jax.lax.rsqrt(var + epsilon)
  g = g.astype(jnp.float32)
  # d/d(scale * inv) is the second sum.
  dbias, dscale_inv = _gradient_sums(g, x.astype(jnp.float32) - mean, dot_sums)
  dx = (g * (scale * inv)).astype(x.dtype)
  dvar = dscale_inv * scale * (-0.5) * inv ** 3
  return dx, -dbias * scale * inv, dvar, dscale_inv * inv, dbias


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


def normalize(x: Array, mean: Array, var: Array, scale: Array, bias: Array, epsilon: float,
              mode: str = "auto", dot_sums: bool = True) -> Array:
  """BatchNorm's normalisation of x (any dtype) by per-channel float32 statistics and affine
  parameters, in float32. "auto": with `_normalize_bwd`'s gradient, which keeps less for the
  backward pass (on every platform), and sums its parameters' gradients as matmuls on CPU
  where `dot_sums` (`_gradient_sums`); "off": autodiff."""
  if check_mode(mode) == "off":
    return _normalize_plain(x, mean, var, scale, bias, epsilon)
  return _normalize(x, mean, var, scale, bias, epsilon, dot_sums)
