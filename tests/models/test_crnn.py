"""CRNN family: shapes, clip pooling, parameter budgets, modes, dtypes, determinism.

Compilation dominates the run time, so every test model is tiny (a few channels, T = 18 frames),
the per-architecture test compiles one function that both initialises and applies, and the keys
are "rbg" keys: XLA compiles their random-bit generator several times faster than threefry's,
which otherwise dominates compiling `init`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax.models import crnn
from sed_jax.models import blocks
from sed_jax.models import cost

C = 3
X_SHAPE = (2, 18, 64)  # 18 frames: T // 4 = 4 checks that a remainder is dropped.
T_OUT = X_SHAPE[1] // 4


def _key(seed):
  return jax.random.key(seed, impl="rbg")


RNGS = {"params": _key(0), "dropout": _key(1)}
TINY = dict(gru_features=6, gru_layers=1)
# Small widths for each front-end; each architecture also gets a different clip pooling, so the
# one compile per architecture checks both.
TINY_ARCHS = {
    "gated": dict(widths=(4, 6), pooling="attention"),
    "resnet": dict(widths=(4, 6), stem_width=4, blocks_per_stage=1, pooling="linear_softmax"),
    "densenet": dict(widths=(4, 6), stem_width=4, layers_per_block=1, growth=4, pooling="max"),
    "inception": dict(widths=(4, 8), stem_width=4, pooling="attention"),
    "xception": dict(widths=(4, 6), stem_width=4, pooling="linear_softmax"),
    "student": dict(pooling="max"),  # The real student front-end (it is small already).
}


def _x(seed=0, shape=X_SHAPE):
  """Log-mel-like input: unnormalised (the model's input BatchNorm must cope)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 3.0 - 5.0, jnp.float32)


def _tiny(arch="gated", **kw):
  return crnn.make_model(arch, C, **{**TINY, **TINY_ARCHS[arch], **kw})


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_shapes_dtypes_and_clip_pooling(arch):
  model = _tiny(arch)
  (frame, clip), variables = jax.jit(
      lambda x: model.init_with_output(RNGS, x, train=False))(_x())
  assert frame.shape == (X_SHAPE[0], T_OUT, C) and clip.shape == (X_SHAPE[0], C)
  assert frame.dtype == clip.dtype == jnp.float32
  assert np.isfinite(frame).all() and np.isfinite(clip).all()
  assert set(variables) == {"params", "batch_stats"}
  # The clip probability lies within the frame probabilities, and max pooling picks the max.
  p, pc = _sigmoid(frame), _sigmoid(clip)
  assert (pc >= p.min(1) - 1e-6).all() and (pc <= p.max(1) + 1e-6).all()
  if model.pooling == "max":
    np.testing.assert_allclose(clip, frame.max(1), rtol=1e-6)


def _abstract_params(arch):
  return cost.abstract_variables(crnn.make_model(arch, 10), (1, 500, 64))["params"]


def test_default_scale_parameter_budget():
  """Teachers 0.8-5 M parameters each; the student at most 1/50 of the mean teacher."""
  counts = {a: cost.count_params(_abstract_params(a)) for a in crnn.ARCHS}
  for arch in crnn.TEACHER_ARCHS:
    assert 0.8e6 <= counts[arch] <= 5e6, (arch, counts[arch])
  mean_teacher = np.mean([counts[a] for a in crnn.TEACHER_ARCHS])
  assert counts["student"] <= mean_teacher / 50, counts


def test_student_is_depthwise_separable():
  params = _abstract_params("student")["frontend"]
  assert any("depthwise" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(params))


def test_make_model_errors_name_the_choices():
  with pytest.raises(ValueError, match="known: gated, resnet, densenet, inception, xception, "
                     "student"):
    crnn.make_model("vgg", C)
  with pytest.raises(ValueError, match="unknown model overrides.*widthz.*valid:.*widths"):
    crnn.make_model("resnet", C, widthz=(4,))
  model = crnn.make_model("resnet", C, widths=[4, 6], gru_layers=1, time_pool=2)
  assert model.frontend.widths == (4, 6) and model.frontend.time_pool == 2
  assert model.gru_layers == 1
  with pytest.raises(ValueError, match="pooling"):
    crnn.clip_logits_from_frames(jnp.zeros((1, 2, 1)), "mean")


def test_input_errors_are_explicit():
  """Shape mistakes fail at trace time with a message (checked with eval_shape: no compile)."""
  model = _tiny("gated")
  x = jax.ShapeDtypeStruct(X_SHAPE, jnp.float32)
  variables = jax.eval_shape(model.init, RNGS, x)
  apply = lambda x, frame_mask=None: jax.eval_shape(
      lambda v, x, m: model.apply(v, x, frame_mask=m), variables, x, frame_mask)
  mask = jax.ShapeDtypeStruct((X_SHAPE[0], T_OUT), jnp.bool_)
  assert apply(x, frame_mask=mask)[0].shape == (X_SHAPE[0], T_OUT, C)
  with pytest.raises(ValueError, match="frame_mask has shape"):
    apply(x, frame_mask=jax.ShapeDtypeStruct(X_SHAPE[:2], jnp.bool_))
  with pytest.raises(ValueError, match="batch, frames, mels"):
    apply(jax.ShapeDtypeStruct((*X_SHAPE, 1), jnp.float32))
  with pytest.raises(ValueError, match="fewer than time_pool"):
    apply(jax.ShapeDtypeStruct((1, 3, 64), jnp.float32))


def test_train_and_eval_modes_and_determinism():
  model = _tiny("gated")
  x = _x()
  init = jax.jit(lambda rng: model.init({"params": rng, "dropout": rng}, x, train=False))
  variables, again = init(_key(0)), init(_key(0))
  jax.tree.map(np.testing.assert_array_equal, variables, again)

  @jax.jit
  def run(variables, dropout_seed):
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                     rngs={"dropout": _key(dropout_seed)})
    return train_out, updates, model.apply(variables, x, train=False)

  train_a, updates, eval_a = run(variables, 1)
  train_a2, _, eval_a2 = run(variables, 1)
  train_b, _, eval_b = run(variables, 2)
  # Same inputs and rngs: same outputs. Dropout acts (and depends on the rng) in train mode
  # only; eval mode uses no rng at all.
  jax.tree.map(np.testing.assert_array_equal, (train_a, eval_a), (train_a2, eval_a2))
  assert not np.allclose(train_a[0], train_b[0])
  np.testing.assert_array_equal(eval_a[0], eval_b[0])
  # Train mode updates the running statistics; eval mode reads them and changes nothing
  # (apply without `mutable` would raise if it tried).
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"],
                         updates["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  x = _x()
  f32 = _tiny("student")
  bf16 = _tiny("student", dtype=jnp.bfloat16)
  variables = jax.jit(lambda x: bf16.init(RNGS, x))(x)
  assert {l.dtype for l in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  (frame, clip), (frame32, clip32) = jax.jit(
      lambda v, x: (bf16.apply(v, x), f32.apply(v, x)))(variables, x)
  assert frame.dtype == clip.dtype == jnp.float32
  np.testing.assert_allclose(frame, frame32, atol=0.1)
  np.testing.assert_allclose(clip, clip32, atol=0.1)


# Clip pooling on its own (no model): against probability-space definitions in numpy.

def test_clip_pooling_matches_probability_definitions():
  rng = np.random.default_rng(0)
  l = rng.normal(size=(2, 5, 3)) * 4
  a = rng.normal(size=(2, 5, 3))
  p = _sigmoid(l)
  w = np.exp(a) / np.exp(a).sum(1, keepdims=True)
  logit = lambda q: np.log(q) - np.log1p(-q)
  want = {"attention": logit((w * p).sum(1)),
          "linear_softmax": logit((p * p).sum(1) / p.sum(1)),
          "max": l.max(1)}
  for pooling, expected in want.items():
    got = crnn.clip_logits_from_frames(jnp.asarray(l, jnp.float32), pooling,
                                       jnp.asarray(a, jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=pooling)


@pytest.mark.parametrize("pooling", crnn.POOLINGS)
def test_clip_pooling_is_finite_for_confident_frames_and_respects_the_mask(pooling):
  l = jnp.array([[[40.0], [30.0], [100.0]], [[-100.0], [-90.0], [-80.0]]])
  att = jnp.zeros_like(l)
  mask = jnp.array([[True, True, False], [False, False, False]])

  @jax.jit
  def run(l, att, mask):
    pool = lambda l, att, mask=None: crnn.clip_logits_from_frames(l, pooling, att, mask)
    grads = jax.grad(lambda l: pool(l, att).sum())(l)
    return pool(l, att), grads, pool(l, att, mask), pool(l[:1, :2], att[:1, :2])

  out, grads, masked, first_two = run(l, att, mask)
  assert np.isfinite(out).all() and np.isfinite(grads).all()
  assert out[0, 0] > 30 and out[1, 0] < -70
  # Masked frames are ignored: same as pooling the real frames only. A fully masked example
  # still gives a finite value.
  np.testing.assert_allclose(masked[0], first_two[0], rtol=1e-6)
  assert np.isfinite(masked).all()


# FLOP counting (sed_jax.models.cost).

def test_scan_aware_flops_count_every_time_step():
  """XLA counts a scan body once; the corrected count of T frames is T x the one-frame count
  (up to the loop counter), which plain XLA undercounts."""
  model = blocks.BiGRU(4)

  def flops(count, frames):
    x = jax.ShapeDtypeStruct((1, frames, 3), jnp.float32)
    variables = jax.eval_shape(model.init, _key(0), x)
    return count(lambda v, x: model.apply(v, x), variables, x)

  one = flops(cost.xla_flops, 1)
  # A few FLOPs of loop bookkeeping (counter, index arithmetic) per scan.
  np.testing.assert_allclose(flops(cost.scan_aware_flops, 6), 6 * one, atol=10)
  assert flops(cost.xla_flops, 6) < 0.8 * 6 * one


def test_summary_table():
  tiny = {a: {**TINY, **TINY_ARCHS[a]} for a in ("gated", "student")}
  rows = cost.cost_table(("gated", "student"), C, (1, 16, 64), tiny)
  assert [r["role"] for r in rows] == ["teacher", "student"]
  for r in rows:
    model = crnn.make_model(r["arch"], C, **tiny[r["arch"]])
    assert r["params"] == cost.count_params(
        cost.abstract_variables(model, (1, 16, 64))["params"])
    assert r["flops"] > 2 * r["params"]  # Each weight is used at least once (2 FLOPs/MAC).
  assert rows[0]["params_compression"] == 1.0
  np.testing.assert_allclose(rows[1]["params_compression"], rows[0]["params"] / rows[1]["params"])
  table = cost.markdown_table(rows, (1, 16, 64)).splitlines()
  assert len(table) == 4 and table[2].startswith("| gated | teacher |")


@pytest.mark.parametrize("stem_pool", [(2, 1), (4, 2), (1, 4)])
def test_stem_pool_keeps_the_output_frame_rate(stem_pool):
  """Pooling behind the stem counts towards `time_pool`: T // 4 output frames for any T
  (checked with eval_shape: no compile)."""
  model = _tiny("resnet", stem_pool=stem_pool)
  for frames in (18, 21, 8):
    x = jax.ShapeDtypeStruct((1, frames, 64), jnp.float32)
    frame, _ = jax.eval_shape(lambda x: model.init_with_output(RNGS, x)[0], x)
    assert frame.shape == (1, frames // 4, C)
  with pytest.raises(ValueError, match="stem_pool time factor 3 does not divide time_pool 4"):
    jax.eval_shape(lambda x: _tiny("resnet", stem_pool=(3, 1)).init(RNGS, x),
                   jax.ShapeDtypeStruct(X_SHAPE, jnp.float32))


def test_compiler_options_pick_the_older_fusion_emitter_for_depthwise_front_ends_only():
  """The depthwise-separable front-ends compile with XLA:CPU's older fusion emitter (why:
  `crnn.compiler_options`), only under the CPU paths; with it, a training gradient is the same
  function (float32 rounding apart)."""
  older = {"xla_cpu_use_fusion_emitters": False}
  for arch, expected in (("student", older), ("xception", older), ("resnet", {}),
                         ("gated", {}), ("densenet", {}), ("inception", {})):
    assert crnn.compiler_options(crnn.make_model(arch, C)) == expected, arch
  assert crnn.compiler_options(crnn.make_model("student", C, cpu_kernels="off")) == {}

  model = _tiny("xception")
  x = _x()
  variables = jax.jit(lambda rng: model.init({"params": rng, "dropout": rng}, x))(_key(0))

  def loss(params):
    (frames, clips), _ = model.apply({**variables, "params": params}, x, train=True,
                                     mutable=["batch_stats"], rngs={"dropout": _key(1)})
    return jnp.sum(frames ** 2) + jnp.sum(clips)

  grads = [jax.jit(jax.grad(loss), compiler_options=options)(variables["params"])
           for options in ({}, crnn.compiler_options(model))]
  # The two emitters fuse (and so round) differently: gradients of magnitude ~1 differ by up
  # to a few 1e-6 either way, the tolerance of every "same numbers" test of the models.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), *grads)
