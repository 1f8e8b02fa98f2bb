"""Run folders and datasets on object storage (gs://), as on TPU VMs, against a local emulator.

A GCS emulator (tests/gcs_emulator.py, in memory, on 127.0.0.1) serves both clients a run uses:
gcsfs behind etils.epath (our files, TFDS) and tensorstore behind orbax (checkpoints), the way
they talk to a real bucket.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from etils import epath

from sed_jax.kd import experiment as experiment_lib
from sed_jax import io_utils
from sed_jax import metric_writers
from sed_jax.data import builders
from sed_jax.data.builders import base
from sed_jax.data.builders import object_storage
from tests.kd import test_experiment as test_distill

BUCKET = "sed-jax-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_emulator.py"), str(port),
       BUCKET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
      break
    except OSError:
      if time.monotonic() > deadline or server.poll() is not None:
        server.kill()
        pytest.fail("The GCS emulator did not start.")
      time.sleep(0.1)
  url = f"http://127.0.0.1:{port}"
  env = dict(STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
             GOOGLE_CLOUD_PROJECT="sed-jax-test")
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield f"gs://{BUCKET}"
  finally:
    server.kill()
    server.wait()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def test_atomic_write_uploads_only_on_success(bucket):
  path = epath.Path(bucket) / "io" / "a.json"
  with io_utils.atomic_write(path) as f:
    json.dump({"x": 1}, f)
  assert json.loads(path.read_text()) == {"x": 1}
  with pytest.raises(RuntimeError), io_utils.atomic_write(path) as f:
    f.write("half")
    raise RuntimeError("killed mid-write")
  assert json.loads(path.read_text()) == {"x": 1}
  with io_utils.atomic_write(epath.Path(bucket) / "io" / "b.png", "wb") as f:
    f.write(b"\x89PNG")
  assert (epath.Path(bucket) / "io" / "b.png").read_bytes() == b"\x89PNG"


def test_a_busy_run_folder_on_a_bucket_is_refused(bucket):
  lock = epath.Path(bucket) / "busy" / ".lock"
  with io_utils.exclusive(lock, "Run folder busy", wait=False):
    with pytest.raises(io_utils.BusyError, match="in use"):
      with io_utils.exclusive(lock, "Run folder busy", wait=False):
        pass


def test_metrics_are_appended_on_a_bucket_across_restarts(bucket):
  workdir = epath.Path(bucket) / "metrics"
  for step in (1, 2):  # A run, then its resumption: a new writer on the same file.
    writer = metric_writers.MetricWriter(workdir)
    writer.write(step, "train", {"loss": 1.0 / step})
    writer.close()
  assert [r["step"] for r in metric_writers.read_metrics(workdir)] == [1, 2]
  assert (workdir / "tensorboard").is_dir()


@pytest.mark.slow
def test_the_experiment_runs_with_its_data_and_workdir_on_a_bucket(bucket, tmp_path,
                                                                   monkeypatch):
  """The tiny experiment with TFDS data and workdir in the bucket; then again from a second
  host's point of view (an empty local mirror): datasets and runs come from the bucket, nothing
  is built or trained again."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # Anything written to a local relative path would land here.
  monkeypatch.setenv("SED_JAX_LOCAL_DATA_DIR", str(tmp_path / "mirror_host0"))
  config = test_distill.tiny_student_config(f"{bucket}/tfds")
  config.teachers = ("resnet",)
  config.parallel_runs = 1
  workdir = epath.Path(bucket) / "runs" / "student"
  results = experiment_lib.run(config, workdir)

  assert json.loads((workdir / "results.json").read_text()) == results
  assert [r["name"] for r in results["models"]] == [
      "resnet", "ensemble", "student_no_kd", "student_kd_class_weighted"]
  assert "| student_kd_class_weighted |" in (workdir / "report.md").read_text()
  assert (workdir / "plots" / "training_curves.png").exists()
  run = workdir / "students" / "kd_class_weighted"
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4"]
  assert (run / "best").is_dir() and (run / "test_metrics.json").exists()
  in_bucket = {p.name for p in (epath.Path(bucket) / "tfds").iterdir()}
  assert in_bucket == {"synth_sed", "teacher_cache"}
  assert not any(cwd.iterdir())

  def no_build(*args, **kwargs):
    raise AssertionError("built a dataset that the bucket holds")

  monkeypatch.setattr(base.BuildOnce, "download_and_prepare", no_build)
  monkeypatch.setenv("SED_JAX_LOCAL_DATA_DIR", str(tmp_path / "mirror_host1"))
  before = (run / "metrics.jsonl").read_text()
  assert experiment_lib.run(config, workdir) == results
  assert (run / "metrics.jsonl").read_text() == before
  assert {p.name for p in (tmp_path / "mirror_host1" / "gs" / BUCKET / "tfds").iterdir()} == (
      in_bucket)

  # A third host whose mirror holds a killed build's folder and a killed download's: the
  # download replaces the first and clears the second.
  monkeypatch.setenv("SED_JAX_LOCAL_DATA_DIR", str(tmp_path / "mirror_host2"))
  mirror = object_storage.builder_data_dir(config.dataset)
  probe = builders.DATASETS[config.dataset.name](config.dataset, config.features)  # No pull.
  junk = pathlib.Path(probe.data_dir)
  (junk / "half_written.array_record").parent.mkdir(parents=True)
  (junk / "half_written.array_record").write_bytes(b"x")
  (junk.parent / f".{junk.name}.pull-killed").mkdir()
  builder = builders.make_builder(config.dataset, config.features)
  assert builder.is_prepared() and builder.data_dir.startswith(mirror)
  assert not (junk / "half_written.array_record").exists()
  assert not list(junk.parent.glob(f".{junk.name}.pull-*"))
