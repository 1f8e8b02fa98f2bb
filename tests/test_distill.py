"""The distillation experiment end to end on a tiny config: teachers → cache → students."""

import json
import os
import sys

import pytest

from sed_jax import config_lib
from sed_jax import distill
from sed_jax.data.builders import teacher_cache
from tests.data import test_teacher_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_student_config(data_dir):
  c = config_lib.load_config(os.path.join(ROOT, "configs/student.py:smoke"))
  c.dataset.data_dir = str(data_dir)
  c.dataset.num_workers = 1
  c.dataset.clip_seconds = 2.0
  c.dataset.synth.update(dict(clip_seconds=2.0, train=16, validation=8, test=8, unlabeled=8))
  c.teachers = ["resnet", "xception"]
  c.model.overrides = dict(widths=[8, 8, 8], stem_width=8, gru_features=8)
  for block in (c, c.teacher):
    block.total_steps, block.log_every, block.eval_every, block.checkpoint_every = 4, 2, 4, 4
    block.batch_size = block.eval.batch_size = 4
  c.kd.cache_batch_size = 4
  return c


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  config = tiny_student_config(tmp_path_factory.mktemp("tfds"))
  workdir = tmp_path_factory.mktemp("student")
  return config, workdir, distill.run(config, workdir)


def test_results_have_every_row(experiment):
  config, workdir, results = experiment
  assert json.loads((workdir / "results.json").read_text()) == results
  assert results["dataset"] == "synth_sed" and results["split"] == "test"
  rows = {r["name"]: r for r in results["models"]}
  assert list(rows) == ["resnet", "xception", "ensemble", "student_no_kd",
                        "student_kd_class_weighted"]
  assert [rows[n]["role"] for n in rows] == ["teacher", "teacher", "ensemble", "student",
                                             "student"]
  assert rows["student_no_kd"]["kd"] == "none"
  assert rows["student_kd_class_weighted"]["kd"] == "multi:class_weighted"
  for r in rows.values():
    assert r["params"] > 0 and r["flops_per_clip"] > 0
    assert 0 <= r["event_f1"] <= 1 and 0 <= r["segment_f1"] <= 1
  assert rows["ensemble"]["params"] == rows["resnet"]["params"] + rows["xception"]["params"]


def test_report_has_the_table_and_its_plots(experiment):
  config, workdir, results = experiment
  report = (workdir / "report.md").read_text()
  assert "| student_kd_class_weighted | student | multi:class_weighted |" in report
  for png in ["training_curves.png"] + [f"event_roll_{i}.png" for i in range(3)]:
    assert f"(plots/{png})" in report
    assert (workdir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_kd_student_trained_on_cached_logits_and_unlabeled_clips(experiment):
  _, workdir, _ = experiment
  rows = [json.loads(l) for l in
          (workdir / "students" / "kd_class_weighted" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(r["loss_kd_frame"] > 0 and r["loss_kd_clip"] > 0 for r in train)
  no_kd = [json.loads(l) for l in
           (workdir / "students" / "no_kd" / "metrics.jsonl").read_text().splitlines()]
  assert all("loss_kd_frame" not in r for r in no_kd)


def test_rerun_reuses_every_stage(experiment):
  config, workdir, results = experiment
  before = {p: p.stat().st_mtime for p in workdir.rglob("metrics.jsonl")}
  assert distill.run(config, workdir) == results
  assert {p: p.stat().st_mtime for p in workdir.rglob("metrics.jsonl")} == before


def test_a_changed_teacher_stops_distillation_with_its_name(experiment):
  config, workdir, _ = experiment
  teacher_cfg = distill.teacher_config(config, "xception")
  test_teacher_cache.make_teacher(workdir / "teachers" / "xception", teacher_cfg, seed=9, step=99)
  config.kd.strategy = "mean_prob"
  with pytest.raises(distill.StaleCacheError, match="xception changed"):
    distill.build_cache(config, [teacher_cache.Teacher(n, str(workdir / "teachers" / n))
                                 for n in config.teachers])
