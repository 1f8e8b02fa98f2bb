"""The step profile's reading of XLA:CPU traces (`benchmarks/xla_trace.py`): asynchronous
thunks last until their `end:` event, concurrent thunks share the instants they overlap, a
loop is charged only for what its body leaves, and the times add up to the traced wall time."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import xla_trace  # pylint: disable=g-import-not-at-top,wrong-import-position


def _start(op, ts, module="jit_train_steps"):
  return {"ph": "X", "ts": ts, "dur": 0.5, "name": op,
          "args": {"hlo_op": op, "hlo_module": module}}


def _end(op, ts):
  return {"ph": "X", "ts": ts, "dur": 0.0, "name": f"end: {op}", "args": {}}


EVENTS = [
    # An asynchronous dot: launched at 0, done at 40 (its own event lasts 0.5 µs).
    _start("dot.1", 0), _end("dot.1", 40),
    # A fusion beside it on the other core, 20 to 60.
    _start("fusion.2", 20), _end("fusion.2", 60),
    # A loop from 60 to 100 whose body runs 70 to 90 (twice 10 µs).
    _start("while.3", 60), _start("add.4", 70), _end("add.4", 80),
    _start("add.4", 80), _end("add.4", 90), _end("while.3", 100),
    # Another compiled function's thunk and ends: not ours.
    _start("dot.1", 5, module="jit_other"), _end("copy.9", 50),
]


def test_async_thunks_overlap_and_loops_add_up_to_the_wall_time():
  intervals = xla_trace.thunk_intervals(EVENTS)
  assert sorted(intervals) == [(0, 40, "dot.1"), (20, 60, "fusion.2"), (60, 100, "while.3"),
                               (70, 80, "add.4"), (80, 90, "add.4")]
  times = {op: round(t * 1e6, 6) for op, t in xla_trace.wall_by_op(intervals).items()}
  # 0-20 dot alone, 20-40 shared, 40-60 fusion alone; the loop keeps 60-70 and 90-100.
  assert times == {"dot.1": 30.0, "fusion.2": 30.0, "while.3": 20.0, "add.4": 20.0}
  assert sum(times.values()) == 100.0


def test_a_thunk_without_its_end_event_is_an_error():
  with pytest.raises(ValueError, match="dot.1"):
    xla_trace.thunk_intervals([_start("dot.1", 0), _end("dot.1", -5)])


def test_reads_the_trace_file_jax_writes(tmp_path):
  path = tmp_path / "plugins" / "profile" / "run" / "perfetto_trace.json.gz"
  path.parent.mkdir(parents=True)
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": EVENTS}, f)
  assert xla_trace.thunk_times(str(tmp_path))["dot.1"] == pytest.approx(30e-6)


HLO = """
  %square_fusion = f32[8,4]{1,0} fusion(%p0), kind=kLoop, metadata={op_name="jit(step)/stem/BatchNorm_0/square" source_file="blocks.py"}
  %wrapped_reduce-window.1 = f32[2,4]{1,0} fusion(%square_fusion, %constant.2), kind=kLoop, calls=%c
  %copy.3 = f32[2,4]{1,0} copy(%wrapped_reduce-window.1)
  %wrapped_reduce-window.4 = f32[2,4]{1,0} fusion(%p0), kind=kLoop, calls=%c
  ROOT %dot.5 = f32[8,8]{1,0} dot(%p0, %p0), metadata={op_name="jit(step)/stem/Conv_0/dot_general"}
  %mask_fusion = f32[8,4]{1,0} fusion(%p0), kind=kLoop, metadata={op_name="jit(step)/Dropout_0/mul"}
  %convolution.6 = f32[8,4]{1,0} convolution(%mask_fusion, %p1), window={size=3}
"""
RULES = (("dropout", re.compile("Dropout")), ("BatchNorm", re.compile("BatchNorm")),
         ("pooling", re.compile("reduce.window")), ("convolutions", re.compile("[Cc]onv")))


def test_ops_without_metadata_take_their_operands_part():
  parts = xla_trace.instruction_parts(HLO, RULES)
  assert parts["square_fusion"] == "BatchNorm"
  # XLA's partial sums of a BatchNorm statistic, and a copy of them: BatchNorm, not pooling.
  assert parts["wrapped_reduce-window.1"] == parts["copy.3"] == "BatchNorm"
  # Nothing to inherit from (a parameter): the op's own name decides.
  assert parts["wrapped_reduce-window.4"] == "pooling"
  assert parts["dot.5"] == "convolutions"
  # An op XLA made without metadata whose own name a rule claims keeps it.
  assert parts["convolution.6"] == "convolutions"
