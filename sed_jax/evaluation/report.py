"""What people look at: a markdown results table, training curves and event-roll plots.

Everything here is a pure function of numbers already computed (results.json, metrics.jsonl,
frame probabilities), so a report can be rewritten from a finished workdir in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath

from sed_jax import io_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from sed_jax import metric_writers  # pylint: disable=wrong-import-position
from sed_jax.data.annotations import Event  # pylint: disable=wrong-import-position


def _fmt(value, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def mean_std(values: Sequence[float | None], digits: int = 3, signed: bool = False) -> str:
  """'mean ± sample std' of the values that are not None ('–' if none, the value if one);
  `signed` writes a + before a positive mean (gains)."""
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  mean = f"{np.mean(values):{'+' if signed else ''}.{digits}f}"
  if len(values) == 1:
    return mean
  return f"{mean} ± {np.std(values, ddof=1):.{digits}f}"


def results_table(results: Mapping[str, Any]) -> str:
  """The results.json rows as a markdown table, with compression vs the mean teacher."""
  rows = results["models"]
  # External teachers (files of scores) have no known size: left out of the mean.
  teachers = [r["params"] for r in rows if r["role"] == "teacher" and r["params"] is not None]
  mean_teacher = float(np.mean(teachers)) if teachers else None
  lines = ["| model | role | KD | seed | parameters | compression vs mean teacher "
           "| GFLOPs / 10-s clip | segment F1 | segment ER | event F1 | PSDS1 | PSDS2 |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    ratio = f"{mean_teacher / r['params']:.1f}x" if mean_teacher and r["params"] and \
        r["role"] != "ensemble" else "–"
    params = "–" if r["params"] is None else f"{r['params']:,}"
    flops = "–" if r["flops_per_clip"] is None else f"{r['flops_per_clip'] / 1e9:.3f}"
    seed = "–" if r.get("seed") is None else r["seed"]
    lines.append(
        f"| {r['name']} | {r['role']} | {r['kd']} | {seed} | {params} | {ratio} | "
        f"{flops} | {_fmt(r['segment_f1'])} | {_fmt(r['segment_er'])} | "
        f"{_fmt(r['event_f1'])} | {_fmt(r['psds1'])} | {_fmt(r['psds2'])} |")
  return "\n".join(lines)


def plot_training_curves(runs: Mapping[str, epath.PathLike], metric: str,
                         out: epath.PathLike) -> epath.Path:
  """Training loss and validation `metric` against steps, one line per run."""
  fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
  for name, workdir in runs.items():
    train = metric_writers.read_metrics(workdir, "train")
    val = metric_writers.read_metrics(workdir, "validation")
    if train:
      ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
    if val:
      ax_val.plot([r["step"] for r in val], [r.get(metric) for r in val], marker="o", label=name)
  ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
  ax_val.set(xlabel="step", ylabel=metric, title=f"Validation {metric}")
  for ax in (ax_loss, ax_val):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _save(fig, out)


def plot_event_roll(audio_id: str, reference: Sequence[Event] | None,
                    probs: Mapping[str, np.ndarray], classes: Sequence[str],
                    frame_seconds: float, out: epath.PathLike,
                    threshold: float | Sequence[float] = 0.5) -> epath.Path:
  """Reference events above (none for new audio: `reference=None`), then each model's frame
  probabilities [T, C] as a heat map with its thresholded detections outlined: what a person
  checks first when a number looks odd."""
  per_class = np.ndim(threshold) == 1
  level = np.asarray(threshold, float).reshape(-1, 1)  # [C or 1, 1], against p.T [C, T].
  n = (reference is not None) + len(probs)
  fig, axes = plt.subplots(n, 1, figsize=(11, 1.2 + 0.28 * len(classes) * n), sharex=True,
                           squeeze=False)
  axes = list(axes[:, 0])
  t_max = max((p.shape[0] for p in probs.values()), default=1) * frame_seconds
  if reference is not None:
    ax = axes[0]
    for e in reference:
      c = list(classes).index(e.label)
      ax.add_patch(plt.Rectangle((e.onset, c - 0.4), e.offset - e.onset, 0.8, color="tab:green"))
    ax.set(ylim=(-0.5, len(classes) - 0.5), xlim=(0, t_max), title=f"{audio_id}: reference")
  for ax, (name, p) in zip(axes[n - len(probs):], probs.items()):
    ax.imshow(p.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="Blues",
              extent=(0, p.shape[0] * frame_seconds, -0.5, len(classes) - 0.5))
    ax.contour(np.arange(p.shape[0]) * frame_seconds + frame_seconds / 2, np.arange(len(classes)),
               (p.T > level).astype(float), levels=[0.5], colors="tab:red", linewidths=0.8)
    above = "its class's threshold" if per_class else threshold
    ax.set_title(f"{name}: frame probabilities (red: > {above})" +
                 ("" if reference is not None else f" — {audio_id}"))
  for ax in axes:
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
  axes[-1].set_xlabel("time (s)")
  return _save(fig, out)


def plot_sweep(xs: Sequence[float], values: Sequence[Sequence[float]], xlabel: str,
               ylabel: str, out: epath.PathLike, log2_x: bool = False) -> epath.Path:
  """A metric against a swept setting: the mean over seeds at each x, ± the sample std."""
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.errorbar(np.asarray(xs, float), [np.mean(v) if len(v) else np.nan for v in values],
              yerr=[np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values], marker="o",
              capsize=3)
  if log2_x:
    ax.set_xscale("log", base=2)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  return _save(fig, out)


def _save(fig, out: epath.PathLike) -> epath.Path:
  out = epath.Path(out)
  fig.tight_layout()
  with io_utils.atomic_write(out, "wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)
  return out


SUMMARY_METRICS = (("event_f1", "event F1"), ("segment_f1", "segment F1"),
                   ("segment_er", "segment ER"), ("psds1", "PSDS1"), ("psds2", "PSDS2"))


def summary_table(summary: Mapping[str, Any]) -> str:
  """`kd.experiment.summarize` as markdown: each student's mean ± sample std over its seeds, then each
  KD student's gain over the no-KD student of the same seed, in points, with every seed's."""
  head = " | ".join(t for _, t in SUMMARY_METRICS)
  lines = [f"| student | KD | seeds | {head} |",
           "|---|---|---:|" + "---:|" * len(SUMMARY_METRICS)]
  for st in summary["students"]:
    lines.append(f"| {st['name']} | {st['kd']} | {len(st['seeds'])} | " +
                 " | ".join(mean_std(st[m]["values"]) for m, _ in SUMMARY_METRICS) + " |")
  points = lambda stats: mean_std([100 * v for v in stats["values"]], digits=1, signed=True)
  for g in summary["kd_gain"]:
    per_seed = ", ".join(f"{100 * v:+.1f}" for v in g["event_f1"]["values"])
    lines += ["", f"**KD gain of {g['name']}** over {g['against']}, paired by seed (points): "
              f"event F1 {points(g['event_f1'])} (seeds {g['seeds']}: {per_seed}; "
              f"{g['positive_seeds']} of {len(g['seeds'])} positive); " +
              "; ".join(f"{t} {points(g[m])}" for m, t in SUMMARY_METRICS[1:]) + "."]
  return "\n".join(lines)


def teacher_fit_table(fit: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
  """`kd.experiment.teacher_fit` as markdown: what it means, then one row per teacher with its frame
  F1 and BCE on each labelled split."""
  splits = list(fit)
  teachers = list(next(iter(fit.values()))) if fit else []
  lines = ["Frame F1 (threshold 0.5) and BCE of each teacher's cached frame outputs against the "
           "strong labels. Far better on train than on validation means the teacher memorised "
           "its training clips: its KD targets there are close to the labels, and distillation "
           "teaches mostly through clips it never trained on (the unlabeled split).", "",
           "| teacher | " + " | ".join(f"{s} frame F1" for s in splits) + " | " +
           " | ".join(f"{s} frame BCE" for s in splits) + " |",
           "|---|" + "---:|" * (2 * len(splits))]
  for t in teachers:
    lines.append(f"| {t} | " + " | ".join(_fmt(fit[s][t]["frame_f1"]) for s in splits) + " | " +
                 " | ".join(_fmt(fit[s][t]["frame_bce"]) for s in splits) + " |")
  return "\n".join(lines)


def write_report(workdir: epath.PathLike, results: Mapping[str, Any], curves: epath.Path | None,
                 rolls: Sequence[epath.Path]) -> epath.Path:
  """<workdir>/report.md: the table, how the teachers fit their labelled splits (when
  `results` has `teacher_fit`), then the plots (paths relative to the workdir)."""
  workdir = epath.Path(workdir)
  lines = [f"# Results on {results['dataset']} ({results['split']} split)", "",
           results_table(results), ""]
  if results.get("summary", {}).get("students"):
    lines += ["## Students over seeds (mean ± sample std)", "",
              summary_table(results["summary"]), ""]
  if results.get("teacher_fit"):
    lines += ["## How the teachers fit their labelled splits", "",
              teacher_fit_table(results["teacher_fit"]), ""]
  if curves is not None:
    lines += ["", "## Training curves", "", f"![training curves]({curves.relative_to(workdir)})"]
  if rolls:
    lines += ["", "## Event rolls (test clips)", ""]
    lines += [f"![{p.stem}]({p.relative_to(workdir)})" for p in rolls]
  out = workdir / "report.md"
  with io_utils.atomic_write(out) as f:
    f.write("\n".join(lines) + "\n")
  return out
