"""The entry point: config loading, overrides, unknown keys, default workdir."""

import os
import subprocess
import sys

import pytest

from sed_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "sed_jax.main", *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("override, message", [
    ("--config.optim.lrr=3", "Unknown config key 'optim.lrr': optim has no field 'lrr'. "
                             "Valid keys there: b2, base_batch_size, final_lr_ratio, grad_clip, lr,"),
    ("--config.optimx.lr=3", "the top level has no field 'optimx'. Valid keys there: augment,"),
])
def test_unknown_override_names_the_key_and_the_valid_ones(override, message):
  proc = run_main("--config=configs/teacher.py:arch=student,smoke", override)
  assert proc.returncode != 0 and message in proc.stderr


def test_unknown_config_argument_and_wrong_type():
  proc = run_main("--config=configs/teacher.py:arch=student,smokey")
  assert proc.returncode != 0 and "Unknown config argument 'smokey'" in proc.stderr
  assert "known: ['arch', 'dataset', 'smoke']" in proc.stderr
  proc = run_main("--config=configs/teacher.py:arch=student,smoke", "--config.batch_size=abc")
  assert proc.returncode != 0 and "batch_size" in proc.stderr


def test_config_files_have_the_design_keys_and_a_smoke_variant():
  for spec in ("configs/teacher.py:arch=resnet", "configs/teacher.py:arch=resnet,smoke"):
    c = config_lib.load_config(os.path.join(ROOT, spec))
    for key in ("dataset", "seed", "batch_size", "total_steps", "eval_every",
                "checkpoint_every"):
      assert key in c, (spec, key)
  smoke = config_lib.load_config(os.path.join(ROOT, "configs/teacher.py:arch=resnet,smoke"))
  assert smoke.total_steps < 50 and smoke.dataset.synth.train < 100


def test_default_workdir_is_named_after_the_config():
  assert config_lib.default_workdir("configs/teacher.py:arch=resnet,smoke") == \
      os.path.join("runs", "teacher_resnet_smoke")
  assert config_lib.default_workdir("configs/student.py") == os.path.join("runs", "student")


def test_parse_arg_casts_and_rejects():
  out = config_lib.parse_arg("n=3,flag,name=x", n=1, flag=False, name="a")
  assert (out.n, out.flag, out.name) == (3, True, "x")
  with pytest.raises(ValueError, match="true/false"):
    config_lib.parse_arg("flag=maybe", flag=False)


def test_compilation_cache_dir_keeps_compiled_programs(tmp_path):
  code = ("import os, jax; from sed_jax import main; main.use_compilation_cache(os.environ['D']); "
          "jax.jit(lambda x: x * 2 + 1)(1.0); print(os.environ['JAX_COMPILATION_CACHE_DIR'])")
  env = dict(os.environ, D=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == str(tmp_path)  # Inherited by the teacher worker processes.
  assert any(p.name.startswith("jit__lambda") for p in tmp_path.iterdir())


def test_print_config_shows_every_key_and_what_they_imply(tmp_path):
  """`--print_config`: the resolved config after overrides, the derived batches, steps and LR,
  and nothing run (no workdir, no dataset)."""
  import yaml  # pylint: disable=g-import-not-at-top
  proc = run_main("--config=configs/student.py", "--print_config", "--config.kd.temperature=3",
                  "--config.optim.lr_scaling=linear", "--config.optim.base_batch_size=8",
                  f"--config.dataset.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = yaml.safe_load(proc.stdout)
  assert out["kd"]["temperature"] == 3.0 and "temperature" not in out["loss"]
  derived = out["derived"]
  # 2000 labelled + 1000 unlabeled training clips: batch 16 grows to 24 (8 unlabeled).
  assert derived["kd_batch"] == dict(labelled_clips=2000, labelled_repeats=1,
                                     unlabeled_clips=1000, batch=24, unlabeled_per_batch=8.0)
  student = derived["student_kd"]
  assert (student["global_batch"], student["total_steps"]) == (24, out["total_steps"])
  assert student["peak_lr"] == pytest.approx(out["optim"]["lr"] * 24 / 8)  # Linear scaling.
  assert derived["student_no_kd"]["peak_lr"] == pytest.approx(out["optim"]["lr"] * 16 / 8)
  assert set(derived["teachers"]) == set(out["teachers"])
  assert derived["student_seeds"] == [0, 1, 2]
  assert not (tmp_path / "w").exists() and not (tmp_path / "tfds").exists()
