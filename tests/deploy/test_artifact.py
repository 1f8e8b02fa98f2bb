"""`sed_jax.export`: the sidecar, the cross-compiled targets, the check against JAX, and every
refusal with its reason."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sed_jax import edge
from sed_jax import train
from sed_jax.deploy import artifact
from tests.deploy import runs as runs_lib

pytest.importorskip("onnxruntime")
pytest.importorskip("iree.compiler")

ROOT = Path(__file__).resolve().parents[2]
# ELF e_machine of the shared object IREE embeds for each CPU target.
ELF_MACHINE = {"host": 62, "aarch64-linux": 183, "riscv64-linux": 243}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return runs_lib.make_run(tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("tfds"),
                           "student")


def test_the_sidecar_holds_what_the_runner_needs_and_the_runs_identity(run, tmp_path):
  meta = artifact.export(run, tmp_path, "onnx", quantize="int8")
  assert json.loads((tmp_path / edge.SIDECAR).read_text()) == meta
  assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.json", "model.onnx"]
  assert meta["classes"] == runs_lib.CLASSES and meta["precision"] == "int8"
  assert meta["inputs"]["log_mel"] == [1, 100, 64] and meta["output"] == [1, 25, 10]
  assert meta["frame_seconds"] == 0.08 and meta["window_seconds"] == 2.0
  assert (meta["threshold"], meta["median_window_s"]) == (0.5, 0.24)
  _, variables, _ = train.load_trained(run, 10)
  assert meta["runs"] == [{"run": str(run), "step": 1,
                           "fingerprint": artifact.fingerprint(variables)}]
  assert 0 < meta["max_abs_diff_vs_jax"] <= artifact.TOLERANCE["int8"]
  assert meta["bytes"] == (tmp_path / "model.onnx").stat().st_size


def test_tuned_thresholds_go_in_the_sidecar(run, tmp_path):
  tuned = {"threshold": [0.3 + 0.01 * i for i in range(10)], "median_window_s": [0.4] * 10}
  (run / "tuned_postprocessing.json").write_text(json.dumps(tuned))
  try:
    meta = artifact.export(run, tmp_path, "onnx")
  finally:
    (run / "tuned_postprocessing.json").unlink()
  assert meta["threshold"] == tuned["threshold"]
  assert meta["postprocessing"].startswith("tuned per class")
  assert meta["max_abs_diff_vs_jax"] <= 1e-4


def _elf_machine(blob: bytes) -> int:
  at = blob.find(b"\x7fELF")
  assert at >= 0, "no embedded ELF object"
  return int.from_bytes(blob[at + 18:at + 20], "little")


@pytest.mark.parametrize("target", sorted(ELF_MACHINE))
def test_each_iree_target_compiles_for_its_cpu(run, tmp_path, target):
  meta = artifact.export(run, tmp_path, "iree", target=target)
  blob = (tmp_path / "model.vmfb").read_bytes()
  assert _elf_machine(blob) == ELF_MACHINE[target]
  assert meta["target"] == target
  # Only the host's module can run here: it is checked against JAX, the others are not.
  assert ("max_abs_diff_vs_jax" in meta) == (target == "host")


def test_refusals_say_why(run, tmp_path):
  with pytest.raises(artifact.ExportError, match="quantize=int8 is for --format=onnx"):
    artifact.export(run, tmp_path, "iree", quantize="int8")
  with pytest.raises(artifact.ExportError, match="an onnx model runs on any CPU, use host"):
    artifact.export(run, tmp_path, "onnx", target="aarch64-linux")
  with pytest.raises(artifact.ExportError, match="format='tflite': use one of onnx, iree"):
    artifact.export(run, tmp_path, "tflite")
  with pytest.raises(FileNotFoundError, match="neither an experiment"):
    artifact.export(tmp_path, tmp_path / "out", "onnx")
  assert not list(tmp_path.iterdir())


def test_a_missing_compiler_names_the_extra(run, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "iree.compiler", None)
  with pytest.raises(artifact.ExportError, match=r"needs iree-base-compiler: pip install -e "
                     r"'\.\[export\]'"):
    artifact.export(run, tmp_path, "iree")


def test_an_export_that_differs_from_jax_is_not_written(run, tmp_path, monkeypatch):
  monkeypatch.setitem(artifact.TOLERANCE, None, 0.0)
  with pytest.raises(artifact.ExportError, match=r"differs from JAX by .* nothing was written"):
    artifact.export(run, tmp_path, "onnx")
  assert [p.name for p in tmp_path.iterdir()] == []


def test_the_command(run, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "sed_jax.export", f"--workdir={run}", f"--out={tmp_path / 'e'}",
       "--format=iree", "--quantize=fp16"], capture_output=True, text=True, cwd=ROOT,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"{run.name}: iree fp16 for host" in proc.stdout and "max |Δp| vs JAX" in proc.stdout
  x = np.zeros((100, 64), np.float32)
  assert edge.Model(tmp_path / "e")(x, 25).shape == (25, 10)
  bad = subprocess.run([sys.executable, "-m", "sed_jax.export", f"--workdir={run}",
                        f"--out={tmp_path / 'f'}", "--format=iree", "--quantize=int8"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert bad.returncode == 1 and "export: quantize=int8 is for --format=onnx" in bad.stderr
