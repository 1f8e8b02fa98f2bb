r"""The exported student on one CPU core: size, cold start, latency, memory and accuracy, per
format and precision, against the JAX `detect` path and the four-teacher ensemble.

  python benchmarks/edge.py --workdir=runs/student [--repeats=20]

`--workdir` is a finished experiment (`python -m sed_jax.main --config=configs/student.py`).
The KD student is exported in every format and precision (`sed_jax.export`): onnx fp32 / fp16 /
int8 and iree fp32 / fp16 for the host. Everything runs pinned to one core, with one thread
(onnxruntime intra-op threads 1, IREE local-sync, XLA without its thread pool, BLAS 1 thread):

- size: the model file (KB; the sidecar adds ~2 KB of JSON);
- cold start: a new process runs the standalone runner (`edge.py` copied beside the model, as
  on a device) on one 10-s clip, from process start to its written TSV (median of 3); JAX rows:
  `python -m sed_jax.detect --batch_size=1` on the same clip;
- latency: one 10-s clip from its file to its events in a warm process (decode, resample,
  log-mel, model, post-processing; median of `--repeats`), and the real-time factor (10 s /
  latency); the log-mel front end's share is given apart;
- peak RSS of the cold-start process (`wait4`'s ru_maxrss);
- accuracy: test event-F1 (macro) and PSDS1/PSDS2 over the experiment's test split (synth_sed
  clips regenerated from their seeds; another dataset: `--audio_dir` and `--annotations`), with
  the run's own thresholds, for every seed of the KD student exported in every variant, and the
  change from the same seed in JAX (mean ± std over seeds, paired); speed rows are seed 0.

Writes benchmarks/results/edge.json and edge.md; last line
`result: edge_student_real_time_factor <x> x` (the fastest fp32 format).
"""

from __future__ import annotations

import os
import sys

# One core and one thread everywhere, before numpy or JAX start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_var] = "1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import json  # pylint: disable=wrong-import-position
import platform  # pylint: disable=wrong-import-position
import shutil  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position
from pathlib import Path  # pylint: disable=wrong-import-position

import ml_collections  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import soundfile as sf  # pylint: disable=wrong-import-position
from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from sed_jax import edge  # pylint: disable=wrong-import-position
from sed_jax import inference  # pylint: disable=wrong-import-position
from sed_jax import metric_writers  # pylint: disable=wrong-import-position
from sed_jax.data import annotations  # pylint: disable=wrong-import-position
from sed_jax.data import audio as audio_lib  # pylint: disable=wrong-import-position
from sed_jax.data import synth  # pylint: disable=wrong-import-position
from sed_jax.deploy import artifact  # pylint: disable=wrong-import-position
from sed_jax.evaluation import frame_scoring  # pylint: disable=wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", "runs/student", "A finished experiment.")
_AUDIO = flags.DEFINE_string("audio_dir", None, "Test audio (default: synth_sed's test split).")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Strong TSV of --audio_dir.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed repetitions of the warm latency.")
_CLIPS = flags.DEFINE_integer("clips", None, "Score only the first N test clips.")

RESULTS = Path(__file__).parent / "results"
VARIANTS = [("onnx", None), ("onnx", "fp16"), ("onnx", "int8"), ("iree", None), ("iree", "fp16")]
CLIP_S = 10.0


def test_split(workdir: Path, folder: Path) -> tuple[Path, Path]:
  """(audio folder, strong TSV) of synth_sed's test split, regenerated from the clip seeds."""
  config = ml_collections.ConfigDict(json.loads(
      (workdir / "teachers" / "resnet" / "config.json").read_text()))
  d = config.dataset
  if d.name != "synth_sed":
    raise app.UsageError(f"{workdir} was trained on {d.name}: pass --audio_dir/--annotations.")
  audio = folder / "audio"
  audio.mkdir(parents=True)
  events = {}
  for i in range(d.synth.test):
    samples, found = synth.synth_clip(synth.clip_seed("test", i, d.synth.seed), d.clip_seconds,
                                      config.features.sample_rate)
    name = f"test_{i:06d}.wav"
    sf.write(audio / name, samples, config.features.sample_rate, subtype="FLOAT")
    events[name] = found
  annotations.write_strong_tsv(folder / "strong.tsv", events)
  return audio, folder / "strong.tsv"


def score(probs: list[np.ndarray], files, durations, reference, classes, hop, cfg) -> dict:
  t = max(p.shape[0] for p in probs)
  stacked = np.zeros((len(probs), t, len(classes)), np.float32)
  for i, p in enumerate(probs):
    stacked[i, :p.shape[0]] = p
  cfg = ml_collections.ConfigDict(dict(cfg.to_dict(), psds=True))
  m = frame_scoring.score_predictions(stacked, files, durations, reference, classes, hop, cfg)
  return {k: m[k] for k in ("event_f1_macro", "segment_f1_macro", "psds1", "psds2")}


def warm_latency(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


# A small process starts the measured one and reports its wall time and peak RSS: a child
# forked from this (large, JAX-holding) process would report this process's RSS as its own peak,
# since Linux carries the peak across fork and exec.
_LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status))
"""


def cold(command: list[str], cwd: Path, repeats: int = 3) -> tuple[float, float]:
  """(median wall seconds, max peak RSS MB) of a new process running `command`."""
  walls, rss = [], []
  for _ in range(repeats):
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], cwd=cwd,
                          capture_output=True, text=True, check=True)
    wall, peak, code = proc.stdout.split()
    if int(code) != 0:
      raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr[-2000:]}")
    walls.append(float(wall))
    rss.append(float(peak))
  return float(np.median(walls)), float(max(rss))


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  workdir = Path(_WORKDIR.value).resolve()
  tmp = Path(tempfile.mkdtemp(prefix="edge_bench_"))
  try:
    _run(workdir, tmp)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _run(workdir: Path, tmp: Path) -> None:
  if _AUDIO.value:
    audio_dir, tsv = Path(_AUDIO.value), Path(_ANNOTATIONS.value)
  else:
    audio_dir, tsv = test_split(workdir, tmp / "test")
  rows = json.loads((workdir / "results.json").read_text())["models"]
  seeds = [r["name"] for r in rows if r["role"] == "student" and r["kd"].startswith("multi")]
  name = seeds[0]
  student = inference.Detector(inference.model_runs(workdir, name)[1], batch_size=1)
  classes, hop, cfg = student.classes, student.frame_seconds, student.config.eval
  reference = annotations.read_strong_tsv(tsv, classes)
  files = sorted(reference)[:_CLIPS.value]
  paths = [audio_dir / f for f in files]
  durations = [audio_lib.audio_info(p)[0] for p in paths]
  # Latency on the first clip of at least 10 s (else the longest), given per 10 s of audio.
  clip, clip_s = next(((p, d) for p, d in zip(paths, durations) if d >= CLIP_S),
                      max(zip(paths, durations), key=lambda pd: pd[1]))
  per_10s = CLIP_S / clip_s
  print(f"KD students {', '.join(seeds)} on {len(files)} test clips; speed of {name} on "
        f"{clip.name} ({clip_s:.2f} s)", flush=True)

  def scored(probs):
    return score(probs, files, durations, reference, classes, hop, cfg)

  # Accuracy: every seed of the KD student, in JAX and in every export of it.
  accuracy: dict[str, dict[str, dict]] = {"student, JAX detect": {}}
  for seed in seeds:
    detector = student if seed == name else inference.Detector(
        inference.model_runs(workdir, seed)[1], batch_size=1)
    accuracy["student, JAX detect"][seed] = scored([detector.frame_probs(p) for p in paths])
    for fmt, quantize in VARIANTS:
      out = tmp / seed / f"{fmt}_{quantize or 'fp32'}"
      meta = artifact.export(workdir, out, fmt, quantize=quantize, model=seed)
      model = edge.Model(out, threads=1)
      probs = [edge.frame_probs(model, edge.stream_audio(p, meta["sample_rate"]),
                                meta["overlap_s"]) for p in paths]
      accuracy.setdefault(f"student, {fmt} {meta['precision']}", {})[seed] = scored(probs)
    print(seed, {k: v[seed]["event_f1_macro"] for k, v in accuracy.items()}, flush=True)
  ensemble = inference.Detector(inference.model_runs(workdir, "ensemble")[1], batch_size=1)
  accuracy["4-teacher ensemble, JAX detect"] = {
      "-": scored([ensemble.frame_probs(p) for p in paths])}

  # Speed and memory: seed 0, one core, one thread.
  speed = {}
  repo = Path(__file__).resolve().parents[1]
  for label, detector, flag in (("student, JAX detect", student, name),
                                ("4-teacher ensemble, JAX detect", ensemble, "ensemble")):
    latency = warm_latency(lambda: detector.events(  # pylint: disable=cell-var-from-loop
        detector.frame_probs(clip), cfg.threshold, cfg.median_window_s), _REPEATS.value)
    wall, rss = cold([sys.executable, "-m", "sed_jax.detect", f"--workdir={workdir}",
                      f"--model={flag}", "--batch_size=1", f"--out={tmp / 'jax.tsv'}",
                      str(clip)], repo)
    speed[label] = dict(kb=None, cold_start_s=wall, peak_rss_mb=rss,
                        latency_ms=latency * 1e3 * per_10s, real_time=clip_s / latency)
  del student, ensemble
  front_ms = None
  for fmt, quantize in VARIANTS:
    out = tmp / name / f"{fmt}_{quantize or 'fp32'}"
    meta = json.loads((out / edge.SIDECAR).read_text())
    shutil.copy(edge.__file__, out / "edge.py")
    model = edge.Model(out, threads=1)
    latency = warm_latency(lambda: edge.events(edge.frame_probs(  # pylint: disable=cell-var-from-loop
        model, edge.stream_audio(clip, meta["sample_rate"]), meta["overlap_s"]), meta),
                           _REPEATS.value)
    if front_ms is None:
      samples = np.concatenate(list(edge.stream_audio(clip, meta["sample_rate"])))

      def front_end():
        f = edge.LogMel(meta)  # pylint: disable=cell-var-from-loop
        return np.concatenate([f.push(samples), f.finish()])

      front_ms = warm_latency(front_end, _REPEATS.value) * 1e3 * per_10s
    wall, rss = cold([sys.executable, "-I", "edge.py", ".", str(clip),
                      f"--out={tmp / 'edge.tsv'}"], out)
    speed[f"student, {fmt} {meta['precision']}"] = dict(
        kb=meta["bytes"] / 1024, cold_start_s=wall, peak_rss_mb=rss,
        latency_ms=latency * 1e3 * per_10s, real_time=clip_s / latency,
        max_abs_diff_vs_jax=meta["max_abs_diff_vs_jax"])

  summary = {label: dict(speed[label], **summarize(accuracy[label],
                                                   accuracy["student, JAX detect"]))
             for label in speed}
  best = max(r["real_time"] for label, r in summary.items()
             if "JAX" not in label and "fp32" in label)
  result = {"workdir": str(workdir), "students": seeds, "test_clips": len(files),
            "latency_clip": clip.name, "latency_clip_s": clip_s, "front_end_ms": front_ms,
            "rows": summary, "per_seed": accuracy, "cpu": platform.processor() or
            platform.machine(), "cores_used": 1}
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "edge.json").write_text(json.dumps(result, indent=1) + "\n")
  table = markdown(summary, front_ms, len(seeds))
  (RESULTS / "edge.md").write_text(table)
  print(table)
  print(f"result: edge_student_real_time_factor {best:.0f} x")


def summarize(per_seed: dict, jax_per_seed: dict) -> dict:
  """Mean and sample std over seeds of each metric and of its change from JAX (paired)."""
  out = {}
  for key in ("event_f1_macro", "psds1", "psds2"):
    values = np.array([m[key] for m in per_seed.values()])
    out[key] = [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0]
    if set(per_seed) <= set(jax_per_seed):
      change = values - np.array([jax_per_seed[s][key] for s in per_seed])
      out[key + "_change"] = [float(change.mean()), float(change.std(ddof=1))]
  return out


def markdown(rows: dict, front_ms: float, seeds: int) -> str:
  def pm(pair, scale=1.0, sign=""):
    return f"{pair[0] * scale:{sign}.3f} ± {pair[1] * scale:.3f}" if pair[1] else (
        f"{pair[0] * scale:{sign}.3f}")

  lines = ["| model | size (KB) | cold start (s) | ms per 10-s clip | real time | peak RSS (MB) | "
           "event F1 | Δ event F1 (points) | PSDS1 | Δ PSDS1 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for label, r in rows.items():
    kb = "—" if r["kb"] is None else f"{r['kb']:.0f}"
    d_f1 = pm(r["event_f1_macro_change"], 100, "+") if "event_f1_macro_change" in r else "—"
    d_psds = pm(r["psds1_change"], 1, "+") if "psds1_change" in r else "—"
    lines.append(
        f"| {label} | {kb} | {r['cold_start_s']:.2f} | {r['latency_ms']:.1f} | "
        f"{r['real_time']:.0f}x | {r['peak_rss_mb']:.0f} | {pm(r['event_f1_macro'])} | {d_f1} | "
        f"{pm(r['psds1'])} | {d_psds} |")
  lines.append(f"\nAccuracy: mean ± sample std over the {seeds} KD student seeds (changes paired "
               "by seed, against the same seed in JAX); the ensemble has no seed. Speed and "
               f"memory: seed 0. Log-mel front end (numpy, inside every edge row's latency): "
               f"{front_ms:.1f} ms per 10-s clip.\n")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
