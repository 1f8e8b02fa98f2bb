r"""Input-pipeline and dataset-build throughput, measured in one run.

  python benchmarks/input_pipeline.py [--clips=240] [--batch_size=64] [--batches=60]

1. Builds the same `synth_sed` subset (train split only, `--clips` 10-s clips: synthesis, log-mel,
   targets, array_record writing) with 1 and then 2 feature-extraction processes into fresh
   temporary data_dirs, and reports clips/s for each and their ratio.
2. Reads that dataset through the training pipeline (grain, seeded shuffle, SpecAugment, batching)
   at `--batch_size` and reports examples/s, with 0 and 2 grain worker processes.
Writes the full output to benchmarks/results/input_pipeline.json; the last line is
`result: input_pipeline_examples_per_s <value> examples/s`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags

from sed_jax import config_lib
from sed_jax.data import builders
from sed_jax.data import pipeline

_CLIPS = flags.DEFINE_integer("clips", 240, "Clips to build per measurement.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Per-process batch size (the default config's).")
_BATCHES = flags.DEFINE_integer("batches", 60, "Batches to time per pipeline measurement.")

RESULTS = Path(__file__).parent / "results" / "input_pipeline.json"


def data_config(data_dir: str, workers: int):
  cfg = config_lib.common().dataset("synth_sed")
  cfg.data_dir, cfg.num_workers = data_dir, workers
  cfg.synth.update(dict(train=_CLIPS.value, validation=0, test=0, unlabeled=0))
  return cfg


def time_build(workers: int) -> tuple[float, str]:
  tmp = tempfile.mkdtemp(prefix="sed_jax_bench_")
  cfg = data_config(tmp, workers)
  start = time.perf_counter()
  builders.prepare(cfg, config_lib.common().features())
  return _CLIPS.value / (time.perf_counter() - start), tmp


def time_pipeline(data_dir: str, grain_workers: int) -> float:
  cfg, feat = data_config(data_dir, 1), config_lib.common().features()
  source = pipeline.data_source(cfg, feat, "train")
  loader = pipeline.train_loader(source, batch_size=_BATCH.value, seed=0, data_cfg=cfg,
                                 feature_cfg=feat, augment=config_lib.common().augment(),
                                 worker_count=grain_workers)
  it = iter(loader)
  for _ in range(3):  # Warm-up: worker start, first reads.
    next(it)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  return _BATCHES.value * _BATCH.value / (time.perf_counter() - start)


def main(argv):
  del argv
  build_1, _ = time_build(1)
  build_2, data_dir = time_build(2)
  pipe_0 = time_pipeline(data_dir, 0)
  pipe_2 = time_pipeline(data_dir, 2)
  out = dict(
      machine=dict(cpus=os.cpu_count(), platform=platform.platform()),
      clips=_CLIPS.value, batch_size=_BATCH.value, batches=_BATCHES.value,
      build_clips_per_s_1_worker=round(build_1, 2), build_clips_per_s_2_workers=round(build_2, 2),
      build_speedup_2_vs_1=round(build_2 / build_1, 3),
      pipeline_examples_per_s_0_workers=round(pipe_0, 1),
      pipeline_examples_per_s_2_workers=round(pipe_2, 1),
  )
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n")
  print(f"dataset build: {build_1:.1f} clips/s with 1 worker, {build_2:.1f} clips/s with 2 "
        f"({build_2 / build_1:.2f} x)")
  print(f"pipeline at batch {_BATCH.value}: {pipe_0:.0f} examples/s in-process, "
        f"{pipe_2:.0f} examples/s with 2 grain workers")
  print(f"result: input_pipeline_examples_per_s {max(pipe_0, pipe_2):.0f} examples/s")


if __name__ == "__main__":
  app.run(main)
