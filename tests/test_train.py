"""The training loop end to end on tiny data: outputs, resume after SIGKILL, NaN stop."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax import checkpoint
from sed_jax import config_lib
from sed_jax import train
from sed_jax.data import pipeline
from sed_jax.kd import losses as kd_losses
from sed_jax.models import crnn
import tests

CONFIG = "configs/teacher.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir):
  """configs/teacher.py smoke with a tiny model and 2-s clips (what the tests can afford)."""
  sys.path.insert(0, ROOT)
  from configs import teacher  # pylint: disable=g-import-not-at-top
  c = teacher.get_config("arch=student,smoke")
  c.dataset.data_dir = str(data_dir)
  c.dataset.num_workers = 1
  c.dataset.clip_seconds = 2.0
  c.dataset.synth.update(dict(train=16, validation=8, test=8, unlabeled=0))
  c.model.overrides = dict(widths=[8, 8, 8], stem_width=8, gru_features=8)
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 2
  c.batch_size = c.eval.batch_size = 4
  c.eval.psds = False
  return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
  """One uninterrupted run: (config, workdir, test metrics)."""
  config = tiny_config(data_dir)
  workdir = tmp_path_factory.mktemp("run")
  return config, workdir, train.train_and_evaluate(config, workdir)


def final_params(config, workdir):
  ckpt = checkpoint.Checkpointer(workdir)
  state = ckpt.restore(None)
  ckpt.close()
  return state["params"]


def test_a_run_writes_metrics_checkpoints_and_test_results(finished):
  config, workdir, test = finished
  assert {"event_f1_macro", "segment_f1_macro", "segment_er", "class_wise"} <= set(test)
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]
  assert [r["step"] for r in rows if r["split"] == "validation"] == [3, 6]
  assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]
  assert os.listdir(workdir / "best") and list((workdir / "tensorboard").iterdir())
  assert json.loads((workdir / "config.json").read_text())["model"]["arch"] == "student"
  assert checkpoint.read_checkpoint_config(workdir)["total_steps"] == config.total_steps
  assert json.loads((workdir / "test_metrics.json").read_text())["event_f1_macro"] == \
      test["event_f1_macro"]


def test_a_finished_run_is_not_redone(finished):
  config, workdir, test = finished
  before = (workdir / "metrics.jsonl").read_text()
  assert train.train_and_evaluate(config, workdir) == json.loads(json.dumps(test))
  assert (workdir / "metrics.jsonl").read_text() == before


def test_resume_after_sigkill_gives_the_uninterrupted_parameters(finished, tmp_path):
  config, reference_dir, _ = finished
  workdir = tmp_path / "killed"
  # Kill the process (SIGKILL: no cleanup) while it fetches the batch of step 4, after the
  # checkpoint of step 2 is on disk.
  script = textwrap.dedent(f"""
      import os, signal, sys, time
      sys.path.insert(0, {ROOT!r})
      from sed_jax import sharding, train
      from tests import test_train
      real, calls = sharding.to_global, []
      def dying(batch, mesh):
        calls.append(1)
        if len(calls) == 4:
          time.sleep(1.0)  # Let the asynchronous checkpoint of step 2 finish.
          os.kill(os.getpid(), signal.SIGKILL)
        return real(batch, mesh)
      sharding.to_global = dying
      train.train_and_evaluate(test_train.tiny_config({str(config.dataset.data_dir)!r}),
                               {str(workdir)!r})
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        cwd=ROOT)
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert (workdir / "checkpoints" / "2").is_dir()
  assert not (workdir / "test_metrics.json").exists()
  train.train_and_evaluate(tiny_config(config.dataset.data_dir), workdir)
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]  # Steps 3-4 redone.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               final_params(config, workdir), final_params(config, reference_dir))


def test_one_step_a_call_gives_the_same_run(finished, tmp_path):
  # `finished` ran 2 steps a call (the default): calls of steps 1-2, 3, 4, 5-6 between its
  # boundaries. The steps, metrics and checkpoints must be those of one step a call.
  config, reference_dir, _ = finished
  assert config.steps_per_call == 2
  config = tiny_config(config.dataset.data_dir)
  config.steps_per_call = 1
  train.train_and_evaluate(config, tmp_path)
  rows = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()
                    if json.loads(l)["split"] == "train"]
  for got, want in zip(rows(tmp_path), rows(reference_dir), strict=True):
    assert got["step"] == want["step"]
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               final_params(config, tmp_path), final_params(config, reference_dir))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir)
  real, calls, poisoned_ids = pipeline.FixLength.map, [], []

  def poisoned(self, ex):
    out = real(self, ex)
    calls.append(1)
    if len(calls) == 2 * config.batch_size + 2:  # One example of the 3rd training batch.
      out["log_mel"] = out["log_mel"].copy()
      out["log_mel"][5, 3] = np.inf
      poisoned_ids.append(out["audio_id"])
    return out

  monkeypatch.setattr(pipeline.FixLength, "map", poisoned)
  with pytest.raises(train.NonFiniteLossError) as err:
    train.train_and_evaluate(config, tmp_path)
  assert str(err.value).startswith("Non-finite input at step 3 ")
  assert f"1 example(s), here: {poisoned_ids[0]}." in str(err.value)
  params = final_params(config, tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  assert not (tmp_path / "test_metrics.json").exists()


@pytest.mark.parametrize("name", ["adam", "adamw", "lamb", "lars"])
def test_optimizers_and_schedule(name):
  cfg = config_lib.common().optimizer()
  cfg.update(dict(name=name, lr=0.1, warmup_steps=10, final_lr_ratio=0.1))
  tx, schedule = train.make_optimizer(cfg, 100)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(0.1)
  assert float(schedule(100)) == pytest.approx(0.01)
  params = {"w": np.ones(3, np.float32)}
  updates, _ = tx.update({"w": np.ones(3, np.float32)}, tx.init(params), params)
  assert np.isfinite(updates["w"]).all()
  cfg.name = "sgdx"
  with pytest.raises(ValueError, match="optim.name"):
    train.make_optimizer(cfg, 100)


@pytest.mark.parametrize("rule, batch, lr", [("none", 4096, 1e-3), ("linear", 4096, 64e-3),
                                              ("sqrt", 4096, 8e-3), ("linear", 16, 0.25e-3),
                                              ("sqrt", 64, 1e-3)])
def test_lr_scaling_rules_from_the_base_batch(rule, batch, lr):
  cfg = config_lib.common().optimizer()
  cfg.update(dict(lr=1e-3, base_batch_size=64, lr_scaling=rule, warmup_steps=5,
                  final_lr_ratio=1.0))
  assert train.peak_lr(cfg, batch) == pytest.approx(lr)
  _, schedule = train.make_optimizer(cfg, 1000, batch)
  assert float(schedule(500)) == pytest.approx(lr, rel=1e-5)


def test_warmup_in_examples_is_the_same_data_at_any_batch_size():
  cfg = config_lib.common().optimizer()
  cfg.update(dict(warmup_examples=64_000, warmup_steps=3))
  assert [train.warmup_steps(cfg, b) for b in (64, 1000, 4096)] == [1000, 64, 16]
  cfg.warmup_examples = 0
  assert train.warmup_steps(cfg, 4096) == 3
  cfg.lr_scaling = "cubic"
  with pytest.raises(ValueError, match="optim.lr_scaling='cubic'"):
    train.peak_lr(cfg, 64)


def random_batch(config, b=4, seed=0, teachers=0):
  """A learnable batch; with `teachers` = K, cached teacher logits too (for KD steps)."""
  rng = np.random.default_rng(seed)
  frames = pipeline.clip_frames(config.dataset, config.features)
  t_out, c = frames // config.features.time_pool, 10
  strong = (rng.random((b, t_out, c)) < 0.2).astype(np.float32)
  # Learnable: class k is loud in mel bands 6k..6k+5 of the frames where it is active.
  loud = np.repeat(np.repeat(strong, config.features.time_pool, 1), 6, 2)
  mel = rng.standard_normal((b, frames, config.features.n_mels)).astype(np.float32)
  mel[:, :, :6 * c] += 3.0 * loud
  out = dict(log_mel=mel, strong=strong, weak=strong.max(1),
             has_strong=np.resize([True, True, False, True], b), has_weak=np.ones(b, bool),
             frame_mask=np.ones((b, t_out), bool))
  if teachers:
    out["teacher_logits"] = rng.normal(0, 3, (b, teachers, t_out, c)).astype(np.float16)
    out["teacher_clip_logits"] = rng.normal(0, 3, (b, teachers, c)).astype(np.float16)
  return out


def make_step(config):
  model = train.model_from_config(config, 10)
  tx, _ = train.make_optimizer(config.optim, config.total_steps)
  frames = pipeline.clip_frames(config.dataset, config.features)
  state = train.init_state(model, tx, jax.random.key(0), (1, frames, config.features.n_mels))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, loss_cfg=config.loss))
  return state, step


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_real_step_fits_a_batch(data_dir, dtype):
  config = tiny_config(data_dir)
  config.model.dtype = dtype
  config.optim.update(dict(warmup_steps=0, lr=3e-2))
  config.total_steps = 200
  state, step = make_step(config)
  batch = random_batch(config)
  losses = []
  for _ in range(40):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < 0.85 * losses[0], losses
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
  assert int(state.step) == 40


@pytest.mark.slow
def test_8_devices_give_the_1_device_step(data_dir):
  """Same global batch on a 1-device and an 8-device `data` mesh: same loss and parameters, for
  a supervised step, a distillation step and a distillation step in micro-batches."""
  script = textwrap.dedent(f"""
      import functools, sys
      import jax, numpy as np
      sys.path.insert(0, {ROOT!r})
      from sed_jax import sharding, train
      from sed_jax.kd import losses as kd_losses
      from tests import test_train
      config = test_train.tiny_config({str(data_dir)!r})
      config.batch_size = 16
      # Supervised; distillation from 2 cached teachers; distillation in 2 micro-batches.
      for alpha, accum in ((0.0, 1), (0.5, 1), (0.5, 2)):
        kd = dict(kd=kd_losses.Distillation(np.full((2, 10), 0.5, np.float32), alpha=alpha,
                                            temperature=2.0)) if alpha else {{}}
        batch = test_train.random_batch(config, b=16, teachers=2 if alpha else 0)
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
          mesh = sharding.make_mesh(devices)
          repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
          state, _ = test_train.make_step(config)
          model = train.model_from_config(config, 10)
          tx, _ = train.make_optimizer(config.optim, config.total_steps)
          step = jax.jit(functools.partial(train.train_step, model=model, tx=tx,
                                           loss_cfg=config.loss, accum_steps=accum, **kd),
                         in_shardings=(repl, data), out_shardings=(repl, repl))
          state = jax.device_put(state, repl)
          global_batch = sharding.to_global(batch, mesh)
          assert len(global_batch["log_mel"].sharding.device_set) == len(devices)
          losses = []
          for _ in range(3):
            state, m = step(state, global_batch)
            losses.append(float(m["loss"]))
          results.append((losses, jax.device_get(state.params)))
        (l1, p1), (l8, p8) = results
        np.testing.assert_allclose(l1, l8, rtol=1e-5, atol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), p1, p8)
        print("ok", alpha, accum, l1)
      assert len(jax.devices()) == 8
  """)
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags("--xla_force_host_platform_device_count=8"),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        cwd=ROOT)
  assert proc.returncode == 0 and proc.stdout.count("ok") == 3, proc.stderr[-3000:]


class PlainFrontEnd(crnn.FrontEnd):
  """Convolutions without BatchNorm: a model whose loss is a sum over examples, so gradient
  accumulation must reproduce the whole-batch step exactly."""

  def stage(self, i, x, train):
    return nn.relu(nn.Conv(self.widths[i], (3, 3), name=f"conv{i}")(x))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_gradient_accumulation_is_the_whole_batch_step(data_dir, alpha):
  config = tiny_config(data_dir)
  model = crnn.CRNN(num_classes=10, frontend=PlainFrontEnd(widths=(4, 4), time_pool=4,
                                                           conv_dropout=0.0),
                    gru_features=8, dropout=0.0, input_norm=False)
  tx, _ = train.make_optimizer(config.optim, config.total_steps)
  frames = pipeline.clip_frames(config.dataset, config.features)
  batch = random_batch(config, b=8, teachers=3 if alpha else 0)
  # Uneven label kinds and padding across micro-batches: each term's mean must still be the
  # whole batch's, not a mean of micro-batch means.
  batch["frame_mask"][[1, 6], 15:] = False
  batch["has_weak"][[0, 4, 5]] = False
  kd = dict(kd=kd_losses.Distillation(jnp.full((3, 10), 1 / 3), alpha=alpha,
                                      temperature=2.0)) if alpha else {}
  runs = {}
  for k in (1, 2, 4):
    state = train.init_state(model, tx, jax.random.key(0), (1, frames, config.features.n_mels))
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx,
                                     loss_cfg=config.loss, accum_steps=k, **kd))
    losses = []
    for _ in range(2):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
    runs[k] = (losses, m, state.params)
  for k in (2, 4):
    np.testing.assert_allclose(runs[k][0], runs[1][0], rtol=1e-5)
    for key in ("loss_strong", "loss_weak") + (("loss_kd_frame",) if alpha else ()):
      np.testing.assert_allclose(runs[k][1][key], runs[1][1][key], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 runs[k][2], runs[1][2])
