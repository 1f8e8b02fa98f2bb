"""The uninterrupted tiny experiment that the kill and preemption tests must reproduce.

Both tests run `python -m sed_jax.main` on the tiny experiment of tests/kd/test_experiment.py in
child processes and compare the interrupted job's `results.json` with this reference. It is run
once per session (an experiment run is most of either test's cost) and, like every run here,
without a persistent XLA compilation cache: a restart compiles afresh, as a user's would, so
equal numbers show that the resumption itself is exact.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_SPEC = importlib.util.spec_from_file_location(  # benchmarks/ is scripts, not a package.
    "fault_injection", ROOT / "benchmarks" / "fault_injection.py")
fault_injection = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fault_injection)

CONFIG = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.kd.test_experiment import tiny_student_config

def get_config():
  return tiny_student_config("")
"""


@dataclasses.dataclass(frozen=True)
class TinyExperiment:
  config: Path       # The config file for `--config`.
  data: Path         # The reference's TFDS folder: datasets and teacher cache, built.
  results: dict      # Its results.json.

  def command(self, data: Path, work: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "sed_jax.main", f"--config={self.config}",
            f"--workdir={work}", f"--config.dataset.data_dir={data}", *flags]


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> TinyExperiment:
  root = tmp_path_factory.mktemp("reference")
  config = root / "tiny.py"
  config.write_text(CONFIG)
  with pytest.MonkeyPatch.context() as mp:
    mp.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    experiment = TinyExperiment(config, root / "tfds", {})
    fault_injection.run(experiment.command(root / "tfds", root / "run"))
  results = json.loads((root / "run" / "results.json").read_text())
  return dataclasses.replace(experiment, results=results)


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
