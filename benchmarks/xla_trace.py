"""Reading XLA:CPU's own trace of a compiled function: the wall time of each HLO op.

`jax.profiler.trace(dir, create_perfetto_trace=True)` writes a perfetto trace in which each
thunk the CPU runtime executes (a fusion, a dot, a convolution, a copy) has an event carrying
`hlo_op` and `hlo_module`. That event is not the thunk's duration: for the asynchronous thunks
(YNNPACK's dots, XLA's convolutions under `sed_jax.xla_cpu_flags`) it only launches the work,
which ends at a separate `end: <op>` event. And the runtime runs thunks side by side on the
cores. So a thunk here lasts from its event to its `end:` event, and each instant is split
evenly between the thunks running then: the times add up to the wall time of the traced
executions (used by `step_profile.py`; tests/benchmarks/test_xla_trace.py).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json

_CONTAINERS = ("while", "conditional", "call")


def thunk_intervals(events: list[dict], module: str = "jit_train_step") -> list[tuple]:
  """(start µs, end µs, op) of each execution of `module`'s thunks in a perfetto trace.

  A thunk's event carries `hlo_op` and `hlo_module`; its completion is a separate `end: <op>`
  event (without the module), the first one at or after the start that no earlier start of
  the same op took."""
  starts, ends = collections.defaultdict(list), collections.defaultdict(list)
  for e in events:
    if e.get("ph") != "X":
      continue
    args = e.get("args") or {}
    if args.get("hlo_module") == module and "hlo_op" in args:
      starts[args["hlo_op"]].append(e["ts"])
    elif e["name"].startswith("end: "):
      ends[e["name"][len("end: "):]].append(e["ts"] + e["dur"])
  out = []
  for op, op_starts in starts.items():
    op_ends, i = sorted(ends.get(op, ())), 0
    for start in sorted(op_starts):
      while i < len(op_ends) and op_ends[i] < start:
        i += 1
      if i == len(op_ends):
        raise ValueError(f"trace: thunk {op!r} started at {start} µs has no `end: {op}` event; "
                         "this XLA's trace format is not the one this script reads")
      out.append((start, op_ends[i], op))
      i += 1
  return out


def wall_by_op(intervals: list[tuple]) -> dict[str, float]:
  """Seconds of wall time per op: each instant split evenly between the innermost thunks
  running then (a container op only gets the instants none of its body's thunks covers)."""
  points = sorted([(s, 1, op) for s, _, op in intervals] + [(t, -1, op) for _, t, op in intervals])
  running: collections.Counter = collections.Counter()
  out: dict[str, float] = collections.defaultdict(float)
  last = None
  for ts, delta, op in points:
    if running and last is not None and ts > last:
      leaves = [o for o in running if o.split(".")[0] not in _CONTAINERS] or list(running)
      for o in leaves:
        out[o] += (ts - last) / 1e6 / len(leaves)
    last = ts
    running[op] += delta
    if running[op] == 0:
      del running[op]
  return out


def thunk_times(trace_dir: str, module: str = "jit_train_step") -> dict[str, float]:
  """Wall seconds of each HLO op of `module` in the perfetto trace under `trace_dir`."""
  (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
  return wall_by_op(thunk_intervals(json.load(gzip.open(path))["traceEvents"], module))
