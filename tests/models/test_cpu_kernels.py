"""sed_jax.models.cpu_kernels: each CPU path of convolution and pooling against the lax / flax
op it replaces, and every architecture with `cpu_kernels="off"` (stock ops) against "auto" (the
CPU paths; these tests run on CPU): same variables, and outputs and gradients (w.r.t. the
parameters and the input) within 1e-5 in train and eval mode. BatchNorm against
`nn.BatchNorm` under both settings: test_blocks.py.

Compilation dominates: the models are tiny (batch 2, 8 frames, 8 mels, one stage of the narrowest
widths), initialised eagerly, and one jitted function per architecture and setting computes
both modes' outputs and gradients, shared by the tests through a module-scoped fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import flax.linen as nn
import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax import config_lib
from sed_jax import xla_cpu_flags
from sed_jax import train
from sed_jax.models import cpu_kernels as kernels
from sed_jax.models import crnn

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The CPU paths of convolution and pooling against the lax / flax ops they replace.

_NHWC = ("NHWC", "HWIO", "NHWC")


def _values_and_grads(f, *args):
  """f(*args) and the gradients of a random projection of it w.r.t. every argument."""
  out = f(*args)
  cotangent = jax.random.normal(jax.random.key(7), out.shape, out.dtype)
  return out, jax.grad(lambda *a: jnp.sum(f(*a) * cotangent), argnums=tuple(range(len(args))))(
      *args)


def _assert_close(got, want):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.parametrize("kernel_shape,groups", [
    ((1, 1, 3, 4), 1),  # pointwise: a matmul
    ((3, 3, 1, 3), 3),  # depthwise: shifted sums
    ((3, 3, 1, 4), 1),  # one input channel: im2col
    ((1, 3, 1, 2), 1),  # an uneven window, im2col
    ((3, 3, 2, 4), 1),  # too deep for im2col, few outputs: XLA's convolution
    ((3, 3, 3, 32), 1),  # many outputs: native with the flag, im2col without
    ((5, 5, 2, 32), 1),  # a 5x5 window of many outputs (inception): the same
])
@pytest.mark.parametrize("fusions_set", [True, False])
def test_conv_paths_match_lax_conv(kernel_shape, groups, fusions_set, monkeypatch):
  """Both rules of `_cpu_conv`: with the XLA flag of `xla_cpu_flags` (dense convs native), and
  without it (the im2col rewrites); the rule is read when the function is traced."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith(xla_cpu_flags.FLAG))
  monkeypatch.setenv("XLA_FLAGS", f"{flags} {xla_cpu_flags.FLAG}=" if fusions_set else flags)
  assert xla_cpu_flags.fusions_set() == fusions_set
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, kernel_shape[2] * groups))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
  want = _values_and_grads(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=groups), x, kernel)
  _assert_close(_values_and_grads(lambda x, k: kernels._cpu_conv(x, k, groups), x, kernel), want)
  _assert_close(_values_and_grads(lambda x, k: kernels.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=groups), x, kernel), want)


def test_conv_module_has_the_parameters_of_nn_conv():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
  for kwargs in (dict(features=3, kernel_size=(3, 3)),
                 dict(features=2, kernel_size=(3, 3), feature_group_count=2, use_bias=False)):
    ours = kernels.Conv(**kwargs).init(jax.random.key(1), x)
    theirs = nn.Conv(**kwargs).init(jax.random.key(1), x)
    _assert_close(ours, theirs)
    np.testing.assert_allclose(kernels.Conv(**kwargs).apply(ours, x),
                               nn.Conv(**kwargs).apply(theirs, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("window", [(2, 2), (1, 2), (3, 1)])
def test_window_pool_matches_flax_pooling(kind, window):
  x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))  # Odd sizes: remainders are dropped.
  flax_pool = nn.max_pool if kind == "max" else nn.avg_pool
  want = _values_and_grads(lambda x: flax_pool(x, window, strides=window, padding="VALID"), x)
  _assert_close(_values_and_grads(lambda x: kernels.window_pool(x, window, kind), x), want)


@pytest.mark.parametrize("shape", [(9, 3), (2, 7, 4), (2, 5, 3, 4)])
def test_batch_moments_match_plain_means(shape):
  x = jax.random.normal(jax.random.key(0), shape) * 2.0 + 1.0
  axes = tuple(range(len(shape) - 1))
  plain = lambda x: (jnp.mean(x, axes), jnp.mean(x * x, axes))
  stack = lambda pair: jnp.stack(pair)  # One output for `_values_and_grads`.
  want = _values_and_grads(lambda x: stack(plain(x)), x)
  for mode in ("auto", "off"):
    _assert_close(_values_and_grads(lambda x: stack(kernels.batch_moments(x, mode)), x), want)


@pytest.mark.parametrize("dot_sums", [True, False])
def test_normalize_gradient_matches_autodiff(dot_sums):
  """BatchNorm's normalisation under "auto" (its own gradient, the scale and bias sums as
  matmuls or plain sums) against autodiff of the same arithmetic ("off"), for every input."""
  key = iter(jax.random.split(jax.random.key(3), 5))
  x = jax.random.normal(next(key), (2, 5, 3, 4)) * 2.0 + 1.0
  mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
  scale, bias = jax.random.normal(next(key), (4,)), jax.random.normal(next(key), (4,))
  want = _values_and_grads(
      lambda *a: kernels.normalize(*a, 1e-5, "off"), x, mean, var, scale, bias)
  _assert_close(_values_and_grads(lambda *a: kernels.normalize(*a, 1e-5, "auto", dot_sums),
                                  x, mean, var, scale, bias), want)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_window_pool_off_is_flax_pooling(kind):
  x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))
  flax_pool = nn.max_pool if kind == "max" else nn.avg_pool
  want = _values_and_grads(lambda x: flax_pool(x, (2, 2), strides=(2, 2), padding="VALID"), x)
  _assert_close(_values_and_grads(lambda x: kernels.window_pool(x, (2, 2), kind, "off"), x),
                want)


def test_the_switch_names_its_values():
  assert kernels.conv_module("off") is nn.Conv
  assert kernels.conv_module("auto") is kernels.Conv
  for call in (lambda: kernels.check_mode("on"), lambda: kernels.conv_module("cpu"),
               lambda: kernels.window_pool(jnp.zeros((1, 2, 2, 1)), (2, 2), "max", "fast"),
               lambda: crnn.make_model("student", 3, cpu_kernels="none")):
    with pytest.raises(ValueError, match=r"cpu_kernels=.* is not one of \('auto', 'off'\)"):
      call()


def test_crnn_and_front_end_must_agree():
  model = crnn.make_model("student", 3, cpu_kernels="off")
  mixed = model.clone(cpu_kernels="auto")
  with pytest.raises(ValueError, match="front-end has 'off'"):
    jax.eval_shape(mixed.init, jax.random.key(0), jnp.zeros((1, 8, 8)))


# ---------------------------------------------------------------------------------------------
# Whole models: "off" against "auto".

C = 3
X_SHAPE = (2, 8, 8)  # batch, frames, mels: T // 4 = 2 frames out.
TINY = dict(gru_features=4, gru_layers=1)
# One stage of the narrowest widths each front-end allows (one stage already takes every CPU
# path: the first conv's im2col, 1x1 and depthwise convs, both poolings), every clip pooling.
TINY_ARCHS = {
    "gated": dict(widths=(2,), pooling="attention"),
    "resnet": dict(widths=(3,), stem_width=2, blocks_per_stage=1, pooling="linear_softmax"),
    "densenet": dict(widths=(3,), stem_width=2, layers_per_block=1, growth=2, bottleneck=1,
                     pooling="max"),
    "inception": dict(widths=(4,), stem_width=2, pooling="attention"),
    "xception": dict(widths=(3,), stem_width=2, pooling="linear_softmax"),
    "student": dict(widths=(3,), stem_width=2, pooling="max"),  # Its stem pool, one conv.
}
MODES = ("auto", "off")


def _key(seed):
  return jax.random.key(seed, impl="rbg")  # XLA compiles rbg's generator fastest.


def _model(arch, mode):
  return crnn.make_model(arch, C, cpu_kernels=mode, **{**TINY, **TINY_ARCHS[arch]})


def _perturbed(tree, seed):
  """tree with every leaf moved by noise of scale 0.2 (drawn on the host: nothing to compile),
  so that no zero-initialised scale hides a path (a residual block's last BatchNorm scale
  starts at 0) and eval mode's running statistics are not the trivial (0, 1); variances stay
  positive, and biases move up by 0.5 so that fewer ReLUs after eval-mode BatchNorms of these
  one-channel branches die."""
  rng = np.random.default_rng(seed)

  def move(path, leaf):
    noise = 0.2 * rng.normal(size=leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == "var":
      return leaf * np.exp(noise)
    return leaf + noise + (0.5 if name == "bias" else 0.0)

  return jax.tree.map_with_path(move, tree)


def _x():
  """Standard-normal input, so that eval mode's input BatchNorm (running statistics near (0, 1))
  passes activations of order 1 on (test_crnn.py covers unnormalised log-mels)."""
  return jnp.asarray(np.random.default_rng(0).normal(size=X_SHAPE), jnp.float32)


def _run(model, variables, x):
  """Per mode (eval, train): the outputs (logits, and the new batch statistics in train mode)
  and the gradients of a fixed random projection of the logits w.r.t. the parameters and the
  input, at `variables`. One jitted function, compiled once per architecture and setting."""
  rng = np.random.default_rng(1)
  t_out = X_SHAPE[1] // model.frontend.time_pool
  cotangents = (rng.normal(size=(X_SHAPE[0], t_out, C)).astype(np.float32),
                rng.normal(size=(X_SHAPE[0], C)).astype(np.float32))

  def loss(params, stats, x, train):
    out = model.apply({"params": params, "batch_stats": stats}, x, train=train,
                      mutable=["batch_stats"] if train else False, rngs={"dropout": _key(2)})
    (frame, clip), updates = out if train else (out, {})
    value = jnp.sum(frame * cotangents[0]) + jnp.sum(clip * cotangents[1])
    return value, dict(frame=frame, clip=clip, updates=updates)

  def run(params, stats, x):
    results = {}
    for mode, train in (("eval", False), ("train", True)):
      grads, outputs = jax.grad(loss, argnums=(0, 2), has_aux=True)(params, stats, x, train)
      results[mode] = dict(outputs=outputs, grads=grads)
    return results

  return jax.jit(run)(variables["params"], variables["batch_stats"], x)


@pytest.fixture(scope="module", params=list(TINY_ARCHS))
def both_modes(request):
  """(arch, {mode: initial variables}, {mode: `_run`'s results}) of one architecture: each
  model initialised eagerly (no compile), both run at the same perturbed variables."""
  assert set(TINY_ARCHS) == set(crnn.ARCHS)
  arch, x = request.param, _x()
  models = {mode: _model(arch, mode) for mode in MODES}
  init = {mode: m.init({"params": _key(0), "dropout": _key(1)}, x) for mode, m in models.items()}
  variables = _perturbed(jax.device_get(init["auto"]), 5)
  return arch, init, {mode: _run(m, variables, x) for mode, m in models.items()}


def test_same_variables(both_modes):
  """Same names, shapes, dtypes and initial values: a checkpoint of one loads into the other,
  and a seed initialises the same model under both."""
  _, init, _ = both_modes
  assert jax.tree.structure(init["auto"]) == jax.tree.structure(init["off"])
  jax.tree.map(np.testing.assert_array_equal, init["auto"], init["off"])
  assert {l.dtype for l in jax.tree.leaves(init["auto"])} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_outputs_and_gradients(both_modes, mode):
  """Within 1e-5 (absolute, float32): logits, new batch statistics, and the gradients w.r.t.
  every parameter and the input."""
  arch, _, runs = both_modes
  auto, off = runs["auto"][mode], runs["off"][mode]
  assert jax.tree.structure(auto) == jax.tree.structure(off)
  for (path, want), got in zip(jax.tree.flatten_with_path(auto)[0], jax.tree.leaves(off)):
    assert np.isfinite(want).all(), (arch, jax.tree_util.keystr(path))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5,
                               err_msg=f"{arch}, {mode}: {jax.tree_util.keystr(path)}")
  # The comparison proves nothing where a gradient is 0. In train mode every one is non-zero
  # (each BatchNorm centres its channels, so no ReLU is dead everywhere); in eval mode a
  # one-channel branch can be, so only the input's gradient is required there.
  params_grad, x_grad = auto["grads"]
  assert np.abs(x_grad).max() > 0
  if mode == "train":
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(params_grad))


def _primitives(jaxpr) -> set[str]:
  """Every primitive in `jaxpr` and its sub-jaxprs."""
  found = set()
  for eqn in jaxpr.eqns:
    found.add(eqn.primitive.name)
    for sub in jex_core.jaxprs_in_params(eqn.params):
      found |= _primitives(sub)
  return found


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_off_stages_no_cpu_path(arch):
  """"off" traces to stock ops only: no per-platform branch, no custom gradient; "auto" has
  both (tracing only, nothing compiled)."""
  found = {}
  for mode in MODES:
    model = _model(arch, mode)
    variables = jax.eval_shape(model.init, _key(0), jnp.zeros(X_SHAPE))
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": _key(1)}))(
            variables, jnp.zeros(X_SHAPE)).jaxpr
    found[mode] = _primitives(jaxpr)
  custom = lambda names: {n for n in names if n.startswith("custom_vjp")}
  assert "platform_index" in found["auto"] and custom(found["auto"])
  assert "platform_index" not in found["off"] and not custom(found["off"])


def test_the_config_key_reaches_the_model():
  """`train.model_from_config` passes `model.cpu_kernels` on; a run config saved before the key
  existed builds what "auto" builds."""
  config = config_lib.load_config(str(ROOT / "configs/teacher.py:arch=gated,smoke"))
  assert train.model_from_config(config, C).cpu_kernels == "auto"
  config.model.cpu_kernels = "off"
  model = train.model_from_config(config, C)
  assert model.cpu_kernels == model.frontend.cpu_kernels == "off"
  with config.model.unlocked():
    del config.model["cpu_kernels"]
  assert train.model_from_config(config, C).cpu_kernels == "auto"


@pytest.mark.parametrize("size", [3, 5])
def test_same_max_pool_matches_flax_pooling(size):
  """Values and the gradient of every window to its first maximum, ties included (post-ReLU
  inputs are full of zeros), as `nn.max_pool(..., strides=(1, 1), padding="SAME")`."""
  x = jax.nn.relu(jax.random.normal(jax.random.key(3), (2, 7, 6, 3)))
  x = x.at[0, 2:5, 1:4, 0].set(0.5)  # A plateau: every window over it ties.
  want = _values_and_grads(
      lambda x: nn.max_pool(x, (size, size), strides=(1, 1), padding="SAME"), x)
  _assert_close(_values_and_grads(lambda x: kernels.same_max_pool(x, size), x), want)
  _assert_close(_values_and_grads(lambda x: kernels.same_max_pool(x, size, "off"), x), want)
