r"""Kill the experiment at random moments of every stage, many times; it must end as if never killed.

  python benchmarks/fault_injection.py                       # configs/student.py:smoke, 5 kills
  python benchmarks/fault_injection.py --kills=20 --seed=3   # per stage
  python benchmarks/fault_injection.py --signal=TERM         # preemption notices instead

Runs `python -m sed_jax.main` twice from empty folders under `--out`: once uninterrupted (the
reference), once killed (SIGKILL by default: no cleanup, as the OOM killer or a lost VM) up to
`--kills` times in each stage — dataset build, teacher training, teacher-cache build, student
training, report — at a random moment while the stage is under way, restarting after each kill
and finally running to the end. Then `results.json` must equal the reference number for number,
and no temporary or incomplete file may be left. Prints the kills made per stage; the last line
is `result: fault_injection_identical <1|0> (<n> kills)`.
tests/reliability/test_fault_injection.py runs the same loop, 2 kills per stage, on a tiny config.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _newer(paths, since: float) -> bool:
  return any(p.stat().st_mtime >= since for p in paths if p.exists())


def stages(data: Path, work: Path, n_teachers: int, n_students: int
           ) -> dict[str, tuple[Callable, Callable]]:
  """Per stage: (under way in a process started at `since`, finished).

  A training stage is under way from the moment a run (re)starts, which rewrites its
  config.json before it reads data, compiles or restores: so a kill can land anywhere in the
  run, and the stage lasts long enough for several kills even when a tiny run takes seconds.
  (Its first metrics.jsonl line comes late in such a run, after which too little was left.)
  """
  built = lambda name: any(data.glob(f"{name}/*/[0-9]*.[0-9]*.[0-9]*/dataset_info.json"))
  return {
      "dataset build": (lambda since: _newer(data.glob("*/*/incomplete.*"), since),
                        lambda: any(built(d.name) for d in data.glob("*")
                                    if d.name != "teacher_cache")),
      "teacher training": (
          lambda since: _newer(work.glob("teachers/*/config.json"), since),
          lambda: len(list(work.glob("teachers/*/test_metrics.json"))) == n_teachers),
      "teacher-cache build": (
          lambda since: _newer(data.glob("teacher_cache/*/incomplete.*"), since),
          lambda: built("teacher_cache")),
      "student training": (lambda since: _newer(work.glob("students/*/config.json"), since),
                           lambda: len(list(work.glob("students/*/test_metrics.json"))) == n_students),
      "report": (lambda since: _newer([work / "results.json"], since),
                 lambda: (work / "report.md").exists()),
  }


def run(command: list[str], under_way=None, delay: float = 0.0, sig=signal.SIGKILL,
        timeout: float = 3600) -> bool:
  """Runs `command` from the repository root; with `under_way`, sends `sig` `delay` s after
  `under_way(start)` holds. Returns whether it was stopped by the signal (False: it finished
  first). Any other failure raises with the end of its stderr."""
  start = time.time() - 1.0  # File times have coarse resolution on some file systems.
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  if under_way is not None:
    deadline = time.time() + timeout
    while proc.poll() is None and not under_way(start):
      if time.time() > deadline:
        proc.kill()
        raise TimeoutError(f"the stage never started within {timeout} s: {command}")
      time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(sig)
      _, err = proc.communicate(timeout=timeout)
      if sig == signal.SIGTERM and proc.returncode not in (0, 128 + signal.SIGTERM):
        raise RuntimeError(f"after SIGTERM: exit {proc.returncode}\n{err[-3000:]}")
      return proc.returncode != 0
  _, err = proc.communicate(timeout=timeout)
  if proc.returncode != 0:
    raise RuntimeError(f"exit {proc.returncode}: {' '.join(command)}\n{err[-3000:]}")
  return False


def inject(command: list[str], data: Path, work: Path, n_teachers: int, n_students: int,
           kills: int, rng: random.Random, max_delay: dict[str, float], sig=signal.SIGKILL
           ) -> dict[str, int]:
  """Stops `command` up to `kills` times per stage (at a random moment within `max_delay[stage]`
  s of its start), restarting after each, then runs it to the end. Returns kills per stage."""
  made = {}
  for stage, (under_way, finished) in stages(data, work, n_teachers, n_students).items():
    made[stage] = 0
    for _ in range(kills):
      if finished():
        break
      made[stage] += run(command, under_way, rng.uniform(0.0, max_delay[stage]), sig)
  run(command)  # Whatever is left.
  return made


def leftovers(data: Path, work: Path) -> list[Path]:
  """Half-written files a reader could trip on: temp files, incomplete TFDS builds."""
  return list(work.rglob(".*.tmp")) + list(data.glob("*/*/incomplete.*"))


def main() -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/student.py:smoke")
  parser.add_argument("--out", default="/tmp/sed_jax_fault_injection",
                      help="Folder for the two experiments (emptied first).")
  parser.add_argument("--kills", type=int, default=5, help="Kills per stage (at most).")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
  parser.add_argument("--max_delay", type=float, default=20.0,
                      help="Latest kill moment after a stage starts, in seconds (report: 1/5).")
  args = parser.parse_args()
  import shutil  # pylint: disable=g-import-not-at-top
  from sed_jax import config_lib  # pylint: disable=g-import-not-at-top
  out = Path(args.out)
  shutil.rmtree(out, ignore_errors=True)
  config = config_lib.load_config(str(ROOT / args.config))
  n_teachers, n_students = len(config.teachers), 2 * config.student_seeds  # No KD and KD.
  command = lambda d, w: [sys.executable, "-m", "sed_jax.main", f"--config={args.config}",
                          f"--workdir={w}", f"--config.dataset.data_dir={d}"]
  t0 = time.time()
  run(command(out / "ref_tfds", out / "ref_run"))
  reference = json.loads((out / "ref_run" / "results.json").read_text())
  print(f"reference run: {time.time() - t0:.0f} s", flush=True)
  delays = {s: args.max_delay / (5 if s == "report" else 1) for s in
            stages(out, out, n_teachers, n_students)}
  data, work = out / "tfds", out / "run"
  made = inject(command(data, work), data, work, n_teachers, n_students, args.kills,
                random.Random(args.seed), delays, getattr(signal, f"SIG{args.signal}"))
  same = json.loads((work / "results.json").read_text()) == reference
  left = leftovers(data, work)
  print("| stage | kills |\n|---|---:|")
  for stage, n in made.items():
    print(f"| {stage} | {n} |")
  print(f"results.json equal to the uninterrupted run's: {same}; leftovers: {left or 'none'}")
  print(f"result: fault_injection_identical {int(same and not left)} ({sum(made.values())} "
        f"SIG{args.signal} kills, {time.time() - t0:.0f} s)")
  if not same or left:
    sys.exit(1)


if __name__ == "__main__":
  main()
