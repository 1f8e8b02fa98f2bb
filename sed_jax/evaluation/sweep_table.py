"""Finished training runs as one table (seeds averaged) and one plot of a metric against a
setting: the library behind `python -m sed_jax.collect`.

For large-batch ablations (`configs/student.py:get_sweep("large_batch")`, launched by
launch/tpu_vm.sh sweep): each run folder holds its config.json and test_metrics.json. Runs that
differ only by seed are one row, mean ± sample std. An unfinished run (no test_metrics.json) is
listed as such, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from etils import epath

from sed_jax.evaluation import report

METRIC_COLUMNS = (("event_f1_macro", "event F1"), ("segment_f1_macro", "segment F1"),
                  ("segment_er", "segment ER"), ("psds1", "PSDS1"), ("psds2", "PSDS2"))
# (column, path in config.json) of what tells the runs of a sweep apart.
SETTINGS = (("batch_size", "batch_size"), ("total_steps", "total_steps"),
            ("optim", "optim.name"), ("lr", "optim.lr"), ("lr_scaling", "optim.lr_scaling"),
            ("warmup_examples", "optim.warmup_examples"), ("arch", "model.arch"),
            ("kd_loss", "kd.loss"), ("alpha", "kd.alpha"), ("temperature", "kd.temperature"))


def _get(config: dict, dotted: str):
  for part in dotted.split("."):
    if not isinstance(config, dict) or part not in config:
      return None
    config = config[part]
  return config


def read_run(run_dir: epath.PathLike) -> dict[str, Any]:
  """A run's settings, seed and test metrics (None while unfinished)."""
  run = epath.Path(run_dir)
  path = run / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{run} holds no run (no config.json); pass training run folders.")
  config = json.loads(path.read_text())
  done = run / "test_metrics.json"
  return dict(run=str(run), seed=config.get("seed"),
              settings={k: _get(config, p) for k, p in SETTINGS},
              metrics=json.loads(done.read_text()) if done.is_file() else None)


def group(runs: Sequence[dict]) -> list[dict]:
  """Finished runs grouped by settings (seeds together), sorted by them; unfinished apart."""
  groups: dict[str, dict] = {}
  for r in runs:
    if r["metrics"] is None:
      continue
    key = json.dumps(r["settings"], sort_keys=True)
    g = groups.setdefault(key, dict(settings=r["settings"], runs=[], metrics=[]))
    g["runs"].append(r["run"])
    g["metrics"].append(r["metrics"])
  order = lambda g: [(v is None, v if isinstance(v, (int, float)) else str(v))
                     for v in g["settings"].values()]
  return sorted(groups.values(), key=order)


def markdown(runs: Sequence[dict]) -> str:
  groups = group(runs)
  varying = [k for k, _ in SETTINGS
             if len({json.dumps(g["settings"][k]) for g in groups}) > 1] or ["batch_size"]
  lines = ["| " + " | ".join(varying) + " | seeds | " +
           " | ".join(t for _, t in METRIC_COLUMNS) + " |",
           "|" + "---:|" * (len(varying) + 1 + len(METRIC_COLUMNS))]
  for g in groups:
    lines.append("| " + " | ".join(str(g["settings"][k]) for k in varying) +
                 f" | {len(g['runs'])} | " +
                 " | ".join(report.mean_std([m.get(k) for m in g["metrics"]])
                            for k, _ in METRIC_COLUMNS) + " |")
  unfinished = [r["run"] for r in runs if r["metrics"] is None]
  if unfinished:
    lines += ["", f"Unfinished (no test_metrics.json): {', '.join(unfinished)}"]
  return "\n".join(lines) + "\n"


def plot(runs: Sequence[dict], metric: str, x: str, out: epath.PathLike) -> epath.Path:
  """`metric` against setting `x` (mean ± std over seeds)."""
  groups = [g for g in group(runs) if isinstance(g["settings"][x], (int, float))]
  if not groups:
    raise ValueError(f"No finished run has a numeric {x!r}; nothing to plot.")
  vals = [[m[metric] for m in g["metrics"] if m.get(metric) is not None] for g in groups]
  return report.plot_sweep([g["settings"][x] for g in groups], vals, x, f"test {metric}", out,
                           log2_x=x == "batch_size")
