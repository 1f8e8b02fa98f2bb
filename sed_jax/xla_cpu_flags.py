"""The one XLA:CPU flag sed_jax sets, and how the CPU kernels learn whether it is in effect.

Why: with jaxlib 0.10.2's default YNNPACK library-fusion list, XLA:CPU runs dense
convolutions through a slow path. With the list set explicitly (sed_jax sets it empty,
`--xla_cpu_experimental_ynn_fusion_type=`; any value behaved alike, and YNNPACK still runs the
dots: measured, not documented by XLA), the same `lax.conv_general_dilated`, forward and
gradients, runs 2-3x faster on the teachers' 3x3 shapes, faster than our rewrites of it but for
the stems (benchmarks/conv_paths.py; results/conv_paths.json against
results/conv_paths_b811730.json, the default). The flag is read once, when JAX starts its CPU
client, so `sed_jax/__init__.py` sets it at import, before any computation; it only concerns
the CPU backend (GPU and TPU compile as before).

A user who sets the flag in XLA_FLAGS themselves keeps their value; `SED_JAX_XLA_DEFAULTS=1`
leaves XLA_FLAGS alone (jaxlib's own default, to compare or to rule the flag out while chasing
a bug; every explicit value of the flag that was tried behaves like ours, so this is the way
back to the default). If JAX's backends were already started when sed_jax was imported, the
flag is not set (it could no longer take effect); `cpu_kernels` then keeps the rewrites that
pay without it. Either way the numbers agree to float32 rounding: only which XLA:CPU kernels
compute them changes.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = ""  # Set, and empty: what was measured (any explicit value behaved alike).
KEEP_DEFAULTS_ENV = "SED_JAX_XLA_DEFAULTS"


def configure() -> None:
  """Adds `FLAG=VALUE` to XLA_FLAGS unless XLA_FLAGS already names FLAG, KEEP_DEFAULTS_ENV is
  set, or JAX's backends have started (the flag would be ignored, and `fusions_set` would
  misreport it)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG in flags or os.environ.get(KEEP_DEFAULTS_ENV, "") not in ("", "0"):
    return
  jax_bridge = sys.modules.get("jax._src.xla_bridge")
  if jax_bridge is not None and jax_bridge.backends_are_initialized():
    return
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={VALUE}".strip()


def fusions_set() -> bool:
  """Whether XLA_FLAGS sets the YNNPACK fusion list (whatever its value): then XLA:CPU's own
  convolutions are the fast path for dense convs (`cpu_kernels._cpu_conv`)."""
  return FLAG + "=" in os.environ.get("XLA_FLAGS", "")
