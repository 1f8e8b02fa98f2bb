r"""Recordings unlike the training mixes: every model of an urbansed_mini run on re-mixed test sets.

  python experiments/shifted_test.py --experiment=<urbansed_mini workdir> \
      --root=../shared/data --out=<dir> [--clips=200]
  python experiments/shifted_test.py --mix_only --out=<dir>          # the sets alone, for a peer
  python experiments/shifted_test.py --out=<dir> --peers=<torch_peer .json files>

Issue 21 asks whether the teachers, and the students distilled from them, keep their accuracy on
recordings unlike their training mixes. The recordings the issue held back are not in this
repository, so this mixes the test fold's events (UrbanSound8K fold 3: no Freesound recording of
it is in train or validation) four ways, each a DCASE folder of `--clips` 10-s soundscapes:

- `same_recipe`: the training mixes' recipe (SNR 6-30 dB, 1-6 events, the nine backgrounds) at
  another seed: the reference every shift is compared with, scored through the same path;
- `low_snr`: events 0-12 dB above the background instead of 6-30;
- `new_backgrounds`: backgrounds no model ever heard: generated noises (pink, brown, and pink
  noise amplitude-modulated like passing traffic), written by `noise_backgrounds`;
- `dense`: 4-9 events per clip, up to 4 at once (training: 1-6, up to 3).

Every model of the run's `results.json` (teachers, their ensemble, students at every seed) is
scored on each with `sed_jax.evaluate.evaluate_folder`, the run's own post-processing. Writes
`<out>/shifted.json` (every model, every set) and `<out>/shifted.md` (students as mean ± std over
seeds) and prints one `result:` line per set for the KD gain.

A PyTorch peer is not a sed_jax run: `experiments/torch_peer.py --extra_tests=<dir>/<set>,...`
scores it on the sets `--mix_only` wrote (the same files: every mix is seeded), and `--peers`
adds its runs to the table as one row, mean ± std over their seeds. Without `--experiment`,
the models already scored in `<out>/shifted.json` are kept, not scored again.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from absl import app
from absl import flags
from absl import logging

from sed_jax import evaluate as evaluate_cmd
from sed_jax import metric_writers
from sed_jax.data import soundscapes as mix_lib
from sed_jax.kd import experiment

# --experiment, not --workdir: sed_jax.evaluate (imported for evaluate_folder) defines that flag.
_EXPERIMENT = flags.DEFINE_string("experiment", None, "A finished urbansed_mini experiment.")
_ROOT = flags.DEFINE_string("root", "../shared/data", "Folder with urbansound8k/ and backgrounds/.")
_OUT = flags.DEFINE_string("out", None, "Where the mixes, shifted.json and shifted.md go.")
_CLIPS = flags.DEFINE_integer("clips", 200, "Soundscapes per test set.")
_MIX_ONLY = flags.DEFINE_bool("mix_only", False, "Only write the test sets (no model scored).")
_PEERS = flags.DEFINE_list("peers", [], "experiments/torch_peer.py result files (.json) scored "
                           "with --extra_tests on these sets: one row, over their seeds.")
_SETS = flags.DEFINE_list("sets", ["same_recipe", "low_snr", "new_backgrounds", "dense"],
                          "Which test sets to mix and score.")

# Our name → evaluate_folder's key (the same as results.json's rows: kd.experiment.ROW_METRICS).
METRICS = {"event_f1": "event_f1_macro", "segment_f1": "segment_f1_macro", "psds1": "psds1",
           "psds2": "psds2"}
SAMPLE_RATE = 16000


def noise_backgrounds(out_dir: Path, seconds: float = 60.0, seed: int = 0) -> list[Path]:
  """Writes three generated noise recordings that no training mix contains; returns their paths.

  Pink (1/f power) and brown (1/f²) noise shaped in the frequency domain, and pink noise under a
  slow 0.1-0.3 Hz amplitude swell (a road heard from afar). They differ from the nine ambient
  recordings in spectrum and dynamics, which is the shift a deployed detector meets first.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  n = int(seconds * SAMPLE_RATE)
  freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
  freqs[0] = freqs[1]

  def coloured(power_exponent: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n)) / freqs ** (power_exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / np.max(np.abs(x))

  t = np.arange(n) / SAMPLE_RATE
  swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.13 * t) * np.sin(2 * np.pi * 0.29 * t + 1.0)
  signals = {"noise_pink": coloured(1.0), "noise_brown": coloured(2.0),
             "noise_traffic": coloured(1.0) * swell}
  paths = []
  for name, x in signals.items():
    path = out_dir / f"{name}.wav"
    sf.write(path, (0.5 * x).astype(np.float32), SAMPLE_RATE)
    paths.append(path)
  return paths


def test_sets(root: Path, out: Path) -> dict[str, tuple[list[Path], mix_lib.SoundscapeConfig]]:
  """Set name → (backgrounds, mixing recipe); the recipe of the training mixes is the default."""
  backgrounds = mix_lib.urbansed_mini_backgrounds(root)
  base = mix_lib.SoundscapeConfig(seed=1)
  return {
      "same_recipe": (backgrounds, base),
      "low_snr": (backgrounds, mix_lib.SoundscapeConfig(snr_db=(0.0, 12.0), seed=1)),
      "new_backgrounds": (noise_backgrounds(out / "noise_backgrounds"), base),
      "dense": (backgrounds, mix_lib.SoundscapeConfig(min_events=4, max_events=9,
                                                      max_polyphony=4, seed=1)),
  }


def model_names(workdir: Path) -> list[str]:
  return [r["name"] for r in json.loads((workdir / "results.json").read_text())["models"]]


def _row(label: str, runs: list[dict]) -> dict:
  """One table row: each metric's mean ± sample std over `runs` (one dict of METRICS each)."""
  return dict(model=label, seeds=len(runs), **{
      m: experiment.stats([r[m] for r in runs]) for m in METRICS})


def summarise(rows: dict[str, dict], workdir: Path) -> list[dict]:
  """Teachers and the ensemble as they are; each student as mean ± std over its seeds."""
  results = json.loads((workdir / "results.json").read_text())["models"]
  groups = collections.OrderedDict()
  for r in results:
    key = (r["role"], r["kd"]) if r["role"] == "student" else (r["role"], r["name"])
    groups.setdefault(key, []).append(r["name"])
  return [_row(f"student, {'no KD' if what == 'none' else 'KD ' + what}" if role == "student"
               else what, [rows[n] for n in names]) for (role, what), names in groups.items()]


def peer_row(set_name: str, peers: list[dict]) -> dict:
  """The PyTorch peer's runs (torch_peer.py results with this set in `extra_tests`) as a row."""
  missing = [p["recipe"]["seed"] for p in peers if set_name not in p.get("extra_tests", {})]
  if missing:
    raise ValueError(f"the torch_peer runs of seeds {missing} were not scored on {set_name!r}: "
                     "rerun them with --extra_tests=<out>/" + set_name)
  arch = {p["arch"] for p in peers}
  return _row(f"PyTorch {'/'.join(sorted(arch))} twin", [
      {m: p["extra_tests"][set_name][key] for m, key in METRICS.items()} for p in peers])


def markdown(summary: dict[str, list[dict]], clips: int) -> str:
  sets = list(summary)
  lines = [f"Test event F1 / PSDS1 of every model on {clips} fold-3 soundscapes per set "
           "(students: mean ± std over seeds); see experiments/shifted_test.py for the sets.", "",
           "| model | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
  for i, row in enumerate(summary[sets[0]]):
    cells = []
    for s in sets:
      r = summary[s][i]
      f1, p1 = r["event_f1"], r["psds1"]
      spread = f" ± {f1['std']:.3f}" if r["seeds"] > 1 else ""
      cells.append(f"{f1['mean']:.3f}{spread} / {p1['mean']:.3f}")
    lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def score_experiment(workdir: Path, folders: dict[str, Path], out: Path
                     ) -> tuple[dict[str, dict], dict[str, list[dict]]]:
  """Every model of the run on every set: (set → model → metrics, set → summary rows)."""
  names = model_names(workdir)
  every, summary = {}, {}
  for name, folder in folders.items():
    rows = {}
    for model in names:
      metrics = evaluate_cmd.evaluate_folder(workdir, model, folder / "audio",
                                             folder / "strong.tsv", out / name / "eval" / model,
                                             plots=0)
      rows[model] = {m: metrics[key] for m, key in METRICS.items()}
      logging.info("%s %s: event F1 %.3f", name, model, rows[model]["event_f1"])
    every[name] = rows
    summary[name] = summarise(rows, workdir)
  return every, summary


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  if not _OUT.value:
    raise app.UsageError("--out is required.")
  out, root = Path(_OUT.value), Path(_ROOT.value)
  previous = out / "shifted.json"
  if not (_EXPERIMENT.value or _MIX_ONLY.value or previous.exists()):
    raise app.UsageError(f"--experiment is required: {previous} holds no scored models yet.")
  sources = mix_lib.collect_sources([root / "urbansound8k" / "fold3"],
                                    list(mix_lib.URBANSED_MINI_CLASSES))
  folders = {name: mix_lib.write_soundscapes(out / name, _CLIPS.value, sources, backgrounds,
                                             recipe, split_seed=f"shifted/{name}")
             for name, (backgrounds, recipe) in test_sets(root, out).items()
             if name in _SETS.value}
  if _MIX_ONLY.value:
    print("test sets: " + ",".join(str(f) for f in folders.values()))
    return
  if _EXPERIMENT.value:
    workdir = str(_EXPERIMENT.value)
    every, summary = score_experiment(Path(workdir), folders, out)
  else:
    kept = json.loads(previous.read_text())
    workdir, every, summary = kept["workdir"], kept["models"], kept["summary"]
    summary = {s: [r for r in rows if not r["model"].startswith("PyTorch")]  # Peers: re-added.
               for s, rows in summary.items()}
  peers = [json.loads(Path(p).read_text()) for p in _PEERS.value]
  for name in summary:
    if peers:
      summary[name].append(peer_row(name, peers))
    students = [r for r in summary[name] if r["model"].startswith("student")]
    gain = students[-1]["event_f1"]["mean"] - students[0]["event_f1"]["mean"]
    print(f"result: {name}_kd_gain_event_f1 {100 * gain:.1f} points", flush=True)
  previous.write_text(json.dumps(dict(workdir=workdir, clips=_CLIPS.value, models=every,
                                      peers=_PEERS.value, summary=summary), indent=2))
  (out / "shifted.md").write_text(markdown(summary, _CLIPS.value))
  print((out / "shifted.md").read_text())


if __name__ == "__main__":
  app.run(main)
