"""SIGKILL at random moments of every stage of the experiment, then restart: same results.json.

The tiny experiment of tests/kd/test_experiment.py runs in a child process that is killed (no cleanup,
as a preempted VM or the OOM killer would) up to 2 times in each stage: dataset build, teacher
training, teacher-cache build, student training, report. Each restart must carry on from what is
on disk, and the finished results must equal, number for number, those of an uninterrupted run
with the same seed. `benchmarks/fault_injection.py` (the same loop, more kills, any config) is
the long version.
"""

import importlib.util
import json
import random
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(  # benchmarks/ is scripts, not a package.
    "fault_injection", Path(__file__).resolve().parents[2] / "benchmarks" / "fault_injection.py")
fault_injection = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fault_injection)

DRIVER = """
import sys
from sed_jax.kd import experiment as experiment_lib
from tests.kd.test_experiment import tiny_student_config
experiment_lib.run(tiny_student_config(sys.argv[1]), sys.argv[2])
"""


def command(data: Path, work: Path) -> list[str]:
  return [sys.executable, "-c", DRIVER, str(data), str(work)]


def test_killed_at_every_stage_the_experiment_ends_as_if_never_killed(tmp_path, monkeypatch):
  # Every restart compiles afresh, as a user's would: no persistent XLA cache hands the killed
  # run the reference run's executables, so equal numbers show that resumption is exact.
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  ref_data, ref_work = tmp_path / "ref_tfds", tmp_path / "ref_run"
  fault_injection.run(command(ref_data, ref_work))
  reference = json.loads((ref_work / "results.json").read_text())

  data, work = tmp_path / "tfds", tmp_path / "run"
  # Within each stage's length on this config (the report takes a second or two).
  delays = {s: 0.3 if s == "report" else 1.5 for s in fault_injection.stages(data, work, 2, 2)}
  kills = fault_injection.inject(command(data, work), data, work, 2, 2, kills=2,
                                 rng=random.Random(0), max_delay=delays)

  assert json.loads((work / "results.json").read_text()) == reference
  assert (work / "report.md").exists()
  assert not fault_injection.leftovers(data, work)  # Nothing half-written is left for a reader.
  assert set(kills) == {"dataset build", "teacher training", "teacher-cache build",
                        "student training", "report"}
  assert all(n >= 1 for n in kills.values()), kills  # Every stage, the report too, was killed.
