"""A JAX function → an ONNX graph of standard operators, by walking its jaxpr.

Why our own converter: jax2onnx does not take our models (flax's positional pooling windows and
the reverse `lax.scan` of the backward GRU fail), and a hand-written graph per architecture would
be one more model definition to keep in step with `models/`. Walking the jaxpr converts every
architecture the Flax code can express, from the same trace `jax.export` uses for IREE.

What it covers: the primitives the CRNNs produce in inference with stock ops
(`model.cpu_kernels=off`): elementwise arithmetic, convolutions (any layout, groups, padding),
window pooling, reductions, dot products, reshapes, and the bidirectional GRU, which is traced
as one `bigru` primitive (`trace_bigru`) and emitted as ONNX's own `GRU` operator (one fused
kernel in onnxruntime instead of T unrolled steps). Anything else is an error naming the
primitive, so an unsupported model fails at export, never at run time on the device.

Everything computed from constants alone (the parameters, BatchNorm's folded scale and shift,
iotas) is evaluated here, once, and stored as an initializer: the graph holds only the work that
depends on the input. `weights` chooses how initializers of two or more dimensions (the conv,
dense and GRU matrices) are stored: float32, float16 (then cast back: half the bytes, float32
arithmetic), or int8 with one scale per output channel (`DequantizeLinear`, weight-only
quantization: a quarter of the bytes; onnxruntime folds the dequantization when it loads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from sed_jax.models import blocks

try:
  import onnx
  from onnx import helper
  from onnx import numpy_helper
  from onnx import TensorProto
except ImportError:  # The export extra is optional; `require_onnx` names it.
  onnx = None

OPSET = 17
WEIGHT_FORMATS = ("float32", "float16", "int8")


def require_onnx() -> None:
  if onnx is None:
    raise ImportError("ONNX export needs the `onnx` package: pip install -e '.[export]'.")


# ---------------------------------------------------------------------------------------------
# The BiGRU as one primitive.

bigru_p = jex_core.Primitive("bigru")


def _bigru_abstract(x, lengths, *weights, features):
  del lengths, weights
  return jax.core.ShapedArray((*x.shape[:2], 2 * features), jnp.float32)


bigru_p.def_abstract_eval(_bigru_abstract)


def trace_bigru(fn: Callable) -> Callable:
  """`fn` with every `blocks.BiGRU` call replaced by the `bigru` primitive.

  `fn(*args, lengths)` must pass `lengths` ([B] int32, valid frames per example, at the start of
  each sequence) as its last argument, the same valid frames as the mask the model gets: ONNX's
  GRU takes lengths, not masks. Only for tracing (the primitive has no implementation).
  """
  def wrapped(*args):
    lengths = args[-1]

    def interceptor(next_fun, f_args, f_kwargs, context):
      if not (isinstance(context.module, blocks.BiGRU) and context.method_name == "__call__"):
        return next_fun(*f_args, **f_kwargs)
      params = context.module.variables["params"]
      weights = [params[d][k] for d in ("forward", "backward")
                 for k in ("input_kernel", "input_bias", "hidden_kernel", "hidden_bias")]
      return bigru_p.bind(f_args[0].astype(jnp.float32), lengths.astype(jnp.int32), *weights,
                          features=context.module.features)

    with nn.intercept_methods(interceptor):
      return fn(*args)

  return wrapped


# ---------------------------------------------------------------------------------------------
# The converter.


class _Graph:
  """Nodes, initializers and the static shape of every value being built."""

  def __init__(self, weights: str):
    if weights not in WEIGHT_FORMATS:
      raise ValueError(f"weights={weights!r}: use one of {', '.join(WEIGHT_FORMATS)}.")
    self.weights = weights
    self.nodes, self.inits = [], []
    self.shape: dict[str, tuple[int, ...]] = {}
    self.const: dict[str, np.ndarray] = {}  # Values known at conversion time.
    self._emitted: set[str] = set()
    self._n = 0

  def name(self, hint: str) -> str:
    self._n += 1
    return f"{hint}_{self._n}"

  def node(self, op: str, inputs: Sequence[str], shape: Sequence[int], **attrs) -> str:
    out = self.name(op.lower())
    self.nodes.append(helper.make_node(op, [self.emit(i) for i in inputs], [out], **attrs))
    self.shape[out] = tuple(shape)
    return out

  def constant(self, value, hint: str = "c") -> str:
    name = self.name(hint)
    self.const[name] = np.asarray(value)
    self.shape[name] = self.const[name].shape
    return name

  def emit(self, name: str) -> str:
    """`name` as a graph value: a known constant becomes an initializer the first time."""
    if name not in self.const or name in self._emitted:
      return name
    self._emitted.add(name)
    value = self.const[name]
    if value.dtype == np.float64:
      value = value.astype(np.float32)
    if value.dtype == np.float32 and value.ndim >= 2 and self.weights != "float32":
      self._stored_weight(name, value)
    else:
      self.inits.append(numpy_helper.from_array(value, name))
    return name

  def _stored_weight(self, name: str, value: np.ndarray) -> None:
    if self.weights == "float16":
      self.inits.append(numpy_helper.from_array(value.astype(np.float16), name + "_f16"))
      self.nodes.append(helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT))
      return
    # int8, symmetric, one scale per slice of the largest axis (the output channels of a conv
    # kernel, the gates of a GRU matrix): `DequantizeLinear` along that axis.
    axis = int(np.argmax(value.shape))
    other = tuple(i for i in range(value.ndim) if i != axis)
    scale = np.maximum(np.abs(value).max(axis=other), 1e-12) / 127.0
    shaped = scale.reshape([-1 if i == axis else 1 for i in range(value.ndim)])
    q = np.clip(np.round(value / shaped), -127, 127).astype(np.int8)
    self.inits += [numpy_helper.from_array(q, name + "_q"),
                   numpy_helper.from_array(scale.astype(np.float32), name + "_scale")]
    self.nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_scale"],
                                       [name], axis=axis))


def to_onnx(fn: Callable, example_args: Sequence[Any], input_names: Sequence[str],
            output_name: str, weights: str = "float32", doc: str = "") -> "onnx.ModelProto":
  """The ONNX model (opset 17) of `fn(*example_args)` with the example's static shapes.

  `fn` returns one float32 array. Inputs keep their dtypes (float32, int32).
  """
  require_onnx()
  closed = jax.make_jaxpr(fn)(*example_args)
  g = _Graph(weights)
  env: dict[Any, str] = {}
  for var, value in zip(closed.jaxpr.constvars, closed.consts):
    env[var] = g.constant(np.asarray(value), "param")
  inputs = []
  for var, name in zip(closed.jaxpr.invars, input_names):
    env[var] = name
    g.shape[name] = tuple(var.aval.shape)
    inputs.append(helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(var.aval.dtype)), var.aval.shape))
  out_var, = closed.jaxpr.outvars
  (out,) = _convert(g, closed.jaxpr, env)
  if out in g.const:
    raise ValueError("the exported function does not depend on its inputs.")
  g.nodes.append(helper.make_node("Identity", [g.emit(out)], [output_name]))
  graph = helper.make_graph(
      g.nodes, "sed_jax", inputs,
      [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_var.aval.shape)],
      initializer=g.inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="sed_jax", doc_string=doc)
  model.ir_version = 8  # The newest IR that onnxruntime releases of the last two years load.
  onnx.checker.check_model(model, full_check=True)
  return model


def _live(jaxpr) -> list[bool]:
  """Which equations the outputs depend on (dead code elimination: the clip head and its
  pooling are traced with the frame outputs, but only the frames are exported)."""
  live_vars = {v for v in jaxpr.outvars if isinstance(v, jex_core.Var)}
  keep = [False] * len(jaxpr.eqns)
  for i in range(len(jaxpr.eqns) - 1, -1, -1):
    eqn = jaxpr.eqns[i]
    if any(o in live_vars for o in eqn.outvars):
      keep[i] = True
      live_vars |= {v for v in eqn.invars if isinstance(v, jex_core.Var)}
  return keep


def _convert(g: _Graph, jaxpr, env: dict) -> list[str]:
  def read(v):
    if isinstance(v, jex_core.Literal):
      return g.constant(np.asarray(v.val, dtype=v.aval.dtype))
    return env[v]

  for eqn, keep in zip(jaxpr.eqns, _live(jaxpr)):
    if not keep:
      continue
    args = [read(v) for v in eqn.invars]
    sub = _inner_jaxpr(eqn)
    if sub is not None:  # jit / custom_jvp / custom_vjp: inline the body.
      jaxpr_in, consts = sub
      inner = {v: g.constant(np.asarray(c), "param") for v, c in zip(jaxpr_in.constvars, consts)}
      inner.update(zip(jaxpr_in.invars, args))
      outs = _convert(g, jaxpr_in, inner)
    elif all(a in g.const for a in args) and eqn.primitive is not bigru_p:
      # Constant folding: evaluate with JAX itself, so it is exact by construction.
      values = eqn.primitive.bind(*[g.const[a] for a in args], **eqn.params)
      values = values if eqn.primitive.multiple_results else [values]
      outs = [g.constant(np.asarray(v)) for v in values]
    else:
      rule = _RULES.get(eqn.primitive.name)
      if rule is None:
        raise NotImplementedError(
            f"ONNX export: the JAX primitive {eqn.primitive.name!r} has no conversion rule "
            f"(sed_jax/deploy/onnx_graph.py). Export with --format=iree, which takes any JAX "
            "function, or add a rule.")
      outs = rule(g, args, eqn)
      outs = outs if isinstance(outs, list) else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _inner_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    if key in eqn.params:
      j = eqn.params[key]
      return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, [])
  return None


# ---------------------------------------------------------------------------------------------
# Conversion rules: (graph, input names, equation) -> output name(s).


def _out_shape(eqn, i=0):
  return tuple(eqn.outvars[i].aval.shape)


def _elementwise(op):
  def rule(g, args, eqn):
    # Inputs may be broadcast lazily (see _broadcast_in_dim): the result has their numpy
    # broadcast shape, expanded where that is still smaller than JAX's.
    out = g.node(op, args, np.broadcast_shapes(*(g.shape[a] for a in args)))
    return _expand(g, out, _out_shape(eqn))
  return rule


def _expand(g, name, shape):
  if g.shape[name] == tuple(shape):
    return name
  return g.node("Expand", [name, g.constant(np.array(shape, np.int64))], shape)


def _broadcast_in_dim(g, args, eqn):
  """A reshape to the target rank; the expansion is left to the consumer's numpy broadcasting
  (every consumer here is elementwise), so a broadcast bias stays one small vector."""
  shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
  src = g.shape[args[0]]
  ranked = [1] * len(shape)
  for d, s in zip(dims, src):
    ranked[d] = s
  x = args[0]
  if tuple(ranked) != src:
    x = g.node("Reshape", [x, g.constant(np.array(ranked, np.int64))], ranked)
  return x


def _reshape(g, args, eqn):
  shape = _out_shape(eqn)
  return g.node("Reshape", [_full(g, args[0], eqn.invars[0]),
                            g.constant(np.array(shape, np.int64))], shape)


def _full(g, name, var):
  """`name` expanded to its JAX shape (where a lazy broadcast left it smaller)."""
  return _expand(g, name, tuple(var.aval.shape))


def _transpose(g, args, eqn):
  perm = [int(p) for p in eqn.params["permutation"]]
  return g.node("Transpose", [_full(g, args[0], eqn.invars[0])], _out_shape(eqn), perm=perm)


def _convert_type(g, args, eqn):
  dtype = np.dtype(eqn.params["new_dtype"])
  if np.dtype(eqn.invars[0].aval.dtype) == dtype:
    return args[0]
  return g.node("Cast", [_full(g, args[0], eqn.invars[0])], _out_shape(eqn),
                to=helper.np_dtype_to_tensor_dtype(dtype))


def _rsqrt(g, args, eqn):
  x = _full(g, args[0], eqn.invars[0])
  return g.node("Reciprocal", [g.node("Sqrt", [x], _out_shape(eqn))], _out_shape(eqn))


def _integer_pow(g, args, eqn):
  y, x = eqn.params["y"], _full(g, args[0], eqn.invars[0])
  if y == 2:
    return g.node("Mul", [x, x], _out_shape(eqn))
  return g.node("Pow", [x, g.constant(np.float32(y))], _out_shape(eqn))


def _select_n(g, args, eqn):
  if len(args) != 3:
    raise NotImplementedError("ONNX export: select_n with more than two cases.")
  pred, on_false, on_true = args
  if np.dtype(eqn.invars[0].aval.dtype) != np.bool_:
    pred = g.node("Cast", [pred], g.shape[pred], to=TensorProto.BOOL)
  return _expand(g, g.node("Where", [pred, on_true, on_false],
                           np.broadcast_shapes(g.shape[pred], g.shape[on_true],
                                               g.shape[on_false])), _out_shape(eqn))


def _reduce(op):
  def rule(g, args, eqn):
    axes = [int(a) for a in eqn.params["axes"]]
    x = _full(g, args[0], eqn.invars[0])
    if op == "ReduceSum":  # Axes are an input from opset 13, an attribute of ReduceMax until 18.
      return g.node(op, [x, g.constant(np.array(axes, np.int64))], _out_shape(eqn), keepdims=0)
    return g.node(op, [x], _out_shape(eqn), axes=axes, keepdims=0)
  return rule


def _concatenate(g, args, eqn):
  args = [_full(g, a, v) for a, v in zip(args, eqn.invars)]
  return g.node("Concat", args, _out_shape(eqn), axis=int(eqn.params["dimension"]))


def _split(g, args, eqn):
  axis, sizes = int(eqn.params["axis"]), np.array(eqn.params["sizes"], np.int64)
  outs = [g.name("split") for _ in sizes]
  g.nodes.append(helper.make_node("Split", [_full(g, args[0], eqn.invars[0]),
                                           g.emit(g.constant(sizes))], outs, axis=axis))
  for o, v in zip(outs, eqn.outvars):
    g.shape[o] = tuple(v.aval.shape)
  return outs


def _conv(g, args, eqn):
  p = eqn.params
  if p["batch_group_count"] != 1 or any(d != 1 for d in p["lhs_dilation"]):
    raise NotImplementedError("ONNX export: transposed or batch-grouped convolutions.")
  dn = p["dimension_numbers"]
  # A dimension-numbers spec lists the axes in [N, C, spatial...] order: it is the permutation
  # to ONNX's layout (and its argsort the way back).
  lhs_perm, out_perm = list(dn.lhs_spec), list(dn.out_spec)
  x = _full(g, args[0], eqn.invars[0])
  in_shape = g.shape[x]
  x = g.node("Transpose", [x], [in_shape[i] for i in lhs_perm], perm=lhs_perm)
  w = args[1]
  w_shape = g.shape[w]
  rhs_perm = list(dn.rhs_spec)  # [O, I, spatial...]
  w_oihw = [w_shape[i] for i in rhs_perm]
  if w in g.const:
    w = g.constant(np.transpose(g.const[w], rhs_perm), "conv_w")
  else:
    w = g.node("Transpose", [w], w_oihw, perm=rhs_perm)
  out_shape = _out_shape(eqn)
  nc_shape = [out_shape[i] for i in out_perm]
  pads = [int(lo) for lo, _ in p["padding"]] + [int(hi) for _, hi in p["padding"]]
  y = g.node("Conv", [x, w], nc_shape, strides=[int(s) for s in p["window_strides"]],
             pads=pads, dilations=[int(d) for d in p["rhs_dilation"]],
             group=int(p["feature_group_count"]), kernel_shape=w_oihw[2:])
  return g.node("Transpose", [y], out_shape, perm=[int(i) for i in np.argsort(out_perm)])


def _window_pool(kind):
  """reduce_window max/sum over the non-batch, non-channel axes → MaxPool / AveragePool."""

  def rule(g, args, eqn):
    p = eqn.params
    dims, strides = list(p["window_dimensions"]), list(p["window_strides"])
    rank = len(dims)
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
      raise NotImplementedError("ONNX export: dilated window pooling.")
    pooled = [i for i in range(rank) if dims[i] != 1 or strides[i] != 1]
    if 0 in pooled or len(pooled) > rank - 2:
      raise NotImplementedError(f"ONNX export: window pooling over axes {pooled} of {rank}.")
    # [N, C, spatial] with the pooled axes last: batch 0, one untouched axis as the channels.
    channel = next(i for i in range(rank - 1, 0, -1) if i not in pooled)
    rest = [i for i in range(1, rank) if i != channel and i not in pooled]
    perm = [0, *rest, channel, *pooled] if rest else [0, channel, *pooled]
    x = _full(g, args[0], eqn.invars[0])
    shape = g.shape[x]
    x = g.node("Transpose", [x], [shape[i] for i in perm], perm=perm)
    if rest:  # Fold the extra untouched axes into the batch.
      merged = [int(np.prod([shape[i] for i in [0, *rest]])), shape[channel],
                *[shape[i] for i in pooled]]
      x = g.node("Reshape", [x, g.constant(np.array(merged, np.int64))], merged)
    pads = [int(lo) for i, (lo, _) in enumerate(p["padding"]) if i in pooled] + [
        int(hi) for i, (_, hi) in enumerate(p["padding"]) if i in pooled]
    if kind == "sum" and any(pads):
      raise NotImplementedError("ONNX export: padded sum pooling.")
    out_full = _out_shape(eqn)
    pooled_shape = [g.shape[x][0], g.shape[x][1], *[out_full[i] for i in pooled]]
    op = "MaxPool" if kind == "max" else "AveragePool"
    y = g.node(op, [x], pooled_shape, kernel_shape=[dims[i] for i in pooled],
               strides=[strides[i] for i in pooled], pads=pads)
    if kind == "sum":
      y = g.node("Mul", [y, g.constant(np.float32(np.prod([dims[i] for i in pooled])))],
                 pooled_shape)
    if rest:
      unmerged = [shape[0], *[shape[i] for i in rest], shape[channel],
                  *[out_full[i] for i in pooled]]
      y = g.node("Reshape", [y, g.constant(np.array(unmerged, np.int64))], unmerged)
    return g.node("Transpose", [y], out_full, perm=[int(i) for i in np.argsort(perm)])

  return rule


def _dot_general(g, args, eqn):
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = (_full(g, a, v) for a, v in zip(args, eqn.invars))
  lr, rr = len(g.shape[lhs]), len(g.shape[rhs])
  if not lb and not rb and list(lc) == [lr - 1] and list(rc) == [0] and rr == 2:
    return g.node("MatMul", [lhs, rhs], _out_shape(eqn))
  letters = iter("abcdefghijklmnopqrstuvwxyz")
  lsub = [next(letters) for _ in range(lr)]
  rsub = [next(letters) for _ in range(rr)]
  for a, b in zip(list(lc) + list(lb), list(rc) + list(rb)):
    rsub[b] = lsub[a]
  out = ([lsub[i] for i in lb] + [lsub[i] for i in range(lr) if i not in lc and i not in lb]
         + [rsub[i] for i in range(rr) if i not in rc and i not in rb])
  return g.node("Einsum", [lhs, rhs], _out_shape(eqn),
                equation=f"{''.join(lsub)},{''.join(rsub)}->{''.join(out)}")


def _bigru(g, args, eqn):
  """ONNX `GRU` (bidirectional, linear_before_reset = 1: the reset gate scales W_h h + b_h, as
  our GRU does). Gates are stored r, z, n; ONNX wants z, r, h."""
  x, lengths, *w = args
  h = eqn.params["features"]
  if not all(a in g.const for a in w):
    raise NotImplementedError("ONNX export: GRU weights must be constants.")
  w = [g.const[a].astype(np.float32) for a in w]

  def zrn(m):  # [..., 3H] in r, z, n order → z, r, n.
    return np.concatenate([m[..., h:2 * h], m[..., :h], m[..., 2 * h:]], axis=-1)

  dirs = [w[:4], w[4:]]
  big_w = np.stack([zrn(wx).T for wx, _, _, _ in dirs])  # [2, 3H, D]
  big_r = np.stack([zrn(wh).T for _, _, wh, _ in dirs])  # [2, 3H, H]
  big_b = np.stack([np.concatenate([zrn(bx), zrn(bh)]) for _, bx, _, bh in dirs])  # [2, 6H]
  b, t, _ = g.shape[x]
  xt = g.node("Transpose", [x], [t, b, g.shape[x][2]], perm=[1, 0, 2])
  y = g.node("GRU", [xt, g.constant(big_w, "gru_w"), g.constant(big_r, "gru_r"),
                     g.constant(big_b, "gru_b"), lengths], [t, 2, b, h],
             hidden_size=h, direction="bidirectional", linear_before_reset=1)
  y = g.node("Transpose", [y], [b, t, 2, h], perm=[2, 0, 1, 3])
  return g.node("Reshape", [y, g.constant(np.array([b, t, 2 * h], np.int64))], [b, t, 2 * h])


def _identity(g, args, eqn):
  return args[0]


_RULES: dict[str, Callable] = {
    "add": _elementwise("Add"), "sub": _elementwise("Sub"), "mul": _elementwise("Mul"),
    "div": _elementwise("Div"), "max": _elementwise("Max"), "min": _elementwise("Min"),
    "pow": _elementwise("Pow"), "lt": _elementwise("Less"), "gt": _elementwise("Greater"),
    "le": _elementwise("LessOrEqual"), "ge": _elementwise("GreaterOrEqual"),
    "eq": _elementwise("Equal"), "and": _elementwise("And"), "or": _elementwise("Or"),
    "neg": _elementwise("Neg"), "exp": _elementwise("Exp"), "log": _elementwise("Log"),
    "tanh": _elementwise("Tanh"), "logistic": _elementwise("Sigmoid"), "abs": _elementwise("Abs"),
    "sqrt": _elementwise("Sqrt"), "not": _elementwise("Not"), "erf": _elementwise("Erf"),
    "rsqrt": _rsqrt, "integer_pow": _integer_pow, "select_n": _select_n,
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _reshape,
    "expand_dims": _reshape, "transpose": _transpose,
    "convert_element_type": _convert_type, "reduce_sum": _reduce("ReduceSum"),
    "reduce_max": _reduce("ReduceMax"), "concatenate": _concatenate, "split": _split,
    "conv_general_dilated": _conv, "reduce_window_max": _window_pool("max"),
    "reduce_window_sum": _window_pool("sum"), "dot_general": _dot_general,
    "stop_gradient": _identity, "copy": _identity, "copy_p": _identity, "bigru": _bigru,
}
