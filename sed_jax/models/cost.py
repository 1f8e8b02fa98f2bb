"""What a model costs: parameters and FLOPs per input, and a markdown table of them
(`python -m sed_jax.model_cost` prints it).

How FLOPs are counted: XLA's cost analysis of the compiled inference function
(`jax.jit(apply).lower(...).compile().cost_analysis()["flops"]`, batch 1, eval mode; a
multiply-add is 2 FLOPs, elementwise ops count too, transcendentals such as tanh do not). XLA
counts the body of a loop once, not once per iteration, so a GRU's `lax.scan` over T frames
would count as a single time step. `scan_aware_flops` corrects this: it finds every scan in the
program's jaxpr and adds (length - 1) x the XLA count of that scan's body compiled on its own
(recursively, should a body hold scans itself). Unrolling the scan instead is not exact either:
XLA's count of a fully unrolled scan grows with T^2 (it charges the stacking of each step's
output against the whole [T, ...] buffer), about 45% too much on the GRU part at T = 125.
Parameters and shapes are abstract (`jax.eval_shape`, `ShapeDtypeStruct`): nothing is
initialised or run.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np

from sed_jax.models import crnn

DEFAULT_ARCHS = (*crnn.TEACHER_ARCHS, "student")


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(p.shape, dtype=np.int64) for p in jax.tree.leaves(params)))


def abstract_variables(model, input_shape: Sequence[int]) -> Any:
  """The model's variables as ShapeDtypeStructs (traces `init`, compiles nothing)."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros(input_shape, jnp.float32)))


def xla_flops(fn, *args) -> float:
  """FLOPs of `jax.jit(fn)(*args)` according to XLA's cost analysis of the compiled program
  (each loop body counted once). `args` may be arrays or ShapeDtypeStructs.

  `cost_analysis()` returns a dict in recent jax versions and a one-element list of dicts in
  older ones; both are accepted.
  """
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))  # Absent when a program has no arithmetic.


def _scans(jaxpr) -> list[tuple[int, Any]]:
  """(length, body ClosedJaxpr) of the scans in `jaxpr`, looking through calls such as pjit but
  not into scan bodies (`_closed_flops` recurses into those itself)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      if eqn.params["unroll"] != 1:
        raise ValueError("FLOP counting assumes scans with unroll=1 (XLA then counts exactly "
                         f"one step per loop body); got unroll={eqn.params['unroll']}")
      found.append((int(eqn.params["length"]), eqn.params["jaxpr"]))
    else:
      for sub in jex_core.jaxprs_in_params(eqn.params):
        found += _scans(sub)
  return found


def _closed_flops(closed) -> float:
  """Per-iteration-correct FLOPs of a ClosedJaxpr: XLA's count of it, plus for each scan in it
  `length x (corrected body) - (body as XLA counted it, once)`."""
  args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
  total = xla_flops(jex_core.jaxpr_as_fun(closed), *args)
  for length, body in _scans(closed.jaxpr):
    once = xla_flops(jex_core.jaxpr_as_fun(body),
                     *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in body.in_avals])
    total += length * _closed_flops(body) - once
  return total


def scan_aware_flops(fn, *args) -> float:
  """FLOPs of `fn(*args)` with every `lax.scan` counted once per iteration (module docstring)."""
  return _closed_flops(jax.make_jaxpr(fn)(*args))


def model_flops(model, variables: Any, input_shape: Sequence[int]) -> float:
  """Inference FLOPs of `model` on one input of `input_shape` (see the module docstring)."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  return scan_aware_flops(lambda v, x: model.apply(v, x, train=False), variables, x)


def cost_table(archs: Sequence[str] = DEFAULT_ARCHS, num_classes: int = 10,
              input_shape: Sequence[int] = (1, 500, 64),
              overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
  """One row per arch: params, FLOPs per input, and both as ratios to the mean teacher.

  `overrides` maps an arch to `make_model` overrides (e.g. smaller widths). Teachers are the
  archs in `crnn.TEACHER_ARCHS`; without any, the ratios are to the mean of all rows.
  """
  overrides = overrides or {}
  rows = []
  for arch in archs:
    model = crnn.make_model(arch, num_classes, **{**overrides.get(arch, {}), "gru_unroll": 1})
    variables = abstract_variables(model, input_shape)
    rows.append(dict(arch=arch, role="teacher" if arch in crnn.TEACHER_ARCHS else "student",
                     params=count_params(variables["params"]),
                     flops=model_flops(model, variables, input_shape)))
  ref = [r for r in rows if r["role"] == "teacher"] or rows
  mean_params = float(np.mean([r["params"] for r in ref]))
  mean_flops = float(np.mean([r["flops"] for r in ref]))
  for r in rows:
    r["params_compression"] = mean_params / r["params"]
    r["flops_compression"] = mean_flops / r["flops"]
  return rows


def markdown_table(rows: Sequence[dict[str, Any]], input_shape: Sequence[int] = (1, 500, 64)
                   ) -> str:
  """The rows of `cost_table` as a markdown table."""
  shape = "x".join(str(d) for d in input_shape)
  lines = [f"| model | role | parameters | GFLOPs per input [{shape}] | mean teacher / model "
           "(params) | mean teacher / model (FLOPs) |",
           "|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['arch']} | {r['role']} | {r['params']:,} | {r['flops'] / 1e9:.3f} | "
                 f"{r['params_compression']:.1f}x | {r['flops_compression']:.1f}x |")
  return "\n".join(lines)
