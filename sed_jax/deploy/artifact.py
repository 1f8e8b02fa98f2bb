"""A trained run → a self-contained detector folder that `sed_jax/edge.py` runs without JAX.

The folder holds the model file and `detector.json` (edge.py's sidecar). The model maps one
window of log-mel frames and its number of valid output frames to frame probabilities:

  log_mel [1, window, n_mels] float32, valid_frames [1] int32 → probs [1, window // pool, C]

`window` is the run's training clip length (what `sed_jax.detect` windows recordings with);
`valid_frames` < window // pool marks the last window of a recording, padded with log(floor)
frames, whose padding the GRUs then skip, as they do in `detect`. The log-mel front end stays
outside the model, in edge.py's numpy code (tested equal to the training features to 1e-4):
an FFT inside the artifact would tie it to runtimes that have one.

Formats:
- `iree`: the function exported by `jax.export` (StableHLO) and compiled by IREE for a CPU
  (`TARGETS`: the host, 64-bit ARM Linux or RISC-V Linux) into a `.vmfb` that IREE's runtime
  runs. Any model JAX can trace converts.
- `onnx`: the same function as a graph of standard ONNX operators (`onnx_graph`), for
  onnxruntime (and any other ONNX runtime).

Precision (`quantize`): None (float32), "fp16" or "int8" weight storage: weights are stored in
the narrower type and widened when the model loads, so arithmetic stays float32 and only the
file shrinks (ONNX: `Cast` / per-channel `DequantizeLinear`; IREE: fp16 only, the cast sits in
the StableHLO). Every export on the host is checked against JAX before it is written
(`TOLERANCE`); the measured difference goes into the sidecar.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

import sed_jax
from sed_jax import checkpoint as ckpt_lib
from sed_jax import edge
from sed_jax import inference
from sed_jax import io_utils
from sed_jax import train
from sed_jax.data import pipeline
from sed_jax.deploy import onnx_graph

FORMATS = ("onnx", "iree")
QUANTIZE = (None, "fp16", "int8")
FILES = {"onnx": "model.onnx", "iree": "model.vmfb"}
# IREE CPU targets: target triple and extra llvm-cpu flags ("host" compiles for this machine).
TARGETS = {
    "host": [],
    "aarch64-linux": ["--iree-llvmcpu-target-triple=aarch64-linux-gnu",
                      "--iree-llvmcpu-target-cpu=generic"],
    "riscv64-linux": ["--iree-llvmcpu-target-triple=riscv64-linux-gnu",
                      "--iree-llvmcpu-target-cpu=generic-rv64", "--iree-llvmcpu-target-abi=lp64d",
                      "--iree-llvmcpu-target-cpu-features=+m,+a,+f,+d,+c"],
}
# Every target: no debug symbols, source maps or debug ops in the module (about 12 % smaller).
_IREE_FLAGS = ["--iree-llvmcpu-debug-symbols=false",
               "--iree-vm-bytecode-module-strip-source-map=true",
               "--iree-vm-bytecode-module-strip-debug-ops=true"]
# Largest |probability difference| from JAX accepted at export, per precision. Float32 differs
# only by operation order; the narrower weights by their rounding (measured in docs/deploy.md).
TOLERANCE = {None: 1e-4, "fp16": 5e-3, "int8": 5e-2}
_EXTRA = "pip install -e '.[export]'"


class ExportError(Exception):
  """An export that cannot be made; the message says why and what to do."""


def frame_probs_fn(models: Sequence, window: int, pool: int):
  """f(log_mel [1, window, F], valid_frames [1]) → mean frame probabilities of `models`
  ([(module, variables)], averaged as `inference.Detector` averages an ensemble)."""

  def frame_probs(log_mel, valid_frames):
    mask = jnp.arange(window // pool)[None, :] < valid_frames[:, None]
    probs = [jax.nn.sigmoid(m.apply(v, log_mel, train=False, frame_mask=mask)[0])
             for m, v in models]
    # One model: its probabilities as they are (no mean op in the exported graph).
    return probs[0] if len(probs) == 1 else sum(probs[1:], probs[0]) / len(probs)

  return frame_probs


def _narrow(variables, quantize: str | None):
  """Variables whose matrices are stored as float16 and widened inside the function."""
  if quantize != "fp16":
    return variables
  return jax.tree.map(lambda a: a.astype(jnp.float16) if a.ndim >= 2 else a, variables)


def _widen(variables):
  return jax.tree.map(lambda a: a.astype(jnp.float32), variables)


def fingerprint(variables) -> str:
  """SHA-256 (16 hex digits) of a model's variables: names, shapes, dtypes and bytes."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(variables),
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}:{a.shape}:{a.dtype}".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def load(workdir: epath.PathLike, model: str | None = None):
  """(name, runs, config, classes, [(module with stock ops, variables)], identity)."""
  name, runs = inference.model_runs(workdir, model)
  config, classes, models, identity = None, None, [], []
  for run in runs:
    run_classes = train.run_classes(run)
    module, variables, run_config = train.load_trained(run, len(run_classes))
    if config is None:
      config, classes = run_config, run_classes
    # Stock ops: the XLA:CPU kernels only change how gradients are computed, and an exported
    # graph must hold standard operators (the parameters are the same).
    module = module.clone(cpu_kernels="off", frontend=module.frontend.clone(cpu_kernels="off"))
    ckpt = ckpt_lib.Checkpointer(run)
    try:
      step = ckpt.best.best_step()
    finally:
      ckpt.close()
    models.append((module, variables))
    identity.append({"run": str(run), "step": int(step), "fingerprint": fingerprint(variables)})
  return name, runs, config, classes, models, identity


def export(workdir: epath.PathLike, out: str | os.PathLike, fmt: str = "onnx",
           quantize: str | None = None, target: str = "host", model: str | None = None,
           postprocessing: str = "auto", overlap_s: float = 2.0) -> dict:
  """Writes `out/model.{onnx,vmfb}` and `out/detector.json`; returns the sidecar.

  Args:
    workdir: an experiment (results.json; `model` picks one of its models, default the KD
      student, 'ensemble' the teachers averaged) or a training run.
    out: the folder to write (created; its model file and sidecar are replaced).
    fmt: one of FORMATS.
    quantize: one of QUANTIZE.
    target: one of TARGETS (iree; onnx is portable and takes "host" only).
    postprocessing: thresholds and median windows, as `sed_jax.detect --postprocessing`.
    overlap_s: the window overlap edge.py uses by default (detect's default).
  """
  if fmt not in FORMATS:
    raise ExportError(f"format={fmt!r}: use one of {', '.join(FORMATS)}.")
  if quantize not in QUANTIZE:
    raise ExportError(f"quantize={quantize!r}: use int8 or fp16 (or nothing for float32).")
  if target not in TARGETS or (fmt == "onnx" and target != "host"):
    fix = ("an onnx model runs on any CPU, use host" if fmt == "onnx"
           else f"use one of {', '.join(TARGETS)}")
    raise ExportError(f"target={target!r}: {fix}.")
  if fmt == "iree" and quantize == "int8":
    raise ExportError("quantize=int8 is for --format=onnx (IREE folds int8 weights back to "
                      "float32); use --quantize=fp16 with iree.")
  name, runs, config, classes, models, identity = load(workdir, model)
  feat = config.features
  window = pipeline.clip_frames(config.dataset, feat)
  pool = feat.time_pool
  threshold, median, how = inference.postprocessing(runs, config, postprocessing)
  example = (np.zeros((1, window, feat.n_mels), np.float32), np.array([window // pool], np.int32))

  if fmt == "onnx":
    weights = {None: "float32", "fp16": "float16", "int8": "int8"}[quantize]
    blob = onnx_graph.to_onnx(onnx_graph.trace_bigru(frame_probs_fn(models, window, pool)),
                              example, ["log_mel", "valid_frames"], "probs", weights,
                              doc=f"sed_jax {name}").SerializeToString()
    module_name = None
  else:
    stored = [(m, _narrow(v, quantize)) for m, v in models]

    def frame_probs(log_mel, valid_frames):  # The stored weights widened in the graph.
      widened = [(m, _widen(v)) for m, v in stored]
      return frame_probs_fn(widened, window, pool)(log_mel, valid_frames)

    blob, module_name = _iree(frame_probs, example, target)

  meta = {
      "format": fmt, "file": FILES[fmt], "sha256": hashlib.sha256(blob).hexdigest(),
      "bytes": len(blob), "precision": quantize or "fp32", "target": target,
      "module": module_name,
      "inputs": {"log_mel": [1, window, feat.n_mels], "valid_frames": [1]},
      "output": [1, window // pool, len(classes)],
      "classes": list(classes), "sample_rate": feat.sample_rate, "n_fft": feat.n_fft,
      "hop_length": feat.hop_length, "n_mels": feat.n_mels, "fmin": feat.fmin,
      "fmax": feat.fmax, "log_floor": feat.log_floor, "time_pool": pool,
      "window_frames": window, "window_seconds": window * feat.hop_length / feat.sample_rate,
      "frame_seconds": pool * feat.hop_length / feat.sample_rate, "overlap_s": overlap_s,
      "threshold": threshold, "median_window_s": median, "postprocessing": how,
      "model": name, "runs": identity,
      "exported_with": {"sed_jax": sed_jax.__version__, "jax": jax.__version__,
                        **_versions(fmt)},
  }
  out = Path(out)
  if target == "host":  # Checked in memory, before anything is written.
    meta["max_abs_diff_vs_jax"] = _check(meta, out, blob, models, window, pool, quantize)
  with io_utils.atomic_write(out / FILES[fmt], "wb") as f:
    f.write(blob)
  with io_utils.atomic_write(out / edge.SIDECAR) as f:
    f.write(json.dumps(meta, indent=1) + "\n")
  return meta


def _versions(fmt: str) -> dict:
  packages = ["onnx"] if fmt == "onnx" else ["iree-base-compiler"]
  return {p: importlib.metadata.version(p) for p in packages}


def _iree(fn, example, target: str) -> tuple[bytes, str]:
  try:  # Optional (the export extra): imported only when an iree export is asked for.
    compiler = importlib.import_module("iree.compiler")
  except ImportError:
    raise ExportError(f"--format=iree needs iree-base-compiler: {_EXTRA}.") from None
  # The compiler logs every invocation at INFO through Python logging (absl shows it).
  logging.getLogger("iree.compiler").setLevel(logging.WARNING)
  exported = jax.export.export(jax.jit(fn), platforms=["cpu"])(*example)
  flags = (TARGETS[target] or ["--iree-llvmcpu-target-cpu=host"]) + _IREE_FLAGS
  blob = compiler.compile_str(exported.mlir_module(), target_backends=["llvm-cpu"],
                              input_type="stablehlo", extra_args=flags)
  return bytes(blob), f"jit_{fn.__name__}"


def _check(meta: dict, out: Path, blob: bytes, models, window: int, pool: int,
           quantize: str | None) -> float:
  """The largest |probability difference| between the artifact and JAX on a random window, a
  padded last window and silence; an error above TOLERANCE."""
  fn = jax.jit(frame_probs_fn(models, window, pool))
  try:
    run = edge.session(meta["format"], blob, 1, meta["module"], out / FILES[meta["format"]])
  except edge.EdgeError as e:
    raise ExportError(f"checking the export: {e}") from None
  rng = np.random.default_rng(0)
  n_mels = meta["n_mels"]
  noise = (rng.standard_normal((1, window, n_mels)) * 3 - 6).astype(np.float32)
  silence = np.full((1, window, n_mels), np.log(meta["log_floor"]), np.float32)
  worst = 0.0
  for x, valid in ((noise, window // pool), (noise, max(1, window // pool // 3)),
                   (silence, window // pool)):
    n = np.array([valid], np.int32)
    got, want = np.asarray(run(x, n))[0, :valid], np.asarray(fn(x, n))[0, :valid]
    worst = max(worst, float(np.abs(got - want).max()))
  if not worst <= TOLERANCE[quantize]:
    raise ExportError(f"the exported model differs from JAX by {worst:.3g} (tolerance "
                      f"{TOLERANCE[quantize]:g} for {meta['precision']}); nothing was written.")
  return worst
