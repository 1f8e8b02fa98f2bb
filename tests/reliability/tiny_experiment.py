"""The tiny experiment that the kill and preemption tests interrupt, as the command a user runs.

`python -m sed_jax.main` on the tiny experiment of tests/kd/test_experiment.py; the uninterrupted
reference run is the session fixture `tiny_experiment` (tests/reliability/conftest.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

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
