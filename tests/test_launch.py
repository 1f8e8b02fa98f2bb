"""Launch scripts in --dry-run mode: the commands they would run, and their errors."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(script, *args, **env):
  path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
  full_env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env}
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args],
                        capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120)


GCP = dict(PROJECT="my-proj", ZONE="us-central2-b", BUCKET="gs://my-bucket")


def test_tpu_create_run_and_delete_commands():
  out = launch("tpu_vm.sh", "create", ACCELERATOR_TYPE="v4-32", RUNTIME_VERSION="rt-1", **GCP)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("gcloud compute tpus tpu-vm create sed-jax")
  assert "--accelerator-type=v4-32" in out.stdout and "--version=rt-1" in out.stdout
  assert "--project=my-proj" in out.stdout and "--zone=us-central2-b" in out.stdout
  out = launch("tpu_vm.sh", "run", "--config.seed=3", **GCP)
  assert out.returncode == 0, out.stderr
  cmd = out.stdout.replace("\\", "")
  assert "--worker=all" in cmd and "SED_JAX_DISTRIBUTED=1" in cmd
  assert "--workdir=gs://my-bucket/runs/student" in cmd and "--config.seed=3" in cmd
  assert "TFDS_DATA_DIR=gs://my-bucket/tensorflow_datasets" in cmd
  assert "tpu-vm delete sed-jax" in launch("tpu_vm.sh", "delete", **GCP).stdout


def test_tpu_setup_copies_the_code_and_installs_the_tpu_extra():
  out = launch("tpu_vm.sh", "setup", **GCP).stdout.replace("\\", "")
  assert "tpu-vm scp --recurse --worker=all" in out and "pip install -q -e '.[tpu]'" in out


def test_tpu_sweep_runs_the_config_sweep_in_turn():
  out = launch("tpu_vm.sh", "sweep", **GCP)
  assert out.returncode == 0, out.stderr
  cmd = out.stdout.replace("\\", "")
  assert cmd.count("python -m sed_jax.main") == 27  # 9 settings x 3 seeds, one after another.
  assert "--config.kd.strategy=single:resnet --config.seed=2" in cmd


def test_missing_settings_are_named():
  out = launch("tpu_vm.sh", "run", PROJECT="p")
  assert out.returncode == 2 and "set ZONE" in out.stderr


def test_gpu_run_and_sweep():
  out = launch("gpu.sh", "run", "--config.batch_size=256")
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == ("python -m sed_jax.main --config=configs/student.py "
                                "--workdir=runs/student --config.batch_size=256")
  out = launch("gpu.sh", "sweep", CONFIG="configs/teacher.py")
  assert out.stdout.count("sed_jax.main") == 5 and "--config.model.arch=xception" in out.stdout


def test_large_batch_sweep_scales_lr_and_keeps_the_examples():
  out = launch("gpu.sh", "sweep", SWEEP="large_batch")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if "sed_jax.main" in l]
  assert len(lines) == 7 and "--config.batch_size=64 " in lines[0]
  assert "--config.batch_size=4096 --config.total_steps=46 " in lines[-1]
  assert all("--config.optim.lr_scaling=sqrt" in l and "--config.optim.warmup_examples=12800" in l
             for l in lines)
  out = launch("gpu.sh", "sweep", SWEEP="nope")
  assert out.returncode != 0 and "Unknown sweep 'nope'" in out.stderr
