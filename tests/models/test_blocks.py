"""sed_jax.models.blocks: the GRU against a step-by-step numpy reference, the scan's structure,
the pooling helpers, BatchNorm against `nn.BatchNorm` under both `cpu_kernels` settings, and
the dense block's moments against BatchNorms over the concatenation.
(The kernels themselves, and whole models under both settings: test_cpu_kernels.py.)"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax.models import blocks
from tests.models import test_cpu_kernels

B, T, D, H = 2, 7, 3, 5


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def reference_gru(x, w_ih, w_hh, b_ih, b_hh, reverse=False):
  """Plain per-step GRU in PyTorch's layout: w_ih [3H, D], w_hh [3H, H], gates r, z, n."""
  h = np.zeros((x.shape[0], w_hh.shape[1]))
  out = np.zeros((x.shape[0], x.shape[1], w_hh.shape[1]))
  steps = range(x.shape[1])
  for t in (reversed(steps) if reverse else steps):
    gi = x[:, t] @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    h = (1.0 - z) * n + z * h
    out[:, t] = h
  return out


def _random_torch_style_params(rng):
  """Random weights and (non-zero) biases in PyTorch's layout, float64."""
  s = 1.0 / np.sqrt(H)
  return dict(w_ih=rng.uniform(-s, s, (3 * H, D)), w_hh=rng.uniform(-s, s, (3 * H, H)),
              b_ih=rng.uniform(-s, s, 3 * H), b_hh=rng.uniform(-s, s, 3 * H))


def _as_flax(p):
  """PyTorch layout -> our GRU's parameters (kernels transposed, same gate order)."""
  return {"input_kernel": jnp.asarray(p["w_ih"].T, jnp.float32),
          "hidden_kernel": jnp.asarray(p["w_hh"].T, jnp.float32),
          "input_bias": jnp.asarray(p["b_ih"], jnp.float32),
          "hidden_bias": jnp.asarray(p["b_hh"], jnp.float32)}


def test_bigru_matches_step_by_step_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  fwd, bwd = _random_torch_style_params(rng), _random_torch_style_params(rng)
  model = blocks.BiGRU(H)
  variables = model.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables["params"]["forward"]) == jax.tree.map(
      jnp.shape, _as_flax(fwd))
  params = {"forward": _as_flax(fwd), "backward": _as_flax(bwd)}
  got = np.asarray(model.apply({"params": params}, x))
  want = np.concatenate([reference_gru(x, **fwd), reference_gru(x, **bwd, reverse=True)], -1)
  assert got.shape == (B, T, 2 * H)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_masked_frames_do_not_feed_the_state():
  """Padding past the end (mask False) must leave both directions as on the unpadded clip: the
  reverse direction starts at the last real frame."""
  rng = np.random.default_rng(1)
  valid = 4
  x = rng.normal(size=(1, T, D)).astype(np.float32)
  p = _random_torch_style_params(rng)
  params = {"forward": _as_flax(p), "backward": _as_flax(p)}
  mask = np.arange(T)[None] < valid
  got = np.asarray(blocks.BiGRU(H).apply({"params": params}, x, mask))[:, :valid]
  want = np.concatenate([reference_gru(x[:, :valid], **p),
                         reference_gru(x[:, :valid], **p, reverse=True)], -1)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _scan_eqns(jaxpr):
  """Every scan in `jaxpr` and its sub-jaxprs (flax may wrap the call in pjit)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      yield eqn
    for sub in jex_core.jaxprs_in_params(eqn.params):
      yield from _scan_eqns(sub)


def _dots(jaxpr):
  """Operand shapes of every matmul in `jaxpr` and its sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(frozenset(v.aval.shape for v in eqn.invars))
    for sub in jex_core.jaxprs_in_params(eqn.params):
      found += _dots(sub)
  return found


@pytest.mark.parametrize("module,directions", [(blocks.GRU(H), 1), (blocks.BiGRU(H), 2)])
def test_one_scan_holds_only_the_recurrent_matmul(module, directions):
  """One scan of T steps whose body holds only the recurrent matmul of each direction, batched
  ([D, B, H] x [D, H, 3H]: a BiGRU's two directions step together); the input projection of all
  frames at once ([B, T, D] x [D, 3H]) happens before it."""
  x = jnp.zeros((B, T, D))
  variables = module.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x).jaxpr
  (scan,) = list(_scan_eqns(jaxpr))
  body = scan.params["jaxpr"].jaxpr
  assert scan.params["length"] == T
  assert _dots(body) == [frozenset({(directions, B, H), (directions, H, 3 * H)})]
  assert frozenset({(B, T, D), (D, 3 * H)}) in _dots(jaxpr)


def test_recurrent_kernel_is_orthogonal_per_gate():
  w = blocks.stacked_orthogonal(3)(jax.random.key(0), (H, 3 * H))
  for g in np.split(np.asarray(w), 3, axis=1):
    np.testing.assert_allclose(g.T @ g, np.eye(H), atol=1e-5)


@pytest.mark.parametrize("time_pool,stages,want", [
    (4, 7, [2, 2, 1, 1, 1, 1, 1]), (1, 3, [1, 1, 1]), (8, 2, [2, 4]), (6, 4, [2, 3, 1, 1]),
    (4, 1, [4])])
def test_time_pool_factors(time_pool, stages, want):
  assert blocks.time_pool_factors(time_pool, stages) == want


def test_time_pool_factors_rejects_bad_values():
  with pytest.raises(ValueError, match="time_pool"):
    blocks.time_pool_factors(0, 3)


def test_pool_stage_halves_frequency_until_one_bin_and_floors_time():
  x = jnp.zeros((1, 18, 3, 2))
  assert blocks.pool_stage(x, 4).shape == (1, 4, 1, 2)
  assert blocks.pool_stage(jnp.zeros((1, 18, 1, 2)), 2, "avg").shape == (1, 9, 1, 2)


# ---------------------------------------------------------------------------------------------
# BatchNorm against flax's.


# One definition of "values and gradients agree", shared with the kernel tests.
_values_and_grads = test_cpu_kernels._values_and_grads  # pylint: disable=protected-access
_assert_close = test_cpu_kernels._assert_close  # pylint: disable=protected-access


@pytest.mark.parametrize("cpu_kernels", ["auto", "off"])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 3, 4, 3)])
def test_batchnorm_matches_flax_batchnorm(shape, cpu_kernels):
  x = jax.random.normal(jax.random.key(0), shape) * 2.0 + 1.0
  params = {"scale": jax.random.normal(jax.random.key(1), shape[-1:]),
            "bias": jax.random.normal(jax.random.key(2), shape[-1:])}
  stats = {"mean": jnp.full(shape[-1:], 0.5), "var": jnp.full(shape[-1:], 2.0)}
  ours, theirs = blocks.BatchNorm(cpu_kernels=cpu_kernels), nn.BatchNorm()
  assert (jax.tree.structure(ours.init(jax.random.key(3), x, use_running_average=False))
          == jax.tree.structure(theirs.init(jax.random.key(3), x, use_running_average=False)))

  def train(module):
    def f(params, x):
      y, updates = module.apply({"params": params, "batch_stats": stats}, x,
                                use_running_average=False, mutable=["batch_stats"])
      return y, updates["batch_stats"]
    return f

  want_y, want_stats = train(theirs)(params, x)
  got_y, got_stats = train(ours)(params, x)
  _assert_close((got_y, got_stats), (want_y, want_stats))
  _assert_close(_values_and_grads(lambda p, x: train(ours)(p, x)[0], params, x),
                _values_and_grads(lambda p, x: train(theirs)(p, x)[0], params, x))
  variables = {"params": params, "batch_stats": stats}
  np.testing.assert_allclose(ours.apply(variables, x, use_running_average=True),
                             theirs.apply(variables, x, use_running_average=True),
                             rtol=1e-5, atol=1e-5)


class _ConcatenatingDenseStage(nn.Module):
  """A dense block and its transition as DenseNet writes them: every BatchNorm computes its
  statistics from the concatenation it normalises (the reference for `DenseBlock`'s moments of
  the parts). Module names and order are `DenseBlock`'s and `Transition`'s, so parameters are
  shared."""

  @nn.compact
  def __call__(self, x, train):
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(blocks.BatchNorm, use_running_average=not train)

    class Dense(nn.Module):
      @nn.compact
      def __call__(self, x):
        for _ in range(2):
          y = conv(6, (1, 1))(nn.relu(norm()(x)))
          y = conv(3, (3, 3))(nn.relu(norm()(y)))
          x = jnp.concatenate([x, y], axis=-1)
        return x

    class Trans(nn.Module):
      @nn.compact
      def __call__(self, x):
        return conv(4, (1, 1))(nn.relu(norm()(x)))

    return Trans(name="transition")(Dense(name="dense")(x))


class _DenseStage(nn.Module):
  """`DenseBlock` then `Transition`, the moments handed over as `DenseNetFrontEnd` does."""

  @nn.compact
  def __call__(self, x, train):
    x, moments = blocks.DenseBlock(2, 3, bottleneck=2, name="dense")(x, train)
    return blocks.Transition(4, name="transition")(x, train, moments)


def test_dense_block_moments_of_the_parts_equal_those_of_the_concatenation():
  x = jax.random.normal(jax.random.key(0), (2, 6, 4, 5)) * 2.0 + 0.5
  ours, reference = _DenseStage(), _ConcatenatingDenseStage()
  variables = ours.init(jax.random.key(1), x, train=False)
  assert (jax.tree.structure(variables)
          == jax.tree.structure(reference.init(jax.random.key(1), x, train=False)))
  # Non-trivial scales and biases, so that every BatchNorm's gradient is exercised.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
                        variables["params"])

  def train(module):
    def f(params, x):
      y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
      return y, updates["batch_stats"]
    return f

  _assert_close(train(ours)(params, x), train(reference)(params, x))
  _assert_close(_values_and_grads(lambda p, x: train(ours)(p, x)[0], params, x),
                _values_and_grads(lambda p, x: train(reference)(p, x)[0], params, x))
  evaluation = {"params": params, "batch_stats": variables["batch_stats"]}
  _assert_close(ours.apply(evaluation, x, train=False), reference.apply(evaluation, x,
                                                                          train=False))
