"""SIGKILL at random moments of every stage of the experiment, then restart: same results.json.

The tiny experiment (`python -m sed_jax.main`, tests/reliability/conftest.py) is killed (no
cleanup, as a preempted VM or the OOM killer would) up to 2 times in each stage: dataset build,
teacher training, teacher-cache build, student training, report. Each restart must carry on from
what is on disk, and the finished results must equal, number for number, those of the
uninterrupted reference run. `benchmarks/fault_injection.py` (the same loop, more kills, any
config) is the long version.
"""

import json
import random

import pytest

from tests.reliability.tiny_experiment import fault_injection


@pytest.mark.slow
def test_killed_at_every_stage_the_experiment_ends_as_if_never_killed(tiny_experiment, tmp_path):
  data, work = tmp_path / "tfds", tmp_path / "run"
  # Within each stage's length on this config (the report takes a second or two).
  delays = {s: 0.3 if s == "report" else 1.5 for s in fault_injection.stages(data, work, 2, 2)}
  kills = fault_injection.inject(tiny_experiment.command(data, work), data, work, 2, 2, kills=2,
                                 rng=random.Random(0), max_delay=delays)

  assert json.loads((work / "results.json").read_text()) == tiny_experiment.results
  assert (work / "report.md").exists()
  assert not fault_injection.leftovers(data, work)  # Nothing half-written is left for a reader.
  assert set(kills) == {"dataset build", "teacher training", "teacher-cache build",
                        "student training", "report"}
  assert all(n >= 1 for n in kills.values()), kills  # Every stage, the report too, was killed.
