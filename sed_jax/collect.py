r"""Many finished runs in one markdown table and one plot of a metric against the batch size.

  python -m sed_jax.collect runs/sweep_*                       # prints the table
  python -m sed_jax.collect runs/sweep_* --out=reports/large_batch \
      --metric=psds1 --x=batch_size

For large-batch ablations (`configs/student.py:get_sweep("large_batch")`, launched by
launch/tpu_vm.sh sweep): each RUN_DIR is a training run (its config.json and test_metrics.json).
Runs that differ only by seed are one row, mean ± sample std. An unfinished run (no
test_metrics.json) is listed as such, never silently dropped. With --out, writes <out>.md and
<out>.png (the metric against --x, log2 axis for batch sizes, error bars over seeds).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app
from absl import flags
from etils import epath

from sed_jax import io_utils
from sed_jax.evaluation import sweep_table

_OUT = flags.DEFINE_string("out", "", "Write <out>.md and <out>.png (default: print the table).")
_METRIC = flags.DEFINE_enum("metric", "event_f1_macro",
                            [k for k, _ in sweep_table.METRIC_COLUMNS], "The plotted metric.")
_X = flags.DEFINE_enum("x", "batch_size", [k for k, _ in sweep_table.SETTINGS],
                       "The plot's x axis.")


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Pass one or more run folders.")
  try:
    runs = [sweep_table.read_run(r) for r in argv[1:]]
  except FileNotFoundError as e:
    sys.exit(f"collect: {e}")
  table = sweep_table.markdown(runs)
  print(table)
  if _OUT.value:
    out = epath.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    with io_utils.atomic_write(out.with_suffix(".md")) as f:
      f.write(table)
    png = sweep_table.plot(runs, _METRIC.value, _X.value, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')} and {png}")


if __name__ == "__main__":
  app.run(main)
