"""The uninterrupted tiny experiment that the kill and preemption tests must reproduce.

Both tests run `python -m sed_jax.main` on the tiny experiment of tests/kd/test_experiment.py in
child processes and compare the interrupted job's `results.json` with this reference. It is run
once per session (an experiment run is most of either test's cost) and, like every run here,
without a persistent XLA compilation cache: a restart compiles afresh, as a user's would, so
equal numbers show that the resumption itself is exact.
"""

from __future__ import annotations

import json

import pytest

from tests.reliability.tiny_experiment import CONFIG, TinyExperiment, fault_injection


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> TinyExperiment:
  root = tmp_path_factory.mktemp("reference")
  config = root / "tiny.py"
  config.write_text(CONFIG)
  data, work = root / "tfds", root / "run"
  with pytest.MonkeyPatch.context() as mp:
    mp.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    fault_injection.run(TinyExperiment(config, data, {}).command(data, work))
  return TinyExperiment(config, data, json.loads((work / "results.json").read_text()))


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
