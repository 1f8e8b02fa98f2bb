"""Tiny 'trained' runs (fresh weights, 2-s windows) of the student and of a teacher, and their
exports, shared by the deploy and edge tests."""

import json

from sed_jax.deploy import artifact
from tests import test_train
from tests.kd import test_teacher_cache

CLASSES = [f"class_{i}" for i in range(10)]
OVERLAP_S = 0.5  # detect's 2 s would leave a 4-frame step in 2-s windows.
# The student and one teacher architecture (residual blocks, two BiGRU layers).
ARCHS = {"student": None,
         "resnet": dict(widths=[4, 8], stem_width=4, blocks_per_stage=1, gru_features=8)}


def make_run(workdir, data_dir, arch: str):
  config = test_train.tiny_config(data_dir)
  if ARCHS[arch] is not None:
    config.model.arch, config.model.overrides = arch, ARCHS[arch]
  test_teacher_cache.make_teacher(workdir, config, seed=len(arch))
  (workdir / "classes.json").write_text(json.dumps(CLASSES))
  return workdir


def make_exports(tmp_path_factory, formats=("onnx", "iree")):
  """{(arch, format): exported folder} and {arch: run}."""
  data_dir = tmp_path_factory.mktemp("tfds")
  runs = {a: make_run(tmp_path_factory.mktemp(a), data_dir, a) for a in ARCHS}
  out = {}
  for arch, run in runs.items():
    for fmt in formats:
      folder = tmp_path_factory.mktemp(f"{arch}_{fmt}")
      artifact.export(run, folder, fmt, overlap_s=OVERLAP_S)
      out[arch, fmt] = folder
  return out, runs
