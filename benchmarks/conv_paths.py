r"""Which XLA:CPU path is fastest for each dense 3x3 convolution of our front-ends, in one run.

  python benchmarks/conv_paths.py [--repeats=5]

For each shape [B, T, F, C_in] -> C_out (the 3x3 convs of the teachers at their default size
and of the CPU configs, batch 16), times the forward pass and both gradients, jit-compiled, of:
- native: `lax.conv_general_dilated` (XLA's own convolution);
- im2col: the patches [B, T, F, 9 C_in] times the kernel as one matmul, with the CPU path's
  custom gradient (`cpu_kernels._im2col_conv`).
Prints a table and which path `cpu_kernels._cpu_conv` takes for the shape
(`cpu_kernels.uses_im2col`), and writes benchmarks/results/conv_paths.json. The last
line, `result: conv_paths_chosen_over_native <x> x`, is the geometric mean over the shapes of
native time / the chosen path's time (> 1: the rule pays).

Both paths are measured under this process's XLA flags: by default with the YNNPACK fusion
list that `sed_jax` sets at import (`sed_jax/xla_cpu_flags.py`); `SED_JAX_XLA_DEFAULTS=1 python
benchmarks/conv_paths.py` measures them under jaxlib's default instead. `results/conv_paths_b811730.json` is the run that set
`IM2COL_MIN_OUT`, before that flag (and before the pointwise kernel gradient became a dot).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from sed_jax import xla_cpu_flags
from sed_jax.models import cpu_kernels

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per path and shape (best kept).")

RESULTS = Path(__file__).parent / "results" / "conv_paths.json"
# (B, T, F, C_in, C_out): first stages at full resolution down to the narrow late stages.
SHAPES = ((16, 500, 64, 1, 16), (16, 500, 64, 8, 16), (16, 500, 64, 16, 16), (16, 500, 64, 16, 32),
          (16, 250, 32, 16, 16), (16, 250, 32, 16, 64), (16, 250, 32, 32, 32),
          (16, 250, 32, 32, 64), (16, 250, 32, 64, 64), (16, 125, 16, 64, 128),
          (16, 125, 8, 128, 256), (16, 125, 16, 256, 256))


def _best_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def _fwd_bwd(conv):
  return jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  paths = {"native": _fwd_bwd(lambda x, k: cpu_kernels._native_conv(x, k, 1)),
           "im2col": _fwd_bwd(cpu_kernels._im2col_conv)}
  rows = []
  for b, t, f, cin, cout in SHAPES:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, t, f, cin), dtype=np.float32))
    k = jnp.asarray(0.1 * rng.standard_normal((3, 3, cin, cout), dtype=np.float32))
    flops = 3 * 2 * b * t * f * 9 * cin * cout  # Forward, and two gradients of its size.
    times = {name: _best_time(fn, x, k, repeats=_REPEATS.value) for name, fn in paths.items()}
    chosen = "im2col" if cpu_kernels.uses_im2col((3, 3, cin, cout)) else "native"
    rows.append(dict(shape=[b, t, f, cin, cout], seconds=times, chosen=chosen,
                     gflops={n: flops / s / 1e9 for n, s in times.items()}))
    print(f"{b}x{t}x{f}, {cin:>3} -> {cout:>3}: " + ", ".join(
        f"{n} {1e3 * s:.0f} ms ({flops / s / 1e9:.0f} GFLOP/s)" for n, s in times.items()) +
          f"; chosen {chosen}", flush=True)
  gain = float(np.exp(np.mean([np.log(r["seconds"]["native"] / r["seconds"][r["chosen"]])
                               for r in rows])))
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(dict(
      command=" ".join(["python benchmarks/conv_paths.py", *sys.argv[1:]]), jax=jax.__version__,
      xla_flags=os.environ.get("XLA_FLAGS", ""), fusions_set=xla_cpu_flags.fusions_set(),
      im2col_max_depth=cpu_kernels.IM2COL_MAX_DEPTH, im2col_min_out=cpu_kernels.IM2COL_MIN_OUT,
      rows=rows, chosen_over_native=gain), indent=2) + "\n")
  print(f"result: conv_paths_chosen_over_native {gain:.2f} x")


if __name__ == "__main__":
  app.run(main)
