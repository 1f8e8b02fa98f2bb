"""export_scores and external teachers: a built-in teacher's scores written out and read back
in as an external teacher give the very cached logits, so the same KD student; external
teachers combine with built-in ones; bad score folders stop the cache build naming the file."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from sed_jax import config_checks
from sed_jax.kd import score_export
from sed_jax import train
from sed_jax.data import frame_scores
from sed_jax.kd import experiment
from sed_jax.kd import losses as kd_losses
from sed_jax.kd import teacher_cache
from tests import test_train
from tests.kd.test_teacher_cache import make_teacher

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A teacher run, its built-in cache, and its scores exported in both formats."""
  config = test_train.tiny_config(tmp_path_factory.mktemp("tfds"))
  root = tmp_path_factory.mktemp("runs")
  make_teacher(root / "resnet", config, seed=0)
  builtin = teacher_cache.make(config.dataset, config.features,
                               [teacher_cache.Teacher("resnet", str(root / "resnet"))])
  builtin.download_and_prepare()
  for fmt in ("tsv", "npz"):
    score_export.export(root / "resnet", root / f"scores_{fmt}", fmt)
  return config, root, builtin


def _arrays(cache):
  return {s: [(ex["teacher_logits"], ex["teacher_clip_logits"]) for ex in
              (cache.as_data_source(s)[i] for i in range(len(cache.as_data_source(s))))]
          for s in SPLITS}


def _external(config, folder, name="resnet"):
  cache = teacher_cache.make(config.dataset, config.features,
                             [teacher_cache.ExternalTeacher(name, str(folder))])
  cache.download_and_prepare()
  return cache


def test_the_export_layout_is_readable_by_sed_scores_eval(setup):
  _, root, builtin = setup
  from sed_scores_eval.base_modules import io as sse_io  # pylint: disable=g-import-not-at-top
  folder = root / "scores_tsv"
  source = json.loads((folder / "source.json").read_text())
  assert source["format"] == "tsv" and source["splits"] == list(builtin.info.splits)
  for split in SPLITS:
    ids = teacher_cache.audio_ids(builtin.as_data_source(split))
    assert sorted(p.stem for p in (folder / split).glob("*.tsv")) == sorted(
        frame_scores.file_stem(a) for a in ids)
    scores = sse_io.read_sed_scores(str(folder / split))  # The whole folder, by audio id.
    assert set(scores) == {frame_scores.file_stem(a) for a in ids}
  assert not list(root.glob(".scores_*"))  # No partial folder left.


@pytest.mark.parametrize("fmt", ["tsv", "npz"])
def test_round_trip_gives_the_built_in_teachers_cache_bit_for_bit(setup, fmt):
  config, root, builtin = setup
  external = _external(config, root / f"scores_{fmt}")
  assert external.builder_config.name != builtin.builder_config.name  # Another identity.
  for split, rows in _arrays(builtin).items():
    for (frame, clip), (ext_frame, ext_clip) in zip(rows, _arrays(external)[split]):
      np.testing.assert_array_equal(ext_frame, frame)
      np.testing.assert_array_equal(ext_clip, clip)
  meta = external.info.metadata["teachers"][0]
  assert meta["arch"] == "external" and meta["params"] is None
  assert meta["class_f1"] == builtin.info.metadata["teachers"][0]["class_f1"]


def test_the_kd_student_trained_from_the_round_trip_is_identical(setup, tmp_path):
  config, root, builtin = setup
  external = _external(config, root / "scores_npz")
  finals = []
  for name, cache in (("builtin", builtin), ("external", external)):
    meta = cache.info.metadata["teachers"]
    kd = kd_losses.distillation(
        ml_collections.ConfigDict(dict(
            loss="bce", strategy="class_weighted", alpha=0.5, temperature=2.0, clip_weight=0.5,
            weights=[])), [t["name"] for t in meta], 10, class_f1=[t["class_f1"] for t in meta])
    train.train_and_evaluate(config, tmp_path / name,
                             train_source=cache.as_data_source("train"), kd=kd)
    finals.append(test_train.final_params(config, tmp_path / name))
  for a, b in zip(*(sorted(jax_leaves(f)) for f in finals)):
    np.testing.assert_array_equal(a[1], b[1])


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [(jax.tree_util.keystr(k), np.asarray(v))
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_external_and_built_in_teachers_share_one_cache(setup):
  config, root, builtin = setup
  teachers = [teacher_cache.Teacher("resnet", str(root / "resnet")),
              teacher_cache.ExternalTeacher("torch", str(root / "scores_tsv"))]
  cache = teacher_cache.make(config.dataset, config.features, teachers)
  cache.download_and_prepare()
  ex, one = cache.as_data_source("validation")[3], builtin.as_data_source("validation")[3]
  assert ex["teacher_logits"].shape[0] == 2
  np.testing.assert_array_equal(ex["teacher_logits"][0], one["teacher_logits"][0])
  np.testing.assert_array_equal(ex["teacher_logits"][1], one["teacher_logits"][0])
  assert [t["name"] for t in cache.info.metadata["teachers"]] == ["resnet", "torch"]
  # Every strategy runs on the pair; class_weighted from both validation F1s.
  for strategy in ("mean_prob", "mean_logit", "class_weighted", "single:torch"):
    kd = experiment.objective(ml_collections.ConfigDict(dict(kd=dict(
        loss="bce", strategy=strategy, alpha=0.5, temperature=1.0, clip_weight=0.5,
        weights=[]))), cache)
    assert kd.weights.shape == (2, 10)
  # The external teacher's test metrics come from its cached scores: the built-in's own.
  classes = list(cache.info.metadata["classes"])
  (metrics,) = experiment.teacher_metrics(config, teachers[1:], cache, classes)
  own, _, _ = experiment.cached_metrics(config, cache.as_data_source("test"), classes,
                                        lambda b: experiment.teacher_probs(b)[:, 0])
  assert metrics == own


def test_without_clip_scores_the_frames_are_pooled_by_linear_softmax(setup, tmp_path):
  """A teacher that gives frame scores only: its clip target is the models' own linear-softmax
  pooling of its cached frames."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sed_jax.models import crnn  # pylint: disable=g-import-not-at-top
  config, root, _ = setup
  shutil.copytree(root / "scores_tsv", tmp_path / "frames_only")
  shutil.rmtree(tmp_path / "frames_only" / frame_scores.CLIP_FOLDER)
  cache = _external(config, tmp_path / "frames_only", "frames_only")
  ex = cache.as_data_source("test")[0]
  want = crnn.clip_logits_from_frames(jnp.asarray(ex["teacher_logits"], jnp.float32),
                                      "linear_softmax")
  np.testing.assert_allclose(ex["teacher_clip_logits"].astype(np.float32), want,
                             rtol=2e-3, atol=2e-3)


def _broken_copy(root, tmp_path, edit):
  folder = tmp_path / "scores"
  shutil.copytree(root / "scores_tsv", folder)
  return folder, edit(folder)


@pytest.mark.parametrize("edit, match", [
    (lambda f: next((f / "test").glob("*.tsv")).unlink(),
     r"scores/test: no scores for 1 of 8 clips of split 'test'"),
    (lambda f: _replace_line(f / "validation", 3, lambda cells: cells[:2] + ["1.7"] + cells[3:]),
     r"scores/validation/.*\.tsv:3: .* = 1\.7 is not a probability in \[0, 1\]"),
    (lambda f: _replace_line(f / "train", None, lambda cells: None),
     r"scores/train/.*\.tsv:\d+: the scores end at 1\.92 s, the clip lasts 2 s"),
])
def test_a_bad_score_folder_stops_the_build_naming_the_file(setup, tmp_path, edit, match):
  config, root, _ = setup
  folder, _ = _broken_copy(root, tmp_path, edit)
  cache = teacher_cache.make(config.dataset, config.features,
                             [teacher_cache.ExternalTeacher("torch", str(folder))])
  with pytest.raises(frame_scores.ScoresError, match=match):
    cache.download_and_prepare()
  assert not cache.is_prepared()
  assert not list(Path(config.dataset.data_dir).rglob("incomplete.*"))


def _replace_line(split_dir, line, change):
  """Rewrites line `line` (1-based; None: drops the last row) of the split's first TSV."""
  path = sorted(split_dir.glob("*.tsv"))[0]
  lines = path.read_text().splitlines()
  if line is None:
    lines = lines[:-1]
  else:
    lines[line - 1] = "\t".join(change(lines[line - 1].split("\t")))
  path.write_text("\n".join(lines) + "\n")


def test_config_checks_name_a_bad_external_entry(setup, tmp_path):
  sys.path.insert(0, str(ROOT))
  from configs import student  # pylint: disable=g-import-not-at-top
  c = student.get_config("smoke")
  c.teachers = ("resnet", f"external:torch={tmp_path / 'nowhere'}", "external:=x",
                "external:resnet=" + str(tmp_path))
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(c)
  problems = str(e.value)
  assert "nowhere does not exist; write the teacher's scores there first" in problems
  assert "'external:=x': write external:<name>=<folder>" in problems
  assert "must be distinct" in problems  # 'resnet' twice, once external.
  c.teachers = ("resnet", f"external:torch={tmp_path}")
  c.kd.strategy = "single:torch"
  config_checks.check(c)


def test_the_command_refuses_to_overwrite_and_names_the_run(setup, tmp_path):
  _, root, _ = setup
  out = tmp_path / "scores"
  out.mkdir()
  proc = subprocess.run([sys.executable, "-m", "sed_jax.export_scores",
                         f"--workdir={root / 'resnet'}", f"--out={out}"],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 1 and "exists; pass --overwrite" in proc.stderr
