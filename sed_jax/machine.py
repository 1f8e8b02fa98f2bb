"""What machine and software a result was computed on: written beside every experiment's figures.

Why: a training run on XLA:CPU is bit-reproducible on the same CPU model, with the same package
versions and the same number of threads, but not across CPU models: XLA compiles for the host's
instruction set and its math libraries pick kernels by CPU, so the first steps differ in the
last bits and a few hundred steps of training turn that into other metrics
(docs/reproducibility.md measures it). With the fingerprint in results.json, two workdirs whose
figures differ show at once whether they ran on the same kind of machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import jax

# Instruction-set extensions that change what XLA:CPU and its kernels compute with.
_ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
        "amx_bf16", "amx_int8", "amx_fp16")
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "librosa", "scipy", "grain")


def _cpuinfo() -> tuple[str, list[str]]:
  """(CPU model name, the `_ISA` extensions it reports), from /proc/cpuinfo where there is one."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    pass
  return model, [f for f in _ISA if f in flags]


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def fingerprint() -> dict[str, Any]:
  """CPU model and extensions, usable cores, JAX backend and devices, package versions and the
  XLA flags of this process: what decides whether another run can match its bits."""
  model, isa = _cpuinfo()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return dict(cpu=model, isa=isa, usable_cores=cores, backend=jax.default_backend(),
              devices=jax.device_count(), processes=jax.process_count(),
              python=platform.python_version(),
              packages={p: _version(p) for p in _PACKAGES},
              xla_flags=os.environ.get("XLA_FLAGS", ""))


def same_bits_expected(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """Why two fingerprints' runs may differ in their last bits (empty: they should not): the
  fields that differ between them."""
  keys = ("cpu", "isa", "usable_cores", "backend", "devices", "processes", "packages",
          "xla_flags")
  return [k for k in keys if a.get(k) != b.get(k)]
