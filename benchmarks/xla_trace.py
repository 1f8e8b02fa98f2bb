"""Reading XLA:CPU's own trace of a compiled function: the wall time of each HLO op.

`jax.profiler.trace(dir, create_perfetto_trace=True)` writes a perfetto trace in which each
thunk the CPU runtime executes (a fusion, a dot, a convolution, a copy) has an event carrying
`hlo_op` and `hlo_module`. That event is not the thunk's duration: for the asynchronous thunks
(YNNPACK's dots, XLA's convolutions under `sed_jax.xla_cpu_flags`) it only launches the work,
which ends at a separate `end: <op>` event. And the runtime runs thunks side by side on the
cores. So a thunk here lasts from its event to its `end:` event, and each instant is split
evenly between the thunks running then: the times add up to the wall time of the traced
executions. `instruction_parts` maps each op to a part of the model by the metadata of the
compiled HLO (used by `step_profile.py`; tests/benchmarks/test_xla_trace.py).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=(.*)$")
_OPERANDS = re.compile(r"[\w\-]+\(([^)]*)\)")  # The first `opcode(%a, %b, ...)` of an instruction.


def instruction_parts(hlo_text: str, rules) -> dict[str, str]:
  """HLO instruction name → part, from each instruction's op_name and source_file: the first
  of `rules` ((part, compiled regex), ...) whose pattern matches "op_name source_file name";
  "other" if none does.

  Instructions XLA made without metadata go by their own name when a rule claims it (a
  `convolution.8`); XLA's single-op wrappers (`wrapped_reduce-window`: the partial sums into
  which it splits a large reduction) and the unclaimed ones (a copy) take the part of their
  first operand that has one (a BatchNorm statistic's partial sums are BatchNorm); failing
  that, their own name decides."""
  meta, operands = {}, {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    text = m.group(2)  # The instruction's text; its metadata={...}, when it has one.
    op = re.search(r'op_name="([^"]*)"', text)
    src = re.search(r'source_file="([^"]*)"', text)
    meta[m.group(1)] = f"{op.group(1)} {src.group(1) if src else ''}" if op else None
    args = _OPERANDS.search(text)
    operands[m.group(1)] = re.findall(r"%([\w.\-]+)", args.group(1)) if args else []

  def rule(key: str) -> str:
    return next((part for part, rx in rules if rx.search(key)), "other")

  out: dict[str, str] = {}

  def part(name: str, depth: int = 0) -> str:
    if name not in out:
      if meta.get(name):
        out[name] = rule(f"{meta[name]} {name}")
      elif not name.startswith("wrapped_") and rule(name) != "other":
        out[name] = rule(name)  # A `convolution.8` XLA made from a conv's gradient, say.
      else:
        inherited = (part(o, depth + 1) for o in operands.get(name, ()) if depth < 16
                     and (meta.get(o) or operands.get(o)))
        out[name] = next((p for p in inherited if p != "other"), None) or rule(name)
    return out[name]

  for name in meta:
    part(name)
  return out


_CONTAINERS = ("while", "conditional", "call")


def thunk_intervals(events: list[dict], module: str = "jit_train_steps") -> list[tuple]:
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


def thunk_times(trace_dir: str, module: str = "jit_train_steps") -> dict[str, float]:
  """Wall seconds of each HLO op of `module` in the perfetto trace under `trace_dir`."""
  (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
  return wall_by_op(thunk_intervals(json.load(gzip.open(path))["traceEvents"], module))
