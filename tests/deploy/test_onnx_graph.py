"""The jaxpr → ONNX converter: every architecture equals JAX in onnxruntime, narrow weights stay
within their tolerance, and what it cannot convert is an error that names the primitive."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sed_jax.deploy import artifact
from sed_jax.deploy import onnx_graph
from sed_jax.models import crnn

ort = pytest.importorskip("onnxruntime")

FRAMES, MELS, POOL = 64, 16, 4
# Every architecture, small: the converter sees each block kind (GLU, residual, dense with
# average pooling, inception with its max-pool branch, separable convs, the BiGRU).
TINY = dict(widths=(4, 8), stem_width=4, gru_features=6)
ARCHS = {
    "student": dict(widths=(4, 8), stem_width=4),
    "gated": dict(widths=(4, 8), gru_features=6, gru_layers=2),
    "resnet": dict(TINY, blocks_per_stage=1),
    "densenet": dict(widths=(8, 8), stem_width=4, layers_per_block=1, growth=4,
                     gru_features=6),
    "inception": dict(TINY, widths=(8, 8)),
    "xception": dict(TINY, convs_per_block=1),
}


def _model(arch):
  model = crnn.make_model(arch, 5, cpu_kernels="off", **ARCHS[arch])
  x = jnp.zeros((1, FRAMES, MELS))
  variables = model.init(jax.random.key(1), x)
  # Running statistics away from their initial 0 / 1, so the folded BatchNorms are exercised.
  keys = iter(jax.random.split(jax.random.key(2), 1000))
  variables = {
      "params": variables["params"],
      "batch_stats": jax.tree.map(
          lambda a: a + 0.3 * jax.random.uniform(next(keys), a.shape), variables["batch_stats"])}
  return model, variables


def _inputs(seed):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((1, FRAMES, MELS)) * 3 - 6).astype(np.float32)


def _run(onnx_model, x, valid):
  session = ort.InferenceSession(onnx_model.SerializeToString(),
                                 providers=["CPUExecutionProvider"])
  return session.run(None, {"log_mel": x, "valid_frames": np.array([valid], np.int32)})[0]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_equals_jax(arch):
  model, variables = _model(arch)
  fn = artifact.frame_probs_fn([(model, variables)], FRAMES, POOL)
  x = _inputs(0)
  example = (x, np.array([FRAMES // POOL], np.int32))
  converted = onnx_graph.to_onnx(onnx_graph.trace_bigru(fn), example,
                                 ["log_mel", "valid_frames"], "probs")
  ops = {n.op_type for n in converted.graph.node}
  assert "GRU" in ops and "Loop" not in ops and "Scan" not in ops
  for valid in (FRAMES // POOL, 5):  # A full window, and a last window padded after 5 frames.
    want = np.asarray(jax.jit(fn)(x, np.array([valid], np.int32)))[0, :valid]
    got = _run(converted, x, valid)[0, :valid]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_an_ensemble_is_the_mean_of_its_models():
  models = [_model("student"), _model("gated")]
  fn = artifact.frame_probs_fn(models, FRAMES, POOL)
  x = _inputs(1)
  n = np.array([FRAMES // POOL], np.int32)
  converted = onnx_graph.to_onnx(onnx_graph.trace_bigru(fn), (x, n), ["log_mel", "valid_frames"],
                                 "probs")
  singles = [np.asarray(artifact.frame_probs_fn([m], FRAMES, POOL)(x, n)) for m in models]
  np.testing.assert_allclose(_run(converted, x, FRAMES // POOL), np.mean(singles, 0), atol=1e-5)


@pytest.mark.parametrize("weights,max_bytes,tolerance", [
    ("float32", None, 1e-5), ("float16", 0.7, 5e-3), ("int8", 0.5, 5e-2)])
def test_narrow_weights_shrink_the_file_within_their_tolerance(weights, max_bytes, tolerance):
  model, variables = _model("student")
  fn = onnx_graph.trace_bigru(artifact.frame_probs_fn([(model, variables)], FRAMES, POOL))
  x, n = _inputs(2), np.array([FRAMES // POOL], np.int32)
  full = onnx_graph.to_onnx(fn, (x, n), ["log_mel", "valid_frames"], "probs")
  narrow = onnx_graph.to_onnx(fn, (x, n), ["log_mel", "valid_frames"], "probs", weights)
  if max_bytes:  # Of the whole file: in a model this small, the graph is a good part of it.
    assert narrow.ByteSize() < max_bytes * full.ByteSize()
  np.testing.assert_allclose(_run(narrow, x, FRAMES // POOL), _run(full, x, FRAMES // POOL),
                             atol=tolerance)


def test_what_cannot_be_converted_is_named():
  def with_sort(x, n):
    return jnp.sort(x, axis=1) * n[0]

  example = (_inputs(0), np.array([3], np.int32))
  with pytest.raises(NotImplementedError, match="'sort' has no conversion rule.*--format=iree"):
    onnx_graph.to_onnx(with_sort, example, ["log_mel", "valid_frames"], "probs")
  with pytest.raises(ValueError, match="does not depend on its inputs"):
    onnx_graph.to_onnx(lambda x, n: jnp.ones(3), example, ["log_mel", "valid_frames"], "probs")
  with pytest.raises(ValueError, match="weights='bf16'"):
    onnx_graph.to_onnx(with_sort, example, ["log_mel", "valid_frames"], "probs", "bf16")
