r"""The paper's table on real recordings: every teacher, their ensemble and the student with and
without distillation, on soundscapes mixed from real UrbanSound8K clips (urbansed_mini).

  python experiments/paper_table.py --config.dataset.root=../shared/data   # workdir runs/paper
  python experiments/paper_table.py --config.dataset.root=<UrbanSound8K download> --seeds=0,1,2,3,4
  python experiments/paper_table.py --config=configs/student.py:dataset=urbansed_mini,smoke \
      --config.dataset.root=../shared/data --workdir=/tmp/paper_smoke --out=/tmp/paper_smoke/table

`--config.dataset.root` is the folder holding UrbanSound8K (the official download unpacked, or
the Scaper-style folds of ../shared/data) beside backgrounds/ (docs/datasets.md).

Two steps, both resumable after a kill and both reusing whatever the workdir holds:
1. the main experiment (`experiment.run`): teachers, teacher cache, the two seed-0 students, the
   ensemble, results.json with every model's parameters and FLOPs;
2. the students over `--seeds` (`ablation.run_ablation`, no grid): no KD, single-teacher KD from
   the best teacher by validation F1, and multi-teacher KD with each of `--strategies`. The
   teachers and their cache from step 1 serve every seed and strategy.

Writes `<out>.md` (the table: students as mean ± sample std over seeds; test split = fold-3
soundscapes, whose recordings no training clip shares) and `<out>.json`. The last lines printed:
  result: kd_gain_event_f1 <best multi-teacher KD − no KD, in points>
  result: kd_minus_best_teacher_event_f1 <best multi-teacher KD − best single teacher, points>
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import app
from absl import flags
from etils import epath
from ml_collections import config_flags

from sed_jax.kd import ablation
from sed_jax.kd import experiment
from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax import preemption
from sed_jax.evaluation import report
from sed_jax.evaluation import tuning

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/student.py:dataset=urbansed_mini", "Student experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/paper", "The experiment's workdir.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Student seeds (>= 3 for the paper).")
_STRATEGIES = flags.DEFINE_list("strategies", ["mean_prob", "mean_logit", "class_weighted"],
                                "Multi-teacher combination strategies, one row each.")
_OUT = flags.DEFINE_string("out", str(Path(__file__).parent / "urbansed_mini" / "paper_table"),
                           "Output path without extension (.md and .json are written).")

# (results.json key, test_metrics.json key, column title)
COLUMNS = (("segment_f1", "segment_f1_macro", "segment F1"), ("segment_er", "segment_er",
           "segment ER"), ("event_f1", "event_f1_macro", "event F1"),
           ("psds1", "psds1", "PSDS1"), ("psds2", "psds2", "PSDS2"))


def table(results: dict, arms: list[dict], config) -> str:
  """Markdown: teachers and ensemble from results.json, students (mean ± std) from the arms."""
  rows = results["models"]
  teachers = [r for r in rows if r["role"] == "teacher"]
  mean_teacher = float(np.mean([t["params"] for t in teachers]))
  student = next(r for r in rows if r["role"] == "student")
  clip_s = config.dataset.clip_seconds
  lines = [
      f"Test split of `{results['dataset']}` ({clip_s:g}-s soundscapes). Students: "
      f"`{config.model.arch}`, {config.total_steps} steps at batch {config.batch_size}, "
      f"α={config.kd.alpha:g}, T={config.kd.temperature:g}, unlabeled soundscapes "
      f"{'on' if config.kd.use_unlabeled else 'off'}; mean ± sample std over seeds. "
      f"Compression: mean teacher parameters / model parameters.", "",
      f"| model | seeds | params | compression | GFLOPs / {clip_s:g}-s clip | " +
      " | ".join(c for _, _, c in COLUMNS) + " |",
      "|---|---:|---:|---:|---:|" + "---:|" * len(COLUMNS)]

  def cost(r):
    return (f"{r['params'] / 1e3:,.0f} k | {mean_teacher / r['params']:.1f}x | "
            f"{r['flops_per_clip'] / 1e9:.2f}")

  for r in teachers + [r for r in rows if r["role"] == "ensemble"]:
    name = "ensemble (mean prob.)" if r["role"] == "ensemble" else f"teacher {r['name']}"
    lines.append(f"| {name} | 1 | {cost(r)} | " + " | ".join(
        "–" if r[k] is None else f"{r[k]:.3f}" for k, _, _ in COLUMNS) + " |")
  for arm in arms:
    lines.append(f"| student, {arm['arm']} | {len(arm['metrics'])} | {cost(student)} | " +
                 " | ".join(report.mean_std([m.get(k) for m in arm["metrics"]])
                            for _, k, _ in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


TUNED_COLUMNS = (("event_f1_macro", "event F1"), ("segment_f1_macro", "segment F1"),
                 ("segment_er", "segment ER"))


def tuned_table(tuned: dict, arms: list[dict], teachers: list[str]) -> str:
  """Markdown: test metrics with post-processing tuned per class on validation (each model its
  own median windows and thresholds: experiment.tuned_metrics); students as mean ± std."""
  lines = ["Post-processing tuned per class on the validation split (median window "
           f"{'/'.join(f'{w:g}' for w in tuning.WINDOWS_S)} s x threshold "
           f"{'/'.join(f'{t:g}' for t in tuning.THRESHOLDS)}, each model its own, chosen by "
           "validation event F1; threshold-free PSDS is in the table above), test split:", "",
           "| model | seeds | " + " | ".join(c for _, c in TUNED_COLUMNS) + " |",
           "|---|---:|" + "---:|" * len(TUNED_COLUMNS)]
  rows = [(f"teacher {t}", [tuned[f"teacher {t}"]["test"]]) for t in teachers]
  rows.append(("ensemble (mean prob.)", [tuned["ensemble"]["test"]]))
  rows += [(f"student, {a['arm']}", [tuned[run]["test"] for run in a["runs"]]) for a in arms]
  for name, metrics in rows:
    lines.append(f"| {name} | {len(metrics)} | " + " | ".join(
        report.mean_std([m.get(k) for m in metrics]) for k, _ in TUNED_COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def tuned_gains(tuned: dict, arms: list[dict], strategies: list[str],
                teachers: list[str]) -> tuple[float, float]:
  """(best multi-teacher KD − no KD, best multi-teacher KD − best teacher), tuned event F1,
  in points."""
  mean = {a["arm"]: float(np.mean([tuned[r]["test"]["event_f1_macro"] for r in a["runs"]]))
          for a in arms}
  best_kd = max(mean[f"multi: {s}"] for s in strategies)
  best_teacher = max(tuned[f"teacher {t}"]["test"]["event_f1_macro"] for t in teachers)
  return 100 * (best_kd - mean["no KD"]), 100 * (best_kd - best_teacher)


def best_teacher_event_f1(results: dict) -> float:
  return max(r["event_f1"] for r in results["models"] if r["role"] == "teacher")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metric_writers.quiet_library_logs()
  with preemption.exit_on_preemption():  # SIGTERM: the runs under way checkpoint first.
    start = time.time()
    config, workdir = _CONFIG.value, epath.Path(_WORKDIR.value)  # Local or gs://.
    seeds = [int(s) for s in _SEEDS.value]
    results = experiment.run(config, workdir)
    out = ablation.run_ablation(config, workdir, seeds, _STRATEGIES.value, with_grid=False)
    # The cache is built (run_ablation made sure): this only opens it.
    cache = experiment.build_cache(config, experiment.train_teachers(config, workdir))
    tuned = experiment.tuned_metrics(config, cache, {
        run: workdir / "students" / run for arm in out["arms"] for run in arm["runs"]})
    text = (table(results, out["arms"], config) + "\n" +
            tuned_table(tuned, out["arms"], list(config.teachers)) + "\n" +
            report.teacher_fit_table(results["teacher_fit"]) + "\n")
    wall = time.time() - start
    path = epath.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io_utils.atomic_write(path.with_suffix(".md")) as f:
      f.write(text)
    for arm in out["arms"]:  # Overall scalars per run (class-wise tables stay in the workdir).
      arm["metrics"] = [{k: v for k, v in m.items() if not isinstance(v, (dict, list))}
                        for m in arm["metrics"]]
    gain = ablation.kd_gain(out["arms"], _STRATEGIES.value)
    best_kd = max(np.mean([m["event_f1_macro"] for m in a["metrics"]]) for a in out["arms"]
                  if a["arm"] in {f"multi: {s}" for s in _STRATEGIES.value})
    vs_teacher = 100 * (best_kd - best_teacher_event_f1(results))
    with io_utils.atomic_write(path.with_suffix(".json")) as f:
      json.dump(dict(command="python experiments/paper_table.py " + " ".join(sys.argv[1:]),
                     workdir=str(workdir), wall_s_this_call=round(wall, 1), results=results,
                     best_teacher=out["best_teacher"], seeds=seeds, arms=out["arms"],
                     tuned_postprocessing=tuned), f, indent=2)
    print(text)
    print(f"wall time of this call: {wall / 60:.1f} min (work already in {workdir} is reused)")
    print(f"result: kd_gain_event_f1 {gain:.1f} points")
    print(f"result: kd_minus_best_teacher_event_f1 {vs_teacher:.1f} points")
    tuned_gain, tuned_vs_teacher = tuned_gains(tuned, out["arms"], _STRATEGIES.value,
                                               list(config.teachers))
    print(f"result: kd_gain_event_f1_tuned_postprocessing {tuned_gain:.1f} points")
    print(f"result: kd_minus_best_teacher_event_f1_tuned_postprocessing {tuned_vs_teacher:.1f} "
          "points")


if __name__ == "__main__":
  app.run(main)
