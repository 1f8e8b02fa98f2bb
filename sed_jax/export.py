r"""Export a trained model as a self-contained detector that runs without JAX (sed_jax/edge.py).

  python -m sed_jax.export --workdir=runs/student --out=exported/student_onnx --format=onnx
  python -m sed_jax.export --workdir=runs/student --out=exported/int8 --quantize=int8
  python -m sed_jax.export --workdir=runs/student --out=exported/pi --format=iree \
      --target=aarch64-linux
  python -m sed_jax.edge exported/student_onnx recordings/ --out=events.tsv

`--workdir` is an experiment (`--model` picks a model of its results.json, default the KD
student; a teacher's name or `ensemble` for comparison) or one training run. The folder gets
the model file and `detector.json` (classes, front end, window, thresholds and median windows
— the tuned ones where the run has them — and the runs' checkpoint steps and fingerprints).
Exports for the host are checked against JAX before they are written. Needs the export extra:
pip install -e '.[export]'. Formats, precision and targets: sed_jax/deploy/artifact.py and
docs/deploy.md.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from sed_jax import metric_writers
from sed_jax.deploy import artifact

_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment or training-run directory.")
_OUT = flags.DEFINE_string("out", None, "Folder to write (model file and detector.json).")
_MODEL = flags.DEFINE_string("model", None, "Model name in results.json (default: the KD "
                             "student); a teacher's name, or 'ensemble'.")
_FORMAT = flags.DEFINE_enum("format", "onnx", list(artifact.FORMATS),
                            "onnx (onnxruntime) or iree (a .vmfb for IREE's runtime).")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8", "fp16"],
                              "Weight storage: int8 (onnx) or fp16; default float32.")
_TARGET = flags.DEFINE_enum("target", "host", list(artifact.TARGETS),
                            "CPU the iree module is compiled for.")
_POSTPROCESSING = flags.DEFINE_enum(
    "postprocessing", "auto", ["auto", "config", "tuned"], "Thresholds and median windows put "
    "in the sidecar, as sed_jax.detect --postprocessing.")
_OVERLAP = flags.DEFINE_float("overlap_s", 2.0, "Default window overlap of the runner (s).")


def main(argv):
  if len(argv) > 1 or not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("Usage: python -m sed_jax.export --workdir=RUN --out=FOLDER "
                         "[--format=onnx|iree] [--quantize=int8|fp16] [--target=...]")
  metric_writers.quiet_library_logs()
  try:
    meta = artifact.export(_WORKDIR.value, _OUT.value, _FORMAT.value, _QUANTIZE.value,
                           _TARGET.value, _MODEL.value, _POSTPROCESSING.value, _OVERLAP.value)
  except (artifact.ExportError, FileNotFoundError, ValueError) as e:
    sys.exit(f"export: {e}")
  checked = (f", max |Δp| vs JAX {meta['max_abs_diff_vs_jax']:.2g}"
             if "max_abs_diff_vs_jax" in meta else " (not run: cross-compiled)")
  print(f"{meta['model']}: {meta['format']} {meta['precision']} for {meta['target']}, "
        f"{meta['bytes'] / 1024:.0f} KB{checked} → {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
