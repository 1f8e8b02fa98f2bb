"""The KD ablation: which teacher signal helps the student, over seeds (experiments/kd_ablation.py).

Main comparison, every seed: the student without KD, with single-teacher KD from the best
teacher (highest mean validation F1 over classes, from the teacher cache's metadata: chosen
without looking at the test split), and with multi-teacher KD for each combination strategy.
The grid: one seed each of temperature, α and distillation without the unlabeled split around
the config's KD student.

Everything lives in the main job's workdir: the teachers and their cache are trained / built
once (or reused), students go to `students/<arm>` for the config's seed (so the main job's two
students are reused) and `students/<arm>_seed<s>` for the others; finished runs are skipped, so
an ablation resumes after a kill. Only the student's seed changes between seeds.
"""

from __future__ import annotations

import ast
import copy
import json
import re

import numpy as np
from etils import epath

from sed_jax import config_checks
from sed_jax import config_lib
from sed_jax.kd import experiment
from sed_jax.evaluation import report

METRICS = (("event_f1_macro", "event F1"), ("segment_f1_macro", "segment F1"),
           ("segment_er", "segment ER"), ("psds1", "PSDS1"), ("psds2", "PSDS2"))


def best_teacher(cache) -> str:
  """The teacher with the highest mean per-class validation F1 (cache metadata)."""
  meta = cache.info.metadata["teachers"]
  return max(meta, key=lambda t: float(np.mean(t["class_f1"])))["name"]


# Free-form blocks: any key may be added under them (the model factory checks the names), so a
# variant can change the student's architecture (`model.overrides.gru_features=64`).
_FREE_BLOCKS = ("model.overrides",)


def variant(config, **overrides):
  """`config` with some values replaced: a bare key names a `kd.*` field (temperature, alpha,
  ...) if there is one, else a top-level field (seed, total_steps); a dotted key is a path
  (`augment.mixup_prob`), and under `model.overrides` it may name a new model attribute."""
  c = copy.deepcopy(config)
  with c.unlocked():
    for key, value in overrides.items():
      path = key.split(".") if "." in key or key not in c.kd else ["kd", key]
      node = c
      for i, part in enumerate(path[:-1]):
        if part not in node:
          raise KeyError(f"Variant key {key!r}: the config has no field {'.'.join(path[:i + 1])}.")
        node = node[part]
      if path[-1] not in node and ".".join(path[:-1]) not in _FREE_BLOCKS:
        raise KeyError(f"Variant key {key!r}: the config has no field {'.'.join(path)}.")
      node[path[-1]] = value
  return c


def parse_variant(spec: str, config) -> tuple[str, str | None, dict]:
  """(arm label, KD strategy or None, overrides) of a `--variant` spec such as
  'total_steps=2400', 'kd.alpha=0.9;kd.temperature=2', 'augment.mixup_prob=0.5',
  'kd.strategy=single:resnet' or 'nokd:total_steps=2400' (the student without KD).

  Values take the type of the field they replace; `kd.` is dropped from keys, so run names
  match the grid's (kd_class_weighted_alpha0.9).
  """
  no_kd = spec.startswith("nokd:")
  pairs = [p.split("=", 1) for p in spec.removeprefix("nokd:").split(";") if p.strip()]
  if not pairs or any(len(p) != 2 for p in pairs):
    raise ValueError(f"Variant {spec!r}: use key=value pairs separated by ';', e.g. "
                     "'total_steps=2400;kd.alpha=0.9' ('nokd:' first for the no-KD student).")
  overrides = {}
  for key, value in pairs:
    key = key.strip().removeprefix("kd.")
    if key.rpartition(".")[0] in _FREE_BLOCKS:  # A model attribute: a Python literal.
      overrides[key] = _literal(value.strip())
      continue
    current = _field(config, key if "." in key or key not in config.kd else f"kd.{key}")
    try:
      overrides[key] = config_lib.parse_arg(f"v={value.strip()}", v=current).v
    except ValueError as e:
      raise ValueError(f"Variant {spec!r}: {key}={value.strip()!r} is not of type "
                       f"{type(current).__name__} ({e}).") from e
  strategy = None if no_kd else overrides.pop("strategy", config.kd.strategy)
  label = "no KD" if strategy is None else strategy if ":" in strategy else f"multi: {strategy}"
  if overrides:
    label += ", " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in overrides.items())
  return label, strategy, overrides


def _literal(value: str):
  """'64' → 64, '(32, 64)' → (32, 64), 'max' → 'max' (a bare word is a string)."""
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def _field(config, key: str):
  node = config
  for part in key.split("."):
    if part not in node:
      raise KeyError(f"Variant key {key!r}: the config has no field {part!r}.")
    node = node[part]
  return node


def arms(single: str, strategies: list[str]) -> list[tuple[str, str | None, dict]]:
  """(arm label, KD strategy or None, kd overrides) of the main comparison."""
  out = [("no KD", None, {}), (f"single:{single} (best teacher)", f"single:{single}", {})]
  out += [(f"multi: {s}", s, {}) for s in strategies]
  return out


def grid(config) -> list[tuple[str, str, dict]]:
  """(arm label, strategy, kd overrides) around the default KD student."""
  s, kd = config.kd.strategy, config.kd
  out = [(f"multi: {s}, T={t:g}", s, dict(temperature=t)) for t in (1.0, 2.0, 4.0)
         if t != kd.temperature]
  out += [(f"multi: {s}, α={a:g}", s, dict(alpha=a)) for a in (0.25, 0.5, 0.75)
          if a != kd.alpha]
  out.append((f"multi: {s}, {'no' if kd.use_unlabeled else 'with'} unlabeled data", s,
              dict(use_unlabeled=not kd.use_unlabeled)))
  return out


def run_name(strategy: str | None, overrides: dict, seed: int, base_seed: int) -> str:
  """`kd_class_weighted_alpha0.9_seed1`; a model attribute keeps its last name only and a
  sequence its numbers (`..._gru_features64_widths32-64-96-128`), so names stay paths. A
  variant's own `seed=` is the run's seed, named like a planned seed: `--variant=seed=1` is
  `kd_<strategy>_seed1`, and `--variant=seed=<config.seed>` finds the main job's student."""
  seed = overrides.get("seed", seed)
  name = experiment.student_name(strategy)
  for k, v in sorted(overrides.items()):
    if k == "seed":
      continue
    if k.rpartition(".")[0] in _FREE_BLOCKS:
      k = k.rpartition(".")[2]
    if isinstance(v, (list, tuple)):
      v = "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    name += f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}"
  return experiment.seeded_name(re.sub(r"[^\w.-]+", "-", name), seed, base_seed)


def markdown(rows: list[dict], teacher_rows: list[dict], config) -> str:
  lines = [f"KD ablation on `{config.dataset.name}` (test split), student `{config.model.arch}`, "
           f"{config.total_steps} steps at batch {config.batch_size}, T={config.kd.temperature:g}, "
           f"α={config.kd.alpha:g}, unlabeled data {'on' if config.kd.use_unlabeled else 'off'} "
           "unless the row says otherwise (with unlabeled data a KD student's batch grows by "
           "their share: experiment.batch_with_unlabeled). Students: mean ± sample std over seeds.",
           "",
           "| model | seeds | " + " | ".join(label for _, label in METRICS) + " |",
           "|---|---:|" + "---:|" * len(METRICS)]
  for r in teacher_rows + rows:
    cells = [report.mean_std([m.get(k) for m in r["metrics"]]) for k, _ in METRICS]
    lines.append(f"| {r['arm']} | {len(r['metrics'])} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def run_config(config, strategy: str | None, overrides: dict, seed: int):
  """The config of one planned run; a variant's own `seed=` wins over the plan's seed, so
  `--variant='seed=1;...'` is a one-seed run at another seed."""
  return variant(config, **({"seed": seed} | overrides),
                 **({"strategy": strategy} if strategy else {}))


def run_ablation(config, workdir: epath.Path, seeds: list[int], strategies: list[str],
                 with_grid: bool, variants: list[tuple[str, str | None, dict]] = ()) -> dict:
  """Trains (or reuses) every run of the plan; returns the arms with their runs' test metrics,
  the teachers' rows and the best single teacher. `variants` (`parse_variant`) are one-seed
  runs like the grid's. The config and every variant are checked first (config_checks), so a
  misspelt variant stops the plan before any teacher trains."""
  config_checks.check(config)
  for _, strategy, overrides in variants:
    config_checks.check(run_config(config, strategy, overrides, config.seed))
  teachers = experiment.train_teachers(config, workdir)
  cache = experiment.build_cache(config, teachers)
  single = best_teacher(cache)
  print(f"teachers: {', '.join(t.name for t in teachers)}; best by validation F1: {single}",
        flush=True)
  plan = [(label, strategy, overrides, seed) for label, strategy, overrides in
          arms(single, strategies) for seed in seeds]
  if with_grid:
    plan += [(label, strategy, overrides, config.seed)
             for label, strategy, overrides in grid(config)]
  plan += [(label, strategy, overrides, config.seed) for label, strategy, overrides in variants]
  names = [run_name(strategy, overrides, seed, config.seed)
           for _, strategy, overrides, seed in plan]
  jobs = [(run_config(config, strategy, overrides, seed), workdir / "students" / name,
           teachers if strategy else None)
          for (_, strategy, overrides, seed), name in zip(plan, names)]
  for i, ((label, *_), (job_config, *_), name) in enumerate(zip(plan, jobs, names)):
    print(f"[{i + 1}/{len(plan)}] {label}, seed {job_config.seed} → students/{name}", flush=True)
  results: dict[str, dict] = {}
  for (label, strategy, overrides, _), name, metrics in zip(
      plan, names, experiment.run_students(config, jobs, names)):
    arm = results.setdefault(label, dict(arm=label, strategy=strategy, overrides=overrides,
                                         runs=[], metrics=[]))
    arm["runs"].append(name)
    arm["metrics"].append(metrics)
  classes = list(cache.info.metadata["classes"])
  teacher_rows = [dict(arm=f"teacher {t.name}", metrics=[m]) for t, m in zip(
      teachers, experiment.teacher_metrics(config, teachers, cache, classes))]
  return dict(best_teacher=single, seeds=seeds, arms=list(results.values()),
              teachers=teacher_rows)


def kd_gain(arms_: list[dict], strategies: list[str]) -> float:
  """Best multi-teacher strategy's mean test event-F1 minus the no-KD student's, in points."""
  mean = {a["arm"]: float(np.mean([m["event_f1_macro"] for m in a["metrics"]])) for a in arms_}
  return 100 * (max(mean[f"multi: {s}"] for s in strategies) - mean["no KD"])
