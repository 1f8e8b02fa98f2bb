r"""KD ablation on the student config's dataset: which teacher signal helps the student, over seeds.

  python experiments/kd_ablation.py                          # after (or instead of) the main job
  python experiments/kd_ablation.py --seeds=0,1,2,3,4 --grid=false
  python experiments/kd_ablation.py --config=configs/student.py:smoke --workdir=/tmp/abl
  python experiments/kd_ablation.py --grid=false --seeds=0 --variant='total_steps=2400' \
      --variant='nokd:total_steps=2400' --variant='augment.mixup_prob=0.5'
  python experiments/kd_ablation.py --grid=false --seeds= \
      --variant='nokd:model.overrides.gru_features=64'    # only this student

Main comparison over `--seeds` (>= 3): no KD, single-teacher KD from the best teacher (by
validation F1), multi-teacher KD with each of `--strategies`; with `--grid` (default on) one seed
each of T, α and no unlabeled data; each `--variant` adds one more one-seed student with any
config overrides (schedule, augmentation, strategy; `nokd:` for the student without KD). The plan and its reuse of the main job's workdir (teachers,
cache and seed-0 students trained once; resumable) are in `sed_jax/ablation.py`.

Writes experiments/kd_ablation/kd_ablation.md (mean ± sample std over seeds, test split) and
kd_ablation.json (every run's metrics); the last line printed is
`result: kd_gain_event_f1 <best multi-teacher KD − no KD, in points>`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app
from absl import flags
from etils import epath
from ml_collections import config_flags

from sed_jax.kd import ablation
from sed_jax import config_checks
from sed_jax.kd import experiment
from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax import preemption
from sed_jax.evaluation import report

_CONFIG = config_flags.DEFINE_config_file("config", "configs/student.py",
                                          "Student experiment config (configs/student.py).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/student", "The experiment's workdir.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Student seeds of the main comparison.")
_STRATEGIES = flags.DEFINE_list("strategies", ["mean_prob", "class_weighted"],
                                "Multi-teacher combination strategies to compare.")
_GRID = flags.DEFINE_boolean("grid", True, "Also the one-seed grid over T, α, unlabeled data.")
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "One more one-seed student per flag: config overrides separated by ';', "
    "e.g. 'total_steps=2400', 'kd.alpha=0.9;kd.temperature=2', 'augment.mixup_prob=0.5', "
    "'nokd:total_steps=2400' (without KD), 'model.overrides.gru_features=64' (the student's "
    "architecture). See ablation.parse_variant.")
_OUT = flags.DEFINE_string("out", str(Path(__file__).parent / "kd_ablation" / "kd_ablation"),
                           "Output path without extension (.md and .json are written).")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metric_writers.quiet_library_logs()
  with preemption.exit_on_preemption():  # SIGTERM: the runs under way checkpoint first.
    config, workdir = _CONFIG.value, epath.Path(_WORKDIR.value)  # Local or gs://.
    seeds = [int(s) for s in _SEEDS.value]
    variants = [ablation.parse_variant(v, config) for v in _VARIANTS.value]
    try:
      out = ablation.run_ablation(config, workdir, seeds, _STRATEGIES.value, _GRID.value,
                                  variants)
    except config_checks.ConfigError as e:
      sys.exit(f"kd_ablation: {e}")
    # The cache is built (run_ablation made sure): this only opens it.
    cache = experiment.build_cache(config, experiment.train_teachers(config, workdir))
    out["teacher_fit"] = experiment.teacher_fit(config, cache)
    table = (ablation.markdown(out["arms"], out["teachers"], config) + "\n" +
             report.teacher_fit_table(out["teacher_fit"]) + "\n")
    path = epath.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io_utils.atomic_write(path.with_suffix(".md")) as f:
      f.write(table)
    # Overall scalars per run (the class-wise tables stay in each run's test_metrics.json).
    for row in out["arms"] + out["teachers"]:
      row["metrics"] = [{k: v for k, v in m.items() if not isinstance(v, (dict, list))}
                        for m in row["metrics"]]
    with io_utils.atomic_write(path.with_suffix(".json")) as f:
      json.dump(dict(command="python experiments/kd_ablation.py " + " ".join(sys.argv[1:]),
                     workdir=str(workdir), **out), f, indent=2)
    print(table)
    if seeds:  # --seeds= (none) runs only the --variant students: no main comparison.
      print(f"result: kd_gain_event_f1 {ablation.kd_gain(out['arms'], _STRATEGIES.value):.1f} "
            "points")


if __name__ == "__main__":
  app.run(main)
