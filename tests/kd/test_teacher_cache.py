"""Teacher cache: logits read back equal the teachers' outputs; stale and mismatched teachers."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from sed_jax import checkpoint
from sed_jax import train
from sed_jax.data import pipeline
from sed_jax.data.builders import base
from sed_jax.kd import teacher_cache
from tests import test_train
import tests


def make_teacher(workdir, config, seed, step=1, broken=False):
  """A 'trained' teacher run: config.json and a best checkpoint of freshly initialised weights
  (NaN weights when `broken`)."""
  model = train.model_from_config(config, 10)
  tx, _ = train.make_optimizer(config.optim, config.total_steps)
  frames = pipeline.clip_frames(config.dataset, config.features)
  state = train.init_state(model, tx, jax.random.key(seed), (1, frames, config.features.n_mels))
  if broken:
    state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
  checkpoint.write_config(workdir, config)
  ckpt = checkpoint.Checkpointer(workdir)
  ckpt.save_best(step, state, score=float(step))
  ckpt.close()
  return model, {"params": state.params, "batch_stats": state.batch_stats}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config = test_train.tiny_config(tmp_path_factory.mktemp("tfds"))
  runs = tmp_path_factory.mktemp("teachers")
  models = {name: make_teacher(runs / name, config, seed)
            for seed, name in enumerate(("resnet", "gated"))}
  teachers = [teacher_cache.Teacher(name, str(runs / name)) for name in models]
  cache = teacher_cache.make(config.dataset, config.features, teachers, batch_size=4)
  cache.download_and_prepare()
  return config, runs, models, teachers, cache


def test_cached_logits_equal_the_teachers_outputs(setup):
  config, _, models, _, cache = setup
  src = cache.as_data_source("validation")
  fix = pipeline.FixLength(pipeline.clip_frames(config.dataset, config.features),
                           config.features.time_pool, config.features.log_floor)
  for i in range(len(src)):
    ex = src[i]
    assert ex["teacher_logits"].shape == (2, ex["strong"].shape[0], 10)
    assert ex["teacher_logits"].dtype == np.float16
    inp = fix.map(ex)
    for k, (model, variables) in enumerate(models.values()):
      frame, clip = model.apply(variables, inp["log_mel"][None], train=False,
                                frame_mask=inp["frame_mask"][None])
      np.testing.assert_allclose(ex["teacher_logits"][k], frame[0], rtol=2e-3, atol=2e-3)
      np.testing.assert_allclose(ex["teacher_clip_logits"][k], clip[0], rtol=2e-3, atol=2e-3)


def test_every_split_and_the_base_features_are_there(setup):
  config, _, _, _, cache = setup
  assert sorted(cache.info.splits) == ["test", "train", "validation"]
  ex = cache.as_data_source("train")[0]
  assert {"log_mel", "strong", "weak", "event_onsets", "teacher_clip_logits"} <= set(ex)
  # The training pipeline carries the logits into batches.
  batch = next(iter(pipeline.train_loader(cache.as_data_source("train"), batch_size=4, seed=0,
                                          data_cfg=config.dataset,
                                          feature_cfg=config.features)))
  assert batch["teacher_logits"].shape == (4, 2, 25, 10)


def test_metadata_describes_each_teacher(setup):
  _, _, _, _, cache = setup
  teachers = cache.info.metadata["teachers"]
  assert [t["name"] for t in teachers] == ["resnet", "gated"]
  for t in teachers:
    assert t["arch"] == "student" and t["step"] == 1 and t["params"] > 0
    assert len(t["class_f1"]) == 10 and all(0 <= f <= 1 for f in t["class_f1"])


def test_a_retrained_teacher_means_a_new_cache_and_is_named(setup, tmp_path):
  config, runs, _, teachers, cache = setup
  same = teacher_cache.make(config.dataset, config.features, teachers, batch_size=8)
  assert same.builder_config.name == cache.builder_config.name and same.is_prepared()
  make_teacher(runs / "gated", config, seed=7, step=2)  # 'gated' was retrained.
  new = teacher_cache.make(config.dataset, config.features, teachers, batch_size=4)
  assert new.builder_config.name != cache.builder_config.name and not new.is_prepared()
  assert teacher_cache.find_stale(new) == ["gated"]
  # The same teacher names trained in other run folders (another experiment sharing this
  # data_dir) are another teacher set, not a stale one.
  elsewhere = [teacher_cache.Teacher(t.name, str(tmp_path / t.name)) for t in teachers]
  for t in elsewhere:
    shutil.copytree(runs / t.name, t.workdir)
  make_teacher(Path(elsewhere[1].workdir), config, seed=9, step=3)
  other = teacher_cache.make(config.dataset, config.features, elsewhere, batch_size=4)
  assert not other.is_prepared() and teacher_cache.find_stale(other) == []


def test_a_teacher_with_another_frame_rate_is_refused_before_any_work(setup, tmp_path):
  config, _, _, teachers, _ = setup
  other = test_train.tiny_config(config.dataset.data_dir)
  other.features.time_pool = 2
  make_teacher(tmp_path / "fast", other, seed=3)
  with pytest.raises(ValueError, match="Teacher 'fast'.*frame rate"):
    teacher_cache.make(config.dataset, config.features,
                       [*teachers, teacher_cache.Teacher("fast", str(tmp_path / "fast"))])
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    teacher_cache.make(config.dataset, config.features,
                       [teacher_cache.Teacher("none", str(tmp_path))])


def test_the_cache_is_found_whatever_the_data_dir_spelling(setup, monkeypatch):
  config, _, _, teachers, _ = setup
  data_dir = Path(config.dataset.data_dir)
  monkeypatch.chdir(data_dir.parent)
  other = config.dataset.copy_and_resolve_references()
  other.update(dict(data_dir=data_dir.name, num_workers=3))  # Relative; other workers.
  names = [teacher_cache.make(d, config.features, teachers, batch_size=4).builder_config.name
           for d in (config.dataset, other)]
  assert names[0] == names[1]


def test_a_teacher_with_nan_weights_stops_the_build_naming_it(setup, tmp_path):
  config, _, _, teachers, _ = setup
  make_teacher(tmp_path / "broken", config, seed=5, broken=True)
  broken = teacher_cache.Teacher("broken", str(tmp_path / "broken"))
  cache = teacher_cache.make(config.dataset, config.features, [teachers[0], broken],
                             batch_size=4)
  with pytest.raises(base.BuildError, match=r"Teacher 'broken' .* outputs NaN/inf logits on \d+ "
                     r"\w+ clip\(s\), the first '.+': its checkpoint is broken"):
    cache.download_and_prepare()
  assert not cache.is_prepared()
  assert not list(Path(config.dataset.data_dir).rglob("incomplete.*"))


def test_inference_sharded_over_8_devices_gives_the_1_device_cache(setup, tmp_path):
  """The cache build splits each batch over every local device (a TPU host's 4 or 8): the same
  logits as on one device, even when the batch size is no multiple of the device count."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import textwrap  # pylint: disable=g-import-not-at-top
  config, _, _, _, cache = setup
  root = Path(__file__).resolve().parents[2]
  script = textwrap.dedent(f"""
      import sys
      from pathlib import Path
      import jax, numpy as np
      sys.path.insert(0, {str(root)!r})
      from sed_jax.kd import teacher_cache
      from tests import test_train
      from tests.kd.test_teacher_cache import make_teacher
      assert len(jax.local_devices()) == 8
      config = test_train.tiny_config({config.dataset.data_dir!r})  # The built base dataset.
      runs = Path({str(tmp_path / "teachers")!r})
      # Other names, so that this is surely a new cache, built here on 8 devices.
      for seed, name in enumerate(("resnet8", "gated8")):
        make_teacher(runs / name, config, seed)
      teachers = [teacher_cache.Teacher(n, str(runs / n)) for n in ("resnet8", "gated8")]
      cache = teacher_cache.make(config.dataset, config.features, teachers, batch_size=3)
      assert not cache.is_prepared()
      cache.download_and_prepare()
      src = cache.as_data_source("validation")
      np.save({str(tmp_path / "logits.npy")!r},
              np.stack([src[i]["teacher_logits"] for i in range(len(src))]))
  """)
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags("--xla_force_host_platform_device_count=8"),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        cwd=root, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  src = cache.as_data_source("validation")
  one_device = np.stack([src[i]["teacher_logits"] for i in range(len(src))])
  np.testing.assert_allclose(np.load(tmp_path / "logits.npy").astype(np.float32),
                             one_device.astype(np.float32), rtol=2e-3, atol=2e-3)
